"""What a stored card adds to how its persona plays, read once per persona: the V3 ``nickname``,
the compiled lorebook and SillyTavern's ``extensions.depth_prompt`` (kept per content hash, so a
catalog refresh reuses the compiled book)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from vitte.catalog.lorebook import Lorebook, book_of_card

__all__ = ["CardPlay", "card_play"]

MAX_NICKNAME = 128
MAX_DEPTH = 1000
_ROLES = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class CardPlay:
    nickname: str = ""
    lorebook: Lorebook | None = None
    depth_prompt: str = ""
    depth_prompt_depth: int = 4
    depth_prompt_role: str = "system"


NOTHING = CardPlay()


def _fields(card: object) -> dict[str, Any]:
    if not isinstance(card, dict):
        return {}
    data = card.get("data")
    return data if isinstance(data, dict) else card


def card_play(card: dict[str, Any] | None, content_hash: str = "") -> CardPlay:
    """The play data of a stored card (``Persona.card``); `content_hash` keys the cache."""
    if not card:
        return NOTHING
    if content_hash:
        return _cached(content_hash, json.dumps(card, sort_keys=True, default=str))
    return _read(card)


@functools.lru_cache(maxsize=256)
def _cached(content_hash: str, blob: str) -> CardPlay:
    return _read(json.loads(blob))


def _read(card: dict[str, Any]) -> CardPlay:
    fields = _fields(card)
    nickname = fields.get("nickname")
    nickname = nickname.strip()[:MAX_NICKNAME] if isinstance(nickname, str) else ""
    ext = fields.get("extensions") if isinstance(fields.get("extensions"), dict) else {}
    depth = ext.get("depth_prompt") if isinstance(ext, dict) else None
    prompt, at, role = "", 4, "system"
    if isinstance(depth, dict) and isinstance(depth.get("prompt"), str):
        prompt = depth["prompt"].strip()
        value = depth.get("depth")
        if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
            at = max(0, min(MAX_DEPTH, int(value)))
        if depth.get("role") in _ROLES:
            role = depth["role"]
    book = book_of_card(card)
    if not (nickname or book or prompt):
        return NOTHING
    return CardPlay(nickname, book, prompt, at, role)
