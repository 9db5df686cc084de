"""Scaling out: two real `vitte run-bot` webhook processes behind one (simulated) nginx
round-robin, sharing PostgreSQL and Redis.

Every message is stored once and answered once, in the order it was sent per player, even
when consecutive messages of one player land on different processes; Telegram's
redeliveries of an update to the other process produce nothing (README "Scaling out").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
from sqlalchemy import select

from tests.support.bot_api_server import FakeBotAPI
from tests.support.bot_harness import PERSONA, STORY, cards, drop_redis_keys
from tests.support.llm_server import FakeLLMServer
from tests.support.players import adult
from vitte.catalog.seed import seed_cards
from vitte.config import Settings, load_settings
from vitte.core import Core
from vitte.models import ASSISTANT, MSG_OK, USER, Dialog, Message

pytestmark = pytest.mark.slow

TOKEN = "42:LOCAL-TEST-TOKEN-0123456789abcdef"
SECRET = "scale-out_secret-1"
HOOK_PATH = "/tg/hook"
PLAYERS = (3001, 3002, 3003)
PER_PLAYER = 5
# seconds between two updates Telegram sends (any players): one player's messages come 3 x GAP
# apart, and each reply takes longer than that (a 4-word reply at 12 tokens/s), so they queue.
# Order across processes is the order in which they reach Redis (the player's lock queue): a
# process starved of CPU (a loaded 2-core CI machine) could reach it later than the next
# message reaches the other process, so a player's next update is sent only once Redis has seen
# the previous ones (`LockArrivals`); other players' updates keep coming meanwhile.
GAP = 0.08
ARRIVAL_DEADLINE = 30.0  # seconds an update may take to reach the player's lock in Redis
DUPLICATED = (1,)  # each player's messages Telegram delivers twice, to the other process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _prepare(settings: Settings) -> dict[int, int]:
    """Cards seeded, the players adult with an active dialog; their dialog ids."""
    core = await Core.open(settings)
    try:
        await seed_cards(core.db, cards())
        dialogs = {}
        for user in PLAYERS:
            await adult(core, user, first_name="Player", language_code="en")
            dialogs[user] = (await core.dialogs.choose(user, PERSONA, STORY)).dialog.id
        return dialogs
    finally:
        await core.close()


async def _rows(settings: Settings, user_id: int) -> list[Message]:
    core = await Core.open(settings)
    try:
        async with core.db.session() as s:
            query = (
                select(Message)
                .join(Dialog, Dialog.id == Message.dialog_id)
                .where(Dialog.user_id == user_id)
                .order_by(Message.id)
            )
            return list((await s.execute(query)).scalars())
    finally:
        await core.close()


async def _start(tmp_path: Path, env: dict[str, str], port: int) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "run-bot",
        cwd=str(tmp_path),
        env={**env, "VITTE_WEBHOOK_PORT": str(port)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _listening(port: int, proc: asyncio.subprocess.Process, within: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        if proc.returncode is not None:
            raise AssertionError(f"the bot on port {port} exited with {proc.returncode}")
        try:
            _r, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            if loop.time() > deadline:
                raise AssertionError(f"nothing listens on port {port} within {within} s") from None
            await asyncio.sleep(0.1)


class LockArrivals:
    """Which updates of each player reached the player's lock in Redis, seen with MONITOR: each
    update takes the lock once (the bot's `PlayerLockMiddleware`) under a token of its own, and
    its first script call with the lock's keys (the fast path's ENTER, a waiter's ENQUEUE)
    names the lock key first and the token first among the arguments."""

    _piece = re.compile(r'"((?:[^"\\]|\\.)*)"')

    def __init__(self, redis_url: str, redis_prefix: str) -> None:
        self._redis = aioredis.from_url(redis_url)
        self._locks = {f"{redis_prefix}lock:{user}": user for user in PLAYERS}
        self.tokens: dict[int, set[str]] = {user: set() for user in PLAYERS}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> LockArrivals:
        ready = asyncio.Event()
        self._task = asyncio.create_task(self._watch(ready))
        async with asyncio.timeout(10):
            await ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self._redis.aclose()

    async def _watch(self, ready: asyncio.Event) -> None:
        async with self._redis.monitor() as monitor:
            ready.set()
            assert monitor.connection is not None
            while True:
                line = await monitor.connection.read_response()
                text = line.decode(errors="replace") if isinstance(line, bytes) else str(line)
                pieces = self._piece.findall(text)
                if len(pieces) < 4 or pieces[0].upper() != "EVALSHA" or "lua" in text.split('"', 1)[0]:
                    continue
                n = int(pieces[2])
                user = self._locks.get(pieces[3])
                if user is not None and n >= 6 and len(pieces) > 3 + n:  # an entry, not a renewal
                    self.tokens[user].add(pieces[3 + n])

    async def reached(self, user: int, count: int) -> None:
        """Wait until `count` updates of the player have reached the lock in Redis."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ARRIVAL_DEADLINE
        while len(self.tokens[user]) < count:
            assert self._task is not None and not self._task.done(), "MONITOR stopped"
            if loop.time() > deadline:
                raise AssertionError(
                    f"player {user}: {len(self.tokens[user])} of {count} updates reached Redis"
                    f" within {ARRIVAL_DEADLINE} s"
                )
            await asyncio.sleep(0.005)


async def test_two_webhook_processes_keep_order_and_drop_duplicates(
    tmp_path: Path, pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    settings = load_settings(database_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix)
    dialogs = await _prepare(settings)
    ports = [_free_port(), _free_port()]
    async with FakeBotAPI(token=TOKEN) as api, FakeLLMServer(ttft=0.05, tps=12) as llm:
        env = {k: v for k, v in os.environ.items() if not k.startswith("VITTE_")}
        env.update(
            VITTE_BOT_TOKEN=TOKEN,
            VITTE_TELEGRAM_API_URL=api.base_url,
            VITTE_DATABASE_URL=pg_url,
            VITTE_REDIS_URL=redis_url,
            VITTE_REDIS_PREFIX=redis_prefix,
            VITTE_LLM_BASE_URL=llm.base_url,
            VITTE_WEBHOOK_URL=f"https://bot.vitte.test{HOOK_PATH}",
            VITTE_WEBHOOK_SECRET=SECRET,
            VITTE_SHUTDOWN_GRACE="5",
            PYTHONUNBUFFERED="1",
        )
        procs = [await _start(tmp_path, env, port) for port in ports]
        try:
            for port, proc in zip(ports, procs, strict=True):
                await _listening(port, proc)
            await api.wait_for("setWebhook", timeout=30)

            # the load, as Telegram sends it through an nginx round-robin: updates in
            # update_id order, a little apart, never waiting for an answer; a player's
            # consecutive messages land on alternating processes; some are delivered again
            # to the other process (a redelivery after a slow answer)
            sent: dict[int, list[str]] = {user: [] for user in PLAYERS}
            plan: list[tuple[int, dict[str, Any]]] = []  # (process, update)
            update_id = 1000
            for i in range(PER_PLAYER):
                for n, user in enumerate(PLAYERS):
                    update_id += 1
                    text = f"p{user} m{i}"
                    sent[user].append(text)
                    update = {
                        "update_id": update_id,
                        "message": api.user_message(user, text, language_code="en"),
                    }
                    plan.append(((i + n) % 2, update))
            headers = {"X-Telegram-Bot-Api-Secret-Token": SECRET}
            statuses: list[int] = []
            mark = len(api.calls)
            posted = {user: 0 for user in PLAYERS}  # updates posted per player (redeliveries too)
            async with aiohttp.ClientSession() as http, LockArrivals(redis_url, redis_prefix) as arrivals:

                async def post(
                    process: int, update: dict[str, Any], user: int, after: int, delay: float = 0.0
                ) -> None:
                    # the player's earlier updates reached Redis first (see GAP)
                    await arrivals.reached(user, after)
                    await asyncio.sleep(delay)
                    url = f"http://127.0.0.1:{ports[process]}{HOOK_PATH}"
                    async with http.post(url, json=update, headers=headers) as r:
                        statuses.append(r.status)

                posts = []
                for process, update in plan:
                    user = update["message"]["from"]["id"]
                    await arrivals.reached(user, posted[user])
                    posts.append(asyncio.create_task(post(process, update, user, posted[user])))
                    posted[user] += 1
                    if int(update["message"]["text"].rsplit("m", 1)[1]) in DUPLICATED:
                        # a redelivery, once the first delivery reached the lock
                        posts.append(
                            asyncio.create_task(post(1 - process, update, user, posted[user], delay=GAP / 2))
                        )
                        posted[user] += 1
                    await asyncio.sleep(GAP)
                # each process answers once the update is handled
                await asyncio.wait_for(asyncio.gather(*posts), 60)
                assert {user: len(tokens) for user, tokens in arrivals.tokens.items()} == posted
            assert statuses == [200] * len(posts)
            duplicates = len(PLAYERS) * len(DUPLICATED)
            assert len(posts) == len(plan) + duplicates

            # the database: every message once, in the order sent, each answered once
            for user in PLAYERS:
                rows = [r for r in await _rows(settings, user) if r.dialog_id == dialogs[user]]
                opening, chat = rows[0], rows[1:]
                assert opening.role == ASSISTANT
                got = [(r.role, r.text, r.status) for r in chat]
                want: list[tuple[str, str, str]] = []
                for text in sent[user]:
                    want += [(USER, text, MSG_OK), (ASSISTANT, f"You said: {text}", MSG_OK)]
                assert got == want, f"player {user}"
            assert len(llm.completions) == len(plan)

            # the player's side: one final message per user message, in order, nothing else
            for user in PLAYERS:
                messages = [
                    c.params["text"]
                    for c in api.calls[mark:]
                    if c.method == "sendMessage" and c.params.get("chat_id") == user
                ]
                assert messages == [f"You said: {text}" for text in sent[user]], f"player {user}"
        except BaseException:
            for proc in procs:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
            for proc in procs:
                _out, err = await asyncio.wait_for(proc.communicate(), 20)
                print(f"stderr ({proc.pid}):", err.decode()[-5000:])  # shown on failure
            print("calls:", [(c.method, c.params.get("chat_id"), c.params.get("text")) for c in api.calls])
            raise
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        logs = ""
        for proc in procs:
            _out, err = await asyncio.wait_for(proc.communicate(), 20)
            stderr = err.decode()
            assert proc.returncode == 0, stderr
            assert "Traceback" not in stderr
            logs += stderr
        assert logs.count("duplicate update") == duplicates  # each redelivery seen and ignored
        assert len(api.calls_of("setWebhook")) == 2
    await drop_redis_keys(settings)
