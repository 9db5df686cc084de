"""The cache contract: recent messages, online status, per-user locks, update de-duplication.

The database is the truth. Every implementation must degrade, never fail the caller:
a cache that cannot answer behaves like a miss (recent messages are rebuilt from the
database), a lock falls back to an in-process lock, de-duplication lets the update through.
"""

from __future__ import annotations

import json
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

import orjson

# seconds a player's lock outlives a holder that stopped renewing it (a crashed process)
LOCK_LEASE = 30.0


class SpoolBusy(Enum):
    """`Cache.spool_pop`'s answer when another drainer holds the shared spool's lease."""

    LEASED = "leased"


@dataclass(frozen=True, slots=True)
class CachedMessage:
    """A message as the prompt builder needs it (a copy of the database row)."""

    id: int
    role: str  # "user" | "assistant" | "system"
    text: str
    status: str = "ok"
    # when it was written, in Unix seconds (0: unknown): {{idle_duration}} reads the player's
    # previous message's time from the cache (vitte.prompt.idle_before); not part of equality
    at: float = field(default=0.0, compare=False)

    def _items(self) -> list[object]:
        items: list[object] = [self.id, self.role, self.text, self.status]
        if self.at > 0:
            items.append(int(self.at))
        return items

    def to_json(self) -> str:
        """A compact JSON array, UTF-8 as is: ``[12,"user","Привет","ok"]``, with the time
        (whole Unix seconds) as a fifth item when known: ``[12,"user","Привет","ok",1764770000]``.

        It must start with ``[<id>,`` (no space): the Redis scripts find a message by that
        prefix (`vitte.cache.redis._id_prefix`). Items written before orjson,
        ``json.dumps(..., ensure_ascii=False)``, had a space after each comma
        (``[12, "user", "Привет", "ok"]``): the same prefix, and `from_json` reads both, with
        or without the time.
        """
        try:
            return orjson.dumps(self._items()).decode()
        except orjson.JSONEncodeError:
            # orjson refuses a lone surrogate; the stdlib writes it (Redis then cannot encode
            # the item, and the cache degrades as it always did, instead of raising here)
            return json.dumps(self._items(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> CachedMessage:
        """Raises ValueError/TypeError on an unreadable item (the Redis cache drops the list)."""
        items = orjson.loads(raw)
        if not isinstance(items, list) or len(items) not in (4, 5):
            raise ValueError("not a cached message")
        i, role, text, status = items[:4]
        at = float(items[4]) if len(items) == 5 else 0.0
        return cls(int(i), str(role), str(text), str(status), at)


class Cache(Protocol):
    """What the core needs from a cache. Redis and in-process implementations share tests."""

    name: str  # "redis" | "memory"

    # --- recent messages of a dialog (capped list, oldest first, write-through) ---
    async def recent_get(self, dialog_id: int) -> list[CachedMessage] | None:
        """The cached recent messages, oldest first; None on a miss (or when unavailable)."""

    async def recent_fill(self, dialog_id: int, messages: list[CachedMessage]) -> None:
        """Replace the cached list (rebuild after a miss). Keeps at most `cap` newest.

        An empty list is not cached (Redis has no empty lists): the next read is a miss.
        """

    async def recent_append(self, dialog_id: int, *messages: CachedMessage) -> None:
        """Append if the list is cached (a missing list stays missing: it is rebuilt on read).

        Several messages are appended in order in one step (one round trip with Redis), each
        as if appended alone: a message with the same id as the last one replaces it
        (idempotent), and the list keeps at most `cap` newest. No messages: nothing happens.
        """

    async def recent_replace(self, dialog_id: int, message: CachedMessage) -> None:
        """Replace the cached message with the same id, if cached (regenerate, finish a stream)."""

    async def recent_drop(self, dialog_id: int) -> None:
        """Forget the dialog's cached messages (start over, reset, delete)."""

    # --- online status (TTL) ---
    async def touch_online(self, user_id: int, ttl: int = 300) -> None: ...

    async def is_online(self, user_id: int) -> bool: ...

    async def online_count(self) -> int: ...

    # --- per-user lock (replies stay in order, across processes with Redis) ---
    def user_lock(
        self,
        user_id: int,
        lease: float = LOCK_LEASE,
        *,
        seen: tuple[str, float] | None = None,
        prefetch: Prefetch | None = None,
    ) -> AbstractAsyncContextManager[LockHold]:
        """Hold the player's lock; the lease is renewed while held (no fixed timeout).

        When it costs nothing more (Redis: the call that takes a free lock):
        - `seen` (a `first_seen` key and its ttl): the update's de-duplication is done
          (`LockHold.first_seen`; None: not done, ask `first_seen`);
        - `prefetch`: what `hit_and_recent` would read is read, without counting the hit
          (`LockHold.prefetched`; the hit is counted with the release, `LockHold.defer_hit`).
        """
        ...

    async def locked_users(self, user_ids: list[int]) -> set[int] | None:
        """Which of these players' locks someone holds now (any process); None when that
        cannot be known (Redis unreachable). Crash recovery uses it to leave live replies of
        other processes alone."""
        ...

    # --- update de-duplication ---
    async def first_seen(self, key: str, ttl: int = 86400) -> bool:
        """True the first time `key` is seen within ttl; False for a duplicate."""

    # --- rate limiting ---
    async def hit(self, key: str, window: float) -> int:
        """Count one hit on `key`; return the hits in the current window, this one included.

        Fixed windows aligned to the wall clock (`int(time.time() // window)`), shared by
        every process with Redis; the window ends at the next multiple of `window` seconds.
        Keys about a player start with `user:<id>:` (`forget_user` drops them).
        Unavailable: 0 (allow).
        """

    async def hit_and_recent(
        self, key: str, window: float, dialog_id: int
    ) -> tuple[int, list[CachedMessage] | None]:
        """`hit(key, window)` and `recent_get(dialog_id)` at once (one round trip with Redis):
        what a reply needs from the cache before it calls the LLM."""
        ...

    # --- the spool (vitte.spool): updates kept while the database is away ---
    async def spool_push(self, item: str, limit: int, user_id: int, ttl: float) -> int | None:
        """Append `item` (an update of player `user_id`) to the shared spool unless it holds
        `limit` items: the new length, -1 when full, None when there is no shared spool
        (in-process cache, Redis unreachable). A pushed item counts in the player's hold, which
        every process's lock reads (`LockHold.spool_held`) until `spool_done` or `ttl` seconds
        after the player's last push."""

    async def spool_done(self, user_id: int) -> None:
        """One of the player's shared items is handled (or given up): their hold counts one less."""

    async def spool_pop(self, owner: str, lease: float) -> str | SpoolBusy | None:
        """Take the spool's oldest item, as drainer `owner` (a token of its own): only one
        drainer at a time takes from the shared spool, the one holding its lease, taken or
        renewed for `lease` seconds with each item (and given up when the spool is found
        empty). None: empty or unreachable; `SpoolBusy.LEASED`: not empty, but another
        drainer holds the lease (take nothing shared now, look again later)."""

    async def spool_lease(self, owner: str, lease: float) -> bool:
        """Renew the drainers' lease for `lease` seconds if `owner` holds it, or give it up
        when `lease` is 0 (the drainer stops). False: not ours (or no shared spool)."""

    async def spool_unpop(self, item: str) -> bool:
        """Put an item taken with `spool_pop` back at the front (False: not done)."""

    async def spool_items(self) -> list[str] | None:
        """Every item, oldest first, without taking them (None: unreachable or none shared)."""

    # --- housekeeping ---
    async def forget_user(self, user_id: int, dialog_ids: list[int]) -> None:
        """Drop every key about this player (their data is being deleted): the dialogs'
        recent lists, the online mark, and hit counters whose key starts with `user:<id>:`."""

    async def ping(self) -> bool:
        """True when the backing store answers."""

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Prefetch:
    """What to read as a player's lock is taken: a rate counter (`hit` key and window) and a
    dialog's recent messages (the dialog the player's next reply is likely to be in)."""

    key: str
    window: float
    dialog_id: int


@dataclass(frozen=True, slots=True)
class Prefetched:
    """A `Prefetch` read: the counter's hits so far in window `index` (this one not counted)
    and the recent messages (None: a miss)."""

    key: str
    window: float
    index: int
    hits: int
    dialog_id: int
    recent: list[CachedMessage] | None


class LockHold:
    """A held player lock (`Cache.user_lock` yields it): what taking the lock read in the same
    call, and the writes its release will carry. Only the dialogs engine's `Turn` uses it.

    Read as the lock was taken:
    - `first_seen`: the answer of `first_seen(seen key)`; None when it was not asked (the
      caller asks `first_seen` itself).
    - `suspect`: the previous holder never released the lock (its process crashed, or it
      outlived its lease): what it cached for the player may be stale, so the dialog's
      cached messages are read from the database once under this hold.
    - `prefetched`: a `Prefetch` read (None: not read); `take_prefetched` hands it out once.
    - `spool_held`: the player has updates kept in the shared spool (`spool_push`, by any
      process): their next message queues behind them (False: none, or not known).

    Written with the release (the same round trip), while `defers`:
    - `defer_append`: a `recent_append` (False: not deferred, do the append now);
    - `defer_hit`: a `hit` (the lock keeps the player's hits in order, so the count read at
      the lock plus the deferred ones is the count).
    """

    __slots__ = ("appends", "defers", "first_seen", "hits", "prefetched", "spool_held", "suspect")

    def __init__(
        self,
        *,
        first_seen: bool | None = None,
        suspect: bool = False,
        defers: bool = False,
        prefetched: Prefetched | None = None,
        spool_held: bool = False,
    ) -> None:
        self.first_seen = first_seen
        self.suspect = suspect
        self.spool_held = spool_held
        self.defers = defers
        self.appends: dict[int, list[CachedMessage]] = {}
        self.prefetched = prefetched
        self.hits: list[tuple[str, float, int]] = []

    def take_prefetched(self, key: str, window: float, dialog_id: int) -> Prefetched | None:
        """The prefetched read if it is this counter's current window and this dialog (once)."""
        found, self.prefetched = self.prefetched, None
        if (
            found is None
            or not self.defers
            or (found.key, found.window, found.dialog_id) != (key, window, dialog_id)
            or found.index != window_index(window)
        ):
            return None
        return found

    def defer_hit(self, key: str, window: float, index: int) -> None:
        """Count a hit on `key` in window `index` with the release (only while `defers`)."""
        self.hits.append((key, window, index))

    def defer_append(self, dialog_id: int, *messages: CachedMessage) -> bool:
        """Queue an append for the release; False when this hold does not defer."""
        if not self.defers:
            return False
        if messages:
            self.appends.setdefault(int(dialog_id), []).extend(messages)
        return True


def user_key(user_id: int, name: str) -> str:
    """A `hit` key about a player (dropped with the player's data by `forget_user`)."""
    return f"user:{int(user_id)}:{name}"


def window_index(window: float, now: float | None = None) -> int:
    """The fixed window `hit` counts in (wall clock, the same in every process)."""
    if window <= 0:
        raise ValueError("window must be positive")
    return int((time.time() if now is None else now) // window)


def window_remaining(window: float, now: float | None = None) -> float:
    """Seconds until the current fixed window ends."""
    now = time.time() if now is None else now
    return (window_index(window, now) + 1) * window - now
