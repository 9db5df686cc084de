"""Every SQL statement of the facts table, once. Each change of a dialog's facts bumps
`dialogs.facts_version` in the same transaction (the reply's cache key, see `factbook`);
a player's statements name the player (`user_id`), so nobody reaches another's facts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from vitte.db import Database, unavailable_as
from vitte.dialogs.facts import Known, Plan
from vitte.errors import StoreUnavailable
from vitte.models import ACTIVE, MSG_STREAMING, Dialog, Fact, Message, utcnow

LIVE_MAX = 500  # facts a reply chooses from at most (the most important, then the newest)


def known(f: Fact) -> Known:
    return Known(int(f.id or 0), f.kind, f.text, f.importance, tuple(f.sources or ()), f.origin)


@dataclass(frozen=True, slots=True)
class Unread:
    """What an extraction reads: the active dialog, its live facts, the messages after
    `facts_upto` (the newest EXTRACT_TURNS_MAX of them)."""

    dialog: Dialog
    facts: list[Known]
    messages: list[Message]


class FactsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def live(self, dialog_id: int, limit: int = LIVE_MAX) -> list[Known]:
        """The dialog's facts in use (the `limit` most important, then newest), oldest first:
        one statement (a reply's cache miss)."""
        async with unavailable_as(StoreUnavailable), self.db.session(autocommit=True) as s:
            rows = (
                await s.execute(
                    select(Fact)
                    .where(col(Fact.dialog_id) == dialog_id, col(Fact.superseded_by).is_(None))
                    .order_by(col(Fact.importance).desc(), col(Fact.id).desc())
                    .limit(limit)
                )
            ).scalars()
            return sorted((known(f) for f in rows), key=lambda f: f.id)

    async def unread(self, dialog_id: int, limit: int, after: int = 0) -> Unread | None:
        """The active dialog, its live facts and up to `limit` newest messages after its
        `facts_upto` (and after `after`)."""
        async with self.db.session() as s:
            dialog = await s.get(Dialog, dialog_id)
            if dialog is None or dialog.status != ACTIVE:
                return None
            facts = (
                await s.execute(
                    select(Fact)
                    .where(col(Fact.dialog_id) == dialog_id, col(Fact.superseded_by).is_(None))
                    .order_by(col(Fact.id))
                )
            ).scalars()
            messages = list(
                (
                    await s.execute(
                        select(Message)
                        .where(
                            col(Message.dialog_id) == dialog_id,
                            col(Message.id) > max(dialog.facts_upto, after),
                            col(Message.status) != MSG_STREAMING,
                        )
                        .order_by(col(Message.id).desc())
                        .limit(limit)
                    )
                ).scalars()
            )
            messages.reverse()
            return Unread(dialog, [known(f) for f in facts], messages)

    async def apply(self, dialog: Dialog, changes: Plan, upto: int) -> bool:
        """An extraction's changes and its new `facts_upto`, in one transaction, unless the
        dialog's facts changed since they were read (or it ended): then nothing (False)."""
        dialog_id = int(dialog.id or 0)
        now = utcnow()
        async with self.db.session() as s:
            bumped = await s.execute(
                update(Dialog)
                .where(
                    col(Dialog.id) == dialog_id,
                    col(Dialog.status) == ACTIVE,
                    col(Dialog.facts_version) == dialog.facts_version,
                )
                .values(
                    facts_upto=upto,
                    facts_version=Dialog.facts_version + (0 if changes.empty else 1),
                )
            )
            if not bumped.rowcount:  # type: ignore[attr-defined]
                await s.rollback()
                return False
            for fact_id, (importance, sources) in changes.merge.items():
                await s.execute(
                    update(Fact)
                    .where(col(Fact.id) == fact_id, col(Fact.dialog_id) == dialog_id)
                    .values(importance=importance, sources=list(sources), updated_at=now)
                )
            for new, supersedes in changes.add:
                row = Fact(
                    dialog_id=dialog_id,
                    user_id=dialog.user_id,
                    kind=new.kind,
                    text=new.text,
                    importance=new.importance,
                    sources=list(new.sources),
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
                await s.flush()
                if supersedes:
                    await s.execute(
                        update(Fact)
                        .where(col(Fact.id).in_(supersedes), col(Fact.dialog_id) == dialog_id)
                        .values(superseded_by=row.id, updated_at=now)
                    )
            await s.commit()
        return True

    # ------------------------------------------------------------------ the player's
    async def add(
        self,
        user_id: int,
        dialog_id: int | None,
        text: str,
        kind: str,
        importance: int,
        sources: Sequence[int],
    ) -> tuple[Fact, int] | None:
        """A fact the player told, in their active dialog (or in `dialog_id` if it is their
        active one): the fact and the new facts version; None without such a dialog."""
        now = utcnow()
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            where = [col(Dialog.user_id) == user_id, col(Dialog.status) == ACTIVE]
            if dialog_id is not None:
                where.append(col(Dialog.id) == dialog_id)
            found = (
                await s.execute(
                    update(Dialog)
                    .where(*where)
                    .values(facts_version=Dialog.facts_version + 1)
                    .returning(col(Dialog.id), col(Dialog.facts_version))
                )
            ).first()
            if found is None:
                await s.rollback()
                return None
            row = Fact(
                dialog_id=int(found[0] or 0),
                user_id=user_id,
                kind=kind,
                text=text,
                importance=importance,
                sources=list(sources),
                origin="player",
                created_at=now,
                updated_at=now,
            )
            s.add(row)
            await s.commit()
            return row, int(found[1] or 0)

    async def page(self, user_id: int, offset: int, limit: int) -> tuple[Dialog | None, list[Fact], int]:
        """The player's active dialog, its live facts newest first (`offset`, `limit`) and
        how many there are."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            dialog = (
                await s.execute(
                    select(Dialog).where(col(Dialog.user_id) == user_id, col(Dialog.status) == ACTIVE)
                )
            ).scalar_one_or_none()
            if dialog is None:
                return None, [], 0
            live = col(Fact.dialog_id) == dialog.id, col(Fact.superseded_by).is_(None)
            total = int((await s.execute(select(func.count()).select_from(Fact).where(*live))).scalar_one())
            rows = list(
                (
                    await s.execute(
                        select(Fact).where(*live).order_by(col(Fact.id).desc()).offset(offset).limit(limit)
                    )
                ).scalars()
            )
            return dialog, rows, total

    async def edit(self, user_id: int, fact_id: int, text: str) -> Fact | None:
        """The player's live fact in their active dialog with a new text (None: no such fact)."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            fact = await self._own(s, user_id, fact_id)
            if fact is None:
                return None
            fact.text = text
            fact.updated_at = utcnow()
            await self._bump(s, fact.dialog_id)
            await s.commit()
            return fact

    async def forget(self, user_id: int, fact_id: int) -> bool:
        """The player's live fact gone from their active dialog, with the older facts it had
        superseded (False: no such fact)."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            fact = await self._own(s, user_id, fact_id)
            if fact is None:
                return False
            ids = [fact_id]
            frontier = [fact_id]
            while frontier:  # the chain of facts it replaced
                older = (
                    await s.execute(
                        select(col(Fact.id)).where(
                            col(Fact.dialog_id) == fact.dialog_id, col(Fact.superseded_by).in_(frontier)
                        )
                    )
                ).scalars()
                frontier = [int(i or 0) for i in older if i not in ids]
                ids += frontier
            await s.execute(delete(Fact).where(col(Fact.id).in_(ids)))
            await self._bump(s, fact.dialog_id)
            await s.commit()
            return True

    @staticmethod
    async def _own(s: AsyncSession, user_id: int, fact_id: int) -> Fact | None:
        return (
            await s.execute(
                select(Fact)
                .join(Dialog, col(Dialog.id) == col(Fact.dialog_id))
                .where(
                    col(Fact.id) == fact_id,
                    col(Fact.user_id) == user_id,
                    col(Dialog.user_id) == user_id,
                    col(Dialog.status) == ACTIVE,
                    col(Fact.superseded_by).is_(None),
                )
            )
        ).scalar_one_or_none()

    @staticmethod
    async def _bump(s: AsyncSession, dialog_id: int) -> None:
        await s.execute(
            update(Dialog).where(col(Dialog.id) == dialog_id).values(facts_version=Dialog.facts_version + 1)
        )

    # ------------------------------------------------------------------ operators
    async def of_dialog(self, dialog_id: int) -> list[Fact]:
        """Every fact of a dialog, superseded ones too, oldest first."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            return list(
                (
                    await s.execute(
                        select(Fact).where(col(Fact.dialog_id) == dialog_id).order_by(col(Fact.id))
                    )
                ).scalars()
            )

    async def of_player(self, user_id: int) -> list[Fact]:
        """Every fact of the player, in every dialog, oldest first (the data export)."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            return list(
                (
                    await s.execute(select(Fact).where(col(Fact.user_id) == user_id).order_by(col(Fact.id)))
                ).scalars()
            )
