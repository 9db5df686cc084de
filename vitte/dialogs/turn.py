"""A turn: one player's operation under their lock, as an explicit object.

`async with engine.turn(user_id) as turn:` takes the player's lock (`Cache.user_lock`: one
operation at a time per player, across processes with Redis, in arrival order) and yields a
`Turn` that holds everything the operation knows about the player while the lock is held:

- the lock's hold: what taking the lock read with the same call (the update's
  de-duplication, whether the last holder crashed, the prefetched rate count and recent
  messages) and the writes deferred to its release (cache appends, rate hits);
- the player's active dialog row, read at most once per turn, and its versions.

Every engine operation takes the turn (or a player id, for which it opens a turn of its
own). Nothing about a turn travels in a context variable.

`Turns` also remembers, process-wide, the active rows that earlier turns read (PostgreSQL):
a reply may start from one without reading it, and its turn statement stores nothing unless
the rows are still those versions (`vitte.dialogs.store.COUNT_AND_STORE_TURN`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from vitte.cache.base import Cache, CachedMessage, LockHold, Prefetch, Prefetched, user_key
from vitte.config import Settings
from vitte.dialogs.store import ActiveRow, DialogStore
from vitte.errors import AgeNotConfirmed, NoActiveDialog, PlayerBlocked
from vitte.metrics import waiting_for_lock
from vitte.models import Dialog, User

KNOWN_ROWS = 4096  # players whose active row a process remembers between their messages
KNOWN_ROW_SECONDS = 300.0  # how long such a row is offered (each use is confirmed anyway)
RATE_WINDOW_SECONDS = 60.0  # the per-player rate limit on LLM replies counts in windows this long

_UNREAD = object()


@dataclass(slots=True)
class _Known:
    row: ActiveRow
    at: float


class Turn:
    """One player's operation under their lock (see the module docstring)."""

    __slots__ = ("_row", "confirmed", "hold", "task", "user_id", "wrote")

    def __init__(self, user_id: int, hold: LockHold) -> None:
        self.user_id = user_id
        self.hold = hold
        self.task = asyncio.current_task()
        # the player's active row as this turn knows it: _UNREAD, None (no active dialog) or
        # the row; `confirmed` False: a row an earlier turn read, not confirmed by this one
        self._row: ActiveRow | object | None = _UNREAD
        self.confirmed = True
        # the player's message is stored: a store failure after this must not replay the
        # update (vitte.bot.spooling keeps only updates of which nothing was stored)
        self.wrote = False

    def __repr__(self) -> str:
        return f"<Turn of player {self.user_id}>"

    @property
    def first_seen(self) -> bool | None:
        """The update's de-duplication, done as the lock was taken (None: not asked)."""
        return self.hold.first_seen

    @property
    def spool_held(self) -> bool:
        """The player has updates kept in the shared spool (any process), read as the lock
        was taken: their message queues behind them (vitte.bot.spooling)."""
        return self.hold.spool_held

    # ------------------------------------------------------------------ the player's row
    @property
    def row_known(self) -> bool:
        return self._row is not _UNREAD

    @property
    def row(self) -> ActiveRow | None:
        assert self._row is not _UNREAD
        return self._row  # type: ignore[return-value]

    def know(self, row: ActiveRow | None, *, confirmed: bool = True) -> None:
        self._row, self.confirmed = row, confirmed

    def forget(self) -> None:
        """The player's active dialog changed: read it again."""
        self._row, self.confirmed = _UNREAD, True

    @property
    def unconfirmed_versions(self) -> tuple[str, str] | None:
        """The versions of the row this turn started from without reading it (None: read)."""
        row = self._row
        if self.confirmed or not isinstance(row, ActiveRow):
            return None
        return row.versions

    # ------------------------------------------------------------------ the cache, through the lock
    def take_prefetched(self, key: str, window: float, dialog_id: int) -> Prefetched | None:
        """What the lock's call read for this counter and dialog, once (None: read it now)."""
        return self.hold.take_prefetched(key, window, dialog_id)

    def defer_hit(self, key: str, window: float, index: int) -> None:
        """A rate hit counted with the lock's release."""
        self.hold.defer_hit(key, window, index)

    async def append(self, cache: Cache, dialog_id: int, *messages: CachedMessage) -> None:
        """Append to the dialog's cached messages: with the lock's release (one round trip
        less) when the lock defers, else now."""
        if not self.hold.defer_append(dialog_id, *messages):
            await cache.recent_append(dialog_id, *messages)

    async def flush(self, cache: Cache, dialog_id: int) -> bool:
        """The appends deferred for this dialog sent now (what comes next must see them);
        True when there were any. A read prefetched before them is void."""
        pending = self.hold.appends.pop(dialog_id, None)
        if pending:
            await cache.recent_append(dialog_id, *pending)
            self.hold.prefetched = None
        return bool(pending)

    def take_suspect(self) -> bool:
        """True once when the last holder never released the lock (its cache may be stale)."""
        suspect, self.hold.suspect = self.hold.suspect, False
        return suspect

    def suspect_again(self) -> None:
        self.hold.suspect = True


def turn_of(who: Turn | int) -> Turn | None:
    return who if isinstance(who, Turn) else None


def player_of(who: Turn | int) -> int:
    return who.user_id if isinstance(who, Turn) else who


def admit(user: User | None) -> User:
    """A blocked player gets PlayerBlocked, one without the 18+ confirmation AgeNotConfirmed."""
    if user is None:
        raise AgeNotConfirmed()
    if user.blocked_at is not None:
        raise PlayerBlocked(user.blocked_reason)
    if user.adult_confirmed_at is None:
        raise AgeNotConfirmed()
    return user


def admitted(user: User) -> bool:
    return user.blocked_at is None and user.adult_confirmed_at is not None


class Turns:
    """Opens turns and reads the player's active row for them (see the module docstring)."""

    def __init__(self, settings: Settings, cache: Cache, store: DialogStore) -> None:
        self.settings = settings
        self.cache = cache
        self.store = store
        self.rate_window = RATE_WINDOW_SECONDS  # VITTE_RATE_LIMIT_PER_MINUTE counts in this window
        self._known: OrderedDict[int, _Known] = OrderedDict()
        self._open: dict[int, Turn] = {}

    @contextlib.asynccontextmanager
    async def turn(
        self, user_id: int, *, seen: tuple[str, float] | None = None, replying: bool = False
    ) -> AsyncIterator[Turn]:
        """The player's turn: their lock held until the block ends.

        `seen`: an update's de-duplication key and ttl, checked as the lock is taken when that
        costs nothing more (`Turn.first_seen`, None when not checked). `replying`: the turn
        will likely ask for a reply: what a reply reads from the cache first (the rate count,
        the recent messages of the dialog this process last saw) is read with the lock."""
        mine = self._open.get(user_id)
        if mine is not None and mine.task is asyncio.current_task():
            raise RuntimeError(f"{mine!r} is open in this task: pass it instead of opening another")
        prefetch = None
        if replying and self.settings.rate_limit_per_minute > 0:
            known = self._known.get(user_id)
            if known is not None:
                prefetch = Prefetch(
                    user_key(user_id, "replies"), self.rate_window, int(known.row.dialog.id or 0)
                )
        with waiting_for_lock():  # the queue depth, for the operator (vitte.metrics)
            lock = self.cache.user_lock(user_id, self.settings.lock_lease, seen=seen, prefetch=prefetch)
            hold = await lock.__aenter__()
        turn = Turn(user_id, hold)
        self._open[user_id] = turn
        try:
            yield turn
        except BaseException as exc:
            self._close(turn)
            if not await lock.__aexit__(type(exc), exc, exc.__traceback__):
                raise
        else:
            self._close(turn)
            await lock.__aexit__(None, None, None)

    def _close(self, turn: Turn) -> None:
        if self._open.get(turn.user_id) is turn:
            del self._open[turn.user_id]

    @contextlib.asynccontextmanager
    async def of(self, who: Turn | int) -> AsyncIterator[Turn]:
        """`who`'s turn: the turn given, or a turn of its own for a player id."""
        if isinstance(who, Turn):
            yield who
            return
        async with self.turn(who) as turn:
            yield turn

    # ------------------------------------------------------------------ the player's active row
    async def active_row(
        self, user_id: int, turn: Turn | None = None, *, optimistic: bool = False
    ) -> tuple[Dialog, User] | None:
        """The active dialog and its player: one statement, read once per turn.

        `optimistic` (PostgreSQL, in a turn): the row an earlier turn of this process read
        may do, unconfirmed: only a reply asks for it, and its turn statement stores nothing
        unless the rows are still those versions. A refusal is never decided on such a row: one
        whose player is not admitted is read again. Any other read in the turn reads the
        database until the row is confirmed."""
        if turn is not None and turn.row_known:
            row = turn.row
            if row is None:
                return None
            if turn.confirmed or (optimistic and admitted(row.user)):
                return row.dialog, row.user
        if optimistic and turn is not None and self.store.versioned:
            known = self._known.get(user_id)
            if (
                known is not None
                and time.monotonic() - known.at < KNOWN_ROW_SECONDS
                and admitted(known.row.user)
            ):
                turn.know(known.row, confirmed=False)
                return known.row.dialog, known.row.user
        row = await self.store.active_row(user_id)
        if row is None:
            self._known.pop(user_id, None)
        elif row.versions is not None:
            self._remember(user_id, row)
        if turn is not None:
            turn.know(row)
        return (row.dialog, row.user) if row is not None else None

    async def admitted_active(
        self, turn: Turn | None, user_id: int, *, optimistic: bool = False
    ) -> tuple[Dialog, User]:
        """The active dialog of an admitted player (the stored row decides), else PlayerBlocked,
        AgeNotConfirmed or NoActiveDialog, in that order. `optimistic`: see `active_row`."""
        row = await self.active_row(user_id, turn, optimistic=optimistic)
        if row is None:
            admit(await self.store.player(user_id))
            raise NoActiveDialog()
        admit(row[1])
        return row

    def _remember(self, user_id: int, row: ActiveRow) -> None:
        known = self._known
        known[user_id] = _Known(row, time.monotonic())
        known.move_to_end(user_id)
        while len(known) > KNOWN_ROWS:
            known.popitem(last=False)

    def forget(self, user_id: int, turn: Turn | None = None) -> None:
        """The player's active dialog changed: the next read goes to the database."""
        self._known.pop(user_id, None)
        if turn is not None:
            turn.forget()

    def forget_all(self) -> None:
        """No row read earlier is offered again (every next reply reads the database)."""
        self._known.clear()
