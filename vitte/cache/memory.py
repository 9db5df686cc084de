"""The in-process cache: the same contract as Redis, for one process (the embedded setup).

Everything is bounded: recent lists are capped and kept for the most recently used
dialogs only, online marks and de-duplication keys expire (monotonic clock) and are
evicted, a per-user lock exists only while somebody holds or waits for it.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Hashable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from vitte.cache.base import LOCK_LEASE, CachedMessage, LockHold, Prefetch, SpoolBusy, window_index
from vitte.config import Settings

DEFAULT_CAP: int = int(Settings.model_fields["recent_messages"].default)


def recent_cap(cap: int | None) -> int:
    """How many messages a dialog's recent list keeps (default: the settings'), at least 1."""
    cap = int(cap if cap is not None else DEFAULT_CAP)
    if cap < 1:
        raise ValueError("cap must be at least 1")
    return cap


class _LockEntry:
    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0  # holders + waiters


class KeyedLock:
    """FIFO asyncio locks by key; an entry lives only while someone holds or waits for it.

    `asyncio.Lock` hands the lock to its waiters in arrival order (a newcomer queues
    behind existing waiters), so one player's messages are handled in the order they came.
    """

    __slots__ = ("_entries",)

    def __init__(self) -> None:
        self._entries: dict[Hashable, _LockEntry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        """True while somebody holds or waits for `key` (False: `hold` is granted at once)."""
        return key in self._entries

    def locked(self, key: Hashable) -> bool:
        entry = self._entries.get(key)
        return entry is not None and entry.lock.locked()

    @asynccontextmanager
    async def hold(self, key: Hashable) -> AsyncIterator[None]:
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _LockEntry()
        entry.users += 1
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0 and self._entries.get(key) is entry:
                del self._entries[key]


class _Expiring:
    """Keys with an expiry (monotonic seconds), oldest write first, at most `max_size`.

    Expired keys are purged from the old end, which is exact when a map uses one TTL (as
    online marks and update keys do); reads check the expiry anyway.
    """

    __slots__ = ("_data", "max_size")

    def __init__(self, max_size: int) -> None:
        self._data: OrderedDict[Hashable, float] = OrderedDict()
        self.max_size = max_size

    def __len__(self) -> int:
        return len(self._data)

    def purge(self, now: float) -> None:
        """Drop expired keys from the old end (amortised O(1) per key)."""
        data = self._data
        while data:
            key = next(iter(data))
            if data[key] > now:
                break
            del data[key]

    def alive(self, key: Hashable, now: float) -> bool:
        exp = self._data.get(key)
        if exp is None:
            return False
        if exp <= now:
            del self._data[key]
            return False
        return True

    def put(self, key: Hashable, expires: float, now: float) -> None:
        data = self._data
        data.pop(key, None)
        data[key] = expires
        self.purge(now)
        while len(data) > self.max_size:  # full of live keys: the oldest write goes
            data.popitem(last=False)

    def discard(self, key: Hashable) -> None:
        self._data.pop(key, None)

    def count(self, now: float) -> int:
        self.purge(now)
        return sum(1 for e in self._data.values() if e > now)

    def clear(self) -> None:
        self._data.clear()


class MemoryCache:
    """In-process implementation of `Cache` (no Redis configured)."""

    name = "memory"

    def __init__(
        self,
        cap: int | None = None,
        *,
        max_dialogs: int = 1000,
        max_online: int = 100_000,
        max_seen: int = 100_000,
        max_hits: int = 100_000,
    ) -> None:
        self.cap = recent_cap(cap)
        self.max_dialogs = max_dialogs
        self._recent: OrderedDict[int, deque[CachedMessage]] = OrderedDict()
        self._online = _Expiring(max_online)
        self._seen = _Expiring(max_seen)
        self.max_hits = max_hits
        # hit counters: key -> (window length, window index, count), least recently hit first
        self._hits: OrderedDict[str, tuple[float, int, int]] = OrderedDict()
        self._locks = KeyedLock()

    @classmethod
    def from_settings(cls, settings: Settings) -> MemoryCache:
        return cls(cap=settings.recent_messages)

    # --- recent messages ---
    async def recent_get(self, dialog_id: int) -> list[CachedMessage] | None:
        items = self._recent.get(dialog_id)
        if items is None:
            return None
        self._recent.move_to_end(dialog_id)
        return list(items)

    async def recent_fill(self, dialog_id: int, messages: list[CachedMessage]) -> None:
        if not messages:  # like a Redis list: an empty list is not cached (the next read misses)
            self._recent.pop(dialog_id, None)
            return
        self._recent[dialog_id] = deque(messages[-self.cap :], maxlen=self.cap)
        self._recent.move_to_end(dialog_id)
        while len(self._recent) > self.max_dialogs:
            self._recent.popitem(last=False)

    async def recent_append(self, dialog_id: int, *messages: CachedMessage) -> None:
        items = self._recent.get(dialog_id)
        if items is None or not messages:
            return
        for message in messages:
            if items and items[-1].id == message.id:
                items[-1] = message  # appending the same message again replaces it (idempotent)
            else:
                items.append(message)  # the deque's maxlen drops the oldest beyond the cap
        self._recent.move_to_end(dialog_id)

    async def recent_replace(self, dialog_id: int, message: CachedMessage) -> None:
        items = self._recent.get(dialog_id)
        if items is None:
            return
        for i in range(len(items) - 1, -1, -1):
            if items[i].id == message.id:
                items[i] = message
                break

    async def recent_drop(self, dialog_id: int) -> None:
        self._recent.pop(dialog_id, None)

    # --- online status ---
    async def touch_online(self, user_id: int, ttl: float = 300) -> None:
        now = time.monotonic()
        self._online.put(user_id, now + ttl, now)

    async def is_online(self, user_id: int) -> bool:
        return self._online.alive(user_id, time.monotonic())

    async def online_count(self) -> int:
        return self._online.count(time.monotonic())

    # --- per-user lock ---
    def user_lock(
        self,
        user_id: int,
        lease: float = LOCK_LEASE,
        *,
        seen: tuple[str, float] | None = None,
        prefetch: Prefetch | None = None,
    ) -> AbstractAsyncContextManager[LockHold]:
        """FIFO per-user lock; `lease` has no meaning in one process (nobody else can hold it).
        Nothing is prefetched or deferred (it costs no round trip here)."""
        return self._hold(user_id, seen)

    @asynccontextmanager
    async def _hold(self, user_id: int, seen: tuple[str, float] | None) -> AsyncIterator[LockHold]:
        async with self._locks.hold(user_id):
            yield LockHold(first_seen=None if seen is None else await self.first_seen(*seen))

    async def locked_users(self, user_ids: list[int]) -> set[int] | None:
        return {u for u in user_ids if u in self._locks}

    # --- de-duplication ---
    async def first_seen(self, key: str, ttl: float = 86400) -> bool:
        now = time.monotonic()
        if self._seen.alive(key, now):
            return False
        self._seen.put(key, now + ttl, now)
        return True

    # --- rate limiting ---
    async def hit_and_recent(
        self, key: str, window: float, dialog_id: int
    ) -> tuple[int, list[CachedMessage] | None]:
        return await self.hit(key, window), await self.recent_get(dialog_id)

    async def hit(self, key: str, window: float) -> int:
        index = window_index(window)
        hits = self._hits
        entry = hits.pop(key, None)
        count = entry[2] + 1 if entry is not None and entry[:2] == (window, index) else 1
        hits[key] = (window, index, count)
        while len(hits) > self.max_hits:  # the least recently hit counter goes (long stale)
            hits.popitem(last=False)
        return count

    # --- housekeeping ---
    async def forget_user(self, user_id: int, dialog_ids: list[int]) -> None:
        for dialog_id in dialog_ids:
            self._recent.pop(dialog_id, None)
        self._online.discard(user_id)
        prefix = f"user:{int(user_id)}:"
        for key in [k for k in self._hits if k.startswith(prefix)]:
            del self._hits[key]

    # the spool has no shared place here: vitte.spool keeps its file
    async def spool_push(self, item: str, limit: int, user_id: int, ttl: float) -> int | None:
        return None

    async def spool_done(self, user_id: int) -> None:
        return None

    async def spool_pop(self, owner: str, lease: float) -> str | SpoolBusy | None:
        return None

    async def spool_lease(self, owner: str, lease: float) -> bool:
        return False

    async def spool_unpop(self, item: str) -> bool:
        return False

    async def spool_items(self) -> list[str] | None:
        return None

    async def ping(self) -> bool:
        return True

    async def close(self) -> None:
        self._recent.clear()
        self._online.clear()
        self._seen.clear()
        self._hits.clear()
