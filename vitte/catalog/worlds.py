"""Standalone lorebooks (World Info files: V3 ``lorebook_v3``, a V2 ``character_book`` on its own,
SillyTavern's world files), stored by `vitte seed` and used by the personas whose cards name them:
SillyTavern's ``extensions.world`` (a book's name) or ``extensions.vitte.lorebooks`` (ids). A
book's id is the slug of its name, else of its file name; importing it again updates it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from vitte.catalog.cards import slugify
from vitte.catalog.lorebook import parse_book
from vitte.db import Database
from vitte.models import WorldBook, utcnow

__all__ = ["BookOutcome", "add_missing_books", "book_id", "linked_books", "seed_lorebooks", "world_books"]

MAX_LINKS = 16


@dataclass(frozen=True, slots=True)
class BookOutcome:
    file: str
    status: str  # added | updated | unchanged | skipped
    id: str | None = None
    reason: str | None = None


def _body(data: dict[str, Any]) -> dict[str, Any]:
    inner = data.get("data")
    return inner if data.get("spec") == "lorebook_v3" and isinstance(inner, dict) else data


def book_id(data: dict[str, Any], file: str) -> str:
    """The id a standalone book is stored under: its name's slug, else its file name's."""
    name = _body(data).get("name")
    slug = slugify(name) if isinstance(name, str) else ""
    return slug or slugify(PurePath(file).stem) or "lorebook-" + hashlib.sha256(file.encode()).hexdigest()[:8]


def linked_books(card: object) -> list[str]:
    """The ids of the standalone books a stored card names (in its order, at most `MAX_LINKS`)."""
    if not isinstance(card, dict):
        return []
    fields = card.get("data") if isinstance(card.get("data"), dict) else card
    ext = fields.get("extensions") if isinstance(fields, dict) else None
    if not isinstance(ext, dict):
        return []
    names: list[object] = [ext.get("world")]
    vitte = ext.get("vitte")
    if isinstance(vitte, dict) and isinstance(vitte.get("lorebooks"), list):
        names += vitte["lorebooks"]
    ids: list[str] = []
    for name in names:
        slug = slugify(name) if isinstance(name, str) else ""
        if slug and slug not in ids:
            ids.append(slug)
    return ids[:MAX_LINKS]


def _digest(data: dict[str, Any]) -> str:
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def _name(data: dict[str, Any]) -> str:
    name = _body(data).get("name")
    return name.strip()[:200] if isinstance(name, str) else ""


async def add_missing_books(s: Any, books: dict[str, dict[str, Any]]) -> list[str]:
    """Store the books an imported card carried (vitte.catalog.book_embed: id -> JSON) that are
    not stored yet; a book stored under that id is kept as it is. The ids added. `s`: an open
    session in a transaction."""
    if not books:
        return []
    stored = set((await s.execute(sa.select(col(WorldBook.id)).where(col(WorldBook.id).in_(list(books))))).scalars())
    added = [bid for bid in books if bid not in stored]
    for bid in added:
        s.add(WorldBook(id=bid, name=_name(books[bid]), book=books[bid], content_hash=_digest(books[bid])))
    if added:
        await s.flush()
    return added


async def seed_lorebooks(db: Database, books: list[tuple[str, dict[str, Any]]]) -> list[BookOutcome]:
    """Store standalone books (file name, its JSON): added, updated, unchanged, or skipped when
    it has no usable entry; one transaction."""
    outcomes: list[BookOutcome] = []
    wanted: dict[str, tuple[str, dict[str, Any], str]] = {}
    for file, data in books:
        parsed = parse_book(data)
        if parsed is None:
            outcomes.append(BookOutcome(file, "skipped", reason=f"{file}: entries: no lorebook entry"))
            continue
        bid = book_id(data, file)
        if bid in wanted:
            other = wanted[bid][0]
            outcomes.append(BookOutcome(file, "skipped", reason=f"{file}: name: lorebook id {bid!r} also in {other}"))
            continue
        wanted[bid] = (file, data, _digest(data))
    if not wanted:
        return outcomes
    await db.ensure_ready()
    async with db.session() as s, s.begin():
        rows = (await s.execute(sa.select(WorldBook).where(col(WorldBook.id).in_(list(wanted))))).scalars()
        existing = {row.id: row for row in rows}
        for bid, (file, data, digest) in wanted.items():
            name = _name(data)
            row = existing.get(bid)
            if row is None:
                s.add(WorldBook(id=bid, name=name, book=data, content_hash=digest))
                outcomes.append(BookOutcome(file, "added", bid))
            elif row.content_hash == digest:
                outcomes.append(BookOutcome(file, "unchanged", bid))
            else:
                row.name, row.book, row.content_hash, row.updated_at = name, data, digest, utcnow()
                outcomes.append(BookOutcome(file, "updated", bid))
    return outcomes


async def world_books(s: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    """Every stored standalone book: id -> (content hash, its JSON). `s`: an open session."""
    rows = (await s.execute(sa.select(WorldBook))).scalars()
    return {row.id: (row.content_hash, row.book) for row in rows}
