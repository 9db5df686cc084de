"""Faults against real servers on loopback: Redis stopped and restarted mid-run, the LLM failing
in every way, a Telegram 429 storm, and the bot process killed mid-reply (tests/test_crash.py).

Nothing may be lost: the player's message is stored before the LLM is called; a reply is either
complete, or marked, or absent with a clear message and a retry button.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.support.bot_api_server import FakeBotAPI
from tests.support.bot_harness import cards
from tests.support.players import chatting, messages_of
from vitte.bot.callbacks import RetryCb
from vitte.bot.factory import build_dispatcher
from vitte.bot.runtime import Runtime
from vitte.bot.texts import t
from vitte.catalog.seed import seed_cards
from vitte.config import Settings, load_settings
from vitte.core import Core
from vitte.devtools.llm_server import FakeLLMServer
from vitte.localapi import LocalBotSession, LocalPlayer, make_local_bot
from vitte.models import MSG_STREAMING, Dialog, Message

REPLY = "I missed you. Tell me everything."


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A throwaway redis-server on a free loopback port (the machine's Redis is left alone)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            pytest.skip("redis-server is not installed")
        self.proc = subprocess.Popen(
            [exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as c:
                c.sendall(b"PING\r\n")
                if c.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None


@pytest.fixture
def redis_process() -> Iterator[RedisProcess]:
    server = RedisProcess()
    server.start()
    try:
        yield server
    finally:
        server.kill()


@dataclass
class Bot:
    core: Core
    session: LocalBotSession
    dp: Any
    bot: Any
    runtime: Runtime
    llm: FakeLLMServer

    async def player(self, user_id: int) -> LocalPlayer:
        await chatting(self.core, user_id)
        return LocalPlayer(self.dp, self.bot, self.session, user_id=user_id, language_code="en")

    async def rows(self, user_id: int) -> list[Message]:
        return await messages_of(self.core, user_id)


@contextlib.asynccontextmanager
async def running_bot(settings: Settings, **llm: Any) -> AsyncIterator[Bot]:
    async with FakeLLMServer(default_reply=REPLY, **llm) as server:
        settings = settings.model_copy(
            update={"llm_base_url": server.base_url, "llm_retries": 0, "llm_timeout": 1.0}
        )
        core = await Core.open(settings)
        await seed_cards(core.db, cards())
        core.catalog.invalidate()
        session = LocalBotSession(update_id_start=secrets.randbelow(2**40) + 1)
        bot = make_local_bot(session)
        runtime = Runtime(draft_interval=0.05, edit_interval=0.1)
        dp = build_dispatcher(core, runtime)
        try:
            yield Bot(core, session, dp, bot, runtime, server)
        finally:
            await runtime.drain(0)
            await core.close()


# --------------------------------------------------------------------------- Redis


async def test_redis_stopped_mid_run_answers_continue_and_the_cache_is_rebuilt(
    pg_url: str, redis_process: RedisProcess
) -> None:
    import redis.asyncio as aioredis

    settings = load_settings(database_url=pg_url, redis_url=redis_process.url, redis_prefix="faults:")
    async with running_bot(settings) as b:
        player = await b.player(8101)
        await player.send("First, with Redis")
        assert player.last_bot_text() == REPLY
        view = await b.core.dialogs.current(8101)
        assert view is not None
        recent_key = f"faults:recent:{view.id}"

        redis_process.kill()  # Redis gone, mid-run
        for i in range(3):
            started = time.monotonic()
            await player.send(f"Without Redis {i}")
            assert player.last_bot_text() == REPLY, player.last_bot_text()
            assert time.monotonic() - started < 5.0  # a dead Redis costs one short timeout, not a hang
        assert getattr(b.core.cache, "available", True) is False

        redis_process.start()  # back, empty, on the same port
        await asyncio.sleep(1.2)  # the cache probes Redis again after its retry interval
        await player.send("Redis is back")
        assert player.last_bot_text() == REPLY
        assert b.core.cache.available  # type: ignore[attr-defined]
        client = aioredis.from_url(redis_process.url)
        try:
            cached = await client.lrange(recent_key, 0, -1)
        finally:
            await client.aclose()
        # the list was rebuilt from PostgreSQL: the whole history, not only the newest turn
        assert len(cached) >= 9, cached  # the opening, 4 earlier turns, the newest message

        rows = await b.rows(8101)
        users = [r.text for r in rows if r.role == "user"]
        assert users == ["First, with Redis", "Without Redis 0", "Without Redis 1", "Without Redis 2", "Redis is back"]
        assert [r.text for r in rows if r.role == "assistant"][1:] == [REPLY] * 5
        assert not [r for r in rows if r.status == MSG_STREAMING]


# --------------------------------------------------------------------------- the LLM


@pytest.mark.parametrize("mode", ["500", "429", "hang", "cut:3", "drop:2", "stall:2", "malformed"])
async def test_llm_failure_keeps_the_players_text_and_says_so_clearly(sqlite_url: str, mode: str) -> None:
    async with running_bot(load_settings(database_url=sqlite_url)) as b:
        player = await b.player(8201)
        b.llm.modes.append(mode)
        started = time.monotonic()
        await player.send("Are you there?")
        assert time.monotonic() - started < 8.0
        failed = player.last_bot_message()
        assert failed is not None
        assert failed.text == t("en", "reply_failed")
        assert t("en", "btn_retry") in failed.button_texts()
        assert not player.current_draft or not player.current_draft.text
        rows = await b.rows(8201)
        # the player's text is stored; no half reply, nothing left "streaming"
        assert [r.text for r in rows if r.role == "user"] == ["Are you there?"]
        assert [r.role for r in rows] == ["assistant", "user"]  # the opening, then the message
        assert not [r for r in rows if r.status == MSG_STREAMING]
        # the LLM is back: Retry answers the kept message
        await player.click(t("en", "btn_retry"), failed)
        assert player.last_bot_text() == REPLY
        rows = await b.rows(8201)
        assert [(r.role, r.text) for r in rows][1:] == [("user", "Are you there?"), ("assistant", REPLY)]


# --------------------------------------------------------------------------- Telegram


async def test_telegram_429_storm_every_reply_arrives_once(sqlite_url: str) -> None:
    async with running_bot(load_settings(database_url=sqlite_url)) as b:
        players = [await b.player(8300 + i) for i in range(5)]
        for p in players:
            await p.send("hello")  # warm: each chat has a reply with 🔄 already
        # a storm: the next ten Bot API calls of any kind answer 429 retry_after=1,
        # and each chat may send one message per second afterwards
        b.session.fail_next(None, 429, retry_after=1, times=10)
        b.session.set_flood_limit(1.0, burst=1, retry_after=1)
        started = time.monotonic()
        await asyncio.gather(*(p.send("and now?") for p in players))
        assert time.monotonic() - started < 15.0
        for p in players:
            texts = [m.text for m in p.bot_messages()]
            assert texts.count(REPLY) == 2, texts  # one per message: none lost, none doubled
            assert p.last_bot_text() == REPLY
            assert not [m for m in p.bot_messages() if m.text and "wrong" in m.text.lower()]
        for p in players:
            rows = await b.rows(p.user_id)
            assert [r.text for r in rows if r.role == "user"] == ["hello", "and now?"]
            assert not [r for r in rows if r.status == MSG_STREAMING]


# --------------------------------------------------------------------------- the process


ROOT = Path(__file__).resolve().parents[1]
TOKEN = "424242424:" + "K" * 35
LONG_REPLY = " ".join(["word"] * 60) + "."


def _run_bot(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from cli.main import run; run()", "run-bot"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


async def _until(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_sigkill_mid_reply_then_restart_loses_nothing_and_duplicates_nothing(
    pg_url: str, redis_url: str, redis_prefix: str, redis_cleanup: None
) -> None:
    settings = load_settings(database_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix)
    core = await Core.open(settings)
    bot_process: subprocess.Popen[bytes] | None = None
    try:
        await seed_cards(core.db, cards())
        async with FakeLLMServer(default_reply=LONG_REPLY, tps=6) as llm, FakeBotAPI(token=TOKEN) as api:
            await chatting(core, 8401)

            env = {k: v for k, v in os.environ.items() if not k.startswith("VITTE_")}
            env.update(
                VITTE_BOT_TOKEN=TOKEN,
                VITTE_TELEGRAM_API_URL=api.base_url,
                VITTE_DATABASE_URL=pg_url,
                VITTE_REDIS_URL=redis_url,
                VITTE_REDIS_PREFIX=redis_prefix,
                VITTE_LLM_BASE_URL=llm.base_url,
                VITTE_LLM_RETRIES="0",
                VITTE_SHUTDOWN_GRACE="1",
                # the killed process's lock on the player lapses after this; the restarted bot
                # recovers the reply (and tells the player) once it has
                VITTE_LOCK_LEASE="3",
            )
            bot_process = _run_bot(env)
            await api.wait_for("getUpdates", timeout=30)
            message = {"message": api.user_message(8401, "Don't go anywhere", language_code="en")}
            update_id = api.push_update(message)

            async def streaming() -> bool:
                async with core.db.session() as s:
                    rows = (await s.execute(select(Message).where(Message.status == MSG_STREAMING))).scalars()
                    return bool(list(rows)) and len(llm.completions) == 1

            await _until(streaming, 20, "the reply to start")
            await asyncio.sleep(1.0)  # a few words written
            bot_process.kill()  # SIGKILL: no shutdown, no cleanup, mid-reply
            bot_process.wait(10)

            async def rows() -> list[Message]:
                async with core.db.session() as s:
                    return list(
                        (
                            await s.execute(
                                select(Message).join(Dialog, Dialog.id == Message.dialog_id)
                                .where(Dialog.user_id == 8401).order_by(Message.id)
                            )
                        ).scalars()
                    )

            before = await rows()
            assert [r.text for r in before if r.role == "user"] == ["Don't go anywhere"]  # stored before the LLM
            assert [r.status for r in before if r.role == "assistant"][-1] == MSG_STREAMING

            # restart. The runner confirms an update with its next poll, while the reply still
            # streams, so Telegram does not deliver this one again; if it did (a crash before that
            # poll), the update id is already marked seen in Redis and the update is dropped.
            api.push_update({"update_id": update_id, **message})  # again, as after a crash before that poll
            bot_process = _run_bot(env)
            polls = len(api.calls_of("getUpdates"))

            async def polled_twice() -> bool:
                return any(
                    any(u.get("update_id") == update_id for u in (c.result or []))
                    for c in api.calls_of("getUpdates")[polls:]
                ) and len(api.calls_of("getUpdates")) >= polls + 2

            await _until(polled_twice, 40, "the restarted bot to take the update again and poll on")
            # the player is told, once, in their language, with [Retry] for their kept message
            notice_text = t("en", "restart_interrupted")
            notice = await api.wait_for("sendMessage", lambda c: c.params.get("text") == notice_text, timeout=20)
            await asyncio.sleep(0.5)
            assert [c.params.get("chat_id") for c in api.calls_of("sendMessage")] == [8401]  # the notice alone
            (button,) = notice.params["reply_markup"]["inline_keyboard"][0]
            kept = [r for r in await rows() if r.role == "user"][-1]
            assert button["text"] == t("en", "btn_retry")
            assert button["callback_data"] == RetryCb(dialog_id=kept.dialog_id, message_id=kept.id).pack()

            after = await rows()
            # no lost message: the player's text once; no duplicate: the LLM was asked once and
            # no second reply was written; nothing is left "streaming" (a crash's placeholder is
            # marked interrupted, or dropped when not a word of it was stored)
            assert [r.text for r in after if r.role == "user"] == ["Don't go anywhere"]
            assert len(llm.completions) == 1
            assert not [r for r in after if r.status == MSG_STREAMING]
            assert not [r for r in after if r.role == "assistant" and r.status == "ok" and r.id > before[0].id]
            assert not [c for c in api.calls_of("sendMessage") if c.params.get("text") == LONG_REPLY]
            assert after[-1].id == kept.id  # the reply's placeholder held no word: it is gone

            # [Retry]: the answer, once, to the kept message; the notice gives way to it
            llm.tps = 0
            mark = len(api.calls)
            api.push_update({"callback_query": api.callback_query(8401, notice.result, button["callback_data"])})
            await api.wait_for("sendMessage", lambda c: c.params.get("text") == LONG_REPLY, timeout=20, after=mark)
            await api.wait_for("deleteMessage", lambda c: c.params.get("message_id") == notice.result["message_id"])
            await asyncio.sleep(0.5)
            bot_process.send_signal(signal.SIGTERM)
            assert bot_process.wait(20) == 0
            bot_process = None

            after = await rows()
            assert [(r.role, r.text, r.status) for r in after if r.id >= kept.id] == [
                ("user", "Don't go anywhere", "ok"),
                ("assistant", LONG_REPLY, "ok"),
            ]
            assert len(llm.completions) == 2
            # the answer is to the kept message (the cache the crash left without it was dropped)
            asked = [m["content"] for m in llm.completions[1].json["messages"] if m["role"] == "user"]
            assert asked[-1] == "Don't go anywhere"
            assert len([c for c in api.calls_of("sendMessage") if c.params.get("text") == LONG_REPLY]) == 1

            # a second restart: nothing is left to recover, nobody is told again
            mark = len(api.calls)
            bot_process = _run_bot(env)
            api.push_update({"message": api.user_message(8401, "/help", language_code="en")})
            await api.wait_for("sendMessage", timeout=30, after=mark)  # up and answering
            await asyncio.sleep(0.5)
            bot_process.send_signal(signal.SIGTERM)
            assert bot_process.wait(20) == 0
            bot_process = None
            assert len([c for c in api.calls_of("sendMessage") if c.params.get("text") == notice_text]) == 1
            assert [(r.id, r.text, r.status) for r in await rows()] == [(r.id, r.text, r.status) for r in after]
    finally:
        if bot_process is not None and bot_process.poll() is None:
            bot_process.kill()
            bot_process.wait(10)
        await core.close()


# --------------------------------------------------------------------------- PostgreSQL


async def test_connections_killed_by_a_postgres_restart_are_replaced_before_use(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pooled connections idle past PING_IDLE_AFTER are pinged before use (a restart or a
    failover killed them); busy ones are not, so the hot path pays no ping."""
    import psycopg
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    import vitte.db
    from vitte.db import Database

    monkeypatch.setattr(vitte.db, "PING_IDLE_AFTER", 0.2)
    db = Database(load_settings(database_url=pg_url))
    name = make_url(pg_url).database
    try:
        async with db.session(autocommit=True) as s:
            assert (await s.execute(text("select 1"))).scalar_one() == 1
        await asyncio.sleep(0.3)
        # what a restart does to the pool: every server process of this database goes away
        with psycopg.connect("host=127.0.0.1 user=postgres dbname=postgres", autocommit=True) as admin:
            admin.execute(
                "select pg_terminate_backend(pid) from pg_stat_activity where datname = %s and pid <> pg_backend_pid()",
                (name,),
            )
        async with db.session(autocommit=True) as s:  # no error: the dead connection was replaced
            assert (await s.execute(text("select 2"))).scalar_one() == 2
    finally:
        await db.dispose()
