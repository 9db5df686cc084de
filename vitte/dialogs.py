"""The dialogs engine: the one place for the seed's rules.

One active dialog per player (the database enforces it too); choose persona + story,
continue, start over (memory cleared, new dialog), reset; and the reply pipeline:
the player's message is stored before the LLM is called, the reply is stored when done,
a cut reply is marked, never shown as complete.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import (
    BigInteger,
    Date,
    Integer,
    String,
    Text,
    bindparam,
    column,
    delete,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy import text as sql_text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import ColumnElement, Select
from sqlmodel import col

from vitte.cache.base import Cache, CachedMessage, LockHold, Prefetch, user_key, window_remaining
from vitte.catalog.lookup import Catalog, PersonaInfo, StoryInfo
from vitte.config import Settings
from vitte.db import Database, unavailable_as
from vitte.errors import (
    AgeNotConfirmed,
    MessageTooLong,
    NoActiveDialog,
    NothingToRegenerate,
    PlayerBlocked,
    QuotaExceeded,
    RateLimited,
    ReplyFailed,
    StaleDialog,
    StoreUnavailable,
    VitteError,
)
from vitte.llm.base import LLM, LLMBadResponse, LLMError, LLMRequest
from vitte.metrics import observe_llm, waiting_for_lock
from vitte.models import (
    ACTIVE,
    ASSISTANT,
    ENDED,
    MSG_INTERRUPTED,
    MSG_OK,
    MSG_STOPPED,
    MSG_STREAMING,
    USER,
    Dialog,
    Message,
    SafetyEvent,
    User,
    UTCDateTime,
    model_from_row,
    table_of,
    utcnow,
)
from vitte.players import insert_player_if_missing, player_view
from vitte.prepared import Prepared, RawConnection
from vitte.prompt import (
    STYLE_MAX_TOKENS,
    PromptInput,
    build_messages,
    history_tokens,
    summary_messages,
)
from vitte.safety.crisis import CrisisCare, load_crisis_care
from vitte.safety.preamble import load_preamble

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from vitte.billing import Billing, QuotaDecision

log = logging.getLogger("vitte.dialogs")

OnText = Callable[[str], Awaitable[None]]

# the player locks the current task already holds (the bot takes one per update): user id ->
# the hold (`LockHold`: appends deferred to the release, whether the last holder crashed)
_holds: contextvars.ContextVar[dict[int, LockHold]] = contextvars.ContextVar("vitte_holds", default={})  # noqa: B039

# the player's active dialog row as read under their lock, valid while the lock is held
# (every change of a player's active dialog takes that lock): the bot's handler and the
# engine read it once per update. A fresh dict per lock hold; writes drop the entry.
_row_memo: contextvars.ContextVar[dict[int, _Row | None] | None] = contextvars.ContextVar(
    "vitte_row_memo", default=None
)


@dataclass(slots=True)
class _Row:
    """A player's active dialog and player row, as a lock hold knows them."""

    dialog: Dialog
    user: User
    # PostgreSQL: the rows' versions (xmin, changed by every UPDATE of a row)
    versions: tuple[str, str] | None
    # read from the database under this hold, or confirmed by the turn's statement; False: a
    # row this process read earlier (`DialogEngine._known`), to be confirmed before it counts
    verified: bool = True


STALE_ROW_ATTEMPTS = 3  # a reply reads the player's rows again at most this often
KNOWN_ROWS = 4096  # players whose active row a process remembers between their messages
KNOWN_ROW_SECONDS = 300.0  # how long such a row is offered (each use is confirmed anyway)

# the hot path's first read, built once (a statement costs more to build than to cache-hit)
# the reply's hot path: statements sent straight to the driver (vitte/prepared.py)
_DIALOG_KEYS = tuple(c.key for c in table_of(Dialog).c)
_USER_KEYS = tuple(c.key for c in table_of(User).c)


def _active_row_select(*versions: ColumnElement[Any]) -> Select[Any]:
    return (
        select(*table_of(Dialog).c, *table_of(User).c, *versions)
        .join(table_of(User), table_of(User).c.id == table_of(Dialog).c.user_id)
        .where(table_of(Dialog).c.user_id == bindparam("user_id"), table_of(Dialog).c.status == ACTIVE)
    )


_ACTIVE_ROW = Prepared(_active_row_select(), "active dialog and player")
# PostgreSQL: the same and each row's version (xmin changes with every UPDATE of a row): a
# reply may start from a row read earlier if the turn's statement finds the versions unchanged
_ACTIVE_ROW_VERSIONED = Prepared(
    _active_row_select(
        literal_column("dialogs.xmin::text", String()), literal_column("users.xmin::text", String())
    ),
    "active dialog and player, with the rows' versions",
)
_STORE_TURN = Prepared(
    insert(table_of(Message))
    .values(
        [
            {
                "dialog_id": bindparam("dialog_id", type_=BigInteger()),
                "role": USER,
                "text": bindparam("text", type_=Text()),
                "telegram_message_id": bindparam("telegram_message_id", type_=BigInteger()),
                "status": MSG_OK,
                "created_at": bindparam("now", type_=UTCDateTime()),
            },
            {
                "dialog_id": bindparam("dialog_id", type_=BigInteger()),
                "role": ASSISTANT,
                "text": "",
                "telegram_message_id": None,
                "status": MSG_STREAMING,
                "created_at": bindparam("now", type_=UTCDateTime()),
            },
        ]
    )
    .returning(table_of(Message).c.id, table_of(Message).c.role),
    "player's message and the reply's placeholder",
)
# PostgreSQL: today's quota counted and the turn stored in ONE statement (data-modifying CTEs);
# the turn's rows are inserted only if the dialog is still active and, when versions are given,
# the dialog's and the player's rows are the versions the reply started from, and the quota
# took the reply. No row back: the daily quota is used up (the two-statement path then tries a
# pack reply or refuses). One row of NULLs: the rows changed (read them again), nothing done.
_COUNT_AND_STORE_TURN = Prepared(
    sql_text(
        """
WITH fresh AS (
    SELECT 1 FROM dialogs d JOIN users u ON u.id = d.user_id
    WHERE d.id = :dialog_id AND d.status = 'active' AND (
        CAST(:dialog_version AS TEXT) IS NULL
        OR (d.xmin::text = CAST(:dialog_version AS TEXT) AND u.xmin::text = CAST(:user_version AS TEXT))
    )
), quota AS (
    INSERT INTO usage (user_id, day, replies) SELECT :user_id, :day, 1 WHERE EXISTS (SELECT 1 FROM fresh)
    ON CONFLICT (user_id, day) DO UPDATE SET replies = usage.replies + 1
    WHERE usage.replies < :limit
    RETURNING replies
), turn AS (
    INSERT INTO messages (dialog_id, role, text, telegram_message_id, status, created_at)
    SELECT v.dialog_id, v.role, v.text, v.telegram_message_id, v.status, v.created_at
    FROM (VALUES
        (CAST(:dialog_id AS BIGINT), 'user', CAST(:text AS TEXT), CAST(:telegram_message_id AS BIGINT),
         'ok', CAST(:now AS TIMESTAMP WITH TIME ZONE)),
        (CAST(:dialog_id AS BIGINT), 'assistant', '', CAST(NULL AS BIGINT),
         'streaming', CAST(:now AS TIMESTAMP WITH TIME ZONE))
    ) AS v (dialog_id, role, text, telegram_message_id, status, created_at)
    WHERE EXISTS (SELECT 1 FROM quota)
    RETURNING id, role
)
SELECT quota.replies, turn.id, turn.role FROM quota, turn
UNION ALL SELECT NULL, NULL, NULL WHERE NOT EXISTS (SELECT 1 FROM fresh)
"""
    )
    .bindparams(
        bindparam("day", type_=Date()),
        bindparam("now", type_=UTCDateTime()),
        bindparam("limit", type_=Integer()),
        bindparam("dialog_version", type_=String()),
        bindparam("user_version", type_=String()),
    )
    .columns(column("replies", Integer()), column("id", BigInteger()), column("role", String())),
    "quota counted, the player's message and the reply's placeholder stored",
)
_FINISH = Prepared(
    update(table_of(Message))
    .where(table_of(Message).c.id == bindparam("message_id"))
    .values(text=bindparam("text", type_=Text()), status=bindparam("status", type_=String())),
    "the reply written",
)


# a double click within this window returns the dialog the first click opened
DOUBLE_CLICK_SECONDS = 10.0

# the per-player rate limit on LLM replies counts in fixed windows of this length
RATE_WINDOW_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class DialogView:
    id: int
    user_id: int
    persona_id: str
    persona_name: str  # in the player's language
    story_id: str | None
    story_title: str
    status: str
    summary: str
    created_at: datetime
    language: str


@dataclass(frozen=True, slots=True)
class Opening:
    """A dialog just opened, with the persona's first message (already stored)."""

    dialog: DialogView
    text: str
    message_id: int
    reused: bool = False  # a double click: the dialog opened by the first click


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    dialog_id: int
    message_id: int
    text: str
    status: str  # ok | stopped
    replaced: bool = False  # a regenerated reply that replaced the previous one
    quota: QuotaDecision | None = None  # the reply counted against the quota (low_quota_notice)
    crisis: bool = False  # the player's message was a crisis signal: also send crisis_resources()


@dataclass(frozen=True, slots=True)
class MessageView:
    id: int
    role: str
    text: str
    status: str
    created_at: datetime


def _cached(m: Message) -> CachedMessage:
    return CachedMessage(int(m.id or 0), m.role, m.text, m.status)


def _admitted(user: User) -> bool:
    return user.blocked_at is None and user.adult_confirmed_at is not None


class DialogEngine:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        cache: Cache,
        llm: LLM,
        catalog: Catalog | None = None,
        preamble: Callable[[str], str] | None = None,
        billing: Billing | None = None,
        crisis: CrisisCare | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.cache = cache
        self.llm = llm
        self.catalog = catalog or Catalog(db)
        # the operator's safety preamble, first in every reply's prompt (vitte/safety)
        self.preamble: Callable[[str], str] = preamble or load_preamble(settings)
        self.crisis = crisis or load_crisis_care(settings)
        self.rate_window = RATE_WINDOW_SECONDS  # VITTE_RATE_LIMIT_PER_MINUTE counts in this window
        self.billing = billing  # the daily quota (None: unlimited)
        self._background: set[asyncio.Task[None]] = set()
        self._folding: set[int] = set()
        # PostgreSQL: players' active rows read by earlier replies (user id -> row, versions,
        # when read); a reply starts from one and its turn's statement confirms the versions
        self._known: OrderedDict[int, tuple[Dialog, User, tuple[str, str], float]] = OrderedDict()

    # ------------------------------------------------------------------ locks
    @contextlib.asynccontextmanager
    async def player_lock(
        self, user_id: int, *, seen: tuple[str, float] | None = None, replying: bool = False
    ) -> AsyncIterator[LockHold]:
        """One operation at a time per player, across processes with Redis; re-entrant per task.

        `seen`: an update's de-duplication key and ttl, checked as the lock is taken when that
        costs nothing more (`LockHold.first_seen`, None when not checked). `replying`: the
        holder will likely ask for a `reply`: what it reads from the cache first (the rate
        count, the recent messages of the dialog this process last saw) is read with the lock."""
        holds = _holds.get()
        outer = holds.get(user_id)
        if outer is not None:
            yield outer if seen is None else LockHold()
            return
        prefetch = None
        if replying and self.settings.rate_limit_per_minute > 0:
            known = self._known.get(user_id)
            if known is not None:
                prefetch = Prefetch(user_key(user_id, "replies"), self.rate_window, int(known[0].id or 0))
        async with contextlib.AsyncExitStack() as stack:
            with waiting_for_lock():  # the queue depth, for the operator (vitte.metrics)
                hold = await stack.enter_async_context(
                    self.cache.user_lock(user_id, self.settings.lock_lease, seen=seen, prefetch=prefetch)
                )
            token = _holds.set({**holds, user_id: hold})
            memo = _row_memo.set({})
            try:
                yield hold
            finally:
                _row_memo.reset(memo)
                _holds.reset(token)

    async def _send_deferred(self, hold: LockHold | None, dialog_id: int) -> bool:
        """The hold's appends deferred to its release for this dialog, sent now (what comes next
        must see them); True when there were any."""
        pending = hold.appends.pop(dialog_id, None) if hold is not None else None
        if pending:
            await self.cache.recent_append(dialog_id, *pending)
        return bool(pending)

    async def _cache_append(self, user_id: int, dialog_id: int, *messages: CachedMessage) -> None:
        """Append to the dialog's cached messages: with the lock's release when the player's
        lock is held here (one round trip less), else now."""
        hold = _holds.get().get(user_id)
        if hold is None or not hold.defer_append(dialog_id, *messages):
            await self.cache.recent_append(dialog_id, *messages)

    # ------------------------------------------------------------------ trust and safety (vitte/safety)
    @staticmethod
    def _admit(user: User | None) -> None:
        """A blocked player gets PlayerBlocked, one without the 18+ confirmation AgeNotConfirmed."""
        if user is None:
            raise AgeNotConfirmed()
        if user.blocked_at is not None:
            raise PlayerBlocked(user.blocked_reason)
        if user.adult_confirmed_at is None:
            raise AgeNotConfirmed()

    async def _admitted_active(
        self, user_id: int, *, crisis: bool = False, optimistic: bool = False
    ) -> tuple[Dialog, User]:
        """The active dialog of an admitted player (the stored row decides), else PlayerBlocked,
        AgeNotConfirmed or NoActiveDialog, in that order. A crisis signal is counted here.
        `optimistic`: see `_active_row`."""
        row = await self._active_row(user_id, optimistic=optimistic)
        if optimistic and row is not None and not _admitted(row[1]):
            row = await self._active_row(user_id)  # refused by an unconfirmed row: read it
        if row is None:
            async with unavailable_as(StoreUnavailable), self.db.session() as s:
                self._admit(await s.get(User, user_id))
            raise NoActiveDialog()
        self._admit(row[1])
        if crisis:
            await self._count_event("crisis", player_view(row[1]).language)
        return row

    async def _rate_check_and_recent(self, user_id: int, dialog_id: int) -> list[CachedMessage]:
        """RateLimited when the player asked for more replies than VITTE_RATE_LIMIT_PER_MINUTE,
        else the dialog's recent messages (`_recent`): one cache round trip for both.

        Under a lock whose last holder crashed (`LockHold.suspect`) the messages come from the
        database (and are cached again): the crashed holder may have left the cache stale."""
        hold = _holds.get().get(user_id)
        fresh = False
        if hold is not None:
            if await self._send_deferred(hold, dialog_id):  # in the cache before it is read
                hold.prefetched = None  # read before them
            fresh, hold.suspect = hold.suspect, False
        limit = self.settings.rate_limit_per_minute
        if limit <= 0:
            return await self._recent(dialog_id, cached=not fresh)
        window, key = self.rate_window, user_key(user_id, "replies")
        read = None
        if hold is not None and not fresh:
            read = hold.take_prefetched(key, window, dialog_id)
            if read is not None:  # read with the lock; the hit is counted with its release
                hold.defer_hit(key, window, read.index)
        if read is not None:
            hits, cached = read.hits + 1, read.recent
        else:
            hits, cached = await self.cache.hit_and_recent(key, window, dialog_id)
        if hits > limit:
            if fresh and hold is not None:
                hold.suspect = True  # still to be read from the database
            raise RateLimited(window_remaining(window))
        return cached if cached is not None and not fresh else await self._recent(dialog_id, cached=False)

    async def _count_crisis(self, user: User) -> bool:
        """A crisis signal from an admitted player, counted (True)."""
        await self._count_event("crisis", player_view(user).language)
        return True

    async def _count_event(self, kind: str, language: str) -> None:
        """A counted safety event: kind and language only, never the player's text."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            s.add(SafetyEvent(kind=kind, language=language))
            await s.commit()

    @staticmethod
    @contextlib.asynccontextmanager
    async def _crisis_errors(crisis: bool) -> AsyncIterator[None]:
        """A refusal (quota, rate, block, failure …) of a crisis message says so: `exc.crisis`."""
        try:
            yield
        except VitteError as exc:
            if crisis:
                exc.crisis = True
            raise

    def _prompt_preamble(self, language: str, care: bool) -> str:
        text = self.preamble(language)
        return f"{text}\n\n{self.crisis.care_note(language)}" if care else text

    # ------------------------------------------------------------------ reads
    async def _view(self, dialog: Dialog, language: str) -> DialogView:
        persona = await self.catalog.persona(dialog.persona_id)
        story_title = ""
        if dialog.story_id:
            try:
                story_title = (await self.catalog.story(dialog.story_id)).title_in(language)
            except LookupError:
                story_title = ""
            except Exception:  # an unknown story is not fatal for a view
                story_title = ""
        return DialogView(
            id=int(dialog.id or 0),
            user_id=dialog.user_id,
            persona_id=dialog.persona_id,
            persona_name=persona.name_in(language),
            story_id=dialog.story_id,
            story_title=story_title,
            status=dialog.status,
            summary=dialog.summary,
            created_at=dialog.created_at,
            language=language,
        )

    async def _active_row(self, user_id: int, *, optimistic: bool = False) -> tuple[Dialog, User] | None:
        """The active dialog and its player: one statement, read once per lock hold.

        `optimistic` (PostgreSQL, under the player's lock): the row an earlier reply of this
        process read may do, unconfirmed: only `reply` asks for it, and its turn's statement
        stores nothing unless the rows are still those versions (`_count_and_store_turn`). Any
        other read under the hold reads the database until the row is confirmed."""
        memo = _row_memo.get()
        if memo is not None and user_id not in _holds.get():
            memo = None
        if memo is not None and user_id in memo:
            known = memo[user_id]
            if known is None:
                return None
            if known.verified or optimistic:
                return known.dialog, known.user
        versioned = self.db.engine.dialect.name == "postgresql"
        if optimistic and memo is not None and versioned:
            entry = self._known.get(user_id)
            if entry is not None and time.monotonic() - entry[3] < KNOWN_ROW_SECONDS:
                memo[user_id] = _Row(entry[0], entry[1], entry[2], verified=False)
                return entry[0], entry[1]
        async with unavailable_as(StoreUnavailable), self.db.raw() as conn:
            row = await conn.first(_ACTIVE_ROW_VERSIONED if versioned else _ACTIVE_ROW, {"user_id": user_id})
        if row is None:
            self._known.pop(user_id, None)
            if memo is not None:
                memo[user_id] = None
            return None
        n, m = len(_DIALOG_KEYS), len(_DIALOG_KEYS) + len(_USER_KEYS)
        dialog = model_from_row(Dialog, _DIALOG_KEYS, row[:n])
        user = model_from_row(User, _USER_KEYS, row[n:m])
        versions = (str(row[m]), str(row[m + 1])) if versioned else None
        if versions is not None:
            self._remember(user_id, dialog, user, versions)
        if memo is not None:
            memo[user_id] = _Row(dialog, user, versions)
        return dialog, user

    def _remember(self, user_id: int, dialog: Dialog, user: User, versions: tuple[str, str]) -> None:
        known = self._known
        known[user_id] = (dialog, user, versions, time.monotonic())
        known.move_to_end(user_id)
        while len(known) > KNOWN_ROWS:
            known.popitem(last=False)

    def _unconfirmed(self, user_id: int) -> tuple[str, str] | None:
        """The versions of the row this hold started from without reading it (None: read)."""
        memo = _row_memo.get()
        known = memo.get(user_id) if memo is not None else None
        return known.versions if known is not None and not known.verified else None

    def _confirmed(self, user_id: int) -> None:
        memo = _row_memo.get()
        known = memo.get(user_id) if memo is not None else None
        if known is not None:
            known.verified = True

    async def warm_up(self) -> None:
        """The hot path's statements compiled and a pooled connection opened (see Core.warm_up)."""
        dialect = self.db.engine.dialect
        for prepared in (_ACTIVE_ROW, _ACTIVE_ROW_VERSIONED, _STORE_TURN, _FINISH, _COUNT_AND_STORE_TURN):
            prepared.compiled(dialect)
        if self.billing is not None:
            self.billing.warm_up(dialect)
        async with unavailable_as(StoreUnavailable), self.db.raw() as conn:
            await conn.first(_ACTIVE_ROW, {"user_id": 0})  # nobody: no row, one round trip

    def _forget_row(self, user_id: int) -> None:
        """The player's active dialog changed: the next read goes to the database."""
        self._known.pop(user_id, None)
        memo = _row_memo.get()
        if memo is not None:
            memo.pop(user_id, None)

    async def current(self, user_id: int, *, optimistic: bool = False) -> DialogView | None:
        """The player's active dialog, or None (the faces then offer the persona choice).

        `optimistic`: for a face about to call `reply` under the player's lock, which
        confirms the row (see `_active_row`)."""
        row = await self._active_row(user_id, optimistic=optimistic)
        if optimistic and row is not None and not _admitted(row[1]):
            row = await self._active_row(user_id)  # refused by an unconfirmed row: read it
        if row is None:
            return None
        dialog, user = row
        return await self._view(dialog, player_view(user).language)

    async def dialog(self, dialog_id: int) -> DialogView | None:
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            row = (
                await s.execute(
                    select(Dialog, User)
                    .join(User, col(User.id) == col(Dialog.user_id))
                    .where(col(Dialog.id) == dialog_id)
                )
            ).first()
        if row is None:
            return None
        return await self._view(row[0], player_view(row[1]).language)

    async def latest(self, user_id: int) -> DialogView | None:
        """The active dialog, else the most recent ended one (for operators)."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            row = (
                await s.execute(
                    select(Dialog, User)
                    .join(User, col(User.id) == col(Dialog.user_id))
                    .where(col(Dialog.user_id) == user_id)
                    .order_by((col(Dialog.status) == ACTIVE).desc(), col(Dialog.id).desc())
                    .limit(1)
                )
            ).first()
        if row is None:
            return None
        return await self._view(row[0], player_view(row[1]).language)

    async def messages(self, dialog_id: int, limit: int = 50) -> list[MessageView]:
        """The newest `limit` messages of a dialog, oldest first."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            rows = list(
                (
                    await s.execute(
                        select(Message)
                        .where(col(Message.dialog_id) == dialog_id)
                        .order_by(col(Message.id).desc())
                        .limit(limit)
                    )
                ).scalars()
            )
        rows.reverse()
        return [MessageView(int(m.id or 0), m.role, m.text, m.status, m.created_at) for m in rows]

    async def continue_dialog(self, user_id: int, dialog_id: int | None = None) -> tuple[DialogView, str]:
        """'Продолжить общение': the dialog and the persona's last line, to remind where it stopped."""
        view = await self.current(user_id)
        if view is None:
            raise NoActiveDialog()
        if dialog_id is not None and view.id != dialog_id:
            raise StaleDialog()
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            last = (
                await s.execute(
                    select(col(Message.text))
                    .where(
                        col(Message.dialog_id) == view.id,
                        col(Message.role) == ASSISTANT,
                        col(Message.text) != "",
                    )
                    .order_by(col(Message.id).desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
        return view, last or ""

    # ------------------------------------------------------------------ choose / start over / reset
    async def choose(
        self, user_id: int, persona_id: str, story_id: str, *, language_code: str | None = None
    ) -> Opening:
        """Open a dialog with this persona and story; any active dialog ends.

        A repeated request for the same persona and story within a few seconds (a double
        click) returns the dialog the first one opened.
        """
        persona = await self.catalog.persona(persona_id)
        story = persona.story(story_id)
        async with self.player_lock(user_id):
            row = await self._active_row(user_id)
            if row is not None:
                dialog, user = row
                self._admit(user)
                age = (utcnow() - dialog.created_at).total_seconds()
                if (
                    dialog.persona_id == persona_id
                    and dialog.story_id == story_id
                    and age < DOUBLE_CLICK_SECONDS
                    and not await self._has_user_messages(int(dialog.id or 0))
                ):
                    lang = player_view(user).language
                    view = await self._view(dialog, lang)
                    return Opening(view, story.opening_in(lang), await self._first_message_id(view.id), True)
            return await self._open(user_id, persona, story, language_code=language_code)

    async def start_over(self, user_id: int, dialog_id: int | None = None) -> Opening:
        """'Начать заново': memory cleared, a new dialog with the same persona and story."""
        async with self.player_lock(user_id):
            dialog, _user = await self._admitted_active(user_id)
            if dialog_id is not None and int(dialog.id or 0) != dialog_id:
                raise StaleDialog()
            persona = await self.catalog.persona(dialog.persona_id)
            if dialog.story_id:
                story = persona.story(dialog.story_id)
            elif persona.stories:
                story = persona.stories[0]
            else:
                raise NoActiveDialog()
            return await self._open(user_id, persona, story)

    async def reset(self, user_id: int) -> DialogView | None:
        """No active dialog and no active persona afterwards; returns what was ended."""
        async with self.player_lock(user_id):
            row = await self._active_row(user_id)
            async with unavailable_as(StoreUnavailable), self.db.session() as s:
                await s.execute(
                    update(Dialog)
                    .where(col(Dialog.user_id) == user_id, col(Dialog.status) == ACTIVE)
                    .values(status=ENDED, ended_at=utcnow(), summary="", summary_upto=0)
                )
                await s.execute(update(User).where(col(User.id) == user_id).values(active_persona_id=None))
                await s.commit()
            self._forget_row(user_id)
            if row is None:
                return None
            await self.cache.recent_drop(int(row[0].id or 0))
            return await self._view(row[0], player_view(row[1]).language)

    async def _has_user_messages(self, dialog_id: int) -> bool:
        async with self.db.session() as s:
            found = (
                await s.execute(
                    select(col(Message.id))
                    .where(col(Message.dialog_id) == dialog_id, col(Message.role) == USER)
                    .limit(1)
                )
            ).first()
        return found is not None

    async def _first_message_id(self, dialog_id: int) -> int:
        async with self.db.session() as s:
            found = (
                await s.execute(
                    select(col(Message.id))
                    .where(col(Message.dialog_id) == dialog_id)
                    .order_by(col(Message.id))
                    .limit(1)
                )
            ).scalar_one_or_none()
        return int(found or 0)

    async def _open(
        self,
        user_id: int,
        persona: PersonaInfo,
        story: StoryInfo,
        *,
        language_code: str | None = None,
    ) -> Opening:
        """End the active dialog (memory goes with it) and open a new one, atomically.

        The partial unique index makes a concurrent second opening fail; it is retried, so
        exactly one dialog stays active whatever the interleaving.
        """
        for attempt in range(5):
            try:
                return await self._open_once(user_id, persona, story, language_code)
            except IntegrityError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.01 * (attempt + 1))
        raise AssertionError("unreachable")

    async def _open_once(
        self, user_id: int, persona: PersonaInfo, story: StoryInfo, language_code: str | None
    ) -> Opening:
        now = utcnow()
        self._forget_row(user_id)
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            await s.execute(insert_player_if_missing(s, user_id, language_code))
            user = (await s.execute(select(User).where(col(User.id) == user_id))).scalar_one()
            self._admit(user)  # the stored row decides; a refusal rolls the insert back
            lang = player_view(user).language
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
            dialog = Dialog(
                user_id=user_id, persona_id=persona.id, story_id=story.id, status=ACTIVE, created_at=now
            )
            s.add(dialog)
            await s.flush()
            text = story.opening_in(lang) or persona.card.first_mes
            opening = Message(
                dialog_id=int(dialog.id or 0), role=ASSISTANT, text=text, status=MSG_OK, created_at=now
            )
            s.add(opening)
            user.active_persona_id = persona.id
            await s.flush()
            await s.commit()
        self._forget_row(user_id)
        for old in cast("list[int]", ended):
            await self.cache.recent_drop(int(old))
        dialog_id = int(dialog.id or 0)
        await self.cache.recent_fill(
            dialog_id, [CachedMessage(int(opening.id or 0), ASSISTANT, text, MSG_OK)]
        )
        view = await self._view(dialog, lang)
        return Opening(view, text, int(opening.id or 0))

    # ------------------------------------------------------------------ the reply pipeline
    def check_text(self, text: str) -> str:
        # U+0000 means nothing in a chat and PostgreSQL text cannot hold it (SQLite can)
        text = text.replace("\x00", "").strip()
        if len(text) > self.settings.max_message_chars:
            raise MessageTooLong(self.settings.max_message_chars)
        return text

    async def reply(
        self,
        user_id: int,
        text: str,
        *,
        telegram_message_id: int | None = None,
        on_text: OnText | None = None,
        stop: asyncio.Event | None = None,
    ) -> ReplyOutcome:
        """Store the player's message, write the persona's reply, store it.

        Raises NoActiveDialog, MessageTooLong, ReplyFailed (the player's message stays
        stored; `regenerate` answers it later), StoreUnavailable; and, before anything is
        stored or the LLM is called, PlayerBlocked, AgeNotConfirmed, RateLimited.
        A crisis signal sets `ReplyOutcome.crisis` (or `exc.crisis` on any VitteError raised).
        """
        # never stored, never logged: a flag for the face and a counted event
        crisis = self.crisis.detect(text[: self.settings.max_message_chars * 2])
        async with self._crisis_errors(crisis):
            text = self.check_text(text)
            if not text:
                raise MessageTooLong(self.settings.max_message_chars)
        async with self.player_lock(user_id), self._crisis_errors(crisis):
            recent_of: int | None = None
            counted = not crisis  # the crisis event: counted once the player is known admitted
            for attempt in range(STALE_ROW_ATTEMPTS):
                # the first attempt may start from the row an earlier reply read (PostgreSQL;
                # the turn's statement confirms it); a changed row is read again. A refusal is
                # never decided on an unconfirmed row.
                dialog, user = await self._admitted_active(
                    user_id, optimistic=attempt == 0 and self.billing is not None
                )
                confirmed = self._unconfirmed(user_id) is None
                if not counted and confirmed:
                    counted = await self._count_crisis(user)
                dialog_id = int(dialog.id or 0)
                if recent_of != dialog_id:
                    # the rate limit before anything is stored or the LLM is called; the
                    # recent messages come along from the cache in the same round trip
                    try:
                        recent = await self._rate_check_and_recent(user_id, dialog_id)
                    except RateLimited:
                        if not confirmed:  # a blocked player hears that, not "too fast"
                            self._forget_row(user_id)
                            _dialog, user = await self._admitted_active(user_id)
                            if not counted:
                                counted = await self._count_crisis(user)
                        raise
                    recent_of = dialog_id
                now = utcnow()
                # hot path: no transaction, each statement commits on its own (one round trip
                # each). One reply from today's quota first: QuotaExceeded means nothing is
                # stored and the LLM is not called; if storing the message fails, the reply is
                # given back.
                try:
                    async with unavailable_as(StoreUnavailable), self.db.raw() as conn:
                        stored = await self._count_and_store_turn(
                            conn, user, dialog_id, text, telegram_message_id, now, self._unconfirmed(user_id)
                        )
                except QuotaExceeded:  # decided on confirmed rows
                    if not counted:
                        counted = await self._count_crisis(user)
                    raise
                if stored is not None:
                    if not counted:
                        counted = await self._count_crisis(user)
                    break
                self._forget_row(user_id)  # the rows changed since they were read: again
            else:
                raise StoreUnavailable("the player's rows kept changing")
            quota, ids = stored
            self._confirmed(user_id)
            try:
                user_msg = CachedMessage(int(ids[0]), USER, text, MSG_OK)
                placeholder_id = int(ids[1])
                history = [m for m in recent if m.id > dialog.summary_upto] + [user_msg]
                # the player's message reaches the cache with the reply (one round trip), or
                # on its own below when no reply is stored
                unsaved = [user_msg]
                try:
                    outcome = await self._write(
                        dialog,
                        user,
                        history,
                        placeholder_id,
                        on_text,
                        stop,
                        user_message_id=user_msg.id,
                        crisis=crisis,
                        unsaved=unsaved,
                    )
                finally:
                    if unsaved:
                        await asyncio.shield(self._cache_append(user_id, dialog_id, *unsaved))
            except BaseException:
                await self._quota_give_back(quota)
                raise
            return await self._quota_settle(outcome, quota)

    async def _count_and_store_turn(
        self,
        conn: RawConnection,
        user: User,
        dialog_id: int,
        text: str,
        telegram_message_id: int | None,
        now: datetime,
        versions: tuple[str, str] | None = None,
    ) -> tuple[QuotaDecision | None, list[int]] | None:
        """One reply from today's quota and the turn's two rows: ONE statement on PostgreSQL
        within the daily quota, else the quota's statements then the turn's (QuotaExceeded
        stores nothing; a failed store gives the reply back).

        `versions`: the dialog's and the player's rows were not read under this hold; None
        back (nothing done) when they are not those versions any more, or cannot be checked."""
        if self.billing is not None and conn.dialect.name == "postgresql":
            day, limit = self.billing.today(user)
            if limit > 0:
                params = {
                    "user_id": user.id,
                    "day": day,
                    "limit": limit,
                    "dialog_id": dialog_id,
                    "text": text,
                    "telegram_message_id": telegram_message_id,
                    "now": now,
                    "dialog_version": versions[0] if versions else None,
                    "user_version": versions[1] if versions else None,
                }
                rows = await conn.rows(_COUNT_AND_STORE_TURN, params)
                if rows and rows[0][1] is None:
                    return None  # the rows changed (or the dialog ended): read them again
                if rows:
                    by_role = {role: int(message_id) for _used, message_id, role in rows}
                    counted = self.billing.daily_decision(user, day, int(rows[0][0]), limit)
                    return counted, [by_role[USER], by_role[ASSISTANT]]
                versions = None  # confirmed: only the daily quota is used up
        if versions is not None:
            return None  # nothing here confirms the rows: read them
        quota = await self._quota_take(user, conn)
        try:
            return quota, await self._store_turn(conn, dialog_id, text, telegram_message_id, now)
        except BaseException:
            await self._quota_give_back(quota)
            raise

    async def _store_turn(
        self, conn: RawConnection, dialog_id: int, text: str, telegram_message_id: int | None, now: datetime
    ) -> list[int]:
        """The player's message and the reply's placeholder: ONE multi-row INSERT … RETURNING.

        The rows are told apart by role, not by order (the database may return them in any order).
        """
        rows = await conn.rows(
            _STORE_TURN,
            {"dialog_id": dialog_id, "text": text, "telegram_message_id": telegram_message_id, "now": now},
        )
        by_role = {role: int(message_id) for message_id, role in rows}
        return [by_role[USER], by_role[ASSISTANT]]

    async def regenerate(
        self,
        user_id: int,
        dialog_id: int,
        *,
        on_text: OnText | None = None,
        stop: asyncio.Event | None = None,
    ) -> ReplyOutcome:
        """Write the latest reply again (🔄), or answer a message whose reply failed (Повторить).

        The new reply replaces the previous one in the history only once it is complete.
        """
        async with self.player_lock(user_id):
            dialog, user = await self._admitted_active(user_id)
            if int(dialog.id or 0) != dialog_id:
                raise StaleDialog()
            async with unavailable_as(StoreUnavailable), self.db.session() as s:
                last_two = list(
                    (
                        await s.execute(
                            select(Message)
                            .where(col(Message.dialog_id) == dialog_id)
                            .order_by(col(Message.id).desc())
                            .limit(2)
                        )
                    ).scalars()
                )
            if not last_two:
                raise NothingToRegenerate()
            last = last_two[0]
            replace_id: int | None = None
            if last.role == ASSISTANT:
                if len(last_two) < 2 or last_two[1].role != USER:
                    raise NothingToRegenerate()  # the story's opening, or nothing to answer
                replace_id = int(last.id or 0)
            elif last.role != USER:
                raise NothingToRegenerate()
            recent = await self._rate_check_and_recent(user_id, dialog_id)  # before the LLM is called
            quota = await self._quota_take(user)  # before the LLM is called
            try:
                history = [m for m in recent if m.id > dialog.summary_upto and m.id != replace_id]
                # the persona answers a crisis message with care again (no new flag or event)
                answered = next((m for m in reversed(history) if m.role == USER), None)
                care = answered is not None and self.crisis.detect(answered.text)
                # answering a message: the reply's placeholder first, as `reply` stores one, so a
                # crash mid-reply is recovered and told (`recover_interrupted`); a 🔄 keeps the
                # reply it replaces until the new one is complete
                placeholder_id = None if replace_id is not None else await self._placeholder(dialog_id)
                outcome = await self._write(
                    dialog, user, history, placeholder_id, on_text, stop, replace_id=replace_id, care=care
                )
            except BaseException:
                await self._quota_give_back(quota)
                raise
            return await self._quota_settle(outcome, quota)

    async def _placeholder(self, dialog_id: int) -> int:
        """An empty reply row, 'streaming' until the reply is written."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            row = Message(dialog_id=dialog_id, role=ASSISTANT, text="", status=MSG_STREAMING)
            s.add(row)
            await s.commit()
            return int(row.id or 0)

    # ------------------------------------------------------------------ the daily quota (vitte/billing.py)
    async def _quota_take(self, user: User, conn: RawConnection | None = None) -> QuotaDecision | None:
        """One reply from today's quota (one SQL statement; on `conn` when given), or
        QuotaExceeded; None when unlimited."""
        if self.billing is None:
            return None
        return await self.billing.check_and_count(user.id, user=user, conn=conn)

    async def _quota_give_back(self, quota: QuotaDecision | None) -> None:
        if quota is not None and self.billing is not None:
            await asyncio.shield(self.billing.release(quota))

    async def _quota_settle(self, outcome: ReplyOutcome, quota: QuotaDecision | None) -> ReplyOutcome:
        """Only written replies stay counted (a stop before the first word gives the reply back)."""
        if quota is None:
            return outcome
        if not outcome.text:
            await self._quota_give_back(quota)
            return outcome
        return replace(outcome, quota=quota)

    async def _recent(self, dialog_id: int, *, cached: bool = True) -> list[CachedMessage]:
        """The dialog's recent messages: the cache's, else the database's (then cached).
        `cached=False`: the cache was just asked and missed."""
        if cached:
            found = await self.cache.recent_get(dialog_id)
            if found is not None:
                return found
        async with unavailable_as(StoreUnavailable), self.db.session(autocommit=True) as s:
            rows = list(
                (
                    await s.execute(
                        select(Message)
                        .where(col(Message.dialog_id) == dialog_id, col(Message.status) != MSG_STREAMING)
                        .order_by(col(Message.id).desc())
                        .limit(self.settings.recent_messages)
                    )
                ).scalars()
            )
        rows.reverse()
        recent = [_cached(m) for m in rows]
        await self.cache.recent_fill(dialog_id, recent)
        return recent

    async def _write(
        self,
        dialog: Dialog,
        user: User,
        history: list[CachedMessage],
        placeholder_id: int | None,
        on_text: OnText | None,
        stop: asyncio.Event | None,
        *,
        user_message_id: int | None = None,
        replace_id: int | None = None,
        crisis: bool = False,
        care: bool = False,
        unsaved: list[CachedMessage] | None = None,
    ) -> ReplyOutcome:
        """`unsaved`: messages not in the cache yet; the reply's row takes them along (and
        empties the list) when it reaches the cache."""
        dialog_id = int(dialog.id or 0)
        player = player_view(user)
        persona = await self.catalog.persona(dialog.persona_id)
        premise = ""
        if dialog.story_id:
            with contextlib.suppress(Exception):
                premise = (await self.catalog.story(dialog.story_id)).premise
        prompt = PromptInput(
            card=persona.card,
            char_name=persona.name_in(player.language),
            user_name=player.first_name or ("собеседник" if player.language == "ru" else "you"),
            language=player.language,
            style=player.style,
            premise=premise,
            memory=dialog.summary,
            history=history,
            budget=self.settings.llm_context_tokens,
            preamble=self._prompt_preamble(player.language, care or crisis),
        )
        request = LLMRequest(
            messages=build_messages(prompt),
            max_tokens=min(self.settings.llm_max_tokens, STYLE_MAX_TOKENS.get(player.style, 400))
            if player.style != "long"
            else self.settings.llm_max_tokens * 2,
            temperature=self.settings.llm_temperature,
            persona=persona.card.hints(),
            language=player.language,
        )
        written: list[str] = []
        stopped = False
        try:
            stream = observe_llm(self.llm.stream(request))  # latency, fate, errors (vitte.metrics)
            try:
                async for delta in stream:
                    written.append(delta)
                    if stop is not None and stop.is_set():
                        stopped = True
                        break
                    if on_text is not None and delta:
                        await on_text("".join(written))
            finally:
                closer = getattr(stream, "aclose", None)
                if closer is not None:
                    await closer()
            reply = "".join(written).strip()
            if not reply and not stopped:
                raise LLMBadResponse("the model returned an empty reply")
        except LLMError as exc:
            log.warning("reply failed for user %s dialog %s: %s", dialog.user_id, dialog_id, exc)
            if placeholder_id is not None:
                await self._drop_placeholder(placeholder_id)
            raise ReplyFailed(exc, user_message_id, crisis=crisis) from exc
        except asyncio.CancelledError:
            partial = "".join(written).strip()
            if placeholder_id is not None:
                await asyncio.shield(
                    self._finish(dialog, placeholder_id, partial, MSG_INTERRUPTED, unsaved=unsaved)
                )
            raise
        except BaseException:
            if placeholder_id is not None:
                await asyncio.shield(self._drop_placeholder(placeholder_id))
            raise

        status = MSG_STOPPED if stopped else MSG_OK
        if replace_id is not None:
            if reply:
                await self._finish(dialog, replace_id, reply, status, replace=True)
            return ReplyOutcome(dialog_id, replace_id, reply, status, replaced=True)
        assert placeholder_id is not None  # a new reply always has its row (`reply`, `regenerate`)
        if not reply:  # stopped before the first word
            await self._drop_placeholder(placeholder_id)
            return ReplyOutcome(dialog_id, 0, "", status, crisis=crisis)
        await self._finish(dialog, placeholder_id, reply, status, unsaved=unsaved)
        self._maybe_fold(dialog, [*history, CachedMessage(placeholder_id, ASSISTANT, reply, status)])
        return ReplyOutcome(dialog_id, placeholder_id, reply, status, crisis=crisis)

    async def _finish(
        self,
        dialog: Dialog,
        message_id: int,
        text: str,
        status: str,
        *,
        replace: bool = False,
        unsaved: list[CachedMessage] | None = None,
    ) -> None:
        """The reply's row written; in the cache with the messages not there yet (`unsaved`),
        sent with the player lock's release when it is held here."""
        dialog_id = int(dialog.id or 0)
        async with unavailable_as(StoreUnavailable), self.db.raw() as conn:
            await conn.rows(_FINISH, {"message_id": message_id, "text": text, "status": status})
        cm = CachedMessage(message_id, ASSISTANT, text, status)
        if replace:
            await self._send_deferred(_holds.get().get(dialog.user_id), dialog_id)  # replaced after them
            await self.cache.recent_replace(dialog_id, cm)
            return
        before = list(unsaved or ())
        if unsaved:
            unsaved.clear()
        await self._cache_append(dialog.user_id, dialog_id, *before, cm)

    async def _drop_placeholder(self, message_id: int) -> None:
        async with self.db.session() as s:
            await s.execute(
                delete(Message).where(col(Message.id) == message_id, col(Message.status) == MSG_STREAMING)
            )
            await s.commit()

    async def recover_interrupted(self) -> Recovery:
        """After a crash: replies left 'streaming' are marked interrupted (never shown as
        complete); placeholders without a word stored are deleted.

        Only rows whose player's lock nobody holds: a reply streaming in another process (it
        holds the lock from before its placeholder is stored until the reply is) is left alone,
        and so is one whose crashed holder's lease has not run out yet: those are counted in
        `deferred` (call again after the lease). With Redis unreachable nothing is recovered
        (another process may be streaming them).

        Returns the number of replies marked and `notices`: one per active dialog of a player
        not blocked whose last message is now their own unanswered message or the interrupted
        reply, i.e. a player still waiting for an answer (the bot tells them, once: a second
        call finds nothing left 'streaming'). A few statements however many rows. The
        recovered dialogs' cached recent messages are dropped: a crash mid-reply leaves the
        player's message out of the cache (it reaches the cache with the reply), and
        `regenerate` must answer it.
        """
        async with self.db.session() as s:
            candidates = (
                await s.execute(
                    select(col(Message.id), col(Dialog.user_id))
                    .join(Dialog, col(Dialog.id) == col(Message.dialog_id))
                    .where(col(Message.status) == MSG_STREAMING)
                )
            ).all()
        if not candidates:
            return Recovery()
        held = await self.cache.locked_users(sorted({int(u or 0) for _m, u in candidates}))
        if held is None:
            log.warning("crash recovery postponed: the cache cannot tell which players are being answered")
            return Recovery(deferred=len(candidates))
        orphans = sorted(int(m or 0) for m, u in candidates if int(u or 0) not in held)
        marked: list[Any] = []
        dropped: list[Any] = []
        notices: list[InterruptedReply] = []
        async with self.db.session() as s:
            for i in range(0, len(orphans), RECOVER_CHUNK):
                ids = orphans[i : i + RECOVER_CHUNK]
                streaming = col(Message.id).in_(ids), col(Message.status) == MSG_STREAMING
                dropped += (
                    await s.execute(
                        delete(Message).where(*streaming, col(Message.text) == "").returning(col(Message.dialog_id))
                    )
                ).all()
                marked += (
                    await s.execute(
                        update(Message)
                        .where(*streaming)
                        .values(status=MSG_INTERRUPTED)
                        .returning(col(Message.id), col(Message.dialog_id))
                        .execution_options(synchronize_session=False)
                    )
                ).all()
            marked_ids = {int(row[0] or 0) for row in marked}
            dialog_ids = sorted({int(row[0]) for row in dropped} | {int(row[1]) for row in marked})
            for i in range(0, len(dialog_ids), RECOVER_CHUNK):
                notices += await self._waiting_for_reply(s, dialog_ids[i : i + RECOVER_CHUNK], marked_ids)
            await s.commit()
        for i in range(0, len(dialog_ids), RECOVER_CHUNK):
            await asyncio.gather(*(self.cache.recent_drop(d) for d in dialog_ids[i : i + RECOVER_CHUNK]))
        return Recovery(len(marked), tuple(notices), deferred=len(candidates) - len(orphans))

    async def _waiting_for_reply(
        self, s: AsyncSession, dialog_ids: list[int], marked_ids: set[int]
    ) -> list[InterruptedReply]:
        """Of these dialogs (just recovered), the active ones of players not blocked whose last
        message is the player's (unanswered) or a reply just marked interrupted: one SELECT."""
        later = table_of(Message).alias("later")
        last_id = (
            select(later.c.id)
            .where(later.c.dialog_id == col(Dialog.id))
            .order_by(later.c.id.desc())
            .limit(1)
            .correlate(Dialog)
            .scalar_subquery()
        )
        rows = await s.execute(
            select(col(Dialog.id), col(Dialog.user_id), col(User.language), col(Message.id), col(Message.role))
            .join(User, col(User.id) == col(Dialog.user_id))
            .join(Message, col(Message.dialog_id) == col(Dialog.id))
            .where(
                col(Dialog.id).in_(dialog_ids),
                col(Dialog.status) == ACTIVE,
                col(User.blocked_at).is_(None),
                col(Message.id) == last_id,
            )
        )
        notices = []
        for dialog_id, user_id, language, last, role in rows:
            message_id = int(last or 0)
            partial = role == ASSISTANT and message_id in marked_ids
            if role == USER or partial:
                notices.append(
                    InterruptedReply(
                        user_id=int(user_id),
                        dialog_id=int(dialog_id or 0),
                        language="en" if language == "en" else "ru",  # as players.player_view
                        message_id=message_id,
                        partial=partial,
                    )
                )
        return notices

    # ------------------------------------------------------------------ memory
    def _history_budget(self) -> int:
        return max(self.settings.llm_context_tokens * 6 // 10, 128)

    def _maybe_fold(self, dialog: Dialog, history: list[CachedMessage]) -> None:
        dialog_id = int(dialog.id or 0)
        if dialog_id in self._folding or history_tokens(history) <= self._history_budget():
            return
        self._folding.add(dialog_id)
        task = asyncio.create_task(self._fold_safely(dialog_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fold_safely(self, dialog_id: int) -> None:
        try:
            await self.fold_memory(dialog_id)
        except Exception as exc:  # memory can wait for the next turn
            log.warning("memory fold for dialog %s failed: %s", dialog_id, exc)
        finally:
            self._folding.discard(dialog_id)

    async def fold_memory(self, dialog_id: int, keep_last: int = 8) -> bool:
        """Fold the older turns into the dialog's memory summary with one LLM call."""
        async with self.db.session() as s:
            row = (
                await s.execute(
                    select(Dialog, User)
                    .join(User, col(User.id) == col(Dialog.user_id))
                    .where(col(Dialog.id) == dialog_id)
                )
            ).first()
            if row is None or row[0].status != ACTIVE:
                return False
            dialog, user = row
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
        if len(rows) <= keep_last:
            return False
        fold = rows[:-keep_last]
        player = player_view(user)
        persona = await self.catalog.persona(dialog.persona_id)
        request = LLMRequest(
            messages=summary_messages(
                persona.name_in(player.language),
                player.first_name or "user",
                player.language,
                dialog.summary,
                [_cached(m) for m in fold],
            ),
            max_tokens=300,
            temperature=0.3,
            persona=persona.card.hints(),
            language=player.language,
            purpose="summary",
        )
        summary = (await self.llm.complete(request)).strip()
        if not summary:
            return False
        upto = int(fold[-1].id or 0)
        async with self.db.session() as s:
            result = await s.execute(
                update(Dialog)
                .where(
                    col(Dialog.id) == dialog_id,
                    col(Dialog.status) == ACTIVE,
                    col(Dialog.summary_upto) == dialog.summary_upto,
                )
                .values(summary=summary, summary_upto=upto)
            )
            await s.commit()
        return bool(result.rowcount)  # type: ignore[attr-defined]

    async def drain(self) -> None:
        """Wait for background work (memory folds) to finish."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)


# ---------------------------------------------------------------------- after a crash
RECOVER_CHUNK = 500  # dialogs per statement (and cache drops at a time) in recover_interrupted


@dataclass(frozen=True, slots=True)
class InterruptedReply:
    """A player whose reply a crash cut, still waiting for it (`recover_interrupted`)."""

    user_id: int  # also the private chat's id
    dialog_id: int
    language: str  # ru | en
    # the dialog's last message: the player's unanswered one ([Повторить] answers it, RetryCb),
    # or, `partial`, the interrupted reply with the words stored before the crash (🔄 replaces it)
    message_id: int
    partial: bool


@dataclass(frozen=True, slots=True)
class Recovery:
    """What `recover_interrupted` recovered: how many replies were marked interrupted, and
    `notices`, one per player to tell."""

    marked: int = 0
    notices: tuple[InterruptedReply, ...] = ()
    deferred: int = 0  # streaming rows of players whose lock is held (live, or a lease not out yet)
