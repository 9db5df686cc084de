"""Operator actions on one persona: what is stored about it (show), removing it, exporting it.

Removing refuses while players have an active dialog with the persona (`PersonaInUse`); with
`force` those dialogs are ended through the dialogs engine first (its lock, its cache) and the
players are returned so a face can tell them (but those who blocked the bot: `Removed.unreachable`). The persona's rows go with it: stories, portraits
and (the database's ON DELETE CASCADE) its ended dialogs and their messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlmodel import col

from vitte.catalog.export import export_card
from vitte.catalog.lorebook import book_of_card
from vitte.catalog.portraits import SIZES
from vitte.catalog.worlds import linked_books
from vitte.dialogs.store import reachable
from vitte.errors import UnknownPersona, VitteError
from vitte.models import ACTIVE, Dialog, Persona, Portrait, Story, User, WorldBook

if TYPE_CHECKING:
    from vitte.core import Core
    from vitte.db import Database

__all__ = ["PersonaInUse", "Removed", "export_persona", "persona_details", "remove_persona"]


class PersonaInUse(VitteError):
    """Players have active dialogs with the persona."""

    def __init__(self, persona_id: str, players: int) -> None:
        super().__init__(
            f"persona {persona_id} has {players} active dialog(s): not removed (--force ends them with a notice)"
        )
        self.players = players


@dataclass
class Removed:
    id: str
    name: str
    ended: list[tuple[int, str]] = field(default_factory=list)  # (player id, language) told to choose again
    # of those, the players not to be told: they blocked the bot (`vitte.dialogs.store.reachable`)
    unreachable: set[int] = field(default_factory=set)


async def _persona(db: Database, persona_id: str) -> Persona:
    async with db.session() as s:
        row = await s.get(Persona, persona_id)
    if row is None:
        raise UnknownPersona(persona_id)
    return row


def _spec(card: dict[str, Any]) -> str:
    spec = card.get("spec")
    return str(spec) if isinstance(spec, str) else "v1"


async def persona_details(db: Database, persona_id: str) -> dict[str, Any]:
    """Everything an operator asks about a persona (stable keys; no card text beyond the short ones)."""
    await db.ensure_ready()
    p = await _persona(db, persona_id)
    async with db.session() as s:
        stories = (
            await s.execute(
                sa.select(col(Story.id), col(Story.title), col(Story.order))
                .where(col(Story.persona_id) == persona_id)
                .order_by(col(Story.order), col(Story.id))
            )
        ).all()
        dialogs = (
            await s.execute(
                sa.select(col(Dialog.status), sa.func.count())
                .where(col(Dialog.persona_id) == persona_id)
                .group_by(col(Dialog.status))
            )
        ).all()
    counts = {str(status): int(n) for status, n in dialogs}
    book = book_of_card(p.card)
    return {
        "id": p.id,
        "name": p.name,
        "tagline": p.tagline,
        "creator": p.creator,
        "tags": list(p.tags or []),
        "spec": _spec(p.card or {}),
        "character_version": str((p.card.get("data") or {}).get("character_version") or "")
        if isinstance(p.card.get("data"), dict)
        else "",
        "stories": [{"id": sid, "title": title, "order": order} for sid, title, order in stories],
        "alternate_greetings": len(p.alternate_greetings or []),
        "lorebook_entries": len(book.entries) if book is not None else 0,
        "portrait": {"digest": p.portrait, "sizes": list(SIZES)} if p.portrait else None,
        "avatar": p.avatar,
        "card_key": p.card_key,
        "content_hash": p.content_hash,
        "dialogs": {"active": counts.get(ACTIVE, 0), "total": sum(counts.values())},
        "description_chars": len(p.description),
        "created_at": p.created_at.isoformat() if p.created_at else None,
        "updated_at": p.updated_at.isoformat() if p.updated_at else None,
    }


async def remove_persona(core: Core, persona_id: str, *, force: bool = False) -> Removed:
    """Remove a persona; refused (PersonaInUse) while it has active dialogs, unless `force`."""
    db = core.db
    p = await _persona(db, persona_id)
    async with db.session() as s:
        players = (
            await s.execute(
                sa.select(col(Dialog.user_id), col(User.language), reachable(col(Dialog.id)))
                .join(User, col(User.id) == col(Dialog.user_id))
                .where(col(Dialog.persona_id) == persona_id, col(Dialog.status) == ACTIVE)
            )
        ).all()
    if players and not force:
        raise PersonaInUse(persona_id, len(players))
    removed = Removed(p.id, p.name)
    for user_id, language, can_write in players:
        ended = await core.dialogs.reset(int(user_id))  # the engine's lock and cache
        if ended is not None:
            removed.ended.append((int(user_id), str(language or "")))
            if not can_write:
                removed.unreachable.add(int(user_id))
    async with db.session() as s, s.begin():
        again = (
            await s.execute(
                sa.select(sa.func.count()).where(
                    col(Dialog.persona_id) == persona_id, col(Dialog.status) == ACTIVE
                )
            )
        ).scalar_one()
        if again and not force:
            raise PersonaInUse(persona_id, int(again))
        await s.execute(
            sa.update(User).where(col(User.active_persona_id) == persona_id).values(active_persona_id=None)
        )
        await s.execute(sa.delete(Persona).where(col(Persona.id) == persona_id))
    core.catalog.invalidate()
    return removed


async def export_persona(db: Database, persona_id: str, fmt: str) -> bytes:
    """The persona as a card file (vitte.catalog.export) in `fmt`: json | png | charx."""
    await db.ensure_ready()
    p = await _persona(db, persona_id)
    portrait = None
    if p.portrait:
        async with db.session() as s:
            portrait = (
                await s.execute(
                    sa.select(col(Portrait.data)).where(
                        col(Portrait.persona_id) == persona_id, col(Portrait.size) == max(SIZES)
                    )
                )
            ).scalar_one_or_none()
    columns = p.model_dump(exclude={"card", "i18n", "created_at", "updated_at"})
    picture = bytes(portrait) if portrait is not None else None
    return export_card(dict(p.card or {}), columns, picture, fmt, await _linked_books(db, p.card or {}))


async def _linked_books(db: Database, card: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The stored standalone lorebooks the card names (id, JSON), in its order (one missing is left out)."""
    ids = linked_books(card)
    if not ids:
        return []
    async with db.session() as s:
        rows = (await s.execute(sa.select(WorldBook).where(col(WorldBook.id).in_(ids)))).scalars()
        found = {row.id: dict(row.book) for row in rows}
    return [(bid, found[bid]) for bid in ids if bid in found]
