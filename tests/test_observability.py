"""Structured logs (update and player ids on every record) and Prometheus metrics, through the
real Dispatcher."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests.support.bot_harness import BotEnv, env  # noqa: F401 - the fixture
from tests.support.players import chatting
from vitte import metrics
from vitte.config import Settings
from vitte.logs import JsonFormatter, install_record_factory, log_context
from vitte.metrics import metrics_route


def _value(name: str, **labels: str) -> float:
    key = name + ("{" + ",".join(f"{k}={v}" for k, v in sorted(labels.items())) + "}" if labels else "")
    return float(metrics.snapshot().get(key, 0.0))


async def _ready(env: BotEnv, user_id: int) -> None:  # noqa: F811
    await chatting(env.core, user_id, persona_id="kira", story_id="kira.night-watch")


async def test_metrics_count_updates_replies_and_llm_latency(env: BotEnv) -> None:  # noqa: F811
    await _ready(env, 5101)
    player = env.player(5101, language_code="en")
    updates = _value("vitte_updates_total", type="message", outcome="ok")
    replies = _value("vitte_replies_total", status="ok")
    first_tokens = _value("vitte_llm_seconds_count", phase="first_token")
    await player.send("Hello there")
    assert _value("vitte_updates_total", type="message", outcome="ok") == updates + 1
    assert _value("vitte_replies_total", status="ok") == replies + 1
    assert _value("vitte_llm_seconds_count", phase="first_token") == first_tokens + 1
    assert _value("vitte_updates_in_flight") == 0
    assert _value("vitte_lock_waiting") == 0

    # a duplicate delivery is counted as such, and answered once
    duplicates = _value("vitte_updates_total", type="message", outcome="duplicate")
    assert player.last_update is not None
    await player.resend(player.last_update)
    assert _value("vitte_updates_total", type="message", outcome="duplicate") == duplicates + 1


async def test_llm_failures_are_counted_by_kind(env: BotEnv) -> None:  # noqa: F811
    await _ready(env, 5102)
    player = env.player(5102, language_code="en")
    unavailable = _value("vitte_llm_errors_total", kind="unavailable")
    failed = _value("vitte_replies_total", status="failed")
    env.llm.modes.append("500")
    await player.send("Are you there?")
    assert _value("vitte_llm_errors_total", kind="unavailable") == unavailable + 1
    assert _value("vitte_replies_total", status="failed") == failed + 1


async def test_queue_depth_shows_players_waiting_on_their_lock(env: BotEnv) -> None:  # noqa: F811
    await _ready(env, 5103)
    player = env.player(5103, language_code="en")
    async with env.core.dialogs.turn(5103):  # a reply of this player is running
        # another update's task waits for the turn
        task = asyncio.create_task(player.send("One more thing"))
        for _ in range(1000):
            if _value("vitte_lock_waiting") >= 1:
                break
            await asyncio.sleep(0.005)
        assert _value("vitte_lock_waiting") == 1
        assert _value("vitte_updates_in_flight") >= 1
    await task
    assert _value("vitte_lock_waiting") == 0


async def test_metrics_route_serves_prometheus_text_and_checks_the_token() -> None:
    app = web.Application()
    metrics_route(app)
    metrics_route(app, path="/private", token="s3cret")
    async with TestClient(TestServer(app)) as client:
        resp = await client.get("/metrics")
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        body = await resp.text()
        for name in ("vitte_updates_total", "vitte_replies_total", "vitte_llm_seconds", "vitte_lock_waiting"):
            assert name in body
        assert (await client.get("/private")).status == 401
        assert (await client.get("/private", headers={"Authorization": "Bearer nope"})).status == 401
        ok = await client.get("/private", headers={"Authorization": "Bearer s3cret"})
        assert ok.status == 200 and "vitte_updates_in_flight" in await ok.text()


async def test_log_records_carry_the_update_and_the_player(
    env: BotEnv,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    install_record_factory()
    await _ready(env, 5104)
    player = env.player(5104, language_code="en")
    env.llm.modes.append("500")  # the engine logs a warning about the failed reply
    with caplog.at_level(logging.WARNING):
        update = await player.send("Hello?")
    mine = [r for r in caplog.records if getattr(r, "player_id", "-") == 5104]
    assert mine, [(r.name, r.getMessage()) for r in caplog.records]
    assert all(r.update_id == update.update_id for r in mine)
    # outside an update: no ids
    record = logging.getLogger("vitte.test").makeRecord("vitte.test", logging.INFO, __file__, 1, "x", (), None)
    assert record.update_id == "-" and record.player_id == "-"


def test_json_lines_carry_the_ids() -> None:
    install_record_factory()
    with log_context(update_id=77, player_id=88):
        record = logging.getLogger("vitte.test").makeRecord(
            "vitte.test", logging.WARNING, __file__, 1, "reply failed: %s", ("timeout",), None
        )
    line = json.loads(JsonFormatter().format(record))
    assert line["update_id"] == 77 and line["player_id"] == 88
    assert line["message"] == "reply failed: timeout" and line["level"] == "WARNING"


async def test_telegram_403_and_429_are_counted(backend_settings: Settings) -> None:
    """`vitte run-scheduler`'s bot counts a send refused with 403 (the player marked unreachable,
    vitte_telegram_blocked_total) and a 429 waited out (vitte_telegram_retry_after_total)."""
    from pydantic import SecretStr

    from tests.support.bot_harness import PERSONA, STORY, cards, drop_redis_keys
    from tests.support.llm_server import FakeLLMServer
    from vitte.catalog.seed import seed_cards
    from vitte.core import Core
    from vitte.localapi import LocalBotSession, make_local_bot
    from vitte.models import User
    from vitte.scheduler import run_scheduler

    token = "42:LOCAL-TEST-TOKEN-0123456789abcdef"
    async with FakeLLMServer(replies=lambda _body: "Thinking of you.") as llm:
        settings = backend_settings.model_copy(
            update={"bot_token": SecretStr(token), "llm_base_url": llm.base_url, "nudge_after": 2,
                    "nudge_poll": 0.2, "nudge_quiet_hours": ""}
        )  # fmt: skip
        core = await Core.open(settings)
        try:
            await seed_cards(core.db, cards())
            for uid in (5301, 5302):
                await core.players.seen(uid, language_code="en")
                await core.players.confirm_adult(uid)
                await core.dialogs.choose(uid, PERSONA, STORY)
            session = LocalBotSession()
            session.block(5302)
            session.fail_next("sendMessage", 429, retry_after=1)  # the first send waits once
            blocked, waited = _value("vitte_telegram_blocked_total"), _value("vitte_telegram_retry_after_total")
            stop = asyncio.Event()
            # both waits are in place before anything is sent: the two players' sends come in
            # either order (wait_for sees only calls made after it starts)
            sent = asyncio.gather(
                session.wait_for("sendMessage", lambda c: c.params.get("chat_id") == 5301 and c.error is None,
                                 timeout=15),
                session.wait_for("sendMessage", lambda c: c.params.get("chat_id") == 5302, timeout=15),
            )  # fmt: skip
            await asyncio.sleep(0)  # the waiters registered
            running = asyncio.create_task(
                run_scheduler(settings, bot=make_local_bot(session, token=token), core=core, stop=stop)
            )
            try:
                await sent
            finally:
                stop.set()
                await asyncio.wait_for(running, 15)
            assert _value("vitte_telegram_blocked_total") == blocked + 1
            assert _value("vitte_telegram_retry_after_total") == waited + 1
            async with core.db.session() as s:
                assert (await s.get(User, 5302)).unreachable_at is not None  # type: ignore[union-attr]
                assert (await s.get(User, 5301)).unreachable_at is None  # type: ignore[union-attr]
        finally:
            await core.close()
    await drop_redis_keys(settings)
