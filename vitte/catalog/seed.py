"""Seeding the persona catalog from parsed character cards: idempotent, all-or-nothing."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from vitte.catalog.cards import CardError, ParsedCard, check_unique_ids, default_fixtures_dir, read_cards
from vitte.db import Database
from vitte.models import Dialog, Persona, Story, utcnow

__all__ = ["SeedReport", "list_personas", "seed_cards", "seed_path"]

SEED_ATTEMPTS = 4


@dataclass
class SeedReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    # stories dropped from a card but kept because a dialog still refers to them
    kept_stories: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated)


def _persona_values(card: ParsedCard, content_hash: str) -> dict[str, Any]:
    return {
        "name": card.name,
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
        "creator": card.creator,
        "creator_notes": card.creator_notes,
        "i18n": card.i18n,
        "card": card.raw,
        "content_hash": content_hash,
        "sort_order": card.order,
    }


async def seed_cards(db: Database, cards: list[ParsedCard]) -> SeedReport:
    """Upsert personas and their stories from cards, in ONE transaction.

    A persona whose content hash is unchanged (and whose stories are all present) is not
    written at all. A changed one is updated, its stories upserted; stories no longer in the
    card are deleted unless a dialog refers to them. Any error rolls everything back.
    """
    check_unique_ids(cards)
    await db.ensure_ready()
    for attempt in range(1, SEED_ATTEMPTS + 1):
        try:
            return await _seed_once(db, cards)
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


async def _seed_once(db: Database, cards: list[ParsedCard]) -> SeedReport:
    report = SeedReport()
    if not cards:
        return report
    ids = [c.id for c in cards]
    async with db.session() as s, s.begin():
        existing = {
            p.id: p
            for p in (await s.execute(sa.select(Persona).where(col(Persona.id).in_(ids)))).scalars().all()
        }
        story_rows = (await s.execute(sa.select(Story).where(col(Story.persona_id).in_(ids)))).scalars().all()
        stories_by_persona: dict[str, dict[str, Story]] = {}
        for st in story_rows:
            stories_by_persona.setdefault(st.persona_id, {})[st.id] = st

        for card in cards:
            digest = card.content_hash()
            persona = existing.get(card.id)
            current = stories_by_persona.get(card.id, {})
            if persona is None:
                now = utcnow()
                s.add(Persona(id=card.id, created_at=now, updated_at=now, **_persona_values(card, digest)))
                await s.flush()  # the persona row first: stories refer to it
                await _sync_stories(s, card, current, report)
                report.added.append(card.id)
                continue
            if persona.content_hash == digest and all(st.id in current for st in card.stories):
                report.unchanged.append(card.id)
                continue
            for key, value in _persona_values(card, digest).items():
                if getattr(persona, key) != value:
                    setattr(persona, key, value)
            persona.updated_at = utcnow()
            await _sync_stories(s, card, current, report)
            report.updated.append(card.id)
    return report


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
