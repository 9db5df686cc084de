"""The Redis cache, shared by every bot process. It degrades, it never fails the caller.

Keys (all under the configured prefix):

- ``recent:<dialog>``  LIST of `CachedMessage.to_json`, oldest first, capped, TTL refreshed on use
- ``online:<user>``    STRING with a TTL; ``online-set`` ZSET user -> expiry (ms) for counting
- ``lock:<user>``      the player's lock: a random token with a lease (PX), renewed while held
- ``lockq:<user>``     ZSET token -> ticket: the processes' waiters for the lock, in arrival order
                       (an uncontended lock is taken without writing lockq/lockw/lockn)
- ``lockw:<user>``     ZSET token -> expiry (ms): a waiter that stops refreshing it is dropped
- ``lockn:<user>``     the ticket counter
- ``seen:<key>``       update de-duplication (set once, with a TTL)
- ``hit:<key>:<n>``    a rate-limit counter for fixed window n (INCR, expires after the window)

When Redis cannot answer (down, slow, restarting) every call returns the harmless answer:
a read is a miss, a write is skipped, `first_seen` lets the update through, `is_online` is
False, the lock is the in-process lock alone. Errors are logged at most once per few
seconds. After a failure the next calls skip Redis for `retry_interval` seconds (one call
probes it), so a dead Redis costs players at most one short timeout, and Redis is used again
as soon as it answers. A write that failed (or may have half-happened) leaves the dialog's
list stale, so its key is remembered and deleted before any other command runs on the next
successful call: no stale list survives an outage; the list is rebuilt from the database.

Every script is idempotent (but the rate-limit counter: a retried `hit` may count twice),
so a command that failed on a dropped connection (e.g. the first call after a Redis restart)
is retried once on a fresh connection. Each operation is bounded by `op_timeout` (an
`asyncio.timeout`, not a socket timeout: see `__init__`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from vitte.cache import scripts
from vitte.cache.base import (
    LOCK_LEASE,
    CachedMessage,
    LockHold,
    Prefetch,
    Prefetched,
    SpoolBusy,
    window_index,
)
from vitte.cache.memory import KeyedLock, recent_cap
from vitte.config import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

RECENT_TTL = 7 * 86400  # seconds; refreshed whenever the list is read or written
MAX_DIRTY = 100_000  # remembered stale lists; beyond that every recent list is dropped
MAX_TOUCHED = 100_000  # players whose online mark this process refreshed recently

def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(exc, (RedisConnectionError, RedisTimeoutError, OSError, TimeoutError))


def _is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, (RedisTimeoutError, TimeoutError))


def _id_prefix(message_id: int) -> str:
    """How `CachedMessage.to_json` starts for this id: ``[<id>,``."""
    return f"[{int(message_id)},"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


WAITER_ALIVE = 5.0  # seconds a lock waiter stays queued without a sign of life (a crash)


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


class RedisCache:
    """`Cache` on Redis: one connection pool, prefixed keys, degrade on every error."""

    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "vitte:",
        cap: int | None = None,
        recent_ttl: float = RECENT_TTL,
        connect_timeout: float = 0.5,
        op_timeout: float = 1.0,
        retry_interval: float = 1.0,
        health_check_interval: int = 30,
        max_connections: int = 50,
        log_every: float = 5.0,
        lock_poll_max: float = 0.1,
    ) -> None:
        self.cap = recent_cap(cap)
        self.prefix = prefix
        self.recent_ttl_ms = _ms(recent_ttl)
        self.retry_interval = retry_interval
        self.log_every = log_every
        self.lock_poll_max = lock_poll_max
        self.op_timeout = op_timeout
        self._pool = aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=op_timeout,  # waiting for a free connection
            socket_connect_timeout=connect_timeout,
            # no socket timeout: `_run` bounds each operation with `asyncio.timeout` instead
            # (the same bound; redis-py wraps every send with a socket timeout in
            # `asyncio.wait_for`, a task per command: ~15-20 µs of CPU per call)
            socket_timeout=None,
            retry=Retry(NoBackoff(), 0),  # no blind retries: see `_run`
            health_check_interval=health_check_interval,
        )
        self._redis = aioredis.Redis(connection_pool=self._pool)
        self._append = self._redis.register_script(scripts.APPEND)
        self._recent = self._redis.register_script(scripts.RECENT)
        self._replace = self._redis.register_script(scripts.REPLACE)
        self._enqueue = self._redis.register_script(scripts.ENQUEUE)
        self._claim = self._redis.register_script(scripts.CLAIM)
        self._enter = self._redis.register_script(scripts.ENTER)
        self._leave = self._redis.register_script(scripts.LEAVE)
        self._release_script = self._redis.register_script(scripts.RELEASE)
        self._first_seen = self._redis.register_script(scripts.FIRST_SEEN)
        self._hit = self._redis.register_script(scripts.HIT)
        self._hit_recent = self._redis.register_script(scripts.HIT_RECENT)
        self._spool_push = self._redis.register_script(scripts.SPOOL_PUSH)
        self._spool_done = self._redis.register_script(scripts.SPOOL_DONE)
        self._spool_take = self._redis.register_script(scripts.SPOOL_TAKE)
        self._spool_lease = self._redis.register_script(scripts.SPOOL_LEASE)
        self._locks = KeyedLock()  # in front of the Redis lock: FIFO within this process
        self._tickets = KeyedLock()  # joining the Redis queue in this process's arrival order
        self._touched: dict[int, float] = {}  # user -> when this process last refreshed the mark
        self._tasks: set[asyncio.Task[Any]] = set()
        # health
        self._down = False
        self._down_until = 0.0
        self._probing = False
        self._last_log = float("-inf")
        self._suppressed = 0
        self._closed = False
        # keys that may hold stale data after a failed write: deleted on the next success
        self._dirty: dict[str, int] = {}
        self._dirty_seq = 0
        self._dirty_all = False
        self._flush_lock = asyncio.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> RedisCache:
        if not settings.redis_url:
            raise ValueError("redis_url is not set")
        return cls(settings.redis_url, prefix=settings.redis_prefix, cap=settings.recent_messages)

    # ------------------------------------------------------------------ keys
    def _recent_key(self, dialog_id: int) -> str:
        return f"{self.prefix}recent:{int(dialog_id)}"

    def _online_key(self, user_id: int) -> str:
        return f"{self.prefix}online:{int(user_id)}"

    @property
    def _online_set(self) -> str:
        return f"{self.prefix}online-set"

    def _lock_key(self, user_id: int) -> str:
        return f"{self.prefix}lock:{int(user_id)}"

    def _lock_keys(self, user_id: int) -> list[str]:
        """The lock, its waiters' queue, their expiries, the ticket counter, the holder mark,
        and the player's spool hold (read as the lock is taken: `LockHold.spool_held`)."""
        u = int(user_id)
        return [
            self._lock_key(u),
            f"{self.prefix}lockq:{u}",
            f"{self.prefix}lockw:{u}",
            f"{self.prefix}lockn:{u}",
            f"{self.prefix}lockh:{u}",
            self._spool_hold_key(u),
        ]

    @staticmethod
    def _leave_keys(keys: list[str]) -> list[str]:
        """scripts.LEAVE's keys: the lock, the queue, the waiters' expiries, the holder mark."""
        return [*keys[:3], keys[4]]

    def _seen_key(self, key: str) -> str:
        return f"{self.prefix}seen:{key}"

    def _hit_key(self, key: str, index: int) -> str:
        return f"{self.prefix}hit:{key}:{index}"

    # ------------------------------------------------------------------ health
    @property
    def available(self) -> bool:
        """False while Redis is considered down (after a failure, until a call succeeds)."""
        return not self._down

    async def _run(
        self,
        op: Callable[[], Awaitable[T]],
        default: T,
        *,
        dirty: Iterable[str] = (),
        force: bool = False,
        timed: bool = True,
    ) -> T:
        """Run one Redis operation; on any error return `default` (and remember `dirty`).

        The operation gets `op_timeout` seconds (`timed=False`: it bounds its calls itself).
        """
        if self._closed:
            return default
        probe = False
        if self._down and not force:
            if self._probing or time.monotonic() < self._down_until:
                self._mark_dirty(dirty)
                return default
            self._probing = probe = True
        try:
            retried = False
            while True:
                try:
                    if self._dirty or self._dirty_all:
                        await self._flush_dirty()
                    async with asyncio.timeout(self.op_timeout if timed else None):
                        result = await op()
                except asyncio.CancelledError:
                    self._mark_dirty(dirty)  # the write may or may not have happened
                    raise
                except Exception as exc:
                    if not retried and _is_connection_error(exc) and not _is_timeout(exc):
                        # a dropped connection (Redis restarted): once more on a fresh one
                        retried = True
                        with contextlib.suppress(Exception):
                            await self._pool.disconnect(inuse_connections=False)
                        continue
                    self._failed(exc)
                    self._mark_dirty(dirty)
                    return default
                self._succeeded()
                return result
        finally:
            if probe:
                self._probing = False

    def _failed(self, exc: Exception) -> None:
        now = time.monotonic()
        connection = _is_connection_error(exc)
        if connection:
            self._down = True
            self._down_until = now + self.retry_interval
        if now - self._last_log >= self.log_every:
            more = f" ({self._suppressed} more errors since the last report)" if self._suppressed else ""
            log.warning(
                "Redis cache unavailable, degrading to misses and in-process locks: %s: %s%s",
                type(exc).__name__,
                exc,
                more,
                exc_info=not connection and not isinstance(exc, aioredis.RedisError),
            )
            self._last_log = now
            self._suppressed = 0
        else:
            self._suppressed += 1

    def _succeeded(self) -> None:
        if self._down:
            self._down = False
            self._down_until = 0.0
            log.info("Redis cache is reachable again")

    def _mark_dirty(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._dirty_seq += 1
            self._dirty[key] = self._dirty_seq
        if len(self._dirty) > MAX_DIRTY:
            self._dirty_all = True
            self._dirty.clear()

    async def _timed(self, call: Awaitable[T]) -> T:
        """One Redis call of a longer operation, bounded by `op_timeout`."""
        async with asyncio.timeout(self.op_timeout):
            return await call

    async def _scan(self, match: str) -> AsyncIterator[list[Any]]:
        """The keys matching `match`, a SCAN page at a time (each call bounded)."""
        cursor: Any = 0
        while True:
            cursor, keys = await self._timed(self._redis.scan(cursor, match=match, count=1000))
            if keys:
                yield list(keys)
            if not int(cursor):
                return

    async def _flush_dirty(self) -> None:
        """Delete lists that may be stale (a write to them failed). Raises on Redis errors."""
        async with self._flush_lock:
            if self._dirty_all:
                async for batch in self._scan(_glob_escape(self.prefix) + "recent:*"):
                    await self._timed(self._redis.delete(*batch))
                self._dirty_all = False
            if self._dirty:
                snapshot = dict(self._dirty)
                keys = list(snapshot)
                for i in range(0, len(keys), 1000):
                    await self._timed(self._redis.delete(*keys[i : i + 1000]))
                for key, seq in snapshot.items():
                    if self._dirty.get(key) == seq:
                        del self._dirty[key]

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ------------------------------------------------------------------ recent messages
    async def recent_get(self, dialog_id: int) -> list[CachedMessage] | None:
        key = self._recent_key(dialog_id)
        # one script call, not an LRANGE + PEXPIRE pipeline: the same round trip, less client CPU
        raw = await self._run(lambda: self._recent(keys=[key], args=[self.recent_ttl_ms]), None)
        return await self._recent_items(dialog_id, key, raw)

    async def hit_and_recent(
        self, key: str, window: float, dialog_id: int
    ) -> tuple[int, list[CachedMessage] | None]:
        hkey, lkey = self._hit_key(key, window_index(window)), self._recent_key(dialog_id)
        args = [_ms(window) + 1000, self.recent_ttl_ms]  # the count outlives the window it counts
        got = await self._run(lambda: self._hit_recent(keys=[hkey, lkey], args=args), None)
        if got is None:  # unavailable: 0 = allow, and a miss
            return 0, None
        return int(got[0]), await self._recent_items(dialog_id, lkey, got[1])

    async def _recent_items(self, dialog_id: int, key: str, raw: Any) -> list[CachedMessage] | None:
        items = self._read_items(key, raw)
        if items is None and key in self._dirty:  # unreadable: dropped now, not on the next call
            await self.recent_drop(dialog_id)
        return items

    def _read_items(self, key: str, raw: Any) -> list[CachedMessage] | None:
        """The cached list's messages; None on a miss. An unreadable list is a miss and is
        marked stale (deleted before the next command)."""
        if not raw or self._dirty_all or key in self._dirty:
            return None
        try:
            return [CachedMessage.from_json(item) for item in raw]
        except (ValueError, TypeError) as exc:
            log.warning("dropping an unreadable cached list %s: %s", key, exc)
            self._mark_dirty((key,))
            return None

    async def recent_fill(self, dialog_id: int, messages: list[CachedMessage]) -> None:
        key = self._recent_key(dialog_id)
        items = [m.to_json() for m in messages[-self.cap :]]

        async def op() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(key)
                if items:  # an empty list is not cached: the next read is a miss
                    pipe.rpush(key, *items)
                    pipe.pexpire(key, self.recent_ttl_ms)
                await pipe.execute()

        await self._run(op, None, dirty=(key,))

    async def recent_append(self, dialog_id: int, *messages: CachedMessage) -> None:
        if not messages:
            return
        key = self._recent_key(dialog_id)
        args: list[str | int] = [self.cap, self.recent_ttl_ms]
        for message in messages:  # one script call for them all
            args += (message.to_json(), _id_prefix(message.id))
        await self._run(lambda: self._append(keys=[key], args=args), None, dirty=(key,))

    async def recent_replace(self, dialog_id: int, message: CachedMessage) -> None:
        key = self._recent_key(dialog_id)
        args: list[str | int] = [message.to_json(), _id_prefix(message.id), self.recent_ttl_ms]
        await self._run(lambda: self._replace(keys=[key], args=args), None, dirty=(key,))

    async def recent_drop(self, dialog_id: int) -> None:
        key = self._recent_key(dialog_id)
        await self._run(lambda: self._redis.delete(key), None, dirty=(key,))

    # ------------------------------------------------------------------ online status
    async def touch_online(self, user_id: int, ttl: float = 300) -> None:
        # at most one refresh per player per ttl/5 from this process: a player who chats keeps
        # the mark without a Redis round trip on every message
        now = time.monotonic()
        last = self._touched.get(user_id)
        if last is not None and now - last < ttl / 5:
            return
        if len(self._touched) >= MAX_TOUCHED:
            self._touched.clear()
        self._touched[user_id] = now
        key, zkey, ttl_ms = self._online_key(user_id), self._online_set, _ms(ttl)

        async def op() -> None:
            now_ms = int(time.time() * 1000)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(key, b"1", px=ttl_ms)
                pipe.zadd(zkey, {str(int(user_id)): now_ms + ttl_ms})
                pipe.zremrangebyscore(zkey, "-inf", now_ms)
                await pipe.execute()

        await self._run(op, None)

    async def is_online(self, user_id: int) -> bool:
        key = self._online_key(user_id)
        return bool(await self._run(lambda: self._redis.exists(key), 0))

    async def online_count(self) -> int:
        zkey = self._online_set

        async def op() -> int:
            now_ms = int(time.time() * 1000)
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.zremrangebyscore(zkey, "-inf", now_ms)
                pipe.zcard(zkey)
                _, count = await pipe.execute()
            return int(count)

        return await self._run(op, 0)

    # ------------------------------------------------------------------ per-user lock
    async def locked_users(self, user_ids: list[int]) -> set[int] | None:
        """Held locks, any process: one MGET per 1,000 players (None if Redis can't answer)."""
        held: set[int] = set()
        for i in range(0, len(user_ids), 1000):
            chunk = user_ids[i : i + 1000]
            keys = [self._lock_key(int(u)) for u in chunk]
            values = await self._run(lambda keys=keys: self._redis.mget(keys), None)  # type: ignore[misc]
            if values is None:
                return None
            held.update(u for u, v in zip(chunk, values, strict=True) if v is not None)
        return held | {u for u in user_ids if u in self._locks}

    def user_lock(
        self,
        user_id: int,
        lease: float = LOCK_LEASE,
        *,
        seen: tuple[str, float] | None = None,
        prefetch: Prefetch | None = None,
    ) -> AbstractAsyncContextManager[LockHold]:
        """The player's lock across processes; the lease is renewed every lease/3 while held.

        On arrival the caller joins a queue in Redis (a ticket), then takes an in-process
        FIFO lock (one process keeps its own order and does not poll Redis with its own
        waiters), then polls the Redis lock with a small backoff; a free lock goes to the
        queue's head, so the processes take turns in arrival order: a player's messages sent
        to different processes are handled in the order they came (a waiter queued behind
        this process's own lock still keeps its place). Without Redis the in-process lock
        alone is held.

        Fast path: a caller with no holder or waiter of its own process (both in-process
        locks are granted at once) takes them, then joins the Redis queue and claims the lock
        in one script call (`scripts.ENTER`: one round trip when the lock is free and nobody waits
        for it); a later arrival in this process joins the Redis queue only after that call,
        as it would after a ticket. If the lock is held, or another process's waiter is
        ahead, it stays queued and polls as above. The fast path's call also does `seen`'s
        de-duplication (`LockHold.first_seen`) and reads `prefetch` (`LockHold.prefetched`).

        The hold yielded (`LockHold`) defers `recent_append`s to the release's call, and says
        whether the previous holder never released the lock (`suspect`: a holder mark left in
        Redis by a process that crashed while holding it). Without Redis: a plain hold.
        """
        return self._user_lock(user_id, lease, seen, prefetch)

    @asynccontextmanager
    async def _user_lock(
        self, user_id: int, lease: float, seen: tuple[str, float] | None, prefetch: Prefetch | None
    ) -> AsyncIterator[LockHold]:
        keys, token, lease_ms = self._lock_keys(user_id), secrets.token_hex(16), _ms(lease)
        alive_ms = _ms(WAITER_ALIVE)
        leave_keys = self._leave_keys(keys)
        # nobody of this process holds or waits: both in-process locks are granted at once
        fast = user_id not in self._tickets and user_id not in self._locks
        queued = False
        keeper: asyncio.Task[Any] | None = None
        if not fast:
            try:
                async with self._tickets.hold(user_id):  # tickets in this process's arrival order
                    queued = bool(
                        await self._run(lambda: self._enqueue(keys=keys, args=[token, alive_ms]), None)
                    )
            except asyncio.CancelledError:
                self._spawn(self._run(lambda: self._leave(keys=leave_keys, args=[token]), None))
                raise
            keeper = self._spawn(self._keep_queued(keys, token, alive_ms)) if queued else None
        waiting = True
        try:
            async with self._locks.hold(user_id):  # no await before it: granted at once if fast
                waiting = False
                if keeper is not None:
                    keeper.cancel()
                got: int | None = None
                first_seen: bool | None = None
                prefetched: Prefetched | None = None
                if fast:
                    enter_keys = keys
                    enter_args: list[str | int] = [token, lease_ms, alive_ms, self.recent_ttl_ms]
                    if seen is not None or prefetch is not None:
                        enter_keys = [*keys, self._seen_key(seen[0]) if seen is not None else keys[0]]
                        enter_args.append(_ms(seen[1]) if seen is not None else "")
                    if prefetch is not None:
                        index = window_index(prefetch.window)
                        enter_keys += [self._hit_key(prefetch.key, index), self._recent_key(prefetch.dialog_id)]
                        enter_args.append(self.recent_ttl_ms)
                    try:
                        # held across the call: an arrival in this process meanwhile joins the
                        # Redis queue after this token, as it would after a ticket
                        async with self._tickets.hold(user_id):
                            answer = await self._run(lambda: self._enter(keys=enter_keys, args=enter_args), None)
                    except asyncio.CancelledError:
                        # the call may have reached Redis: leave the queue, give the lock back
                        self._spawn(self._run(lambda: self._leave(keys=leave_keys, args=[token]), None))
                        raise
                    if isinstance(answer, list):  # taken, with the prefetched read
                        got = int(answer[0])
                        assert prefetch is not None
                        list_key = enter_keys[-1]
                        prefetched = Prefetched(
                            prefetch.key,
                            prefetch.window,
                            index,
                            int(answer[1]),
                            prefetch.dialog_id,
                            self._read_items(list_key, answer[2]),  # no await: the lock is ours
                        )
                    else:
                        got = None if answer is None else int(answer)
                    queued = got is not None
                    if got and seen is not None:
                        first_seen = not got & 8  # the update's de-duplication, done by this call
                elif queued:
                    got = 0
                if queued and not got:
                    # the fast path's call was a claim already: wait a little before the next
                    got = await self._acquire(keys, token, lease_ms, alive_ms, wait_first=fast)
                if not got:
                    yield LockHold()  # Redis unavailable: the in-process lock alone
                    return
                hold = LockHold(
                    first_seen=first_seen,
                    suspect=bool(got & 4),
                    defers=True,
                    prefetched=prefetched,
                    spool_held=bool(got & 16),
                )
                # the lease is renewed only by holds that last: a timer starts the renewer after
                # lease/3 (most holds end long before; no task for them)
                stop = asyncio.Event()
                renewer: list[asyncio.Task[Any]] = []
                timer = asyncio.get_running_loop().call_later(
                    lease / 3,
                    lambda: renewer.append(
                        self._spawn(self._renew(keys[0], token, lease_ms, lease / 3, stop, now=True))
                    ),
                )
                try:
                    yield hold
                finally:
                    timer.cancel()
                    hold.defers = False  # from now on an append goes on its own
                    release = self._release(keys, token, stop, renewer[0] if renewer else None, hold)
                    try:
                        await release
                    except asyncio.CancelledError:
                        # a cancelled holder still releases (else the lease runs out)
                        self._spawn(self._release(keys, token, stop, renewer[0] if renewer else None, hold))
                        raise
        except asyncio.CancelledError:
            if waiting and keeper is not None:  # cancelled while waiting in this process
                keeper.cancel()
                self._spawn(self._run(lambda: self._leave(keys=leave_keys, args=[token]), None))
            raise

    async def _keep_queued(self, keys: list[str], token: str, alive_ms: int) -> None:
        """Keep a waiter queued in Redis while it waits for this process's own lock."""
        while True:
            await asyncio.sleep(WAITER_ALIVE / 4)
            await self._run(lambda: self._enqueue(keys=keys, args=[token, alive_ms]), None)

    async def _acquire(
        self, keys: list[str], token: str, lease_ms: int, alive_ms: int, *, wait_first: bool = False
    ) -> int:
        """scripts.CLAIM's answer once the Redis lock is ours (1, 2 or 6); 0 when Redis cannot answer."""
        delay = 0.002
        args: list[str | int] = [token, lease_ms, alive_ms, self.recent_ttl_ms]
        try:
            if wait_first:
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.lock_poll_max)
            while True:
                got = await self._run(lambda: self._claim(keys=keys, args=args), None)
                if got is None:
                    return 0
                if got:
                    return int(got)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.lock_poll_max)
        except asyncio.CancelledError:
            # the claim may have reached Redis: give it back rather than wait for the lease
            self._spawn(self._run(lambda: self._leave(keys=self._leave_keys(keys), args=[token]), None))
            raise

    async def _renew(
        self, key: str, token: str, lease_ms: int, interval: float, stop: asyncio.Event, *, now: bool = False
    ) -> None:
        """Renew the lease every `interval` until `stop` (first at once when `now`)."""
        lost = False
        while True:
            if not now:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), interval)
                    return
            now = False
            if stop.is_set():
                return
            got = await self._run(lambda: self._claim(keys=[key], args=[token, lease_ms]), None)
            if got == 0 and not lost:
                lost = True
                log.warning("lock %s was taken by another process while held (lease ran out)", key)
            elif got:
                lost = False

    async def _release(
        self, keys: list[str], token: str, stop: asyncio.Event, renewer: asyncio.Task[Any] | None, hold: LockHold
    ) -> None:
        stop.set()
        # let a renewal in flight finish first, so it cannot re-take the lock after the delete
        if renewer is not None:
            await asyncio.gather(renewer, return_exceptions=True)
        counters = [self._hit_key(key, index) for key, _window, index in hold.hits]
        args: list[str | int] = [token, self.cap, self.recent_ttl_ms, len(counters)]
        args += [_ms(window) + 1000 for _key, window, _index in hold.hits]  # outlives its window
        hold.hits = []
        lists: list[str] = []
        for dialog_id, messages in hold.appends.items():  # the appends deferred to this call
            lists.append(self._recent_key(dialog_id))
            args.append(len(messages))
            for message in messages:
                args += (message.to_json(), _id_prefix(message.id))
        hold.appends = {}
        await self._run(
            lambda: self._release_script(keys=[keys[0], keys[4], *counters, *lists], args=args), None, dirty=lists
        )

    # ------------------------------------------------------------------ de-duplication
    async def first_seen(self, key: str, ttl: float = 86400) -> bool:
        skey, token, ttl_ms = self._seen_key(key), secrets.token_hex(8), _ms(ttl)
        got = await self._run(lambda: self._first_seen(keys=[skey], args=[token, ttl_ms]), None)
        return got is None or bool(got)

    # ------------------------------------------------------------------ rate limiting
    async def hit(self, key: str, window: float) -> int:
        hkey = self._hit_key(key, window_index(window))
        ttl_ms = _ms(window) + 1000  # outlives the window it counts
        # one script call, not MULTI/INCR/PEXPIRE/EXEC: the same round trip, less client CPU
        count = await self._run(lambda: self._hit(keys=[hkey], args=[ttl_ms]), 0)
        return int(count)  # unavailable: 0 = allow

    # ------------------------------------------------------------------ the spool (vitte.spool)
    @property
    def _spool_key(self) -> str:
        return f"{self.prefix}spool"

    def _spool_hold_key(self, user_id: int) -> str:
        """How many of the player's updates the shared spool keeps (or a drainer has in hand)."""
        return f"{self.prefix}spool-held:{int(user_id)}"

    async def spool_push(self, item: str, limit: int, user_id: int, ttl: float) -> int | None:
        keys = [self._spool_key, self._spool_hold_key(user_id)]
        got = await self._run(lambda: self._spool_push(keys=keys, args=[item, int(limit), _ms(ttl)]), None)
        return None if got is None else int(got)

    async def spool_done(self, user_id: int) -> None:
        key = self._spool_hold_key(user_id)
        await self._run(lambda: self._spool_done(keys=[key]), None)

    @property
    def _spool_lease_key(self) -> str:
        """The drainers' lease: the token of the one drainer taking from the shared spool."""
        return f"{self.prefix}spool-drainer"

    async def spool_pop(self, owner: str, lease: float) -> str | SpoolBusy | None:
        keys = [self._spool_key, self._spool_lease_key]
        got: Any = await self._run(lambda: self._spool_take(keys=keys, args=[owner, _ms(lease)]), None)
        if isinstance(got, int):
            return SpoolBusy.LEASED
        return got.decode() if isinstance(got, bytes) else got

    async def spool_lease(self, owner: str, lease: float) -> bool:
        keys = [self._spool_lease_key]
        ms = _ms(lease) if lease > 0 else 0
        return bool(await self._run(lambda: self._spool_lease(keys=keys, args=[owner, ms]), 0))

    async def spool_unpop(self, item: str) -> bool:
        return bool(await self._run(lambda: self._redis.lpush(self._spool_key, item), 0))

    async def spool_items(self) -> list[str] | None:
        got = await self._run(lambda: self._redis.lrange(self._spool_key, 0, -1), None)
        return None if got is None else [i.decode() if isinstance(i, bytes) else i for i in got]

    # ------------------------------------------------------------------ housekeeping
    async def forget_user(self, user_id: int, dialog_ids: list[int]) -> None:
        self._touched.pop(user_id, None)
        keys = [self._recent_key(d) for d in dialog_ids]
        okey, zkey = self._online_key(user_id), self._online_set
        hits = _glob_escape(f"{self.prefix}hit:user:{int(user_id)}:") + "*"

        async def op() -> None:
            counters = [k async for batch in self._scan(hits) for k in batch]
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(okey, *keys, *counters)
                pipe.zrem(zkey, str(int(user_id)))
                await self._timed(pipe.execute())

        await self._run(op, None, dirty=[*keys, okey], timed=False)  # a SCAN may take a while

    async def ping(self) -> bool:
        """True when Redis answers (always tries, even while considered down)."""
        return bool(await self._run(self._redis.ping, False, force=True))

    async def close(self) -> None:
        if self._closed:
            return
        pending = [t for t in self._tasks if not t.done()]
        if pending:  # releases in flight: give them a moment
            await asyncio.wait(pending, timeout=1.0)
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._redis.aclose(close_connection_pool=True)
