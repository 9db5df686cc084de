"""Nothing lost while the database is away (issue 14, item 2): the spool.

- `vitte.spool.Spool` on its two places: the local file (fsynced, survives a new process, bounded,
  emptied once handled) and Redis (shared, put back at the front).
- The fault test: a real PostgreSQL of the test's own stopped under a running bot (long polling,
  and a webhook): the player's messages are kept, the player is told once, and once the database
  is back every message is answered and stored in order; no traceback.
- Messages that shutdown cut while they waited for their turn (polling) are handled on the next
  start; a kept message older than VITTE_SPOOL_MAX_AGE is given up with a "write again"; a full
  spool says "one moment".
- Several bot processes sharing Redis: one drainer at a time takes from the shared list (a
  player's kept messages answered in the kept order), and another takes over when it dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr
from sqlalchemy import select

from tests.support.bot_harness import PERSONA, STORY, cards, drop_redis_keys, wait_until
from tests.support.llm_server import FakeLLMServer
from tests.support.pg_cluster import Cluster, cluster, create_database  # noqa: F401  (the fixture)
from tests.test_cache import ThrowawayRedis, own_redis  # noqa: F401  (the fixture)
from vitte.bot import spooling
from vitte.bot.factory import build_dispatcher
from vitte.bot.runner import run_bot
from vitte.bot.runtime import Runtime
from vitte.bot.spooling import Drainer
from vitte.bot.texts import t
from vitte.cache.memory import MemoryCache
from vitte.cache.redis import RedisCache
from vitte.catalog.seed import seed_cards
from vitte.config import Settings, load_settings
from vitte.core import Core
from vitte.db import Database
from vitte.localapi import LocalBotSession, LocalPlayer, make_local_bot
from vitte.models import Dialog, Message
from vitte.spool import Entry, Kept, Spool

TOKEN = "42:LOCAL-TEST-TOKEN-0123456789abcdef"
PLAYER = 7401


def _update(n: int, text: str = "hi", user: int = PLAYER) -> dict[str, Any]:
    chat = {"id": user, "type": "private"}
    sender = {"id": user, "is_bot": False, "first_name": "P", "language_code": "en"}
    return {"update_id": n, "message": {"message_id": n, "date": 0, "chat": chat, "from": sender, "text": text}}


# ---------------------------------------------------------------------- the spool itself


async def test_the_file_spool_keeps_in_order_survives_a_restart_and_empties(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    spool = Spool(MemoryCache(), path, max_age=600, max_items=3)
    assert spool.empty and not path.exists()
    assert await spool.keep(PLAYER, _update(1, "one")) is Kept.FIRST
    assert await spool.keep(PLAYER, _update(2, "two")) is Kept.MORE
    assert await spool.keep(PLAYER + 1, _update(3, "three", PLAYER + 1)) is Kept.FIRST
    assert await spool.keep(PLAYER, _update(4, "four")) is Kept.FULL  # bounded
    assert spool.holds(PLAYER) and spool.holds(PLAYER + 1) and not spool.holds(PLAYER + 2)
    assert len(path.read_text().splitlines()) == 3

    first = await spool.take()
    assert first is not None and first.update["message"]["text"] == "one"
    await spool.release(first, handled=False)  # the store failed again: it stays first
    first = await spool.take()
    assert first is not None and first.update["message"]["text"] == "one"
    await spool.release(first, handled=True)

    # a new process (a crash, a restart) finds what is left, in order
    again = Spool(MemoryCache(), path, max_age=600, max_items=3)
    assert await again.load() == 2
    assert again.holds(PLAYER) and again.holds(PLAYER + 1)
    texts = []
    while (entry := await again.take()) is not None:
        texts.append(entry.update["message"]["text"])
        await again.release(entry, handled=True)
    assert texts == ["two", "three"]
    assert again.empty
    assert not path.exists() and not path.with_name(path.name + ".done").exists()


async def test_an_unreadable_line_is_dropped_and_the_rest_kept(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    good = json.dumps({"at": time.time(), "user": PLAYER, "update": _update(5, "kept")})
    path.write_text("{not json\n" + good + "\n")
    spool = Spool(MemoryCache(), path, max_age=600, max_items=10)
    assert await spool.load() == 1
    entry = await spool.take()
    assert entry is not None and entry.update["message"]["text"] == "kept"
    await spool.release(entry, handled=True)
    assert not path.exists()


def _line(n: int, text: str, at: float | None = None) -> str:
    """A file spool's line as `keep` writes it (without its newline)."""
    return Entry(time.time() if at is None else at, PLAYER, _update(n, text)).dump()


async def test_a_line_cut_short_by_a_crash_does_not_swallow_the_next_one(tmp_path: Path) -> None:
    """A crash in the middle of an append leaves a last line without its newline (never
    acknowledged: the player is told only after the fsync). The next append, by a new process
    before or after its drainer loaded the file, is a line of its own, kept and found again."""
    for load_first in (True, False):
        path = tmp_path / f"spool-{load_first}.jsonl"
        path.write_text(_line(1, "one") + "\n" + _line(2, "cut")[:25])
        spool = Spool(MemoryCache(), path, max_age=600, max_items=10)
        if load_first:
            assert await spool.load() == 1
        assert await spool.keep(PLAYER, _update(3, "three")) in (Kept.FIRST, Kept.MORE)
        again = Spool(MemoryCache(), path, max_age=600, max_items=10)  # a restart
        assert await again.load() == 2
        assert await _drained(again) == ["one", "three"]
        assert not path.exists()


async def test_a_whole_last_line_without_its_newline_is_kept(tmp_path: Path) -> None:
    """Written whole but its newline not: the line is read, and the next append starts a line."""
    path = tmp_path / "spool.jsonl"
    path.write_text(_line(1, "one"))
    spool = Spool(MemoryCache(), path, max_age=600, max_items=10)
    await spool.keep(PLAYER, _update(2, "two"))
    again = Spool(MemoryCache(), path, max_age=600, max_items=10)
    assert await again.load() == 2
    assert await _drained(again) == ["one", "two"]


async def test_an_unreadable_line_between_kept_ones_does_not_shift_the_handled_count(tmp_path: Path) -> None:
    """`.done` counts the lines before the first one not handled: an unreadable line after a
    kept one does not make a restart skip the next kept one."""
    path = tmp_path / "spool.jsonl"
    path.write_text("\n".join([_line(1, "one"), _line(2, "two"), "{not json", _line(3, "three"), ""]))
    spool = Spool(MemoryCache(), path, max_age=600, max_items=10)
    assert await spool.load() == 3
    first = await spool.take()
    assert first is not None and first.update["message"]["text"] == "one"
    await spool.release(first, handled=True)
    again = Spool(MemoryCache(), path, max_age=600, max_items=10)  # a crash, a restart
    assert await again.load() == 2
    second = await again.take()
    assert second is not None and second.update["message"]["text"] == "two"
    await again.release(second, handled=True)
    third = Spool(MemoryCache(), path, max_age=600, max_items=10)  # and another
    assert await third.load() == 1
    assert await _drained(third) == ["three"]
    assert not path.exists()


async def test_a_message_kept_before_the_drainer_loads_is_counted_once(tmp_path: Path) -> None:
    """A new process keeps a message before its drainer's first `load`, which finds it in the
    file with what an earlier run kept: each counts once, so the player is no longer held once
    both are handled."""
    path = tmp_path / "spool.jsonl"
    earlier = Spool(MemoryCache(), path, max_age=600, max_items=10)
    await earlier.keep(PLAYER, _update(1, "one"))
    spool = Spool(MemoryCache(), path, max_age=600, max_items=10)  # the next start
    await spool.keep(PLAYER, _update(2, "two"))  # before the drainer loads
    assert await spool.load() == 2
    assert await spool.load() == 2  # loading again counts nothing twice either
    for want, held in (("one", True), ("two", False)):
        entry = await spool.take()
        assert entry is not None and entry.update["message"]["text"] == want
        await spool.release(entry, handled=True)
        assert spool.holds(PLAYER) is held
    assert spool.empty


async def test_a_message_kept_in_redis_before_the_drainer_loads_is_counted_once(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    cache = RedisCache(redis_url, prefix=redis_prefix)
    try:
        spool = Spool(cache, tmp_path / "spool.jsonl", max_age=600, max_items=10)
        await spool.keep(PLAYER, _update(1, "one"))
        assert await spool.load() == 1
        entry = await spool.take()
        assert entry is not None and entry.origin == "shared"
        await spool.release(entry, handled=True)
        assert not spool.holds(PLAYER) and spool.empty
    finally:
        await cache.close()
        from tests.support.redis_keys import drop_redis_prefix

        await drop_redis_prefix(redis_url, redis_prefix)


async def test_expiry_is_by_arrival_time(tmp_path: Path) -> None:
    spool = Spool(MemoryCache(), tmp_path / "s.jsonl", max_age=60, max_items=10)
    await spool.keep(PLAYER, _update(1), at=time.time() - 61)
    await spool.keep(PLAYER, _update(2))
    old, new = await spool.take(), None
    assert old is not None and spool.expired(old)
    await spool.release(old, handled=True)
    new = await spool.take()
    assert new is not None and not spool.expired(new)
    assert spool.told_expired(PLAYER) is False and spool.told_expired(PLAYER) is True


async def test_the_redis_spool_is_shared_bounded_and_puts_back_at_the_front(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    path = tmp_path / "spool.jsonl"
    cache = RedisCache(redis_url, prefix=redis_prefix)
    other_cache = RedisCache(redis_url, prefix=redis_prefix)
    try:
        spool = Spool(cache, path, max_age=600, max_items=2)
        assert await spool.keep(PLAYER, _update(1, "one")) is Kept.FIRST
        assert await spool.keep(PLAYER, _update(2, "two")) is Kept.MORE
        assert await spool.keep(PLAYER, _update(3, "three")) is Kept.FULL
        assert not path.exists()  # Redis took them
        # another bot process sees them and takes the oldest first
        other = Spool(other_cache, tmp_path / "other.jsonl", max_age=600, max_items=2)
        assert await other.load() == 2 and other.holds(PLAYER)
        entry = await other.take()
        assert entry is not None and entry.origin == "shared" and entry.update["message"]["text"] == "one"
        await other.release(entry, handled=False)
        assert await cache.spool_items() == [entry.raw, (await cache.spool_items() or [])[1]]
        # one drainer at a time takes from the shared list: the other holds its lease
        assert await spool.take() is None and spool.shared_elsewhere
        spool.settle()
        assert spool.holds(PLAYER)  # the items are there, only not ours to take
        await other.give_up_lease()  # the other's drainer stops
        for want in ("one", "two"):
            got = await spool.take()
            assert got is not None and got.update["message"]["text"] == want
            await spool.release(got, handled=True)
        assert await spool.take() is None and await cache.spool_items() == []
        assert not spool.shared_elsewhere and not spool.leased  # found empty: the lease given up
        spool.settle()
        assert spool.empty
    finally:
        await cache.close()
        await other_cache.close()
        from tests.support.redis_keys import drop_redis_prefix

        await drop_redis_prefix(redis_url, redis_prefix)


async def test_redis_away_means_the_file(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", connect_timeout=0.2)
    try:
        spool = Spool(cache, tmp_path / "spool.jsonl", max_age=600, max_items=5)
        assert await spool.keep(PLAYER, _update(1, "one")) is Kept.FIRST
        assert (tmp_path / "spool.jsonl").exists()
        entry = await spool.take()
        assert entry is not None and entry.origin == "file"
    finally:
        await cache.close()


async def _drained(spool: Spool) -> list[str]:
    """Take and handle everything, in the order `take` gives: the texts (at most 20: an
    update handled but taken again would go on for ever)."""
    texts = []
    while len(texts) < 20 and (entry := await spool.take()) is not None:
        texts.append(entry.update["message"]["text"])
        await spool.release(entry, handled=True)
    return texts


@pytest.mark.slow
async def test_an_update_in_hand_when_redis_goes_away_stays_first_in_the_file(
    own_redis: ThrowawayRedis,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = tmp_path / "spool.jsonl"
    cache = RedisCache(own_redis.url, prefix="spool-front:", connect_timeout=0.2)
    try:
        spool = Spool(cache, path, max_age=600, max_items=10)
        assert await spool.keep(PLAYER, _update(1, "one")) is Kept.FIRST
        assert not path.exists()  # Redis took it
        await own_redis.kill()  # saved: it comes back with "one"
        assert await spool.keep(PLAYER, _update(2, "two")) is Kept.MORE
        assert await spool.keep(PLAYER, _update(3, "three")) is Kept.MORE
        assert len(path.read_text().splitlines()) == 2  # the file took them
        await own_redis.start()
        assert await cache.ping()
        entry = await spool.take()  # the oldest: Redis's
        assert entry is not None and entry.origin == "shared" and entry.update["message"]["text"] == "one"
        await own_redis.kill(save=False)  # Redis goes away with "one" in hand
        await spool.release(entry, handled=False)  # the database failed again: it goes back, first
        crash = tmp_path / "crash"  # what a crash now would leave
        crash.mkdir()
        for name in (path.name, path.name + ".done"):
            if (tmp_path / name).exists():
                shutil.copy(tmp_path / name, crash / name)

        # this process takes it first, once, then the file's own
        assert await _drained(spool) == ["one", "two", "three"]
        assert not path.exists() and not path.with_name(path.name + ".done").exists()
        # a new process (after a crash) finds the same order on disk
        again = Spool(MemoryCache(), crash / path.name, max_age=600, max_items=10)
        assert await again.load() == 3 and again.holds(PLAYER)
        assert await _drained(again) == ["one", "two", "three"]
    finally:
        await cache.close()


@pytest.mark.slow
async def test_a_shared_item_handed_back_as_redis_goes_away_stays_kept_in_its_place(
    own_redis: ThrowawayRedis,  # noqa: F811
    tmp_path: Path,
) -> None:
    """`take` finds the file's first item older than the shared one and hands the shared one
    back; Redis goes away right then: the file keeps it, after the older item and before the
    newer ones (on disk too)."""
    path = tmp_path / "spool.jsonl"
    now = time.time()
    path.write_text(_line(1, "file-one", now - 10) + "\n" + _line(3, "file-two", now - 1) + "\n")
    cache = RedisCache(own_redis.url, prefix="spool-unpop:", connect_timeout=0.2)
    try:
        spool = Spool(cache, path, max_age=600, max_items=10)
        assert await spool.keep(PLAYER, _update(2, "shared-one"), at=now - 5) is Kept.FIRST
        assert len(await cache.spool_items() or []) == 1  # Redis took it
        assert await spool.load() == 3
        unpop = cache.spool_unpop

        async def dying(item: str) -> bool:  # Redis goes away as the item is handed back
            await own_redis.kill(save=False)
            return await unpop(item)

        cache.spool_unpop = dying  # type: ignore[method-assign]
        first = await spool.take()
        assert first is not None and first.update["message"]["text"] == "file-one"
        crash = tmp_path / "crash"  # what a crash now would leave
        crash.mkdir()
        for name in (path.name, path.name + ".done"):
            if (tmp_path / name).exists():
                shutil.copy(tmp_path / name, crash / name)
        await spool.release(first, handled=True)
        assert spool.holds(PLAYER)
        assert await _drained(spool) == ["shared-one", "file-two"]
        assert not path.exists()
        again = Spool(MemoryCache(), crash / path.name, max_age=600, max_items=10)  # after a crash
        assert await again.load() == 3
        assert await _drained(again) == ["file-one", "shared-one", "file-two"]
    finally:
        await cache.close()


async def test_a_handled_line_before_an_update_put_back_first_is_not_taken_again(tmp_path: Path) -> None:
    """The file rewritten with an update first keeps `.done` right: the handled lines stay
    handled after a restart, whichever of the two files a crash left."""
    path = tmp_path / "spool.jsonl"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cache = RedisCache(f"redis://127.0.0.1:{port}/0", connect_timeout=0.2)  # away: the file
    try:
        spool = Spool(cache, path, max_age=600, max_items=10)
        for n, text in enumerate(("one", "two", "three"), 1):
            await spool.keep(PLAYER, _update(n, text))
        first = await spool.take()
        assert first is not None
        await spool.release(first, handled=True)  # "one" handled: .done says 1
        assert path.with_name(path.name + ".done").read_text() == "1"
        # an update taken from Redis before it went away comes back: first
        back = Entry.load(Entry(time.time() - 5, PLAYER, _update(9, "back")).dump(), "shared")
        assert back is not None
        await spool.release(back, handled=False)
        again = Spool(MemoryCache(), path, max_age=600, max_items=10)  # a restart
        assert await again.load() == 3
        assert await _drained(again) == ["back", "two", "three"]
        assert not path.exists()
    finally:
        await cache.close()


async def test_a_count_left_by_a_crash_does_not_hide_a_new_file(tmp_path: Path) -> None:
    """A crash between the removal of the emptied file and of its `.done` leaves a stale count:
    the next file's lines are not skipped for it."""
    path = tmp_path / "spool.jsonl"
    path.with_name(path.name + ".done").write_text("2")
    spool = Spool(MemoryCache(), path, max_age=600, max_items=10)
    await spool.keep(PLAYER, _update(1, "one"))
    again = Spool(MemoryCache(), path, max_age=600, max_items=10)  # a crash, a restart
    assert await again.load() == 1
    assert await _drained(again) == ["one"]


# ---------------------------------------------------------------------- under a running bot


async def _database(cluster: Cluster) -> str:  # noqa: F811
    url = create_database(cluster)
    db = Database(load_settings(database_url=url))
    try:
        await db.upgrade()
    finally:
        await db.dispose()
    return url


async def _ready(settings: Settings, players: list[int]) -> None:
    """The cards seeded; each player adult, with a dialog (their stored language: ru)."""
    core = await Core.open(settings)
    try:
        await seed_cards(core.db, cards())
        core.catalog.invalidate()
        for p in players:
            await core.players.confirm_adult(p)
            await core.dialogs.choose(p, PERSONA, STORY)
    finally:
        await core.close()


async def _turns(settings: Settings, user_id: int) -> list[tuple[str, str]]:
    core = await Core.open(settings)
    try:
        async with core.db.session() as s:
            rows = (
                await s.execute(
                    select(Message.role, Message.text)
                    .join(Dialog, Dialog.id == Message.dialog_id)
                    .where(Dialog.user_id == user_id)
                    .order_by(Message.id)
                )
            ).all()
        return [(str(r), str(x)) for r, x in rows][1:]  # without the story's opening
    finally:
        await core.close()


def _texts_to(session: LocalBotSession, chat_id: int) -> list[str]:
    return [str(c.params.get("text")) for c in session.calls_of("sendMessage") if c.params.get("chat_id") == chat_id]


async def _answered(session: LocalBotSession, text: str, within: float) -> None:
    """`text` was sent to the player (now or before: a kept message may be answered at once)."""
    await wait_until(lambda: text in _texts_to(session, PLAYER), within=within, step=0.05)


def _no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.exc_info and r.name.startswith("vitte")]
    assert not bad, [r.getMessage() for r in bad]


@pytest.fixture(params=["redis", "file"])
def place(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.slow
async def test_a_database_restart_under_a_polling_bot_loses_nothing(
    cluster: Cluster,  # noqa: F811
    place: str,
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    url = await _database(cluster)
    async with FakeLLMServer() as llm:
        settings = load_settings(
            database_url=url,
            llm_base_url=llm.base_url,
            llm_retries=0,
            bot_token=TOKEN,
            spool_path=str(tmp_path / "spool.jsonl"),
            **({"redis_url": redis_url, "redis_prefix": redis_prefix} if place == "redis" else {}),
        )
        await _ready(settings, [PLAYER])
        session = LocalBotSession()
        bot = make_local_bot(session, token=TOKEN)
        stop = asyncio.Event()
        running = asyncio.create_task(run_bot(settings, bot=bot, stop=stop, runtime=Runtime(draft_interval=0.05)))
        try:
            await session.wait_for("getUpdates", timeout=10)
            p = LocalPlayer(None, bot, session, user_id=PLAYER, language_code="en", deliver="queue")  # type: ignore[arg-type]
            await p.send("Before")
            await _answered(session, "You said: Before", within=10)

            cluster.pg_ctl("-m", "fast", "stop")
            for text in ("First", "Second", "Third"):
                await p.send(text)
            await wait_until(lambda: session.pending_updates == 0, within=10)
            await wait_until(lambda: t("ru", "spooled") in _texts_to(session, PLAYER), within=15)
            await asyncio.sleep(0.5)
            told = _texts_to(session, PLAYER)
            assert told.count(t("ru", "spooled")) == 1  # told once
            assert t("ru", "one_moment") not in told
            if place == "file":
                assert (tmp_path / "spool.jsonl").exists()

            cluster.start()
            await _answered(session, "You said: Third", within=30)
            replies = [x for x in _texts_to(session, PLAYER) if x.startswith("You said: ")]
            assert replies == ["You said: Before", "You said: First", "You said: Second", "You said: Third"]
            # a message written now, with nothing kept, is answered at once as usual
            await p.send("After")
            await _answered(session, "You said: After", within=10)
        finally:
            stop.set()
            await asyncio.wait_for(running, 20)
        assert await _turns(settings, PLAYER) == [
            (role, text)
            for said in ("Before", "First", "Second", "Third", "After")
            for role, text in (("user", said), ("assistant", f"You said: {said}"))
        ]
        assert not (tmp_path / "spool.jsonl").exists()
        _no_tracebacks(caplog)
        await drop_redis_keys(settings)


@pytest.mark.slow
async def test_a_database_restart_under_a_webhook_bot_loses_nothing(
    cluster: Cluster,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    url = await _database(cluster)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with FakeLLMServer() as llm:
        settings = load_settings(
            database_url=url,
            llm_base_url=llm.base_url,
            llm_retries=0,
            bot_token=TOKEN,
            webhook_url="https://bot.vitte.test/hook",
            webhook_secret="s3cret",
            webhook_port=port,
            spool_path=str(tmp_path / "spool.jsonl"),
        )
        await _ready(settings, [PLAYER])
        session = LocalBotSession()
        bot = make_local_bot(session, token=TOKEN)
        stop = asyncio.Event()
        running = asyncio.create_task(run_bot(settings, bot=bot, stop=stop, runtime=Runtime(draft_interval=0.05)))
        p = LocalPlayer(None, bot, session, user_id=PLAYER, language_code="ru", deliver="queue")  # type: ignore[arg-type]
        hook = f"http://127.0.0.1:{port}/hook"
        headers = {"X-Telegram-Bot-Api-Secret-Token": "s3cret"}

        async def post(text: str) -> int:
            update = await p.send(text)  # built by the local session; delivered by our POST
            body = update.model_dump(mode="json", by_alias=True, exclude_none=True)
            async with aiohttp.ClientSession() as http, http.post(hook, json=body, headers=headers) as r:
                return r.status

        try:
            await session.wait_for("setWebhook", timeout=10)
            cluster.pg_ctl("-m", "fast", "stop")
            assert [await post(x) for x in ("Раз", "Два")] == [200, 200]  # kept: Telegram need not retry
            told = _texts_to(session, PLAYER)
            assert told == [t("ru", "spooled")]
            cluster.start()
            await _answered(session, "You said: Два", within=30)
            assert [x for x in _texts_to(session, PLAYER) if x.startswith("You said")] == [
                "You said: Раз",
                "You said: Два",
            ]
        finally:
            stop.set()
            await asyncio.wait_for(running, 20)
        assert [x for _r, x in await _turns(settings, PLAYER)] == ["Раз", "You said: Раз", "Два", "You said: Два"]
        _no_tracebacks(caplog)


async def _polling_bot(settings: Settings, session: LocalBotSession) -> tuple[asyncio.Event, asyncio.Task[None]]:
    bot = make_local_bot(session, token=TOKEN)
    stop = asyncio.Event()
    running = asyncio.create_task(run_bot(settings, bot=bot, stop=stop, runtime=Runtime(draft_interval=0.05)))
    await session.wait_for("getUpdates", timeout=10)
    return stop, running


async def test_messages_cut_by_a_shutdown_are_answered_on_the_next_start(
    backend_settings: Settings, tmp_path: Path
) -> None:
    slow = " ".join(["word"] * 60)
    async with FakeLLMServer(replies=[slow], tps=30) as llm:  # the first reply takes ~2 s
        settings = backend_settings.model_copy(
            update={
                "bot_token": SecretStr(TOKEN),
                "llm_base_url": llm.base_url,
                "shutdown_grace": 0.3,
                "spool_path": str(tmp_path / "spool.jsonl"),
            }
        )
        await _ready(settings, [PLAYER])
        session = LocalBotSession()
        stop, running = await _polling_bot(settings, session)
        p = LocalPlayer(None, make_local_bot(session, token=TOKEN), session, user_id=PLAYER, language_code="en", deliver="queue")  # type: ignore[arg-type]
        await p.send("Tell me everything")
        await session.wait_for("sendMessageDraft", timeout=10)
        await p.send("And then?")  # waits behind the reply for the player's turn
        await p.send("Hello?")
        await wait_until(lambda: session.pending_updates == 0, within=10)
        stop.set()
        await asyncio.wait_for(running, 15)
        assert not any(x.startswith("You said: And then?") for x in _texts_to(session, PLAYER))
        assert session.pending_updates == 0  # confirmed: Telegram will not send them again

        stop, running = await _polling_bot(settings, session)  # the next start
        try:
            await _answered(session, "You said: Hello?", within=15)
        finally:
            stop.set()
            await asyncio.wait_for(running, 15)
        said = [x for _r, x in await _turns(settings, PLAYER)]
        assert said[0] == "Tell me everything"
        assert said[2:] == ["And then?", "You said: And then?", "Hello?", "You said: Hello?"]
    await drop_redis_keys(settings)


async def test_a_message_kept_too_long_is_given_up_with_a_write_again(sqlite_url: str, tmp_path: Path) -> None:
    async with FakeLLMServer() as llm:
        settings = load_settings(
            database_url=sqlite_url,
            llm_base_url=llm.base_url,
            bot_token=TOKEN,
            spool_max_age=60,
            spool_path=str(tmp_path / "spool.jsonl"),
        )
        await _ready(settings, [PLAYER])
        kept = Spool.from_settings(settings, MemoryCache())
        assert kept is not None
        await kept.keep(PLAYER, _update(9001, "stale one"), at=time.time() - 120)
        await kept.keep(PLAYER, _update(9002, "stale two"), at=time.time() - 100)
        await kept.keep(PLAYER, _update(9003, "fresh"))
        session = LocalBotSession()
        stop, running = await _polling_bot(settings, session)
        try:
            await _answered(session, "You said: fresh", within=10)
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)
        told = _texts_to(session, PLAYER)
        assert told == [t("en", "spool_expired"), "You said: fresh"]  # told once, then the fresh one
        assert [x for _r, x in await _turns(settings, PLAYER)] == ["fresh", "You said: fresh"]


async def test_a_drainer_restarted_after_a_failure_counts_each_kept_update_once(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spooling, "RETRY_MAX", 0.05)  # the drainer's pause after a failure
    async with FakeLLMServer() as llm:
        settings = load_settings(
            database_url=sqlite_url,
            llm_base_url=llm.base_url,
            bot_token=TOKEN,
            spool_path=str(tmp_path / "spool.jsonl"),
        )
        await _ready(settings, [PLAYER])
        earlier = Spool.from_settings(settings, MemoryCache())  # an earlier run kept two
        assert earlier is not None
        await earlier.keep(PLAYER, _update(9101, "one"))
        await earlier.keep(PLAYER, _update(9102, "two"))
        spool = Spool.from_settings(settings, MemoryCache())
        assert spool is not None
        held: list[bool] = []  # at each take: whether the player still has updates kept
        take = spool.take

        async def failing_once() -> Entry | None:
            held.append(spool.holds(PLAYER))
            if len(held) == 1:
                raise OSError("the drainer fails (induced)")
            return await take()

        spool.take = failing_once  # type: ignore[method-assign]
        runtime = Runtime(draft_interval=0.05)
        runtime.spool = spool
        session = LocalBotSession()
        stop = asyncio.Event()
        running = asyncio.create_task(
            run_bot(settings, bot=make_local_bot(session, token=TOKEN), stop=stop, runtime=runtime)
        )
        try:
            await _answered(session, "You said: two", within=10)
            await wait_until(lambda: len(held) >= 4, within=10)
        finally:
            stop.set()
            await asyncio.wait_for(running, 10)
        # failed, then "one" and "two" taken, then nothing: the player held until both were
        # handled, not after (each kept update counted once, not once per drainer start)
        assert held[:4] == [True, True, True, False]
        assert [x for x in _texts_to(session, PLAYER) if x.startswith("You said")] == ["You said: one", "You said: two"]


async def test_a_message_kept_by_another_process_holds_the_players_next_one(
    cluster: Cluster,  # noqa: F811
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two bot processes share Redis: the player's message one of them kept (the database
    away) holds their next one in the other as well, read with the player's lock."""
    caplog.set_level(logging.INFO)
    url = await _database(cluster)
    async with FakeLLMServer() as llm:
        settings = load_settings(
            database_url=url,
            llm_base_url=llm.base_url,
            llm_retries=0,
            bot_token=TOKEN,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
        )
        await _ready(settings, [PLAYER])
        session = LocalBotSession()
        bot = make_local_bot(session, token=TOKEN)
        cores: list[Core] = []
        spools: list[Spool] = []
        dps = []
        players = []
        try:
            for i in range(2):  # processes A and B: a core, a spool, a dispatcher each
                core = await Core.open(settings)
                cores.append(core)
                runtime = Runtime(draft_interval=0.05)
                spools.append(Spool(core.cache, tmp_path / f"spool-{i}.jsonl", max_age=600, max_items=100))
                runtime.spool = spools[-1]
                dps.append(build_dispatcher(core, runtime))
                players.append(LocalPlayer(dps[-1], bot, session, user_id=PLAYER, language_code="en"))
            a, b = players

            cluster.pg_ctl("-m", "fast", "stop")
            await a.send("First")  # A: the database is away; kept in Redis
            assert _texts_to(session, PLAYER) == [t("en", "spooled")]
            assert spools[0].holds(PLAYER) and spools[1].empty
            cluster.start()
            await b.send("Second")  # B, the database back: behind "First", not before it
            assert _texts_to(session, PLAYER) == [t("en", "spooled")]
            assert spools[1].holds(PLAYER)

            stop = asyncio.Event()  # B's drainer answers both, in order
            draining = asyncio.create_task(Drainer(spools[1], dps[1], bot, cores[1]).run(stop))
            try:
                await _answered(session, "You said: Second", within=20)
                await wait_until(lambda: spools[1].empty, within=10)
            finally:
                stop.set()
                await asyncio.wait_for(draining, 10)
            replies = [x for x in _texts_to(session, PLAYER) if x.startswith("You said")]
            assert replies == ["You said: First", "You said: Second"]
            # both handled: the hold is gone with them, a message is answered at once again
            await b.send("Third")
            assert _texts_to(session, PLAYER)[-1] == "You said: Third"
        finally:
            for core in cores:
                await core.close()
        assert [x for _r, x in await _turns(settings, PLAYER)] == [
            "First",
            "You said: First",
            "Second",
            "You said: Second",
            "Third",
            "You said: Third",
        ]
        _no_tracebacks(caplog)
        await drop_redis_keys(settings)


async def test_the_shared_hold_counts_what_is_kept_and_handled(
    tmp_path: Path, redis_url: str, redis_prefix: str
) -> None:
    """Read as any process takes the player's lock: on while the shared spool has (or a drainer
    holds) one of their updates, off once each is handled; another player is not held."""
    caches = [RedisCache(redis_url, prefix=redis_prefix) for _ in range(2)]
    try:
        spool = Spool(caches[0], tmp_path / "spool.jsonl", max_age=600, max_items=10)

        async def held(user_id: int) -> bool:
            async with caches[1].user_lock(user_id) as hold:  # the other process's lock
                return hold.spool_held

        assert not await held(PLAYER)
        await spool.keep(PLAYER, _update(1, "one"))
        await spool.keep(PLAYER, _update(2, "two"))
        assert await held(PLAYER) and not await held(PLAYER + 1)
        entry = await spool.take()
        assert entry is not None and await held(PLAYER)  # in hand: still held
        await spool.release(entry, handled=False)
        for _ in range(2):
            entry = await spool.take()
            assert entry is not None and await held(PLAYER)
            await spool.release(entry, handled=True)
        assert not await held(PLAYER)
    finally:
        for cache in caches:
            await cache.close()
        from tests.support.redis_keys import drop_redis_prefix

        await drop_redis_prefix(redis_url, redis_prefix)


async def test_an_unreadable_shared_item_is_dropped_without_holding_its_player(
    tmp_path: Path, redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A shared item that cannot be read (another version's, damaged) is dropped as it is
    taken, and its player's hold counts it as handled (the player is read from the item when
    it is JSON with a player; else the hold runs out after VITTE_SPOOL_MAX_AGE); the next item
    is taken at once."""
    caches = [RedisCache(redis_url, prefix=redis_prefix) for _ in range(2)]
    try:
        spool = Spool(caches[0], tmp_path / "spool.jsonl", max_age=600, max_items=10)

        async def held(user_id: int) -> bool:
            async with caches[1].user_lock(user_id) as hold:  # another process's lock
                return hold.spool_held

        bad = json.dumps({"at": "soon", "user": PLAYER, "update": []})
        assert await caches[0].spool_push(bad, 10, PLAYER, 600) == 1
        assert await spool.keep(OTHER, _update(2, "two", OTHER)) is Kept.FIRST
        assert await held(PLAYER) and await held(OTHER)
        entry = await spool.take()
        assert entry is not None and entry.update["message"]["text"] == "two"
        assert not await held(PLAYER) and await held(OTHER)
        await spool.release(entry, handled=True)
        assert not await held(OTHER)
        assert await spool.take() is None and await caches[0].spool_items() == []
        assert "unreadable" in caplog.text
    finally:
        for cache in caches:
            await cache.close()
        from tests.support.redis_keys import drop_redis_prefix

        await drop_redis_prefix(redis_url, redis_prefix)


async def test_a_full_spool_asks_to_write_again(cluster: Cluster, tmp_path: Path) -> None:  # noqa: F811
    url = await _database(cluster)
    async with FakeLLMServer() as llm:
        settings = load_settings(
            database_url=url,
            llm_base_url=llm.base_url,
            spool_max_updates=1,
            spool_path=str(tmp_path / "spool.jsonl"),
        )
        await _ready(settings, [PLAYER])
        core = await Core.open(settings)
        runtime = Runtime()
        runtime.spool = Spool.from_settings(settings, core.cache)
        session = LocalBotSession()
        p = LocalPlayer(build_dispatcher(core, runtime), make_local_bot(session), session, user_id=PLAYER, language_code="en")
        try:
            cluster.pg_ctl("-m", "fast", "stop")
            await p.send("kept")
            await p.send("not kept")  # behind the first, but the spool is full
        finally:
            await core.close()
        assert _texts_to(session, PLAYER) == [t("en", "spooled"), t("en", "one_moment")]
        assert runtime.spool is not None and runtime.spool.holds(PLAYER)


# ---------------------------------------------------------------------- one drainer at a time

OTHER = PLAYER + 1


class _Process:
    """One bot process of several sharing Redis: a core, a spool, a dispatcher, a drainer."""

    def __init__(self, core: Core, spool: Spool, drainer: Drainer) -> None:
        self.core = core
        self.spool = spool
        self.drainer = drainer
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.drainer.run(self.stop))

    async def close(self) -> None:
        if self.task is not None:
            self.stop.set()
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task
        await self.core.close()


async def _processes(
    settings: Settings, tmp_path: Path, bot: Any, drainer: type[Drainer] = Drainer, lease: float = 15.0
) -> list[_Process]:
    made = []
    for i in range(2):
        core = await Core.open(settings)
        runtime = Runtime(draft_interval=0.05)
        runtime.spool = Spool(core.cache, tmp_path / f"spool-{i}.jsonl", max_age=600, max_items=100, lease=lease)
        dp = build_dispatcher(core, runtime)
        made.append(_Process(core, runtime.spool, drainer(runtime.spool, dp, bot, core, poll=0.05)))
    return made


def _said(session: LocalBotSession, user_id: int) -> list[str]:
    return [x.removeprefix("You said: ") for x in _texts_to(session, user_id) if x.startswith("You said: ")]


async def _lease_holder(redis_url: str, prefix: str) -> str | None:
    """The token of the drainer holding the shared list's lease (None: no one)."""
    import redis.asyncio as aioredis

    r = aioredis.from_url(redis_url, decode_responses=True)
    try:
        got: Any = await r.get(f"{prefix}spool-drainer")
        return None if got is None else str(got)
    finally:
        await r.aclose()


async def test_two_processes_drain_the_shared_spool_in_the_kept_order(
    pg_url: str, tmp_path: Path, redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Two bot processes, one shared list: one drainer at a time takes from it, so a player's
    kept messages are answered in the order they were kept. (Two drainers taking at once race
    for the player's lock: the gate below lets the one holding the first message wait until
    the other has fed one or found nothing to take, which without the lease answers the
    second message first.)"""
    caplog.set_level(logging.INFO)
    kept = [(PLAYER, "p1"), (PLAYER, "p2"), (OTHER, "q1"), (PLAYER, "p3"), (OTHER, "q2"), (PLAYER, "p4"), (OTHER, "q3")]
    other_turn = asyncio.Event()  # a drainer not holding "p1" fed something or found nothing

    class Gated(Drainer):
        async def _feed(self, entry: Entry) -> bool:
            first = entry.update["message"]["text"] == "p1"
            if first:
                await other_turn.wait()
            handled = await super()._feed(entry)
            if not first:
                other_turn.set()
            return handled

    async with FakeLLMServer() as llm:
        settings = load_settings(
            database_url=pg_url,
            llm_base_url=llm.base_url,
            llm_retries=0,
            bot_token=TOKEN,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
        )
        await _ready(settings, [PLAYER, OTHER])
        session = LocalBotSession()
        bot = make_local_bot(session, token=TOKEN)
        procs = await _processes(settings, tmp_path, bot, Gated)
        try:
            for n, (who, text) in enumerate(kept, start=1):  # kept by either process
                assert await procs[n % 2].spool.keep(who, _update(9200 + n, text, who)) in (Kept.FIRST, Kept.MORE)
            for proc in procs:
                take = proc.spool.take

                async def taking(take: Any = take) -> Entry | None:
                    got: Entry | None = await take()
                    if got is None:
                        other_turn.set()  # nothing for this drainer to take
                    return got

                proc.spool.take = taking  # type: ignore[method-assign]
                proc.start()
            await wait_until(lambda: len(_said(session, PLAYER)) == 4 and len(_said(session, OTHER)) == 3, within=30)
            await wait_until(lambda: all(p.spool.empty for p in procs), within=10)
            assert await procs[0].core.cache.spool_items() == []
        finally:
            for proc in procs:
                await proc.close()
        assert _said(session, PLAYER) == ["p1", "p2", "p3", "p4"]
        assert _said(session, OTHER) == ["q1", "q2", "q3"]
        for who in (PLAYER, OTHER):
            said = [x for r, x in await _turns(settings, who) if r == "user"]
            assert said == [x for w, x in kept if w == who]
        assert await _lease_holder(redis_url, redis_prefix) is None  # given up on stop
        _no_tracebacks(caplog)
        await drop_redis_keys(settings)


async def test_a_drainer_takes_over_when_the_lease_holder_dies(
    pg_url: str, tmp_path: Path, redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The drainer holding the shared list's lease dies (cancelled, its lease not given up)
    after one message: another process's drainer, which kept nothing itself, takes over once
    the lease runs out and answers the rest, in order, each once. Before that it takes
    nothing (the lease is the dead one's)."""
    caplog.set_level(logging.INFO)
    async with FakeLLMServer() as llm:
        settings = load_settings(
            database_url=pg_url,
            llm_base_url=llm.base_url,
            llm_retries=0,
            bot_token=TOKEN,
            redis_url=redis_url,
            redis_prefix=redis_prefix,
        )
        await _ready(settings, [PLAYER])
        session = LocalBotSession()
        bot = make_local_bot(session, token=TOKEN)
        a, b = await _processes(settings, tmp_path, bot, lease=1.0)
        a_took = asyncio.Event()
        a_hangs = asyncio.Event()
        dead = False
        b_took: list[tuple[bool, str | None]] = []  # (A dead yet, what B's take gave)
        a_take, b_take = a.spool.take, b.spool.take

        async def a_taking() -> Entry | None:
            if a_took.is_set():  # after its first message A hangs, until it dies
                a_hangs.set()
                await asyncio.Event().wait()
            got = await a_take()
            a_took.set()
            return got

        async def b_taking() -> Entry | None:
            if b_took:  # B's first look (nothing kept yet) passes; the next ones wait for A's first
                await a_took.wait()
            got = await b_take()
            b_took.append((dead, None if got is None else got.update["message"]["text"]))
            return got

        a.spool.take = a_taking  # type: ignore[method-assign]
        b.spool.take = b_taking  # type: ignore[method-assign]
        try:
            b.start()  # B's drainer: nothing kept; it waits
            await wait_until(lambda: len(b_took) == 1, within=10)
            for n, text in enumerate(("one", "two", "three", "four"), start=1):
                assert await a.spool.keep(PLAYER, _update(9300 + n, text)) in (Kept.FIRST, Kept.MORE)
            a.start()
            await _answered(session, "You said: one", within=20)
            await wait_until(a_hangs.is_set, within=10)
            await wait_until(lambda: len(b_took) >= 2, within=10)  # B looked while A held the lease
            assert await _lease_holder(redis_url, redis_prefix) == a.spool.token
            assert a.task is not None
            a.task.cancel()  # A dies: its lease is not given up, it runs out
            with contextlib.suppress(asyncio.CancelledError):
                await a.task
            a.task = None
            dead = True
            await _answered(session, "You said: four", within=20)
            await wait_until(lambda: b.spool.empty, within=10)
        finally:
            for proc in (a, b):
                await proc.close()
        assert _said(session, PLAYER) == ["one", "two", "three", "four"]
        assert {text for was_dead, text in b_took if not was_dead} == {None}  # nothing while A lived
        assert [text for was_dead, text in b_took if was_dead and text] == ["two", "three", "four"]
        assert [x for r, x in await _turns(settings, PLAYER) if r == "user"] == ["one", "two", "three", "four"]
        _no_tracebacks(caplog)
        await drop_redis_keys(settings)
