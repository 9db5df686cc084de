"""Every SQL statement of dialogs and messages, once, built from the models' tables and
constants (`vitte.models`); the daily quota's part of the turn statement comes from
`vitte.billing.quota_upsert`, its one author.

The reply's hot path (`ACTIVE_ROW*`, `STORE_TURN`, `COUNT_AND_STORE_TURN`, `FINISH`) is
sent straight to the driver (`vitte.prepared`): each statement one round trip, committed on
its own. Everything else goes through SQLAlchemy sessions.

When a connection drops under a hot-path statement (a restart, `pg_terminate_backend`), the
statement is sent once more on a fresh connection where that cannot store anything twice:

- `ACTIVE_ROW`, `ACTIVE_ROW_VERSIONED`: reads, always.
- `FINISH`: always. It sets the reply's row to values (text, status) by id; run twice, the row
  is the same. Nothing else writes that row meanwhile: the reply's turn holds the player's lock,
  and crash recovery touches only rows left 'streaming' by a process that died.
- `STORE_TURN`, `COUNT_AND_STORE_TURN`: only when the error proves the statement did not commit
  (`vitte.prepared.never_ran`: PostgreSQL's admin_shutdown FATAL, what a terminated backend or a
  restart sends, which comes either before the statement was read or while it ran and was
  rolled back; never after its commit, which is answered first). They insert the player's
  message (and count today's quota): sent again after a commit that the lost answer hid, they
  would store the message twice and count it twice. Any other connection failure may have come
  after the commit, so the caller gets StoreUnavailable and the message is stored at most once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Date,
    Integer,
    String,
    Text,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.sql.expression import ColumnElement, Select
from sqlmodel import col

from vitte.billing import quota_upsert
from vitte.cache.base import CachedMessage
from vitte.db import Database, unavailable_as
from vitte.errors import StoreUnavailable
from vitte.models import (
    ACTIVE,
    ASSISTANT,
    ENDED,
    MSG_INTERRUPTED,
    MSG_OK,
    MSG_STREAMING,
    MSG_UNHEARD,
    USER,
    Dialog,
    Fact,
    Message,
    Nudge,
    SafetyEvent,
    User,
    UTCDateTime,
    model_from_row,
    table_of,
    utcnow,
)
from vitte.players import insert_player_if_missing, restore_hold
from vitte.prepared import Prepared, RawConnection

DIALOGS, USERS, MESSAGES = table_of(Dialog), table_of(User), table_of(Message)
_DIALOG_KEYS = tuple(c.key for c in DIALOGS.c)
_USER_KEYS = tuple(c.key for c in USERS.c)
RECOVER_CHUNK = 500  # dialogs per statement (and cache drops at a time) in crash recovery


def cached(m: Message) -> CachedMessage:
    return CachedMessage(int(m.id or 0), m.role, m.text, m.status, m.created_at.timestamp())


def with_player(*extra: ColumnElement[Any]) -> Select[Any]:
    """A dialog joined with its player, the one way it is written: the dialog's columns, the
    player's, then `extra` (`split` makes the two rows of a result row)."""
    return select(*DIALOGS.c, *USERS.c, *extra).select_from(
        DIALOGS.join(USERS, USERS.c.id == DIALOGS.c.user_id)
    )


def reachable(dialog_id: Any) -> ColumnElement[bool]:
    """SQL, in a query that joins the dialog's player (`User`): the player can be written to
    unasked. Not so when Telegram said they blocked the bot (users.unreachable_at, set on any
    403) and they have not written in the dialog since: the nudges' rule
    (`vitte.initiative.nudger.unreachable`), the one every send nobody asked for keeps (the
    restart notices, the persona-removed notice)."""
    said = MESSAGES.alias("said")
    last_said_at = (
        select(func.max(said.c.created_at))
        .where(said.c.dialog_id == dialog_id, said.c.role == USER)
        .correlate_except(said)
        .scalar_subquery()
    )
    return or_(col(User.unreachable_at).is_(None), col(User.unreachable_at) < last_said_at)


def split(row: Sequence[Any]) -> tuple[Dialog, User]:
    """A `with_player` row as the dialog and the player (models built from the stored values)."""
    n, m = len(_DIALOG_KEYS), len(_DIALOG_KEYS) + len(_USER_KEYS)
    return model_from_row(Dialog, _DIALOG_KEYS, row[:n]), model_from_row(User, _USER_KEYS, row[n:m])


# ---------------------------------------------------------------------- the hot path
def _active_row_select(*versions: ColumnElement[Any]) -> Select[Any]:
    return with_player(*versions).where(DIALOGS.c.user_id == bindparam("user_id"), DIALOGS.c.status == ACTIVE)


def _xmin(table: Any) -> ColumnElement[str]:
    """PostgreSQL: a row's version (xmin changes with every UPDATE of the row), as text."""
    return literal_column(f"{table.name}.xmin::text", String())


ACTIVE_ROW = Prepared(_active_row_select(), "active dialog and player", idempotent=True)
# PostgreSQL: the same and each row's version: a reply may start from a row read earlier if
# the turn's statement finds the versions unchanged
ACTIVE_ROW_VERSIONED = Prepared(
    _active_row_select(_xmin(DIALOGS), _xmin(USERS)),
    "active dialog and player, with the rows' versions",
    idempotent=True,
)


def _turn_row(role: str, text: Any, telegram_message_id: Any, status: str) -> dict[str, Any]:
    """One of the turn's two message rows, as values for an INSERT."""
    return {
        "dialog_id": bindparam("dialog_id", type_=BigInteger()),
        "role": role,
        "text": text,
        "telegram_message_id": telegram_message_id,
        "status": status,
        "created_at": bindparam("now", type_=UTCDateTime()),
    }


_PLAYER_ROW = _turn_row(
    USER, bindparam("text", type_=Text()), bindparam("telegram_message_id", type_=BigInteger()), MSG_OK
)
_REPLY_ROW = _turn_row(ASSISTANT, "", None, MSG_STREAMING)

STORE_TURN = Prepared(
    insert(MESSAGES).values([_PLAYER_ROW, _REPLY_ROW]).returning(MESSAGES.c.id, MESSAGES.c.role),
    "player's message and the reply's placeholder",
)


def _count_and_store_turn() -> Any:
    """PostgreSQL: today's quota counted and the turn stored in ONE statement (data-modifying
    CTEs). The turn's rows are inserted only if the dialog is still active and, when versions
    are given, the dialog's and the player's rows are the versions the reply started from, and
    the quota took the reply. No row back: the daily quota is used up (the two-statement path
    then tries a pack reply or refuses). One row of NULLs: the rows changed (read them again),
    nothing done."""
    # psycopg's dialect writes every bind with its type (`%(day)s::DATE`)
    dialog_version = bindparam("dialog_version", type_=String())
    user_version = bindparam("user_version", type_=String())
    fresh = (
        select(literal(1))
        .select_from(DIALOGS.join(USERS, USERS.c.id == DIALOGS.c.user_id))
        .where(
            DIALOGS.c.id == bindparam("dialog_id", type_=BigInteger()),
            DIALOGS.c.status == ACTIVE,
            or_(
                dialog_version.is_(None),
                and_(_xmin(DIALOGS) == dialog_version, _xmin(USERS) == user_version),
            ),
        )
        .cte("fresh")
    )
    quota = quota_upsert(
        "postgresql",
        select(
            bindparam("user_id", type_=BigInteger()), bindparam("day", type_=Date()), literal(1, Integer())
        ).where(exists(select(literal(1)).select_from(fresh))),
    ).cte("quota")
    now = bindparam("now", type_=UTCDateTime())
    dialog_id = bindparam("dialog_id", type_=BigInteger())
    quota_took = exists(select(literal(1)).select_from(quota))
    rows = union_all(
        select(
            dialog_id,
            literal(USER, String()),
            bindparam("text", type_=Text()),
            bindparam("telegram_message_id", type_=BigInteger()),
            literal(MSG_OK, String()),
            now,
        ).where(quota_took),
        select(
            dialog_id,
            literal(ASSISTANT, String()),
            literal("", Text()),
            sql_cast(null(), BigInteger()),
            literal(MSG_STREAMING, String()),
            now,
        ).where(quota_took),
    )
    turn = (
        insert(MESSAGES)
        .from_select(["dialog_id", "role", "text", "telegram_message_id", "status", "created_at"], rows)
        .returning(MESSAGES.c.id, MESSAGES.c.role)
        .cte("turn")
    )
    stored = select(quota.c.replies, turn.c.id, turn.c.role).select_from(quota.join(turn, true()))
    changed = select(
        sql_cast(null(), Integer()), sql_cast(null(), BigInteger()), sql_cast(null(), String())
    ).where(~exists(select(literal(1)).select_from(fresh)))
    return union_all(stored, changed)


COUNT_AND_STORE_TURN = Prepared(
    lambda _dialect: _count_and_store_turn(),
    "quota counted, the player's message and the reply's placeholder stored",
)
FINISH = Prepared(
    update(MESSAGES)
    .where(MESSAGES.c.id == bindparam("message_id"))
    .values(text=bindparam("text", type_=Text()), status=bindparam("status", type_=String())),
    "the reply written",
    idempotent=True,  # values set by id, under the player's lock (see the module docstring)
)
HOT_STATEMENTS = (ACTIVE_ROW, ACTIVE_ROW_VERSIONED, STORE_TURN, FINISH, COUNT_AND_STORE_TURN)


@dataclass(slots=True)
class ActiveRow:
    """A player's active dialog and player row."""

    dialog: Dialog
    user: User
    # PostgreSQL: the rows' versions (xmin, changed by every UPDATE of a row)
    versions: tuple[str, str] | None


@dataclass(frozen=True, slots=True)
class Recovered:
    """What one recovery transaction did: replies marked, and the dialogs they were in."""

    marked: list[tuple[int, int]]  # (message id, dialog id)
    dialog_ids: list[int]
    waiting: list[tuple[int, int, str | None, int, str]]  # (dialog, user, language, last id, role)


class DialogStore:
    """The dialogs' and messages' SQL (see the module docstring)."""

    # a new dialog's first nudge time (vitte.initiative; None: nudges off), set by the core
    first_nudge: Callable[[int, datetime], datetime | None] | None = None

    def __init__(self, db: Database) -> None:
        self.db = db

    @property
    def versioned(self) -> bool:
        """The database tells rows' versions (PostgreSQL)."""
        return self.db.engine.dialect.name == "postgresql"

    # ------------------------------------------------------------------ the hot path
    async def active_row(self, user_id: int) -> ActiveRow | None:
        """The active dialog and its player: one statement (with versions on PostgreSQL)."""
        versioned = self.versioned
        async with unavailable_as(StoreUnavailable), self.db.raw() as conn:
            row = await conn.first(ACTIVE_ROW_VERSIONED if versioned else ACTIVE_ROW, {"user_id": user_id})
        if row is None:
            return None
        m = len(_DIALOG_KEYS) + len(_USER_KEYS)
        return ActiveRow(*split(row), (str(row[m]), str(row[m + 1])) if versioned else None)

    @staticmethod
    async def count_and_store_turn(conn: RawConnection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """`COUNT_AND_STORE_TURN`'s rows: (replies, message id, role) ×2, none, or one of NULLs."""
        return await conn.rows(COUNT_AND_STORE_TURN, params)

    @staticmethod
    async def store_turn(
        conn: RawConnection, dialog_id: int, text: str, telegram_message_id: int | None, now: datetime
    ) -> tuple[int, int]:
        """The player's message and the reply's placeholder: ONE multi-row INSERT … RETURNING,
        their ids. The rows are told apart by role, not by order (the database may return them
        in any order)."""
        rows = await conn.rows(
            STORE_TURN,
            {"dialog_id": dialog_id, "text": text, "telegram_message_id": telegram_message_id, "now": now},
        )
        return by_role(rows)

    async def finish(self, message_id: int, text: str, status: str) -> None:
        """The reply's row written."""
        async with unavailable_as(StoreUnavailable), self.db.raw() as conn:
            await conn.rows(FINISH, {"message_id": message_id, "text": text, "status": status})

    async def add_placeholder(self, dialog_id: int) -> int:
        """An empty reply row, 'streaming' until the reply is written."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            row = Message(dialog_id=dialog_id, role=ASSISTANT, text="", status=MSG_STREAMING)
            s.add(row)
            await s.commit()
            return int(row.id or 0)

    async def drop_placeholder(self, message_id: int) -> None:
        async with self.db.session() as s:
            await s.execute(
                delete(Message).where(col(Message.id) == message_id, col(Message.status) == MSG_STREAMING)
            )
            await s.commit()

    async def recent(self, dialog_id: int, limit: int) -> list[CachedMessage]:
        """The dialog's newest `limit` messages but a reply being written, oldest first."""
        async with unavailable_as(StoreUnavailable), self.db.session(autocommit=True) as s:
            rows = list(
                (
                    await s.execute(
                        select(Message)
                        .where(
                            col(Message.dialog_id) == dialog_id,
                            col(Message.status).not_in((MSG_STREAMING, MSG_UNHEARD)),
                        )
                        .order_by(col(Message.id).desc())
                        .limit(limit)
                    )
                ).scalars()
            )
        rows.reverse()
        return [cached(m) for m in rows]

    # ------------------------------------------------------------------ reads
    async def messages(self, dialog_id: int, limit: int) -> list[Message]:
        """The newest `limit` messages of a dialog, newest first."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            return list(
                (
                    await s.execute(
                        select(Message)
                        .where(col(Message.dialog_id) == dialog_id)
                        .order_by(col(Message.id).desc())
                        .limit(limit)
                    )
                ).scalars()
            )

    async def dialog_with_player(self, dialog_id: int) -> tuple[Dialog, User] | None:
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            row = (await s.execute(with_player().where(DIALOGS.c.id == dialog_id))).first()
        return split(row) if row is not None else None

    async def latest_with_player(self, user_id: int) -> tuple[Dialog, User] | None:
        """The active dialog, else the most recent ended one."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            row = (
                await s.execute(
                    with_player()
                    .where(DIALOGS.c.user_id == user_id)
                    .order_by((DIALOGS.c.status == ACTIVE).desc(), DIALOGS.c.id.desc())
                    .limit(1)
                )
            ).first()
        return split(row) if row is not None else None

    async def player(self, user_id: int) -> User | None:
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            return await s.get(User, user_id)

    async def last_persona_line(self, dialog_id: int) -> str:
        """The persona's last words in the dialog ("" when it said nothing yet)."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            last = (
                await s.execute(
                    select(col(Message.text))
                    .where(
                        col(Message.dialog_id) == dialog_id,
                        col(Message.role) == ASSISTANT,
                        col(Message.text) != "",
                    )
                    .order_by(col(Message.id).desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
        return last or ""

    async def has_player_messages(self, dialog_id: int) -> bool:
        async with self.db.session() as s:
            found = (
                await s.execute(
                    select(col(Message.id))
                    .where(col(Message.dialog_id) == dialog_id, col(Message.role) == USER)
                    .limit(1)
                )
            ).first()
        return found is not None

    async def first_message(self, dialog_id: int) -> Message | None:
        """The dialog's first message (its opening)."""
        async with self.db.session() as s:
            return (
                await s.execute(
                    select(Message)
                    .where(col(Message.dialog_id) == dialog_id)
                    .order_by(col(Message.id))
                    .limit(1)
                )
            ).scalar_one_or_none()

    # ------------------------------------------------------------------ voice (issue 19)
    async def add_spoken(
        self, dialog_id: int, kind: str, seconds: int, ref: str, telegram_message_id: int | None
    ) -> int:
        """The player's voice message, stored before it is transcribed ('unheard', no text)."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            row = Message(
                dialog_id=dialog_id,
                role=USER,
                text="",
                status=MSG_UNHEARD,
                telegram_message_id=telegram_message_id,
                media_kind=kind,
                media_seconds=seconds,
                media_ref=ref,
            )
            s.add(row)
            await s.commit()
            return int(row.id or 0)

    async def add_message(
        self,
        dialog_id: int,
        role: str,
        text: str,
        *,
        telegram_message_id: int | None = None,
        media_kind: str | None = None,
    ) -> int:
        """A complete message stored as it is (a photo request, the persona's photo turn)."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            row = Message(
                dialog_id=dialog_id,
                role=role,
                text=text,
                status=MSG_OK,
                telegram_message_id=telegram_message_id,
                media_kind=media_kind,
            )
            s.add(row)
            await s.commit()
            return int(row.id or 0)

    async def set_heard(self, message_id: int, text: str) -> None:
        """A voice message's transcript: its text, and it counts as said."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            await s.execute(
                update(Message).where(col(Message.id) == message_id).values(text=text, status=MSG_OK)
            )
            await s.commit()

    async def message_of(self, user_id: int, message_id: int) -> Message | None:
        """One message of the player's dialogs (None: not theirs, or gone)."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            return (
                await s.execute(
                    select(Message)
                    .join(Dialog, col(Dialog.id) == col(Message.dialog_id))
                    .where(col(Message.id) == message_id, col(Dialog.user_id) == user_id)
                )
            ).scalar_one_or_none()

    async def mark_delivered(self, message_id: int, telegram_message_id: int) -> None:
        """The message reached the chat as this Telegram message."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            await s.execute(
                update(Message)
                .where(col(Message.id) == message_id)
                .values(telegram_message_id=telegram_message_id)
            )
            await s.commit()

    # ------------------------------------------------------------------ the lifecycle
    async def open_dialog(
        self,
        user_id: int,
        persona_id: str,
        story_id: str,
        language_code: str | None,
        opening: Callable[[User, int], str],
    ) -> tuple[Dialog, User, Message, list[int]]:
        """End the player's active dialog and open a new one with its first message, in one
        transaction; the player's row is created on first sight. `opening(user, dialog_id)` gives
        the first message's text, or raises to refuse (nothing is kept). Returns the new dialog,
        the player, the first message and the ids of the dialogs ended."""
        now = utcnow()
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            if self.versioned:
                # PostgreSQL: openings of one player take turns across processes (a lock held
                # to the transaction's end, taken before any row). Else two processes opening
                # at once make one fail on the one-active-dialog index, and a process that
                # kept losing to a busy other one ran out of `Lifecycle` attempts (an error).
                # The key is the player's id (the project takes no other advisory locks).
                # SQLite has one writer at a time anyway.
                await s.execute(select(func.pg_advisory_xact_lock(sql_cast(user_id, BigInteger))))
            inserted = await s.execute(insert_player_if_missing(s, user_id, language_code))
            await restore_hold(s, user_id, inserted)  # today's count held after a deletion
            user = (await s.execute(select(User).where(col(User.id) == user_id))).scalar_one()
            ended = list(
                (
                    await s.execute(
                        update(Dialog)
                        .where(col(Dialog.user_id) == user_id, col(Dialog.status) == ACTIVE)
                        .values(status=ENDED, ended_at=now)
                        .returning(col(Dialog.id))
                    )
                ).scalars()
            )
            if ended:  # start over: the ended dialog's facts are forgotten with it
                await s.execute(delete(Fact).where(col(Fact.dialog_id).in_(ended)))
                await s.execute(delete(Nudge).where(col(Nudge.dialog_id).in_(ended)))
            dialog = Dialog(
                user_id=user_id, persona_id=persona_id, story_id=story_id, status=ACTIVE, created_at=now
            )
            s.add(dialog)
            await s.flush()
            due = self.first_nudge(int(dialog.id or 0), now) if self.first_nudge is not None else None
            if due is not None:  # issue 18: the dialog's row in the nudge schedule, with it
                s.add(Nudge(dialog_id=int(dialog.id or 0), user_id=user_id, due_at=due, created_at=now))
            text = opening(user, int(dialog.id or 0))  # a refusal here rolls everything back
            first = Message(
                dialog_id=int(dialog.id or 0), role=ASSISTANT, text=text, status=MSG_OK, created_at=now
            )
            s.add(first)
            user.active_persona_id = persona_id
            await s.flush()
            await s.commit()
        return dialog, user, first, [int(i) for i in cast("list[int]", ended)]

    async def end_active(self, user_id: int) -> None:
        """No active dialog (its memory cleared: summary and facts) and no active persona for the player."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            await s.execute(
                delete(Fact).where(
                    col(Fact.dialog_id).in_(
                        select(col(Dialog.id)).where(col(Dialog.user_id) == user_id, col(Dialog.status) == ACTIVE)
                    )
                )
            )
            await s.execute(
                update(Dialog)
                .where(col(Dialog.user_id) == user_id, col(Dialog.status) == ACTIVE)
                .values(status=ENDED, ended_at=utcnow(), summary="", summary_upto=0)
            )
            await s.execute(update(User).where(col(User.id) == user_id).values(active_persona_id=None))
            await s.commit()

    # ------------------------------------------------------------------ safety
    async def count_event(self, kind: str, language: str) -> None:
        """A counted safety event: kind and language only, never the player's text."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            s.add(SafetyEvent(kind=kind, language=language))
            await s.commit()

    # ------------------------------------------------------------------ crash recovery
    async def streaming_replies(self) -> list[tuple[int, int]]:
        """Every reply row still 'streaming': (message id, player id)."""
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(col(Message.id), col(Dialog.user_id))
                    .join(Dialog, col(Dialog.id) == col(Message.dialog_id))
                    .where(col(Message.status) == MSG_STREAMING)
                )
            ).all()
        return [(int(m or 0), int(u or 0)) for m, u in rows]

    async def recover(self, message_ids: Sequence[int]) -> Recovered:
        """Of these 'streaming' replies: those without a word are deleted, the rest marked
        interrupted; and, of the dialogs they were in, the active ones of players not blocked
        (nor unreachable: `_last_messages`) with their last message. One transaction, a few
        statements per RECOVER_CHUNK."""
        marked: list[tuple[int, int]] = []
        dropped: list[int] = []
        waiting: list[tuple[int, int, str | None, int, str]] = []
        async with self.db.session() as s:
            for i in range(0, len(message_ids), RECOVER_CHUNK):
                ids = message_ids[i : i + RECOVER_CHUNK]
                streaming = col(Message.id).in_(ids), col(Message.status) == MSG_STREAMING
                dropped += [
                    int(d)
                    for (d,) in (
                        await s.execute(
                            delete(Message)
                            .where(*streaming, col(Message.text) == "")
                            .returning(col(Message.dialog_id))
                        )
                    ).all()
                ]
                marked += [
                    (int(m or 0), int(d))
                    for m, d in (
                        await s.execute(
                            update(Message)
                            .where(*streaming)
                            .values(status=MSG_INTERRUPTED)
                            .returning(col(Message.id), col(Message.dialog_id))
                            .execution_options(synchronize_session=False)
                        )
                    ).all()
                ]
            dialog_ids = sorted(set(dropped) | {d for _m, d in marked})
            for i in range(0, len(dialog_ids), RECOVER_CHUNK):
                waiting += await self._last_messages(s, dialog_ids[i : i + RECOVER_CHUNK])
            await s.commit()
        return Recovered(marked, dialog_ids, waiting)

    @staticmethod
    async def _last_messages(s: Any, dialog_ids: list[int]) -> list[tuple[int, int, str | None, int, str]]:
        """Of these dialogs, the active ones of players not blocked and not unreachable, each
        with its last message's id and role: one SELECT. Unreachable: `reachable`."""
        later = MESSAGES.alias("later")
        last_id = (
            select(later.c.id)
            .where(later.c.dialog_id == col(Dialog.id))
            .order_by(later.c.id.desc())
            .limit(1)
            .correlate(Dialog)
            .scalar_subquery()
        )
        rows = await s.execute(
            select(
                col(Dialog.id), col(Dialog.user_id), col(User.language), col(Message.id), col(Message.role)
            )
            .join(User, col(User.id) == col(Dialog.user_id))
            .join(Message, col(Message.dialog_id) == col(Dialog.id))
            .where(
                col(Dialog.id).in_(dialog_ids),
                col(Dialog.status) == ACTIVE,
                col(User.blocked_at).is_(None),
                reachable(col(Dialog.id)),
                col(Message.id) == last_id,
            )
        )
        return [(int(d or 0), int(u), lang, int(m or 0), str(role)) for d, u, lang, m, role in rows]

    # ------------------------------------------------------------------ memory
    async def unfolded(self, dialog_id: int) -> tuple[Dialog, User, list[Message]] | None:
        """An active dialog, its player and its messages not folded into its memory yet."""
        async with self.db.session() as s:
            row = (await s.execute(with_player().where(DIALOGS.c.id == dialog_id))).first()
            if row is None:
                return None
            dialog, user = split(row)
            if dialog.status != ACTIVE:
                return None
            rows = list(
                (
                    await s.execute(
                        select(Message)
                        .where(
                            col(Message.dialog_id) == dialog_id,
                            col(Message.id) > dialog.summary_upto,
                            col(Message.status) != MSG_STREAMING,
                        )
                        .order_by(col(Message.id))
                    )
                ).scalars()
            )
        return dialog, user, rows

    async def save_summary(self, dialog_id: int, was_upto: int, summary: str, upto: int) -> bool:
        """The dialog's memory replaced, unless it changed since it was read (or ended)."""
        async with self.db.session() as s:
            result = await s.execute(
                update(Dialog)
                .where(
                    col(Dialog.id) == dialog_id,
                    col(Dialog.status) == ACTIVE,
                    col(Dialog.summary_upto) == was_upto,
                )
                .values(summary=summary, summary_upto=upto)
            )
            await s.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]


def by_role(rows: Sequence[Sequence[Any]]) -> tuple[int, int]:
    """The turn's (player's message id, reply's id) from rows ending in (…, id, role)."""
    ids = {row[-1]: int(row[-2]) for row in rows}
    return ids[USER], ids[ASSISTANT]
