"""What a stored card adds to how its persona plays, read once per persona: the V3 ``nickname``,
the compiled lorebook (its own and the standalone ones it names) and SillyTavern's
``extensions.depth_prompt`` (kept per content hash, so a catalog refresh reuses the compiled book)."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from typing import Any

from vitte.catalog.lorebook import Lorebook, book_of_card, merge_books, parse_book
from vitte.catalog.worlds import linked_books

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


Worlds = dict[str, tuple[str, dict[str, Any]]]  # standalone books: id -> (content hash, JSON)


def card_play(card: dict[str, Any] | None, content_hash: str = "", worlds: Worlds | None = None) -> CardPlay:
    """The play data of a stored card (``Persona.card``), its own lorebook merged with the
    standalone ones it names (vitte.catalog.worlds); `content_hash` keys the cache."""
    if not card:
        return NOTHING
    linked = [(bid, worlds[bid]) for bid in linked_books(card) if worlds and bid in worlds]
    if content_hash:
        key = content_hash + "".join(f"|{bid}:{digest}" for bid, (digest, _book) in linked)
        blobs = tuple(json.dumps(book, sort_keys=True, default=str) for _bid, (_d, book) in linked)
        return _cached(key, json.dumps(card, sort_keys=True, default=str), blobs)
    return _read(card, [book for _bid, (_d, book) in linked])


@functools.lru_cache(maxsize=256)
def _cached(key: str, blob: str, books: tuple[str, ...]) -> CardPlay:
    return _read(json.loads(blob), [json.loads(b) for b in books])


def _read(card: dict[str, Any], worlds: list[dict[str, Any]]) -> CardPlay:
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
    books = [b for b in (book_of_card(card), *(parse_book(w) for w in worlds)) if b is not None]
    book = merge_books(books)
    if not (nickname or book or prompt):
        return NOTHING
    return CardPlay(nickname, book, prompt, at, role)
