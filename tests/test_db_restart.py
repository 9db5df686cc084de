"""Connections that survive a PostgreSQL restart (issue 14, item 1), with real parts only.

- Every connection of the database terminated (`pg_terminate_backend`, what a failover, a
  pooler or an idle reaper does) while a Core holds warm pools (the hot path's `Database.raw()`
  pool and the ORM sessions' pool): the next reply, through the engine and through the bot, is
  answered and stored once; no player hears "one moment".
- The server ends a connection after it was checked out (the race the checkout's look cannot
  see): each hot-path statement is sent again on a fresh connection; stored once, counted once.
- A connection lost after the turn statement committed (the answer never arrives) is NOT sent
  again: the player's message is stored once, never twice.
- A real restart of a cluster of the test's own (`initdb`/`pg_ctl` from Debian's PostgreSQL, on
  a free port; the shared server is untouched): replies before and after `pg_ctl restart -m
  fast` are answered and stored once; while the server is down a reply is StoreUnavailable
  (the player hears "one moment") and nothing is half-stored.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url
from sqlmodel import col

from tests.support.bot_harness import cards, env  # noqa: F401  (the `env` fixture)
from tests.support.llm_server import FakeLLMServer
from tests.support.pg_cluster import Cluster, cluster  # noqa: F401  (the `cluster` fixture)
from tests.support.players import chatting, messages_of
from vitte.bot.factory import build_dispatcher
from vitte.bot.runtime import Runtime
from vitte.bot.texts import t
from vitte.catalog.seed import seed_cards
from vitte.config import Settings, load_settings
from vitte.core import Core
from vitte.db import Database
from vitte.errors import StoreUnavailable
from vitte.llm.demo import DemoWriter
from vitte.localapi import LocalBotSession, LocalPlayer, make_local_bot
from vitte.models import ASSISTANT, MSG_OK, USER, Usage

PLAYER = 7301


@pytest.fixture
def backend() -> str:
    """The bot harness's `env` on PostgreSQL + Redis only (this file is about PostgreSQL)."""
    return "postgres"


def _admin_dsn(url: str) -> str:
    u = make_url(url)
    return f"host={u.host or '127.0.0.1'} port={u.port or 5432} user={u.username or 'postgres'} dbname=postgres"


def terminate_all(url: str) -> list[int]:
    """`pg_terminate_backend` of every connection to the URL's database, waiting (up to 5 s each)
    until each backend has exited; their pids."""
    name = make_url(url).database
    with psycopg.connect(_admin_dsn(url), autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pid, pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        ).fetchall()
    assert all(done for _pid, done in rows), rows
    return [int(pid) for pid, _done in rows]


async def warm(core: Core, n: int = 3) -> None:
    """`n` connections open in each pool (the hot path's and the ORM sessions')."""

    async def hot() -> None:
        async with core.db.raw() as conn:
            await conn.rows(_SLEEP)

    async def orm() -> None:
        async with core.db.session() as s:
            await s.execute(text("SELECT pg_sleep(0.05)"))

    await asyncio.gather(*(hot() for _ in range(n)), *(orm() for _ in range(n)))


def _sleep_statement() -> Any:
    from vitte.prepared import Prepared

    return Prepared(select(func.pg_sleep(0.05)), "a short sleep", idempotent=True)


_SLEEP = _sleep_statement()


async def turn_rows(core: Core, user_id: int) -> list[tuple[str, str, str]]:
    """The player's stored messages as (role, text, status), oldest first (the opening dropped)."""
    return [(m.role, m.text, m.status) for m in await messages_of(core, user_id)][1:]


async def replies_counted(core: Core, user_id: int) -> int:
    async with core.db.session() as s:
        found = (await s.execute(select(func.sum(col(Usage.replies))).where(col(Usage.user_id) == user_id))).scalar()
    return int(found or 0)


@pytest.fixture
async def core(pg_url: str) -> AsyncIterator[Core]:
    c = await Core.open(load_settings(database_url=pg_url), llm=DemoWriter(delay=0))
    await seed_cards(c.db, cards())
    c.catalog.invalidate()
    try:
        yield c
    finally:
        await c.close()


# --------------------------------------------------------------------------- pg_terminate_backend


async def test_every_connection_terminated_then_a_reply_is_answered_and_stored_once(core: Core, pg_url: str) -> None:
    await chatting(core, PLAYER)
    first = await core.dialogs.reply(PLAYER, "Hello there")
    await warm(core)
    assert core.db.hot_engine is not None
    hot_pool, orm_pool = core.db.hot_engine.sync_engine.pool, core.db.engine.sync_engine.pool
    assert hot_pool.checkedin() >= 3 and orm_pool.checkedin() >= 3  # type: ignore[attr-defined]

    killed = terminate_all(pg_url)
    assert len(killed) >= 6  # both pools' connections

    second = await core.dialogs.reply(PLAYER, "Are you still there?")  # no StoreUnavailable
    assert second.text and second.status == MSG_OK
    # the ORM sessions' pool too (its connections were all terminated as well)
    assert await core.players.seen(PLAYER) is not None
    view = await core.dialogs.current(PLAYER)
    assert view is not None and view.id == first.dialog_id

    assert await turn_rows(core, PLAYER) == [
        (USER, "Hello there", MSG_OK),
        (ASSISTANT, first.text, MSG_OK),
        (USER, "Are you still there?", MSG_OK),
        (ASSISTANT, second.text, MSG_OK),
    ]
    assert await replies_counted(core, PLAYER) == 2
    # nothing still uses a terminated backend
    with psycopg.connect(_admin_dsn(pg_url), autocommit=True) as admin:
        alive = {
            int(pid)
            for (pid,) in admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s", (make_url(pg_url).database,)
            ).fetchall()
        }
    assert not alive & set(killed)


async def test_every_connection_terminated_then_the_bot_answers_the_player(env: Any) -> None:  # noqa: F811
    player = env.player(PLAYER, language_code="en")
    await env.choose(player)
    await player.send("Hello there")
    answered = player.last_bot_text()
    assert answered and answered != t("en", "one_moment")
    await warm(env.core)

    terminate_all(env.settings.database_url)

    await player.send("The database is awake")
    assert player.last_bot_text() not in (None, t("en", "one_moment"))
    assert not [c for c in env.sent("sendMessage") if c.params.get("text") == t("en", "one_moment")]
    texts = [(m.role, m.text) for m in await env.rows(PLAYER)]
    assert texts.count((USER, "The database is awake")) == 1
    assert texts[-2][0] == USER and texts[-1][0] == ASSISTANT and texts[-1][1]


# --------------------------------------------------------------------------- the race after checkout


@contextlib.contextmanager
def killing_every_other_checkout(db: Database, url: str) -> Iterator[list[int]]:
    """The server ends every other connection the hot path checks out, after the checkout's own
    look passed (a termination that lands between checkout and statement, or mid-statement):
    the first checkout's connection is terminated, the next (the retry's) is spared, and so on.
    Yields the pids terminated."""
    assert db.hot_engine is not None
    sync_engine = db.hot_engine.sync_engine
    killed: list[int] = []
    seen = [0]
    admin = psycopg.connect(_admin_dsn(url), autocommit=True)

    def kill(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        seen[0] += 1
        if seen[0] % 2 == 0:
            return
        pid = dbapi_conn.driver_connection.info.backend_pid
        (done,) = admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,)).fetchone() or (False,)
        assert done
        killed.append(pid)

    event.listen(sync_engine, "checkout", kill)  # after vitte.db's own checkout check
    try:
        yield killed
    finally:
        event.remove(sync_engine, "checkout", kill)
        admin.close()


async def test_statements_on_a_connection_ended_after_checkout_are_sent_again_once(
    core: Core, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """admin_shutdown proves the statement never committed: the turn statement (quota and the
    player's message) and the reply's FINISH are each sent again on a fresh connection."""
    await chatting(core, PLAYER)
    first = await core.dialogs.reply(PLAYER, "Hello there")
    with killing_every_other_checkout(core.db, pg_url) as killed:
        second = await core.dialogs.reply(PLAYER, "Did you miss me?")
        third = await core.dialogs.reply(PLAYER, "Tell me a secret")
    assert len(killed) >= 4  # at least the turn statement and FINISH of each reply
    assert caplog.text.count("sending it again on a fresh connection") == len(killed)
    assert await turn_rows(core, PLAYER) == [
        (USER, "Hello there", MSG_OK),
        (ASSISTANT, first.text, MSG_OK),
        (USER, "Did you miss me?", MSG_OK),
        (ASSISTANT, second.text, MSG_OK),
        (USER, "Tell me a secret", MSG_OK),
        (ASSISTANT, third.text, MSG_OK),
    ]
    assert await replies_counted(core, PLAYER) == 3  # each reply counted once


# --------------------------------------------------------------------------- an answer lost after the commit


class CuttingProxy:
    """A loopback TCP proxy in front of PostgreSQL that, once armed with a marker, forwards the
    client's statement carrying it, lets the server answer in full (it has committed by then:
    ReadyForQuery follows the commit) and then resets the client's connection instead of
    passing the answer on: a connection lost after the commit, the ambiguous case."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen_port = 0
        self.marker: bytes | None = None
        self.cuts = 0
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.listen_port = int(self._server.sockets[0].getsockname()[1])
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def rewrite(self, url: str) -> str:
        return make_url(url).set(host="127.0.0.1", port=self.listen_port).render_as_string(hide_password=False)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        cut = asyncio.Event()

        async def upstream() -> None:
            while data := await reader.read(65536):
                if self.marker is not None and self.marker in data:
                    self.marker = None
                    cut.set()
                up_writer.write(data)
                await up_writer.drain()
            up_writer.close()

        async def downstream() -> None:
            held = b""
            while data := await up_reader.read(65536):
                if cut.is_set():
                    held += data
                    if b"Z\x00\x00\x00\x05" in held:  # ReadyForQuery: the statement committed
                        self.cuts += 1
                        writer.transport.abort()  # the answer never reaches the client
                        up_writer.close()
                        return
                    continue
                writer.write(data)
                await writer.drain()
            writer.close()

        tasks = {asyncio.create_task(upstream()), asyncio.create_task(downstream())}
        self._tasks |= tasks
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self._tasks -= tasks
            writer.transport.abort()
            up_writer.close()


async def test_a_turn_whose_answer_was_lost_after_its_commit_is_not_stored_twice(pg_url: str) -> None:
    u = make_url(pg_url)
    async with CuttingProxy(u.host or "127.0.0.1", u.port or 5432) as proxy:
        core = await Core.open(load_settings(database_url=proxy.rewrite(pg_url)), llm=DemoWriter(delay=0))
        try:
            await seed_cards(core.db, cards())
            core.catalog.invalidate()
            await chatting(core, PLAYER)
            await core.dialogs.reply(PLAYER, "Hello there")
            marker = "a message whose answer gets lost 7f3a"
            proxy.marker = marker.encode()
            with pytest.raises(StoreUnavailable):
                await core.dialogs.reply(PLAYER, marker)
            assert proxy.cuts == 1
            # stored once (the server committed it): not sent again, so not stored twice
            rows = await turn_rows(core, PLAYER)
            assert [r for r in rows if r[1] == marker] == [(USER, marker, MSG_OK)]
            # the next message is answered (the dropped connection left the pool)
            answer = await core.dialogs.reply(PLAYER, "Still there?")
            assert answer.text
        finally:
            await core.close()


# --------------------------------------------------------------------------- a real restart


@pytest.mark.slow
async def test_a_real_postgres_restart_under_the_bot(cluster: Cluster) -> None:  # noqa: F811
    with psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres dbname=postgres", autocommit=True) as a:
        a.execute("CREATE DATABASE vitte")
    url = cluster.url("vitte")
    migrating = Database(load_settings(database_url=url))
    try:
        await migrating.upgrade()
    finally:
        await migrating.dispose()

    async with FakeLLMServer() as llm:
        settings: Settings = load_settings(database_url=url, llm_base_url=llm.base_url, llm_retries=0)
        core = await Core.open(settings)
        runtime = Runtime(draft_interval=0.05, edit_interval=0.1)
        try:
            await seed_cards(core.db, cards())
            core.catalog.invalidate()
            await chatting(core, PLAYER)
            session = LocalBotSession()
            player = LocalPlayer(
                build_dispatcher(core, runtime), make_local_bot(session), session, user_id=PLAYER, language_code="en"
            )
            one_moment = t("en", "one_moment")

            await player.send("Before the restart")
            assert player.last_bot_text() not in (None, one_moment)
            await warm(core)

            cluster.pg_ctl("-m", "fast", "restart")  # back once it accepts connections again

            await player.send("After the restart")
            assert player.last_bot_text() not in (None, one_moment)
            # the engine's way too
            answer = await core.dialogs.reply(PLAYER, "And once more")
            assert answer.text
            before_down = await turn_rows(core, PLAYER)
            assert [r[:2] for r in before_down if r[0] == USER] == [
                (USER, "Before the restart"),
                (USER, "After the restart"),
                (USER, "And once more"),
            ]
            assert [r[0] for r in before_down] == [USER, ASSISTANT] * 3
            assert all(r[1] and r[2] == MSG_OK for r in before_down)

            cluster.pg_ctl("-m", "fast", "stop")
            with pytest.raises(StoreUnavailable):
                await core.dialogs.reply(PLAYER, "Nobody home")
            await player.send("Anybody there?")
            assert player.last_bot_text() == one_moment  # a short notice, no traceback

            cluster.start()
            # nothing of the turns tried while it was down was stored, half or whole
            assert await turn_rows(core, PLAYER) == before_down
            await player.send("Back again")
            assert player.last_bot_text() not in (None, one_moment)
            after = await turn_rows(core, PLAYER)
            assert after[: len(before_down)] == before_down
            assert [r[:2] for r in after[len(before_down) :]] == [(USER, "Back again"), (ASSISTANT, after[-1][1])]
        finally:
            await runtime.drain(0)
            await core.close()
