"""The durable nudge schedule's SQL (table `nudges`, one row per active dialog).

A row is claimed under a token and a lease (`claim`: `FOR UPDATE SKIP LOCKED` on PostgreSQL,
so processes never take the same row; SQLite: one process, one transaction); the nudge's
message is stored and its id written on the row in one transaction (`mark`) before Telegram
is called; `sent` records the send and the next time. A claim whose lease ran out (its
process died) is claimed again; a row with a mark is then never sent a second time.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import configure_mappers

from vitte.cache.base import CachedMessage
from vitte.db import Database, unavailable_as
from vitte.errors import StoreUnavailable
from vitte.models import (
    ACTIVE,
    ASSISTANT,
    KIND_NUDGE,
    MSG_OK,
    MSG_STREAMING,
    MSG_UNHEARD,
    USER,
    Dialog,
    Message,
    Nudge,
    Usage,
    User,
    table_of,
)
from vitte.prepared import Prepared

NUDGES = table_of(Nudge)
DIALOGS = table_of(Dialog)
MESSAGES = table_of(Message)
USERS = table_of(User)
USAGE = table_of(Usage)
HIDDEN = (MSG_STREAMING, MSG_UNHEARD)  # never in a prompt (as `DialogStore.recent`)


def _newest(*where: Any) -> Any:
    """The id of the dialog's newest message matching `where` (a subquery correlated with the
    dialogs row of the enclosing statement)."""
    return (
        sa.select(sa.func.max(MESSAGES.c.id))
        .where(MESSAGES.c.dialog_id == DIALOGS.c.id, *where)
        .correlate(DIALOGS)
        .scalar_subquery()
    )


def _fresh() -> Any:
    from vitte.dialogs.store import with_player

    newest = _newest(MESSAGES.c.role == USER)
    # the newest message a prompt would show (any role): a batch's prefetched turns still hold
    newest_shown = _newest(
        *(MESSAGES.c.status != sa.literal_column(f"'{status}'") for status in HIDDEN)  # no bind: prepared
    )
    return with_player(newest, newest_shown).where(DIALOGS.c.id == sa.bindparam("dialog_id"))


def _held() -> Any:
    return sa.and_(
        NUDGES.c.dialog_id == sa.bindparam("dialog_id"),
        NUDGES.c.claim_token == sa.bindparam("token"),
        NUDGES.c.message_id.is_(None),
    )


def _mark_pg() -> Any:
    """PostgreSQL: the nudge's message inserted only while the row is this claim's, and its id
    written on the row: one statement (a data-modifying CTE)."""
    source = sa.select(
        sa.bindparam("dialog_id", type_=sa.BigInteger()).label("dialog_id"),
        sa.literal_column(f"'{ASSISTANT}'").label("role"),
        sa.bindparam("text", type_=sa.Text()).label("text"),
        sa.literal_column(f"'{MSG_OK}'").label("status"),
        sa.literal_column(f"'{KIND_NUDGE}'").label("kind"),
        sa.bindparam("now", type_=MESSAGES.c.created_at.type).label("created_at"),
    ).where(sa.exists().where(_held()))
    added = (
        sa.insert(MESSAGES)
        .from_select(["dialog_id", "role", "text", "status", "kind", "created_at"], source)
        .returning(MESSAGES.c.id)
        .cte("added")
    )
    return (
        sa.update(NUDGES)
        .where(_held())
        .values(message_id=sa.select(added.c.id).scalar_subquery())
        .returning(NUDGES.c.message_id)
        .add_cte(added)
    )


def _sent_pg(p: str = "") -> Any:
    """PostgreSQL: the message's Telegram id (when known) and the row released with its next
    time: one statement. `p`: a prefix of the parameters' names (SQLAlchemy refuses a column's
    own name in an executemany UPDATE)."""
    delivered = (
        sa.update(MESSAGES)
        .where(MESSAGES.c.id == sa.bindparam(f"{p}msg_id"))
        .values(
            telegram_message_id=sa.func.coalesce(
                sa.bindparam(f"{p}telegram_message_id", type_=sa.BigInteger()), MESSAGES.c.telegram_message_id
            )
        )
        .cte("delivered")
    )
    return (
        sa.update(NUDGES)
        .where(
            NUDGES.c.dialog_id == sa.bindparam(f"{p}dialog_id"),
            NUDGES.c.claim_token == sa.bindparam(f"{p}token"),
        )
        .values(
            message_id=sa.null(),
            unanswered=sa.bindparam(f"{p}unanswered"),
            last_nudge_at=sa.bindparam(f"{p}now", type_=NUDGES.c.last_nudge_at.type),
            due_at=sa.bindparam(f"{p}due", type_=NUDGES.c.due_at.type),
            claim_token=sa.null(),
            lease_until=sa.null(),
        )
        .add_cte(delivered)
    )


FRESH = Prepared(
    lambda _dialect: _fresh(), "a nudge's dialog, player and newest player message", idempotent=True
)
MARK_PG = Prepared(lambda _dialect: _mark_pg(), "a nudge stored and marked on its row")
SENT_STMT = _sent_pg("b_")
SENT_PG = Prepared(lambda _dialect: _sent_pg(), "a nudge recorded sent, its row released", idempotent=True)


@dataclass(frozen=True, slots=True)
class Claimed:
    """A claimed row and what one batched read knows about its dialog and player."""

    dialog_id: int
    user_id: int
    due_at: datetime
    unanswered: int
    last_nudge_at: datetime | None
    message_id: int | None  # the mark of a send a crash interrupted
    active: bool = False  # the dialog is still the player's active one
    dialog_created_at: datetime | None = None
    last_player_at: datetime | None = None  # the player's newest message in the dialog
    last_player_id: int = 0  # its id (ids, not times, tell what came after what)
    last_nudge_id: int = 0  # the newest nudge's message id in the dialog
    language: str = "ru"
    settings: dict[str, Any] | None = None
    blocked: bool = False
    adult: bool = False
    unreachable_at: datetime | None = None  # the player blocked the bot (403) then
    premium_until: datetime | None = None
    extra_replies: int = 0
    used_today: int = 0
    delivered: bool = False  # the marked message has its Telegram id


@dataclass(frozen=True, slots=True)
class Sent:
    """A nudge Telegram took: its row's release (`Schedule.sent_many`)."""

    dialog_id: int
    message_id: int
    telegram_message_id: int | None
    now: datetime
    next_due: datetime
    unanswered: int


@dataclass(frozen=True, slots=True)
class Listed:
    dialog_id: int
    user_id: int
    due_at: datetime
    unanswered: int
    last_nudge_at: datetime | None


def new_token() -> str:
    return uuid.uuid4().hex


class Schedule:
    """The schedule's statements (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        # `fresh` builds models from rows (`model_from_row`) before any ORM query may have run
        # in this process (`vitte run-scheduler`): their attributes need the mappers configured
        configure_mappers()

    @property
    def postgres(self) -> bool:
        return self.db.engine.dialect.name == "postgresql"

    async def backfill(self, now: datetime) -> int:
        """A row, due now, for every active dialog without one (dialogs opened before the
        schedule existed, or by a path that did not add one); the rows of dialogs no longer
        active dropped. The claim then computes the real time from the dialog's messages."""
        async with self.db.engine.begin() as conn:
            await conn.execute(
                sa.delete(NUDGES).where(
                    ~sa.exists().where(DIALOGS.c.id == NUDGES.c.dialog_id, DIALOGS.c.status == ACTIVE)
                )
            )
            at = sa.literal(now, NUDGES.c.due_at.type)
            missing = sa.select(DIALOGS.c.id, DIALOGS.c.user_id, at, at).where(
                DIALOGS.c.status == ACTIVE,
                ~sa.exists().where(NUDGES.c.dialog_id == DIALOGS.c.id),
            )
            done = await conn.execute(
                sa.insert(NUDGES)
                .from_select(["dialog_id", "user_id", "due_at", "created_at"], missing)
                .returning(NUDGES.c.dialog_id)
            )
            return len(done.all())

    async def claim(
        self,
        now: datetime,
        limit: int,
        token: str,
        lease_until: datetime,
        *,
        user_id: int | None = None,
        any_time: bool = False,
    ) -> list[Claimed]:
        """Claim up to `limit` due rows (or the player's row, `user_id`; `any_time`: due or
        not) nobody holds, and read what deciding needs: one UPDATE … RETURNING and one
        batched read."""
        pick = sa.select(NUDGES.c.dialog_id).where(
            sa.or_(NUDGES.c.lease_until.is_(None), NUDGES.c.lease_until < now)
        )
        if not any_time:
            pick = pick.where(NUDGES.c.due_at <= now)
        if user_id is not None:
            pick = pick.where(NUDGES.c.user_id == user_id)
        pick = pick.order_by(NUDGES.c.due_at).limit(limit)
        if self.postgres:
            pick = pick.with_for_update(skip_locked=True)
        stmt = (
            sa.update(NUDGES)
            .where(NUDGES.c.dialog_id.in_(pick.scalar_subquery()))
            .values(claim_token=token, lease_until=lease_until)
            .returning(
                NUDGES.c.dialog_id, NUDGES.c.user_id, NUDGES.c.due_at, NUDGES.c.unanswered,
                NUDGES.c.last_nudge_at, NUDGES.c.message_id,
            )
        )  # fmt: skip
        async with self.db.engine.begin() as conn:
            rows = (await conn.execute(stmt)).all()
        if not rows:
            return []
        return await self.read([tuple(r) for r in rows], now.date())

    async def read(self, rows: Sequence[tuple[Any, ...]], today: date) -> list[Claimed]:
        """The claimed rows' dialogs, players, today's usage and the player's last message in
        each dialog: one statement for the whole batch."""
        ids = [int(r[0]) for r in rows]
        last_player_id = _newest(MESSAGES.c.role == USER)
        last_nudge_id = _newest(MESSAGES.c.kind == KIND_NUDGE)
        player_msg = MESSAGES.alias("player_msg")
        used = (
            sa.select(USAGE.c.replies)
            .where(USAGE.c.user_id == USERS.c.id, USAGE.c.day == today)
            .correlate(USERS)
            .scalar_subquery()
        )
        delivered = (
            sa.select(MESSAGES.c.telegram_message_id)
            .where(MESSAGES.c.id == NUDGES.c.message_id)
            .correlate(NUDGES)
            .scalar_subquery()
        )
        stmt = (
            sa.select(
                NUDGES.c.dialog_id, DIALOGS.c.status, DIALOGS.c.created_at, player_msg.c.created_at,
                USERS.c.language, USERS.c.settings, USERS.c.blocked_at, USERS.c.adult_confirmed_at,
                USERS.c.unreachable_at, USERS.c.premium_until, USERS.c.extra_replies, used, delivered,
                player_msg.c.id, last_nudge_id,
            )
            .select_from(
                NUDGES.outerjoin(DIALOGS, DIALOGS.c.id == NUDGES.c.dialog_id)
                .outerjoin(USERS, USERS.c.id == DIALOGS.c.user_id)
                .outerjoin(player_msg, player_msg.c.id == last_player_id)
            )
            .where(NUDGES.c.dialog_id.in_(ids))
        )  # fmt: skip
        async with self.db.engine.connect() as conn:
            found = {int(r[0]): r for r in (await conn.execute(stmt)).all()}
        out: list[Claimed] = []
        for dialog_id, user_id, due_at, unanswered, last_nudge_at, message_id in rows:
            f = found.get(int(dialog_id))
            base = dict(
                dialog_id=int(dialog_id), user_id=int(user_id), due_at=due_at, unanswered=int(unanswered or 0),
                last_nudge_at=last_nudge_at, message_id=int(message_id) if message_id is not None else None,
            )  # fmt: skip
            if f is None or f[1] != ACTIVE or f[4] is None:
                out.append(Claimed(**base))
                continue
            out.append(
                Claimed(
                    **base,
                    active=True,
                    dialog_created_at=f[2],
                    last_player_at=_aware(f[3]),
                    language=str(f[4]),
                    settings=f[5] if isinstance(f[5], dict) else {},
                    blocked=f[6] is not None,
                    adult=f[7] is not None,
                    unreachable_at=_aware(f[8]),
                    premium_until=f[9],
                    extra_replies=int(f[10] or 0),
                    used_today=int(f[11] or 0),
                    delivered=f[12] is not None,
                    last_player_id=int(f[13] or 0),
                    last_nudge_id=int(f[14] or 0),
                )
            )
        return out

    async def fresh(self, dialog_id: int) -> tuple[Dialog, User, int, int] | None:
        """The dialog, its player, the id of the player's newest message in it and of the newest
        message a prompt shows (0: none), read again under the player's turn: one prepared
        statement (None: the dialog is gone)."""
        from vitte.dialogs.store import split

        async with unavailable_as(StoreUnavailable), self.db.raw() as conn:
            row = await conn.first(FRESH, {"dialog_id": dialog_id})
        if row is None:
            return None
        dialog, user = split(row)
        return dialog, user, int(row[-2] or 0), int(row[-1] or 0)

    async def recent_many(self, dialog_ids: Sequence[int], limit: int) -> dict[int, list[CachedMessage]]:
        """Each dialog's newest `limit` messages a prompt shows, oldest first (as
        `DialogStore.recent`), for a whole batch: one statement."""
        if not dialog_ids or limit <= 0:
            return {}
        rank = sa.func.row_number().over(partition_by=MESSAGES.c.dialog_id, order_by=MESSAGES.c.id.desc())
        inner = (
            sa.select(MESSAGES.c.dialog_id, MESSAGES.c.id, MESSAGES.c.role, MESSAGES.c.text, MESSAGES.c.status,
                      rank.label("rank"))
            .where(MESSAGES.c.dialog_id.in_(list(dialog_ids)), MESSAGES.c.status.not_in(HIDDEN))
            .subquery()
        )  # fmt: skip
        stmt = (
            sa.select(inner.c.dialog_id, inner.c.id, inner.c.role, inner.c.text, inner.c.status)
            .where(inner.c.rank <= limit)
            .order_by(inner.c.dialog_id, inner.c.id)
        )
        out: dict[int, list[CachedMessage]] = {int(d): [] for d in dialog_ids}
        async with unavailable_as(StoreUnavailable), self.db.engine.connect() as conn:
            for d, mid, role, text, status in (await conn.execute(stmt)).all():
                out[int(d)].append(CachedMessage(int(mid), str(role), str(text), str(status)))
        return out

    async def reschedule(self, token: str, moves: Iterable[tuple[int, datetime, int]]) -> None:
        """Release claimed rows with their next time and unanswered count (one transaction)."""
        params = [{"d": d, "due": due, "u": u, "t": token} for d, due, u in moves]
        if not params:
            return
        stmt = (
            sa.update(NUDGES)
            .where(NUDGES.c.dialog_id == sa.bindparam("d"), NUDGES.c.claim_token == sa.bindparam("t"))
            .values(
                due_at=sa.bindparam("due"), unanswered=sa.bindparam("u"), claim_token=None, lease_until=None
            )
        )
        async with self.db.engine.begin() as conn:
            await conn.execute(stmt, params)

    async def drop(self, dialog_ids: Sequence[int]) -> None:
        if dialog_ids:
            async with self.db.engine.begin() as conn:
                await conn.execute(sa.delete(NUDGES).where(NUDGES.c.dialog_id.in_(list(dialog_ids))))

    async def mark(self, dialog_id: int, token: str, text: str, now: datetime) -> int | None:
        """The nudge stored in its dialog (marked as the persona's initiative) and its id
        written on the claimed row, at once: the idempotency mark. None (nothing stored) when
        the claim was lost (its lease ran out and another process took it). PostgreSQL: one
        statement (the INSERT only while the row is still this claim's, in a CTE); SQLite:
        one transaction."""
        if self.postgres:
            async with unavailable_as(StoreUnavailable), self.db.raw() as conn:
                found = await conn.first(
                    MARK_PG, {"dialog_id": dialog_id, "token": token, "text": text, "now": now}
                )
            return int(found[0]) if found is not None and found[0] is not None else None
        held = sa.and_(
            NUDGES.c.dialog_id == dialog_id, NUDGES.c.claim_token == token, NUDGES.c.message_id.is_(None)
        )
        row = {"dialog_id": dialog_id, "role": ASSISTANT, "text": text, "status": MSG_OK, "kind": KIND_NUDGE,
               "created_at": now}  # fmt: skip
        async with self.db.engine.begin() as conn:
            message_id = (
                await conn.execute(sa.insert(MESSAGES).values(**row).returning(MESSAGES.c.id))
            ).scalar_one()
            done = await conn.execute(sa.update(NUDGES).where(held).values(message_id=message_id))
            if done.rowcount != 1:
                await conn.rollback()
                return None
        return int(message_id)

    async def sent(
        self,
        dialog_id: int,
        token: str,
        message_id: int,
        telegram_message_id: int | None,
        now: datetime,
        next_due: datetime,
        unanswered: int,
    ) -> None:
        """The nudge went out (or a crash left it unconfirmed: `telegram_message_id` None):
        the mark cleared, the count and the next time written, the claim released."""
        if self.postgres:  # one prepared statement: the message's Telegram id in a CTE
            params = {
                "dialog_id": dialog_id, "token": token, "msg_id": message_id,
                "telegram_message_id": telegram_message_id, "unanswered": unanswered, "now": now, "due": next_due,
            }  # fmt: skip
            async with unavailable_as(StoreUnavailable), self.db.raw() as conn:
                await conn.rows(SENT_PG, params)
            return
        release = (
            sa.update(NUDGES)
            .where(NUDGES.c.dialog_id == dialog_id, NUDGES.c.claim_token == token)
            .values(
                message_id=None, unanswered=unanswered, last_nudge_at=now, due_at=next_due,
                claim_token=None, lease_until=None,
            )
        )  # fmt: skip
        delivered = (
            sa.update(MESSAGES)
            .where(MESSAGES.c.id == message_id)
            .values(telegram_message_id=telegram_message_id)
        )
        async with self.db.engine.begin() as conn:
            if telegram_message_id is not None:
                await conn.execute(delivered)
            await conn.execute(release)

    async def sent_many(self, token: str, done: Sequence[Sent]) -> None:
        """`sent` for a batch's nudges at once (PostgreSQL: one executemany, pipelined by the
        driver; SQLite: one transaction)."""
        if not done:
            return
        if not self.postgres:
            for x in done:
                await self.sent(x.dialog_id, token, x.message_id, x.telegram_message_id, x.now, x.next_due,
                                x.unanswered)  # fmt: skip
            return
        params = [
            {"b_dialog_id": x.dialog_id, "b_token": token, "b_msg_id": x.message_id,
             "b_telegram_message_id": x.telegram_message_id, "b_unanswered": x.unanswered, "b_now": x.now,
             "b_due": x.next_due}
            for x in done
        ]  # fmt: skip
        async with unavailable_as(StoreUnavailable), self.db.engine.begin() as conn:
            await conn.execute(SENT_STMT, params)

    async def unsend(self, dialog_id: int, token: str, message_id: int, retry_at: datetime) -> None:
        """Telegram refused the nudge for good (the player blocked the bot): its message is
        removed from the dialog and the row released for later."""
        async with self.db.engine.begin() as conn:
            await conn.execute(sa.delete(MESSAGES).where(MESSAGES.c.id == message_id))
            await conn.execute(
                sa.update(NUDGES)
                .where(NUDGES.c.dialog_id == dialog_id, NUDGES.c.claim_token == token)
                .values(message_id=None, due_at=retry_at, claim_token=None, lease_until=None)
            )

    async def reachable_again(self, user_ids: Sequence[int]) -> None:
        """The players wrote after Telegram said they blocked the bot: reachable again."""
        if user_ids:
            async with self.db.engine.begin() as conn:
                await conn.execute(
                    sa.update(USERS).where(USERS.c.id.in_(list(user_ids))).values(unreachable_at=None)
                )

    async def mark_unreachable(self, user_id: int, now: datetime) -> None:
        async with self.db.engine.begin() as conn:
            await conn.execute(
                sa.update(USERS)
                .where(USERS.c.id == user_id, USERS.c.unreachable_at.is_(None))
                .values(unreachable_at=now)
            )

    async def listing(
        self, *, due_before: datetime | None = None, user_id: int | None = None, limit: int = 100
    ) -> list[Listed]:
        stmt = (
            sa.select(
                NUDGES.c.dialog_id,
                NUDGES.c.user_id,
                NUDGES.c.due_at,
                NUDGES.c.unanswered,
                NUDGES.c.last_nudge_at,
            )
            .order_by(NUDGES.c.due_at)
            .limit(limit)
        )
        if due_before is not None:
            stmt = stmt.where(NUDGES.c.due_at <= due_before)
        if user_id is not None:
            stmt = stmt.where(NUDGES.c.user_id == user_id)
        async with self.db.engine.connect() as conn:
            return [
                Listed(int(r[0]), int(r[1]), r[2], int(r[3]), r[4]) for r in (await conn.execute(stmt)).all()
            ]

    async def counts(self, now: datetime) -> dict[str, int]:
        """For /stats: rows scheduled, due now, nudges sent (messages marked) and players unreachable."""
        async with self.db.engine.connect() as conn:
            scheduled = (await conn.execute(sa.select(sa.func.count()).select_from(NUDGES))).scalar_one()
            due = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(NUDGES).where(NUDGES.c.due_at <= now)
                )
            ).scalar_one()
            sent = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(MESSAGES).where(MESSAGES.c.kind == KIND_NUDGE)
                )
            ).scalar_one()
            unreachable = (
                await conn.execute(
                    sa.select(sa.func.count()).select_from(USERS).where(USERS.c.unreachable_at.is_not(None))
                )
            ).scalar_one()
        return {
            "nudges_scheduled": int(scheduled),
            "nudges_due": int(due),
            "nudges_sent": int(sent),
            "players_unreachable": int(unreachable),
        }


def _aware(value: Any) -> datetime | None:
    from datetime import UTC

    if value is None:
        return None
    if isinstance(value, str):  # SQLite's scalar subquery comes back untyped
        value = datetime.fromisoformat(value)
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
