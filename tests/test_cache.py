"""The cache contract, run on both implementations (in-process and a real Redis), plus
Redis-down behaviour: a dead port, and a server killed and restarted under a live cache."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from vitte.cache import MemoryCache, RedisCache, make_cache
from vitte.cache.base import Cache, CachedMessage, Prefetch
from vitte.cache.redis import _id_prefix
from vitte.config import load_settings

CAP = 5


def _slow_when_it_succeeds(script: Any, succeeded: asyncio.Event) -> Any:
    """A script call whose reply is slow when it succeeded (Redis did it; the caller waits)."""

    async def call(**kw: Any) -> Any:
        got = await script(**kw)
        if got:
            succeeded.set()
            await asyncio.sleep(10)
        return got

    return call


def msg(i: int, role: str = "user", text: str | None = None, status: str = "ok") -> CachedMessage:
    return CachedMessage(i, role, text if text is not None else f"message {i}", status)


@dataclass
class Backend:
    kind: str
    url: str = ""
    prefix: str = ""


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "memory":
        return Backend("memory")
    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    request.getfixturevalue("redis_cleanup")
    return Backend("redis", url, prefix)


@pytest.fixture
async def make(backend: Backend) -> AsyncIterator[Callable[..., Any]]:
    """Build caches on the backend; with Redis they share the prefix (like two processes)."""
    created: list[Any] = []

    def factory(cap: int = CAP, **kw: Any) -> Any:
        if backend.kind == "memory":
            cache: Any = MemoryCache(cap=cap, **kw)
        else:
            cache = RedisCache(backend.url, prefix=backend.prefix, cap=cap, **kw)
        created.append(cache)
        return cache

    yield factory
    for cache in created:
        await cache.close()


@pytest.fixture
def cache(make: Callable[..., Any]) -> Any:
    return make()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.from_url(redis_url)
    yield r
    await r.aclose()


def test_implements_the_contract(cache: Any) -> None:
    c: Cache = cache  # type-checks against the Protocol
    assert c.name in {"memory", "redis"}


# ---------------------------------------------------------------- recent messages
async def test_recent_fill_get_and_cap(cache: Any) -> None:
    assert await cache.recent_get(1) is None
    await cache.recent_fill(1, [msg(1), msg(2, "assistant")])
    assert await cache.recent_get(1) == [msg(1), msg(2, "assistant")]
    await cache.recent_fill(1, [msg(i) for i in range(10)])  # replaces, keeps the newest CAP
    assert await cache.recent_get(1) == [msg(i) for i in range(5, 10)]
    assert await cache.recent_get(2) is None  # other dialogs are not touched


async def test_recent_round_trips_any_text(cache: Any) -> None:
    odd = [
        msg(1, text='quotes " \' and \\ backslash, [1, "x"]'),
        msg(2, "assistant", "ねえ… 💞 *smiles*\nnew line", "stopped"),
        msg(3, "system", ""),
    ]
    await cache.recent_fill(7, odd)
    assert await cache.recent_get(7) == odd


def test_cached_message_format() -> None:
    m = CachedMessage(12, "assistant", 'Привет, "милый" 💞\n', "stopped")
    # compact, UTF-8 as is, and starting with the prefix the Redis scripts match
    assert m.to_json() == '[12,"assistant","Привет, \\"милый\\" 💞\\n","stopped"]'
    assert m.to_json().startswith(_id_prefix(12)) and not m.to_json().startswith(_id_prefix(1))
    # what json.dumps stored before (a space after each comma), and an escaped form: read alike
    old = json.dumps([12, "assistant", 'Привет, "милый" 💞\n', "stopped"], ensure_ascii=False)
    assert old.startswith(_id_prefix(12))
    escaped = json.dumps([12, "assistant", 'Привет, "милый" 💞\n', "stopped"])
    for raw in (m.to_json(), m.to_json().encode(), old, old.encode(), escaped):
        assert CachedMessage.from_json(raw) == m
    for bad in (b"", b"[12,", b'[12,"user"]', b"{}", b'[12,"user","x","ok",1,2]', b'[12,"user","x","ok","soon"]'):
        with pytest.raises((ValueError, TypeError)):
            CachedMessage.from_json(bad)


async def test_a_cached_message_keeps_its_time(cache: Any) -> None:
    """{{idle_duration}} reads the player's previous message's time from the cache (a fifth item)."""
    said = CachedMessage(12, "user", "hi", "ok", 1_764_770_000.75)
    assert said.to_json() == '[12,"user","hi","ok",1764770000]'
    assert said.to_json().startswith(_id_prefix(12))
    assert CachedMessage.from_json(said.to_json()).at == 1_764_770_000
    assert CachedMessage.from_json('[12,"user","hi","ok"]').at == 0  # written before: time unknown
    await cache.recent_fill(8, [said, msg(13, "assistant", "hello")])
    await cache.recent_append(8, CachedMessage(14, "user", "back", "ok", 1_764_771_020))
    got = await cache.recent_get(8)
    assert [int(m.at) for m in got] == [1_764_770_000, 0, 1_764_771_020]


async def test_a_text_json_cannot_carry_degrades(cache: Any) -> None:
    odd = msg(1, text="half an emoji \ud83d")  # a lone surrogate: not encodable as UTF-8
    await cache.recent_fill(8, [odd])  # no exception: the cache degrades, as for any error
    await cache.recent_append(8, odd)
    await cache.recent_replace(8, odd)


async def test_items_stored_before_orjson_still_work(
    redis_url: str, redis_prefix: str, redis_cleanup: None, raw: aioredis.Redis
) -> None:
    key = f"{redis_prefix}recent:21"
    stored = [json.dumps([i, "user", f"сообщение {i}", "ok"], ensure_ascii=False) for i in (1, 2, 3)]
    await raw.rpush(key, *stored)
    await raw.pexpire(key, 60_000)
    cache = RedisCache(redis_url, prefix=redis_prefix, cap=CAP)
    try:
        old = [msg(i, text=f"сообщение {i}") for i in (1, 2, 3)]
        assert await cache.recent_get(21) == old
        # found by the id prefix in old items: replaced in the middle, and at the end
        await cache.recent_replace(21, msg(2, "assistant", "заново", "stopped"))
        await cache.recent_append(21, msg(3, "assistant", "ответ"), msg(4))
        new = [old[0], msg(2, "assistant", "заново", "stopped"), msg(3, "assistant", "ответ"), msg(4)]
        assert await cache.recent_get(21) == new
        items = await raw.lrange(key, 0, -1)
        assert items[0] == stored[0].encode() and items[0].startswith(b"[1, ")  # untouched
        assert items[1:] == [m.to_json().encode() for m in new[1:]]
        assert items[3] == b'[4,"user","message 4","ok"]'
    finally:
        await cache.close()


async def test_recent_append_caps_and_skips_missing(cache: Any) -> None:
    await cache.recent_append(3, msg(1))
    assert await cache.recent_get(3) is None  # a missing list stays missing
    await cache.recent_fill(3, [msg(1)])
    for i in range(2, 9):
        await cache.recent_append(3, msg(i))
    assert await cache.recent_get(3) == [msg(i) for i in range(4, 9)]
    await cache.recent_append(3, msg(8, "assistant", "again"))  # same id as the last: replaced
    assert await cache.recent_get(3) == [*(msg(i) for i in range(4, 8)), msg(8, "assistant", "again")]


async def test_recent_append_several_is_several_appends(make: Callable[..., Any]) -> None:
    one_by_one, at_once = make(), make()  # with Redis: separate lists (dialogs 10 and 11)
    base = [msg(1), msg(2, "assistant")]
    batches = [
        [msg(3), msg(4, "assistant")],  # the player's message and the reply
        [msg(4, "assistant", "finished", "stopped"), msg(5)],  # replaces the last, then appends
        [msg(6), msg(6, "assistant", "same id")],  # the second replaces the first
        [msg(i) for i in range(7, 14)],  # more than the cap at once: the newest CAP stay
        [],  # nothing: no change
    ]
    await one_by_one.recent_fill(10, base)
    await at_once.recent_fill(11, base)
    for batch in batches:
        for m in batch:
            await one_by_one.recent_append(10, m)
        await at_once.recent_append(11, *batch)
        assert await at_once.recent_get(11) == await one_by_one.recent_get(10)
    assert [m.id for m in await at_once.recent_get(11) or []] == list(range(9, 14))
    await at_once.recent_append(12, msg(1), msg(2))  # a missing list stays missing
    assert await at_once.recent_get(12) is None


async def test_recent_replace_by_id(cache: Any) -> None:
    await cache.recent_replace(4, msg(1))
    assert await cache.recent_get(4) is None
    await cache.recent_fill(4, [msg(1), msg(12, "assistant"), msg(123)])
    await cache.recent_replace(4, msg(12, "assistant", "regenerated", "stopped"))
    await cache.recent_replace(4, msg(99, "assistant", "unknown id"))  # not cached: no change
    assert await cache.recent_get(4) == [msg(1), msg(12, "assistant", "regenerated", "stopped"), msg(123)]


async def test_recent_drop_and_empty_fill(cache: Any) -> None:
    await cache.recent_fill(5, [msg(1)])
    await cache.recent_drop(5)
    assert await cache.recent_get(5) is None
    await cache.recent_drop(5)  # dropping twice is fine
    await cache.recent_fill(5, [])  # an empty list is not cached: the next read misses
    assert await cache.recent_get(5) is None


# ---------------------------------------------------------------- online
async def test_online_ttl_and_count(cache: Any) -> None:
    assert await cache.online_count() == 0
    assert not await cache.is_online(1)
    await cache.touch_online(1, ttl=0.3)
    await cache.touch_online(2, ttl=60)
    await cache.touch_online(2, ttl=60)  # touching again counts once
    assert await cache.is_online(1) and await cache.is_online(2)
    assert await cache.online_count() == 2
    await asyncio.sleep(0.4)
    assert not await cache.is_online(1)
    assert await cache.is_online(2)
    assert await cache.online_count() == 1


# ---------------------------------------------------------------- locks
async def test_lock_mutual_exclusion_and_fifo(cache: Any) -> None:
    await cache.recent_fill(9, [msg(0)])
    order: list[int] = []
    inside = 0

    async def worker(i: int) -> None:
        nonlocal inside
        async with cache.user_lock(77):
            inside += 1
            assert inside == 1
            current = await cache.recent_get(9)  # read-modify-write under the lock
            await asyncio.sleep(0.001)
            await cache.recent_fill(9, [*current, msg(i)])
            order.append(i)
            inside -= 1

    n = 30
    await asyncio.gather(*(worker(i) for i in range(1, n + 1)))
    assert order == list(range(1, n + 1))  # FIFO: in the order they asked
    assert [m.id for m in await cache.recent_get(9)] == list(range(n - CAP + 1, n + 1))
    assert len(cache._locks) == 0  # no per-player entry left behind


async def test_lock_other_players_do_not_wait(cache: Any) -> None:
    async with cache.user_lock(1):
        async with asyncio.timeout(1):
            async with cache.user_lock(2):
                pass


async def test_lock_released_on_error_and_cancelled_waiter(cache: Any) -> None:
    with pytest.raises(RuntimeError):
        async with cache.user_lock(5):
            raise RuntimeError("boom")
    entered = asyncio.Event()
    release = asyncio.Event()

    async def holder() -> None:
        async with cache.user_lock(5):
            entered.set()
            await release.wait()

    async def waiter() -> None:
        async with cache.user_lock(5):
            pytest.fail("the cancelled waiter must not get the lock")

    h = asyncio.create_task(holder())
    await entered.wait()
    w = asyncio.create_task(waiter())
    await asyncio.sleep(0.05)
    w.cancel()
    with pytest.raises(asyncio.CancelledError):
        await w
    release.set()
    await h
    async with asyncio.timeout(1), cache.user_lock(5):
        pass
    assert len(cache._locks) == 0


# ---------------------------------------------------------------- Redis lock across processes
@pytest.fixture
async def processes(
    redis_url: str, redis_prefix: str, redis_cleanup: None
) -> AsyncIterator[Callable[..., RedisCache]]:
    """RedisCache instances sharing a prefix: stand-ins for bot processes."""
    created: list[RedisCache] = []

    def factory(**kw: Any) -> RedisCache:
        created.append(RedisCache(redis_url, prefix=redis_prefix, cap=CAP, **kw))
        return created[-1]

    yield factory
    for cache in created:
        await cache.close()


async def test_lock_lease_renewed_while_held(processes: Callable[[], RedisCache]) -> None:
    a, b = processes(), processes()
    events: list[tuple[str, float]] = []

    async def holder() -> None:
        async with a.user_lock(42, lease=0.3):
            events.append(("a-in", time.monotonic()))
            await asyncio.sleep(1.2)  # 4 leases long
            events.append(("a-out", time.monotonic()))

    async def contender() -> None:
        await asyncio.sleep(0.05)
        async with b.user_lock(42, lease=0.3):
            events.append(("b-in", time.monotonic()))

    await asyncio.gather(holder(), contender())
    assert [e for e, _ in events] == ["a-in", "a-out", "b-in"]
    assert events[2][1] - events[1][1] < 0.3  # released promptly, not left to expire


async def test_lock_of_dead_holder_expires_and_key_is_released(
    processes: Callable[[], RedisCache], raw: aioredis.Redis, redis_prefix: str
) -> None:
    cache = processes()
    key = f"{redis_prefix}lock:8"
    await raw.set(key, "a-crashed-process", px=300)  # never renewed, never released
    started = time.monotonic()
    async with cache.user_lock(8, lease=5):
        waited = time.monotonic() - started
        assert await raw.get(key) not in (None, b"a-crashed-process")
    assert 0.2 < waited < 1.5
    assert await raw.exists(key) == 0  # compare-and-delete on exit


async def test_lock_cancelled_while_polling_redis_gives_it_back(
    processes: Callable[[], RedisCache],
) -> None:
    a, b, c = processes(), processes(), processes()
    release = asyncio.Event()
    entered = asyncio.Event()
    claimed = asyncio.Event()

    async def holder() -> None:
        async with a.user_lock(3, lease=5):
            entered.set()
            await release.wait()

    b._claim = _slow_when_it_succeeds(b._claim, claimed)  # type: ignore[assignment]

    async def waiter() -> None:
        async with b.user_lock(3, lease=5):
            pytest.fail("cancelled before it got the lock")

    h = asyncio.create_task(holder())
    await entered.wait()
    w = asyncio.create_task(waiter())
    await asyncio.sleep(0.05)
    release.set()
    await h
    await claimed.wait()  # Redis gave b the lock, b is cancelled before it hears so
    w.cancel()
    with pytest.raises(asyncio.CancelledError):
        await w
    async with asyncio.timeout(1), c.user_lock(3, lease=5):  # not left held for the lease
        pass


# ---------------------------------------------------------------- Redis round trips
_COMMAND = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)")


def count_round_trips(cache: RedisCache) -> list[str]:
    """The packets the cache's connections send from now on (one per round trip: a script
    call, a command, a pipeline), each as its first command's name. Connections made from now
    on are counted: call it before the cache connects."""
    sent: list[str] = []
    base = cache._pool.connection_class

    class Counting(base):  # type: ignore[misc, valid-type]
        async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            packet = command if isinstance(command, bytes) else b"".join(
                c.encode() if isinstance(c, str) else bytes(c) for c in ([command] if isinstance(command, str) else command)
            )
            found = _COMMAND.match(packet)
            sent.append(found.group(1).decode().upper() if found else "?")
            await super().send_packed_command(command, check_health)

    cache._pool.connection_class = Counting
    return sent


async def load_scripts(cache: RedisCache) -> None:
    """Every script of the cache loaded in Redis, as a running bot's are after its first calls:
    a script Redis does not know yet costs two more round trips the first time (NOSCRIPT, then
    SCRIPT LOAD), and whether an earlier test used it depends on the suite's order and on
    whether Redis is fresh. Clear the counted calls afterwards."""
    for script in vars(cache).values():
        if isinstance(script, AsyncScript):
            assert await cache._redis.script_load(script.script) == script.sha


async def test_uncontended_lock_takes_one_round_trip(
    processes: Callable[..., RedisCache], raw: aioredis.Redis, redis_prefix: str
) -> None:
    cache = processes()
    sent = count_round_trips(cache)
    async with cache.user_lock(1):  # warm up: a connection, the scripts loaded
        pass
    sent.clear()
    async with cache.user_lock(2):
        assert sent == ["EVALSHA"]  # joined the queue and took the lock in one call
        assert await raw.get(f"{redis_prefix}lock:2") is not None  # held in Redis
    assert sent == ["EVALSHA", "EVALSHA"]  # and one to give it back
    assert await raw.exists(f"{redis_prefix}lock:2") == 0
    # nobody waited: no queue, waiter or ticket keys were written (only the holder mark, emptied)
    assert [k async for k in raw.scan_iter(match=f"{redis_prefix}lock*:2")] == [f"{redis_prefix}lockh:2".encode()]
    assert await raw.get(f"{redis_prefix}lockh:2") == b""


async def test_cache_calls_of_one_message_are_one_round_trip_each(
    processes: Callable[..., RedisCache],
) -> None:
    cache = processes()
    sent = count_round_trips(cache)
    await load_scripts(cache)
    await cache.recent_fill(1, [msg(1), msg(2, "assistant")])
    await cache.hit("user:1:warm-up", 60)
    sent.clear()
    async with cache.user_lock(1):
        assert await cache.first_seen("update:1")
        assert await cache.hit("user:1:replies", 60) == 1
        assert await cache.recent_get(1) == [msg(1), msg(2, "assistant")]
        await cache.recent_append(1, msg(3), msg(4, "assistant"))  # the message and its reply
    assert sent == ["EVALSHA"] * 6  # lock, first_seen, hit, recent_get, append, unlock
    assert await cache.recent_get(1) == [msg(1), msg(2, "assistant"), msg(3), msg(4, "assistant")]


async def test_a_message_costs_three_round_trips_with_the_lock_carrying_dedup_and_append(
    processes: Callable[..., RedisCache],
) -> None:
    """How the bot uses the cache per message: the lock's call de-duplicates the update, the
    rate count and the recent list come in one call, the turn goes with the release."""
    cache = processes()
    sent = count_round_trips(cache)
    await cache.recent_fill(1, [msg(1), msg(2, "assistant")])
    async with cache.user_lock(9, seen=("update:warm-up", 60)):
        pass
    sent.clear()
    async with cache.user_lock(1, seen=("update:1", 60)) as hold:
        assert hold.first_seen is True and hold.suspect is False
        hits, recent = await cache.hit_and_recent("user:1:replies", 60, 1)
        assert (hits, recent) == (1, [msg(1), msg(2, "assistant")])
        assert hold.defer_append(1, msg(3), msg(4, "assistant"))
        assert await cache.recent_get(1) == [msg(1), msg(2, "assistant")]  # not yet: at the release
        sent.clear()
    assert sent == ["EVALSHA"]  # the release carried the append
    assert await cache.recent_get(1) == [msg(1), msg(2, "assistant"), msg(3), msg(4, "assistant")]
    # the same update again (Telegram retried it, maybe to another process): a duplicate
    async with processes().user_lock(1, seen=("update:1", 60)) as again:
        assert again.first_seen is False
    async with cache.user_lock(1) as plain:  # not asked: not answered
        assert plain.first_seen is None


async def test_the_lock_reads_the_rate_count_and_recent_messages_and_the_release_counts_the_hit(
    processes: Callable[..., RedisCache],
) -> None:
    cache = processes()
    sent = count_round_trips(cache)
    await load_scripts(cache)
    await cache.recent_fill(1, [msg(1), msg(2, "assistant")])
    assert await cache.hit("user:1:replies", 60) == 1
    sent.clear()
    ask = Prefetch("user:1:replies", 60, 1)
    async with cache.user_lock(1, seen=("update:p1", 60), prefetch=ask) as hold:
        assert sent == ["EVALSHA"]  # the lock, the de-duplication and both reads: one call
        got = hold.take_prefetched("user:1:replies", 60, 1)
        assert got is not None and got.hits == 1 and got.recent == [msg(1), msg(2, "assistant")]
        assert hold.take_prefetched("user:1:replies", 60, 1) is None  # once
        hold.defer_hit(got.key, got.window, got.index)
        hold.defer_append(1, msg(3), msg(4, "assistant"))
        assert hold.first_seen is True
    assert sent == ["EVALSHA", "EVALSHA"]  # the release counted the hit and appended the turn
    assert await cache.hit("user:1:replies", 60) == 3
    assert await cache.recent_get(1) == [msg(1), msg(2, "assistant"), msg(3), msg(4, "assistant")]
    # another dialog than the one prefetched, another counter: not answered from the prefetch
    async with cache.user_lock(1, prefetch=ask) as hold:
        assert hold.take_prefetched("user:1:replies", 60, 2) is None
    async with cache.user_lock(1, prefetch=Prefetch("user:1:replies", 60, 9)) as hold:
        missing = hold.take_prefetched("user:1:replies", 60, 9)
        assert missing is not None and missing.recent is None  # a list not cached: a miss


async def test_an_unreadable_cached_list_is_a_miss_and_goes(
    processes: Callable[..., RedisCache], raw: aioredis.Redis, redis_prefix: str
) -> None:
    cache = processes()
    key = f"{redis_prefix}recent:1"
    await raw.rpush(key, "[1,\"user\",\"fine\",\"ok\"]", "not json at all")
    async with cache.user_lock(1, prefetch=Prefetch("user:1:replies", 60, 1)) as hold:
        got = hold.take_prefetched("user:1:replies", 60, 1)
        assert got is not None and got.recent is None  # a miss: rebuilt from the database
    assert await raw.exists(key) == 0  # gone with the next command (the release)
    await raw.rpush(key, "also not json")
    assert await cache.hit_and_recent("user:1:replies", 60, 1) == (1, None)
    assert await raw.exists(key) == 0


async def test_lock_dedup_is_the_first_seen_contract(cache: Any) -> None:
    """Both caches: the lock's de-duplication and `first_seen` share their keys."""
    async with cache.user_lock(3, seen=("update:7:1", 60)) as hold:
        assert hold.first_seen is True
    assert await cache.first_seen("update:7:1", 60) is False
    assert await cache.first_seen("update:7:2", 60) is True
    async with cache.user_lock(3, seen=("update:7:2", 60)) as hold:
        assert hold.first_seen in (False, None)  # None: the caller asks first_seen, which says no
        if hold.first_seen is None:
            assert await cache.first_seen("update:7:2", 60) is False


async def test_a_holder_that_never_released_makes_the_next_hold_suspect(
    processes: Callable[..., RedisCache], raw: aioredis.Redis
) -> None:
    crashed, survivor = processes(), processes()
    # a process takes the lock and dies holding it: its lease runs out, its mark stays
    lock = crashed.user_lock(5, lease=0.2)
    hold = await lock.__aenter__()
    assert hold.suspect is False
    crashed._closed = True  # dead: it releases nothing (its release is a no-op)
    await lock.__aexit__(None, None, None)
    async with asyncio.timeout(3), survivor.user_lock(5, lease=5) as taken:
        assert taken.suspect is True  # what the dead holder cached may be stale
    async with survivor.user_lock(5, lease=5) as next_hold:
        assert next_hold.suspect is False  # released cleanly: trusted again
    assert await raw.get(survivor._lock_keys(5)[4]) == b""  # a clean release empties the mark


async def test_appends_are_dropped_when_another_holder_took_over(
    processes: Callable[..., RedisCache], raw: aioredis.Redis
) -> None:
    """A holder that outlived its lease does not append behind the back of the holder that
    took over (which distrusts the cached list and reads the database)."""
    slow, other = processes(), processes()
    await slow.recent_fill(1, [msg(1)])
    lock = slow.user_lock(6, lease=0.2)
    hold = await lock.__aenter__()
    await raw.delete(slow._lock_key(6))  # its lease ran out
    async with other.user_lock(6, lease=5) as taken:
        assert taken.suspect is True
        await other.recent_fill(1, [msg(1), msg(2), msg(3, "assistant")])  # from the database
    assert hold.defer_append(1, msg(2), msg(3, "assistant"))
    await lock.__aexit__(None, None, None)
    assert await slow.recent_get(1) == [msg(1), msg(2), msg(3, "assistant")]  # not appended twice


async def test_a_failed_release_leaves_the_deferred_list_stale_and_forgotten(
    processes: Callable[..., RedisCache],
) -> None:
    """The release carries appends: if it fails, the list is dropped on the next success."""
    cache = processes()
    await cache.recent_fill(1, [msg(1)])
    lock = cache.user_lock(7, lease=5)
    hold = await lock.__aenter__()
    assert hold.defer_append(1, msg(2))

    async def broken(**_kw: Any) -> Any:
        raise aioredis.ConnectionError("Redis went away")

    cache._release_script = broken  # type: ignore[assignment]
    await lock.__aexit__(None, None, None)
    assert await cache.recent_get(1) is None  # stale: dropped, rebuilt from the database


async def test_appending_two_messages_is_one_round_trip(processes: Callable[..., RedisCache]) -> None:
    cache = processes()
    sent = count_round_trips(cache)
    await load_scripts(cache)
    await cache.recent_fill(1, [msg(1)])
    await cache.recent_fill(2, [msg(1)])
    sent.clear()
    await cache.recent_append(1, msg(2), msg(3, "assistant"))
    assert sent == ["EVALSHA"]
    await cache.recent_append(2, msg(2))
    await cache.recent_append(2, msg(3, "assistant"))
    assert sent == ["EVALSHA"] * 3
    assert await cache.recent_get(1) == await cache.recent_get(2) == [msg(1), msg(2), msg(3, "assistant")]
    sent.clear()
    await cache.recent_append(1)  # nothing to append: no round trip
    assert sent == []


async def test_enter_script_follows_the_queue_rules(
    processes: Callable[..., RedisCache], raw: aioredis.Redis
) -> None:
    cache = processes()
    keys = cache._lock_keys(6)
    lock, queue, alive = keys[:3]

    async def enter(token: str) -> int:
        return int(await cache._enter(keys=keys, args=[token, 5000, 5000, 60000]))

    assert await enter("t1") == 2  # free, nobody queued: taken
    assert await enter("t1") == 2  # a retried call: still ours (and t1 is the holder: no +4)
    assert await raw.get(lock) == b"t1" and await raw.exists(queue, alive) == 0
    assert await enter("t2") == 0  # held: queued
    assert await raw.zscore(queue, "t2") is not None
    await raw.delete(lock)
    assert await enter("t3") == 0  # free, but a live waiter is ahead: queued behind it
    assert await raw.zrange(queue, 0, -1) == [b"t2", b"t3"]
    await raw.zadd(alive, {"t2": 0})  # t2's process died (it stopped refreshing)
    # the dead waiter is dropped, the head takes the lock; t1 lost it without releasing: +4
    assert await enter("t3") == 2 + 4
    assert await raw.get(lock) == b"t3" and await raw.zcard(queue) == 0
    assert await raw.get(keys[4]) == b"t3"  # the holder mark


async def test_fast_path_does_not_jump_a_waiting_process(processes: Callable[..., RedisCache]) -> None:
    """The lock is free for a moment while another process's waiter (the queue's head) sleeps
    between polls: a newcomer's one-call fast path must queue behind it, not take the lock."""
    a, b, c = processes(), processes(), processes()
    order: list[str] = []
    go = asyncio.Event()
    real_claim = c._claim

    async def gated_claim(**kw: Any) -> Any:  # c's polls wait for `go` (its waiter stays alive)
        if len(kw["keys"]) > 1:
            await go.wait()
        return await real_claim(**kw)

    c._claim = gated_claim  # type: ignore[assignment]
    a_in = asyncio.Event()
    release_a = asyncio.Event()

    async def worker(name: str, cache: RedisCache, entered: asyncio.Event | None = None) -> None:
        async with cache.user_lock(11, lease=5):
            order.append(name)
            if entered is not None:
                entered.set()
            if name == "a":
                await release_a.wait()

    b_entered, c_entered = asyncio.Event(), asyncio.Event()

    def watched(script: Any, entered: asyncio.Event) -> Any:  # the fast-path call, answered by Redis
        async def call(**kw: Any) -> Any:
            try:
                return await script(**kw)
            finally:
                entered.set()

        return call

    b._enter = watched(b._enter, b_entered)  # type: ignore[assignment]
    c._enter = watched(c._enter, c_entered)  # type: ignore[assignment]
    ta = asyncio.create_task(worker("a", a, a_in))
    await a_in.wait()
    tc = asyncio.create_task(worker("c", c))
    async with asyncio.timeout(10):
        await c_entered.wait()  # c: queued in Redis, polling (held at the gate)
    assert await c._redis.zcard(c._lock_keys(11)[1]) == 1
    release_a.set()
    await ta
    assert await c._redis.exists(c._lock_keys(11)[0]) == 0  # the lock is free now
    tb = asyncio.create_task(worker("b", b))
    async with asyncio.timeout(10):
        await b_entered.wait()  # b's one call reached Redis and was answered
    for _ in range(10):  # and b's task went on with that answer
        await asyncio.sleep(0)
    assert order == ["a"]  # b did not take the free lock ahead of c
    assert await c._redis.zcard(c._lock_keys(11)[1]) == 2  # b queued behind c
    go.set()
    async with asyncio.timeout(5):
        await asyncio.gather(tb, tc)
    assert order == ["a", "c", "b"]


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_lock_order_across_processes_under_contention(
    processes: Callable[..., RedisCache], seed: int
) -> None:
    """Messages of one player arriving at two processes, a little apart, while the lock is
    busy: each process mixes fast-path arrivals (nobody of its own waits) and queued ones,
    and they are served in arrival order, one at a time."""
    import random

    rnd = random.Random(seed)
    a, b = processes(), processes()
    order: list[int] = []
    inside = 0
    # arrival is when a message's call joins the queue in Redis (its first call there: the
    # fast path's ENTER or a waiter's ENQUEUE, made by the message's own task; a waiter's
    # keep-alive ENQUEUE runs in another task). The next message is sent once the previous one
    # has arrived: a starved event loop or a slow new connection cannot reorder the arrivals.
    arrived: dict[asyncio.Task[Any], asyncio.Event] = {}

    def arrival(script: Any) -> Any:
        async def call(**kw: Any) -> Any:
            got = await script(**kw)
            task = asyncio.current_task()
            if task in arrived:
                arrived[task].set()
            return got

        return call

    for cache in (a, b):
        cache._enter = arrival(cache._enter)  # type: ignore[assignment]
        cache._enqueue = arrival(cache._enqueue)  # type: ignore[assignment]

    async def worker(i: int, cache: RedisCache, hold: float) -> None:
        nonlocal inside
        async with cache.user_lock(21, lease=5):
            inside += 1
            assert inside == 1
            order.append(i)
            await asyncio.sleep(hold)
            inside -= 1

    tasks = []
    for i in range(16):
        cache = rnd.choice([a, b])
        hold = 0.15 if i == 0 else rnd.choice([0.0, 0.01, 0.03])
        task = asyncio.create_task(worker(i, cache, hold))
        arrived[task] = asyncio.Event()
        tasks.append(task)
        async with asyncio.timeout(10):
            await arrived[task].wait()
        await asyncio.sleep(0.02)  # a little apart: some find their process's lock free, some not
    async with asyncio.timeout(10):
        await asyncio.gather(*tasks)
    assert order == list(range(16))
    assert len(a._locks) == len(b._locks) == len(a._tickets) == len(b._tickets) == 0


async def test_fast_path_call_sent_late_keeps_the_process_order(
    processes: Callable[..., RedisCache],
) -> None:
    """A second message in the same process arrives while the first one's fast-path call has
    not reached Redis yet (waiting for a connection, say): the second joins the Redis queue
    only after it, or each would wait for the other."""
    cache = processes()
    real_enter = cache._enter

    async def late_enter(**kw: Any) -> Any:
        await asyncio.sleep(0.05)
        return await real_enter(**kw)

    cache._enter = late_enter  # type: ignore[assignment]
    order: list[int] = []

    async def worker(i: int) -> None:
        async with cache.user_lock(12, lease=5):
            order.append(i)

    first = asyncio.create_task(worker(1))
    await asyncio.sleep(0.01)
    second = asyncio.create_task(worker(2))
    async with asyncio.timeout(3):
        await asyncio.gather(first, second)
    assert order == [1, 2]


async def test_lock_cancelled_during_the_fast_path_gives_it_back(
    processes: Callable[..., RedisCache],
) -> None:
    a, b = processes(), processes()
    took = asyncio.Event()
    a._enter = _slow_when_it_succeeds(a._enter, took)  # type: ignore[assignment]

    async def taker() -> None:
        async with a.user_lock(4, lease=5):
            pytest.fail("cancelled before it heard it got the lock")

    t = asyncio.create_task(taker())
    await took.wait()  # Redis gave a the lock; a is cancelled before it hears so
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    async with asyncio.timeout(1), b.user_lock(4, lease=5):  # not left held for the lease
        pass
    assert len(a._locks) == len(a._tickets) == 0


# ---------------------------------------------------------------- de-duplication
async def test_first_seen_once(cache: Any) -> None:
    assert await cache.first_seen("update:1") is True
    assert await cache.first_seen("update:1") is False
    assert await cache.first_seen("update:2") is True
    assert await cache.first_seen("short", ttl=0.2) is True
    assert await cache.first_seen("short", ttl=0.2) is False
    await asyncio.sleep(0.3)
    assert await cache.first_seen("short", ttl=0.2) is True


async def test_first_seen_shared_between_processes(
    backend: Backend, make: Callable[..., Any]
) -> None:
    a, b = make(), make()
    if backend.kind == "memory":
        b = a
    results = await asyncio.gather(*(c.first_seen("update:7") for c in [a, b] * 5))
    assert sorted(results) == [False] * 9 + [True]


# ---------------------------------------------------------------- housekeeping
async def test_forget_user(cache: Any) -> None:
    await cache.recent_fill(1, [msg(1)])
    await cache.recent_fill(2, [msg(2)])
    await cache.recent_fill(3, [msg(3)])  # somebody else's dialog
    await cache.touch_online(10)
    await cache.touch_online(11)
    await cache.forget_user(10, [1, 2])
    assert await cache.recent_get(1) is None and await cache.recent_get(2) is None
    assert await cache.recent_get(3) == [msg(3)]
    assert not await cache.is_online(10) and await cache.is_online(11)
    assert await cache.online_count() == 1


async def test_ping_and_close(make: Callable[..., Any]) -> None:
    cache = make()
    assert await cache.ping() is True
    await cache.close()
    await cache.close()


def test_make_cache_picks_by_settings(redis_prefix: str) -> None:
    mem = make_cache(load_settings(recent_messages=12))
    assert isinstance(mem, MemoryCache) and mem.cap == 12
    red = make_cache(
        load_settings(redis_url="redis://127.0.0.1:1/15", redis_prefix=redis_prefix, recent_messages=7)
    )
    assert isinstance(red, RedisCache) and red.cap == 7 and red.prefix == redis_prefix
    asyncio.run(red.close())


def test_memory_cache_stays_bounded() -> None:
    async def run() -> None:
        cache = MemoryCache(cap=3, max_dialogs=2, max_seen=3)
        for d in range(5):
            await cache.recent_fill(d, [msg(d)])
        assert await cache.recent_get(4) == [msg(4)] and await cache.recent_get(0) is None
        assert len(cache._recent) == 2
        for i in range(10):
            assert await cache.first_seen(f"k{i}")
        assert len(cache._seen) == 3

    asyncio.run(run())


# ---------------------------------------------------------------- Redis down
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _timed(coro: Any) -> Any:
    started = time.monotonic()
    result = await coro
    assert time.monotonic() - started < 0.5
    return result


async def test_dead_redis_degrades_quickly(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="vitte.cache.redis")
    cache = RedisCache(f"redis://127.0.0.1:{_free_port()}/0", prefix="dead:", cap=CAP)
    try:
        for _ in range(3):
            assert await _timed(cache.ping()) is False
            assert await _timed(cache.recent_get(1)) is None
            await _timed(cache.recent_fill(1, [msg(1)]))
            await _timed(cache.recent_append(1, msg(2)))
            await _timed(cache.recent_replace(1, msg(2)))
            await _timed(cache.recent_drop(1))
            assert await _timed(cache.recent_get(1)) is None
            await _timed(cache.touch_online(1))
            assert await _timed(cache.is_online(1)) is False
            assert await _timed(cache.online_count()) == 0
            assert await _timed(cache.first_seen("u:1")) is True
            assert await _timed(cache.first_seen("u:1")) is True  # let through, never dropped
            await _timed(cache.forget_user(1, [1]))
        assert not cache.available

        order: list[int] = []
        inside = 0

        async def worker(i: int) -> None:
            nonlocal inside
            async with cache.user_lock(1):
                inside += 1
                assert inside == 1
                await asyncio.sleep(0.005)
                order.append(i)
                inside -= 1

        started = time.monotonic()
        await asyncio.gather(*(worker(i) for i in range(10)))
        assert order == list(range(10))
        assert time.monotonic() - started < 1.0
    finally:
        await cache.close()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1  # logged once, not once per call


async def test_hung_redis_costs_one_short_timeout() -> None:
    with socket.socket() as hung:  # accepts connections (backlog) and never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(64)
        cache = RedisCache(f"redis://127.0.0.1:{hung.getsockname()[1]}/0", prefix="hung:")
        try:
            started = time.monotonic()
            assert await cache.recent_get(1) is None
            assert time.monotonic() - started < 1.5  # the 1 s operation timeout, once
            started = time.monotonic()
            for i in range(20):  # then Redis is skipped until the next probe
                assert await cache.first_seen(f"u:{i}") is True
                await cache.recent_append(1, msg(i))
                async with cache.user_lock(1):
                    pass
            assert time.monotonic() - started < 1.5
        finally:
            await cache.close()


class ThrowawayRedis:
    """A redis-server of our own on a free port, with a dump file so a restart keeps data."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.args = [
            "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--dbfilename", "dump.rdb", "--logfile", str(workdir / "log"),
        ]  # fmt: skip
        self.binary = binary
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(self.binary, *self.args)
        async with self.client() as r:
            for _ in range(100):
                try:
                    if await r.ping():
                        return
                except aioredis.RedisError:
                    await asyncio.sleep(0.05)
        raise AssertionError("redis-server did not start")

    async def kill(self, *, save: bool = True) -> None:
        if save:  # what a server with persistence would come back with
            async with self.client() as r:
                await r.save()
        if self.proc and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()

    def client(self) -> aioredis.Redis:
        return aioredis.from_url(self.url, socket_connect_timeout=0.2)


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[ThrowawayRedis]:
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server is not installed")
    server = ThrowawayRedis(binary, tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.kill(save=False)


@pytest.mark.slow
async def test_redis_restart_is_seamless(own_redis: ThrowawayRedis) -> None:
    # a long retry interval: any failed call would show as a miss for the rest of the test
    cache = RedisCache(own_redis.url, prefix="rs:", cap=CAP, retry_interval=60)
    try:
        await cache.recent_fill(1, [msg(1)])
        await own_redis.kill()  # nobody calls while it is down; pooled connections go stale
        await own_redis.start()
        assert await cache.recent_get(1) == [msg(1)]  # the first call after it came back
        assert cache.available
    finally:
        await cache.close()


@pytest.mark.slow
async def test_redis_killed_and_restarted_serves_no_stale_list(own_redis: ThrowawayRedis) -> None:
    cache = RedisCache(own_redis.url, prefix="rs:", cap=CAP, retry_interval=0.2)
    stale_key = "rs:recent:1"
    try:
        await cache.recent_fill(1, [msg(1), msg(2)])
        await cache.recent_fill(2, [msg(5)])
        assert await cache.recent_get(1) == [msg(1), msg(2)]
        await own_redis.kill()

        # down: a reply is written to the database, its cache write fails
        await _timed(cache.recent_append(1, msg(3)))
        assert await _timed(cache.recent_get(1)) is None
        assert await _timed(cache.first_seen("u:9")) is True
        async with asyncio.timeout(0.5), cache.user_lock(1):
            pass
        assert not cache.available

        await own_redis.start()
        async with own_redis.client() as raw:
            assert await raw.llen(stale_key) == 2  # the server came back with the stale list
            # no ping, just use it: the stale list is never served, and is deleted on recovery
            async with asyncio.timeout(5):
                while True:
                    assert await cache.recent_get(1) is None
                    if not await raw.exists(stale_key):
                        break
                    await asyncio.sleep(0.05)
            assert cache.available
            assert await cache.recent_get(2) == [msg(5)]  # untouched lists are used again
            await cache.recent_fill(1, [msg(1), msg(2), msg(3)])  # rebuilt from the database
            assert await cache.recent_get(1) == [msg(1), msg(2), msg(3)]
            assert await cache.first_seen("u:10") is True
            assert await cache.first_seen("u:10") is False
            async with cache.user_lock(1):
                assert await raw.exists("rs:lock:1") == 1
    finally:
        await cache.close()


# ---------------------------------------------------------------- rate limiting (hit)
async def _at_window_start(window: float) -> None:
    """Sleep to the start of the next fixed window, so a short test stays inside one."""
    from vitte.cache.base import window_remaining

    await asyncio.sleep(window_remaining(window) + 0.01)


async def test_hit_counts_in_fixed_windows(cache: Any) -> None:
    window = 0.5
    await _at_window_start(window)
    assert [await cache.hit("user:1:replies", window) for _ in range(3)] == [1, 2, 3]
    assert await cache.hit("user:2:replies", window) == 1  # keys count separately
    assert await cache.hit("user:1:other", window) == 1
    await _at_window_start(window)  # the next window starts from zero
    assert await cache.hit("user:1:replies", window) == 1
    assert await cache.hit("user:1:replies", window) == 2


async def test_hit_counters_shared_between_processes(backend: Backend, make: Callable[..., Any]) -> None:
    a, b = make(), make()
    if backend.kind == "memory":
        b = a
    await _at_window_start(0.5)
    counts = await asyncio.gather(*(c.hit("user:5:replies", 0.5) for c in [a, b] * 5))
    assert sorted(counts) == list(range(1, 11))  # every hit counted once, across processes


async def test_forget_user_drops_the_players_counters(cache: Any) -> None:
    await _at_window_start(0.5)
    await cache.hit("user:10:replies", 0.5)
    await cache.hit("user:10:replies", 0.5)
    await cache.hit("user:100:replies", 0.5)  # another player whose id starts the same
    await cache.hit("global", 0.5)
    await cache.forget_user(10, [])
    assert await cache.hit("user:10:replies", 0.5) == 1
    assert await cache.hit("user:100:replies", 0.5) == 2
    assert await cache.hit("global", 0.5) == 2


async def test_hit_keys_expire_in_redis(
    redis_url: str, redis_prefix: str, redis_cleanup: None, raw: aioredis.Redis
) -> None:
    cache = RedisCache(redis_url, prefix=redis_prefix)
    try:
        await cache.hit("user:3:replies", 0.2)
        keys = [k async for k in raw.scan_iter(match=redis_prefix + "hit:*")]
        assert len(keys) == 1 and 0 < await raw.pttl(keys[0]) <= 1200
        await cache.forget_user(3, [])
        assert [k async for k in raw.scan_iter(match=redis_prefix + "hit:*")] == []
    finally:
        await cache.close()


async def test_dead_redis_hit_allows() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{_free_port()}/0", prefix="dead:", cap=CAP)
    try:
        for _ in range(3):
            assert await _timed(cache.hit("user:1:replies", 60)) == 0  # 0 = allow, never an error
    finally:
        await cache.close()


async def test_hit_and_recent_is_hit_and_recent_get_at_once(cache: Any) -> None:
    # a miss and a first hit
    assert await cache.hit_and_recent("user:5:replies", 60, 50) == (1, None)
    await cache.recent_fill(50, [msg(1), msg(2, "assistant")])
    assert await cache.hit_and_recent("user:5:replies", 60, 50) == (2, [msg(1), msg(2, "assistant")])
    # the same counter as hit(), the same list as recent_get()
    assert await cache.hit("user:5:replies", 60) == 3
    assert await cache.recent_get(50) == [msg(1), msg(2, "assistant")]
    assert (await cache.hit_and_recent("user:6:replies", 60, 51)) == (1, None)  # others untouched


async def test_hit_and_recent_is_one_round_trip(processes: Callable[..., RedisCache]) -> None:
    cache = processes()
    sent = count_round_trips(cache)
    await cache.recent_fill(1, [msg(1)])
    await cache.hit_and_recent("user:1:warm-up", 60, 1)  # the script loaded
    sent.clear()
    assert await cache.hit_and_recent("user:1:replies", 60, 1) == (1, [msg(1)])
    assert sent == ["EVALSHA"]
