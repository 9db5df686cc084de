"""Reading stored portraits (table portraits) for the faces, with a small in-process copy.

A portrait's bytes never change under one digest (a new picture is a new digest), so what was
read once is kept (least recently used dropped first) and serving it needs no SQL round trip.
"""

from __future__ import annotations

from collections import OrderedDict

import sqlalchemy as sa
from sqlmodel import col

from vitte.db import Database
from vitte.models import Portrait

__all__ = ["PortraitStore"]

MAX_ENTRIES = 256


class PortraitStore:
    """Portrait bytes by (persona id, size, digest)."""

    def __init__(self, db: Database, max_entries: int = MAX_ENTRIES) -> None:
        self.db = db
        self.max_entries = max_entries
        self._kept: OrderedDict[tuple[str, int, str], tuple[bytes, str]] = OrderedDict()

    async def get(self, persona_id: str, size: int, digest: str) -> tuple[bytes, str] | None:
        """(bytes, media type) of that portrait; None when the persona has no such picture now."""
        key = (persona_id, size, digest)
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            return kept
        async with self.db.session() as s:
            row = (
                await s.execute(
                    sa.select(col(Portrait.data), col(Portrait.media_type), col(Portrait.digest)).where(
                        col(Portrait.persona_id) == persona_id, col(Portrait.size) == size
                    )
                )
            ).first()
        if row is None or row[2] != digest:
            return None
        found = (bytes(row[0]), str(row[1]))
        self._kept[key] = found
        while len(self._kept) > self.max_entries:
            self._kept.popitem(last=False)
        return found
