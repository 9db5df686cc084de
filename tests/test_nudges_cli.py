"""`vitte nudge list` and `vitte nudge run` (issue 18, item 5) on SQLite and PostgreSQL, the
send through a fake Bot API server; /stats counts; `vitte run-scheduler` refuses bad setups."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner, Result

from cli.main import app
from tests.support.bot_api_server import FakeBotAPI
from tests.support.llm_server import FakeLLMServer
from tests.support.players import chatting
from vitte.catalog.cards import default_fixtures_dir, read_cards
from vitte.catalog.seed import seed_cards
from vitte.config import Settings, load_settings
from vitte.core import Core
from vitte.models import User, table_of
from vitte.stats import counters

TOKEN = "4242:AAF-nudge-token-secret-0123456789"
runner = CliRunner()


async def vitte(env: dict[str, str], *args: str) -> Result:
    return await asyncio.to_thread(runner.invoke, app, list(args), env={"COLUMNS": "200", **env})


def env_of(settings: Settings, **extra: str) -> dict[str, str]:
    env = {"VITTE_DATABASE_URL": settings.database_url, "VITTE_NUDGE_QUIET_HOURS": "", **extra}
    if settings.redis_url:
        env |= {"VITTE_REDIS_URL": settings.redis_url, "VITTE_REDIS_PREFIX": settings.redis_prefix}
    return env


async def prepare(settings: Settings) -> None:
    core = await Core.open(load_settings(**settings.model_dump(include={"database_url", "redis_url", "redis_prefix"})))
    try:
        await seed_cards(core.db, read_cards(default_fixtures_dir()))
        core.catalog.invalidate()
        await chatting(core, 9001, language_code="ru")
        await chatting(core, 9002, language_code="en")
        async with core.db.engine.begin() as conn:
            await conn.execute(
                sa.update(table_of(User)).where(table_of(User).c.id == 9002).values(settings={"nudges": False})
            )
    finally:
        await core.close()


async def test_nudge_list_and_run(backend_settings: Settings, redis_cleanup_if_any: None) -> None:
    await prepare(backend_settings)
    env = env_of(backend_settings)
    listed = await vitte(env, "nudge", "list", "--json")
    assert listed.exit_code == 0, listed.output
    rows: dict[int, dict[str, Any]] = {r["user_id"]: r for r in json.loads(listed.stdout)["nudges"]}
    assert set(rows) == {9001, 9002}
    assert rows[9001]["state"] == "waiting" and rows[9001]["due"] is False  # 20 h from now
    assert rows[9002]["state"] == "off"
    assert set(rows[9001]) == {"user_id", "dialog_id", "due_at", "due", "unanswered", "last_nudge_at", "state"}
    assert json.loads((await vitte(env, "nudge", "list", "--due", "--json")).stdout)["nudges"] == []
    table = await vitte(env, "nudge", "list")
    assert table.exit_code == 0 and "9001" in table.stdout and "off" in table.stdout

    async with FakeLLMServer(default_reply="Ты пропал… как ты?") as llm, FakeBotAPI(token=TOKEN) as api:
        tg = env | {"VITTE_BOT_TOKEN": TOKEN, "VITTE_TELEGRAM_API_URL": api.base_url, "VITTE_LLM_BASE_URL": llm.base_url}
        done = await vitte(tg, "nudge", "run", "--json")  # nothing is due yet
        assert done.exit_code == 0, done.output
        assert json.loads(done.stdout)["sent"] == 0 and api.calls_of("sendMessage") == []
        one = await vitte(tg, "nudge", "run", "--user", "9001", "--json")  # at once, for trying it out
        assert one.exit_code == 0, one.output
        assert json.loads(one.stdout)["sent"] == 1
        (call,) = api.calls_of("sendMessage")
        assert int(call.params["chat_id"]) == 9001 and call.params["text"] == "Ты пропал… как ты?"
        off = await vitte(tg, "nudge", "run", "--user", "9002")
        assert off.exit_code == 0 and "off 1" in off.stdout and len(api.calls_of("sendMessage")) == 1
        nobody = await vitte(tg, "nudge", "run", "--user", "123")
        assert nobody.exit_code == 1 and len(nobody.output.strip().splitlines()) == 1

    after = json.loads((await vitte(env, "nudge", "list", "--user", "9001", "--json")).stdout)["nudges"]
    assert after[0]["unanswered"] == 1 and after[0]["last_nudge_at"] is not None
    # /stats' counts
    core = await Core.open(load_settings(**backend_settings.model_dump(include={"database_url", "redis_url", "redis_prefix"})))
    try:
        counts = await counters(core)
    finally:
        await core.close()
    assert (counts["nudges_sent"], counts["nudges_scheduled"], counts["players_unreachable"]) == (1, 2, 0)


async def test_run_scheduler_and_nudge_run_refuse_bad_setups(sqlite_url: str) -> None:
    no_token = await vitte({"VITTE_DATABASE_URL": sqlite_url}, "run-scheduler")
    assert no_token.exit_code == 2 and "VITTE_BOT_TOKEN" in no_token.output
    off = await vitte(
        {"VITTE_DATABASE_URL": sqlite_url, "VITTE_BOT_TOKEN": TOKEN, "VITTE_NUDGE_AFTER": "0"}, "run-scheduler"
    )
    assert off.exit_code == 2 and "VITTE_NUDGE_AFTER=0" in off.output
    bad = await vitte({"VITTE_DATABASE_URL": sqlite_url, "VITTE_NUDGE_QUIET_HOURS": "night"}, "nudge", "list")
    assert bad.exit_code == 2 and "VITTE_NUDGE_QUIET_HOURS" in bad.output and "Traceback" not in bad.output
