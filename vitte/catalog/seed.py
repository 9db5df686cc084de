"""Seeding the persona catalog from parsed character cards: idempotent; all-or-nothing or per card.

Identity (issue 17, item 6): a card keeps the id written in its ``vitte`` extension; otherwise its
persona is found by the card's key (its normalised name and creator, `card_key`), so importing it
again updates that persona, and a different card with a taken name gets the next free id
(``seraphina-2``). `replace` puts a card in an existing persona's place on purpose. The card's
picture becomes the persona's portrait (vitte.catalog.portraits), stored with it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from vitte.catalog.cards import (
    MAX_ID,
    CardError,
    ParsedCard,
    check_unique_ids,
    default_fixtures_dir,
    read_cards,
)
from vitte.catalog.portraits import PictureUnreadable, Portrait, make_portrait
from vitte.catalog.worlds import add_missing_books
from vitte.db import Database
from vitte.models import Dialog, Persona, Story, utcnow
from vitte.models import Portrait as PortraitRow

__all__ = ["FileOutcome", "SeedReport", "card_key", "list_personas", "seed_cards", "seed_path"]

SEED_ATTEMPTS = 4
log = logging.getLogger("vitte.catalog")


@dataclass
class FileOutcome:
    """What became of one file: added / updated / unchanged (with the persona id) or skipped."""

    file: str
    status: str
    id: str | None = None
    reason: str | None = None


@dataclass
class SeedReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # stories dropped from a card but kept because a dialog still refers to them
    kept_stories: list[str] = field(default_factory=list)
    # standalone lorebooks exported cards carried and that were not stored yet (vitte.catalog.book_embed)
    lorebooks_added: list[str] = field(default_factory=list)
    files: list[FileOutcome] = field(default_factory=list, compare=False)  # per file, in order

    @property
    def skipped(self) -> list[FileOutcome]:
        return [f for f in self.files if f.status == "skipped"]

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated)


def card_key(card: ParsedCard) -> str:
    """A card's identity: sha256 of its name and creator, case-folded and whitespace-normalised."""

    def norm(text: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", text).casefold().split())

    return hashlib.sha256(f"{norm(card.name)}\x1f{norm(card.creator)}".encode("utf-8", "surrogatepass")).hexdigest()


def _fit(text: str, limit: int) -> str:
    """A text cut to a column's width (the whole text stays in the stored card)."""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _rebased(card: ParsedCard, new_id: str) -> ParsedCard:
    """The card under another persona id: its stories' ids follow."""
    if new_id == card.id:
        return card
    stories = [
        dataclasses.replace(st, id=new_id + st.id[len(card.id) :]) if st.id.startswith(card.id) else st
        for st in card.stories
    ]
    return dataclasses.replace(card, id=new_id, stories=stories)


def _persona_values(card: ParsedCard, content_hash: str) -> dict[str, Any]:
    return {
        "name": _fit(card.name, 128),
        "tagline": card.tagline,
        "description": card.description,
        "personality": card.personality,
        "scenario": card.scenario,
        "first_mes": card.first_mes,
        "mes_example": card.mes_example,
        "system_prompt": card.system_prompt,
        "post_history_instructions": card.post_history_instructions,
        "alternate_greetings": list(card.alternate_greetings),
        "tags": list(card.tags),
        "avatar": card.avatar,
        "creator": _fit(card.creator, 200),
        "card_key": card_key(card),
        "creator_notes": card.creator_notes,
        "i18n": card.i18n,
        "card": card.raw,
        "content_hash": content_hash,
        "sort_order": card.order,
    }


async def seed_cards(
    db: Database, cards: list[ParsedCard], *, strict: bool = True, replace: str | None = None
) -> SeedReport:
    """Upsert personas and their stories (and portraits) from cards.

    `strict` (the default): ONE transaction, any error rolls everything back. Otherwise each card
    is its own transaction and a card that fails is reported as skipped, the others go in.
    A persona whose content hash is unchanged (and whose stories are all present) is not
    written at all. A changed one is updated, its stories upserted; stories no longer in the
    card are deleted unless a dialog refers to them. `replace`: the (one) card takes the place
    of that existing persona.
    """
    if replace is not None and len(cards) != 1:
        raise CardError(replace, "replace", "replacing takes exactly one card")
    await db.ensure_ready()
    if strict:
        check_unique_ids(cards)
        portraits = {id(c): _portrait(c) for c in cards}
        return await _seed_retrying(db, cards, portraits, replace)
    report = SeedReport()
    explicit: dict[str, str] = {}  # a `vitte` id -> the file that claimed it first
    for card in cards:
        source = card.source or card.name
        if card.explicit_id and card.id in explicit:
            reason = f"{source}: id: duplicate persona id {card.id!r} (also in {explicit[card.id]})"
            report.files.append(FileOutcome(source, "skipped", reason=reason))
            continue
        if card.explicit_id:
            explicit[card.id] = source
        try:
            one = await _seed_retrying(db, [card], {id(card): _portrait(card)}, replace)
        except CardError as exc:
            report.files.append(FileOutcome(source, "skipped", reason=str(exc)))
            continue
        report.added += one.added
        report.updated += one.updated
        report.unchanged += one.unchanged
        report.kept_stories += one.kept_stories
        report.lorebooks_added += one.lorebooks_added
        report.files += one.files
    return report


def _portrait(card: ParsedCard) -> Portrait | None:
    """The card's portrait; None without a picture or with one Pillow cannot read (logged)."""
    if not card.image:
        return None
    try:
        return make_portrait(card.image, card.source or card.name)
    except PictureUnreadable as exc:
        log.warning("%s (the persona keeps its drawn initials)", exc)
        return None


async def _seed_retrying(
    db: Database, cards: list[ParsedCard], portraits: dict[int, Portrait | None], replace: str | None
) -> SeedReport:
    for attempt in range(1, SEED_ATTEMPTS + 1):
        try:
            return await _seed_once(db, cards, portraits, replace)
        except (IntegrityError, OperationalError) as exc:
            # Another process seeding the same catalog at the same moment (two services starting
            # together): its rows are there once it commits, so another pass sees them and most
            # likely finds nothing to do. Anything else is a real error.
            if attempt == SEED_ATTEMPTS or not _is_concurrent_write(exc):
                raise
            await asyncio.sleep(0.05 * attempt)
    raise AssertionError("unreachable")


def _is_concurrent_write(exc: Exception) -> bool:
    if isinstance(exc, IntegrityError):
        text = str(exc)  # a primary key taken meanwhile, not e.g. a NOT NULL violation
        return "duplicate key value" in text or "UNIQUE constraint failed" in text
    return "database is locked" in str(exc)  # SQLite: another writer holds the lock


async def _seed_once(
    db: Database, cards: list[ParsedCard], portraits: dict[int, Portrait | None], replace: str | None
) -> SeedReport:
    report = SeedReport()
    if not cards:
        return report
    async with db.session() as s, s.begin():
        known = (
            await s.execute(sa.select(col(Persona.id), col(Persona.card_key), col(Persona.name), col(Persona.creator)))
        ).all()
        taken = {row[0] for row in known}
        by_key = {row[1]: row[0] for row in known if row[1]}
        legacy = {row[0]: (row[2], row[3]) for row in known if not row[1]}
        placed = [_rebased(c, _identity(c, replace, taken, by_key, legacy)) for c in cards]
        ids = sorted({c.id for c in placed})
        existing = {
            p.id: p
            for p in (await s.execute(sa.select(Persona).where(col(Persona.id).in_(ids)))).scalars().all()
        }
        story_rows = (await s.execute(sa.select(Story).where(col(Story.persona_id).in_(ids)))).scalars().all()
        stories_by_persona: dict[str, dict[str, Story]] = {}
        for st in story_rows:
            stories_by_persona.setdefault(st.persona_id, {})[st.id] = st

        for original, card in zip(cards, placed, strict=True):
            digest = card.content_hash()
            portrait = portraits.get(id(original))
            persona = existing.get(card.id)
            current = stories_by_persona.setdefault(card.id, {})
            source = card.source or card.name
            # the standalone books an exported card carried, whatever becomes of the persona
            report.lorebooks_added += await add_missing_books(s, card.lorebooks)
            if persona is None:
                now = utcnow()
                persona = Persona(id=card.id, created_at=now, updated_at=now, **_persona_values(card, digest))
                s.add(persona)
                existing[card.id] = persona
                await s.flush()  # the persona row first: stories refer to it
                await _sync_stories(s, card, current, report)
                await _sync_portrait(s, persona, portrait)
                report.added.append(card.id)
                report.files.append(FileOutcome(source, "added", card.id))
                continue
            if persona.content_hash == digest and all(st.id in current for st in card.stories):
                report.unchanged.append(card.id)
                report.files.append(FileOutcome(source, "unchanged", card.id))
                continue
            for key, value in _persona_values(card, digest).items():
                if getattr(persona, key) != value:
                    setattr(persona, key, value)
            persona.updated_at = utcnow()
            await _sync_stories(s, card, current, report)
            await _sync_portrait(s, persona, portrait)
            report.updated.append(card.id)
            report.files.append(FileOutcome(source, "updated", card.id))
    return report


def _identity(
    card: ParsedCard,
    replace: str | None,
    taken: set[str],
    by_key: dict[str, str],
    legacy: dict[str, tuple[str, str]],
) -> str:
    """The persona id a card goes to (see the module's docstring); records it as taken."""
    key = card_key(card)
    if replace is not None:
        if replace not in taken:
            raise CardError(card.source or card.name, "replace", f"no persona {replace!r} to replace")
        chosen = replace
    elif card.explicit_id:
        chosen = card.id
    elif key in by_key:
        chosen = by_key[key]
    elif card.id in legacy and legacy[card.id] == (_fit(card.name, 128), _fit(card.creator, 200)):
        chosen = card.id  # imported before cards had keys: the same name and creator
    else:
        chosen, n = card.id, 1
        while chosen in taken:
            n += 1
            suffix = f"-{n}"
            chosen = card.id[: MAX_ID - len(suffix)].rstrip("-") + suffix
    taken.add(chosen)
    legacy.pop(chosen, None)
    by_key[key] = chosen
    return chosen


async def _sync_portrait(s: AsyncSession, persona: Persona, portrait: Portrait | None) -> None:
    """The persona's stored portrait rows follow the card's picture (none: the drawn initials)."""
    wanted = portrait.digest if portrait is not None else None
    if persona.portrait == wanted:
        return
    await s.execute(sa.delete(PortraitRow).where(col(PortraitRow.persona_id) == persona.id))
    if portrait is not None:
        for size, data in portrait.images.items():
            s.add(PortraitRow(persona_id=persona.id, size=size, digest=portrait.digest,
                              media_type=portrait.media_type, data=data))
    persona.portrait = wanted
    await s.flush()


async def _sync_stories(
    s: AsyncSession, card: ParsedCard, current: dict[str, Story], report: SeedReport
) -> None:
    wanted = {st.id for st in card.stories}
    others = (
        (
            await s.execute(
                sa.select(col(Story.id), col(Story.persona_id)).where(
                    col(Story.id).in_(wanted - set(current)), col(Story.persona_id) != card.id
                )
            )
        ).all()
        if wanted - set(current)
        else []
    )
    if others:
        story_id, owner = others[0]
        raise CardError(
            card.source or card.name, "stories", f"story id {story_id!r} belongs to persona {owner!r}"
        )

    for parsed in card.stories:
        values: dict[str, Any] = {
            "title": parsed.title,
            "premise": parsed.premise,
            "opening": parsed.opening,
            "order": parsed.order,
            "i18n": parsed.i18n,
        }
        row = current.get(parsed.id)
        if row is None:
            s.add(Story(id=parsed.id, persona_id=card.id, **values))
            continue
        for key, value in values.items():
            if getattr(row, key) != value:
                setattr(row, key, value)

    stale = [sid for sid in current if sid not in wanted]
    if stale:
        referenced = set(
            (
                await s.execute(sa.select(col(Dialog.story_id)).where(col(Dialog.story_id).in_(stale)).distinct())
            ).scalars()
        )
        for sid in stale:
            if sid in referenced:
                report.kept_stories.append(sid)
            else:
                await s.delete(current[sid])
    await s.flush()


async def seed_path(db: Database, path: Path | None = None) -> SeedReport:
    """Read every card at `path` (default: the shipped fixtures), then seed them."""
    cards = read_cards(path if path is not None else default_fixtures_dir())
    return await seed_cards(db, cards)


async def list_personas(db: Database) -> list[tuple[Persona, int]]:
    """Every persona with its number of stories, ordered by sort_order, then name."""
    await db.ensure_ready()
    story_count = (
        sa.select(sa.func.count(col(Story.id)))
        .where(col(Story.persona_id) == col(Persona.id))
        .correlate(Persona)
        .scalar_subquery()
    )
    async with db.session() as s:
        rows = (
            await s.execute(
                sa.select(Persona, story_count).order_by(
                    col(Persona.sort_order), col(Persona.name), col(Persona.id)
                )
            )
        ).all()
    return [(persona, int(count)) for persona, count in rows]
