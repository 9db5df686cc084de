"""The card's own `extensions.vitte` keys that the catalog does not model (issue 19: `voice`,
the persona's TTS voice; `appearance`, what the persona looks like in photos), read from the
stored card once per persona and kept while the catalog serves the same persona (a re-seed
reads them again)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy import select
from sqlmodel import col

from vitte.catalog.lookup import Catalog
from vitte.db import Database
from vitte.models import Persona


def vitte_extension(card: dict[str, Any]) -> dict[str, Any]:
    """`data.extensions.vitte` of a V2/V3 card (or `extensions.vitte` of a flat one), else {}."""
    data = card.get("data") if isinstance(card.get("data"), dict) else card
    ext = data.get("extensions") if isinstance(data, dict) else None
    vitte = ext.get("vitte") if isinstance(ext, dict) else None
    return vitte if isinstance(vitte, dict) else {}


class CardExtras:
    """See the module docstring."""

    def __init__(self, db: Database, catalog: Catalog) -> None:
        self.db = db
        self.catalog = catalog
        self._known: dict[str, tuple[object, dict[str, Any], str]] = {}

    async def _read(self, persona_id: str) -> tuple[dict[str, Any], str]:
        persona = await self.catalog.persona(persona_id)
        known = self._known.get(persona_id)
        if known is not None and known[0] is persona:
            return known[1], known[2]
        async with self.db.session() as s:
            card = (await s.execute(select(col(Persona.card)).where(col(Persona.id) == persona_id))).scalar()
        card = card if isinstance(card, dict) else {}
        digest = hashlib.sha256(json.dumps(card, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
        ext = vitte_extension(card)
        self._known[persona_id] = (persona, ext, digest)
        return ext, digest

    async def of(self, persona_id: str) -> dict[str, Any]:
        return (await self._read(persona_id))[0]

    async def card_hash(self, persona_id: str) -> str:
        """sha256 of the stored card (what something derived from the card was derived from)."""
        return (await self._read(persona_id))[1]

    async def text(self, persona_id: str, key: str, limit: int) -> str | None:
        """A one-line string key of the extension, at most `limit` characters; None if absent."""
        value = (await self.of(persona_id)).get(key)
        if not isinstance(value, str) or not value.strip():
            return None
        return " ".join(value.split())[:limit]
