"""`vitte bench` runs end to end (tiny sizes), reports stable keys, and cleans up after itself."""

from __future__ import annotations

import json

import pytest
import typer
from sqlalchemy import func, select
from typer.testing import CliRunner

from tests.support.bot_harness import cards
from vitte.bench import BENCH_ID_BASE, BenchConfig, run_bench
from vitte.catalog.seed import seed_cards
from vitte.config import Settings, load_settings
from vitte.db import Database
from vitte.models import Message, User

PHASE_KEYS = {
    "messages",
    "seconds",
    "messages_per_second",
    "cpu_ms_per_message",
    "overhead_p50_ms",
    "overhead_p95_ms",
    "overhead_p99_ms",
    "overhead_max_ms",
    "llm_ms_mean",
    "errors",
    "sql_statements_per_message",
    "sql_round_trips_per_message",
    "redis_round_trips_per_message",
    "extra",
}

TINY = BenchConfig(players=4, messages=2, concurrency=2, overhead_messages=6, ttft=0.05, tps=200, reply_tokens=5, warmup=2)


async def _seeded(settings: Settings) -> None:
    db = Database(settings)
    try:
        await db.ensure_ready()
        if settings.is_sqlite is False:
            await db.upgrade()
        await seed_cards(db, cards())
    finally:
        await db.dispose()


async def _bench_rows(settings: Settings) -> tuple[int, int]:
    db = Database(settings)
    try:
        async with db.session() as s:
            users = (await s.execute(select(func.count()).where(User.id >= BENCH_ID_BASE))).scalar_one()
            messages = (await s.execute(select(func.count()).select_from(Message))).scalar_one()
        return int(users), int(messages)
    finally:
        await db.dispose()


@pytest.fixture
def _redis_cleanup_on_postgres(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "postgres":
        request.getfixturevalue("redis_cleanup")


@pytest.mark.slow
@pytest.mark.usefixtures("_redis_cleanup_on_postgres")
async def test_bench_measures_every_phase_and_leaves_nothing_behind(backend_settings: Settings, backend: str) -> None:
    await _seeded(backend_settings)
    progress: list[str] = []
    result = await run_bench(backend_settings, TINY, progress.append)
    data = result.to_json()
    json.dumps(data)  # JSON-able
    assert {"overhead", "throughput", "in_flight", "targets", "peak_rss_mb", "store", "cache"} <= set(data)
    for phase in ("overhead", "throughput", "in_flight"):
        assert set(data[phase]) == PHASE_KEYS, phase
        assert data[phase]["errors"] == 0, data["error_samples"]
    assert data["overhead"]["messages"] == 6
    assert data["throughput"]["messages"] == 8
    assert data["in_flight"]["messages"] == 4
    assert data["in_flight"]["extra"]["max_llm_streams_in_flight"] >= 2
    # the hot path's statements, counted: within the target on a cache hit
    assert 0 < data["overhead"]["sql_round_trips_per_message"] <= 4
    if backend == "postgres":
        assert data["cache"] == "redis" and data["overhead"]["redis_round_trips_per_message"] > 0
    else:
        assert data["overhead"]["redis_round_trips_per_message"] is None
    assert set(data["targets"]) == {"overhead_p99_ms", "messages_per_second", "sql_round_trips_per_message", "peak_rss_mb"}
    # cleaned up: no bench player, no message left
    assert await _bench_rows(backend_settings) == (0, 0)


@pytest.mark.slow
async def test_bench_keep_leaves_the_players_and_the_next_run_removes_them(sqlite_url: str) -> None:
    settings = load_settings(database_url=sqlite_url)
    await _seeded(settings)
    config = BenchConfig(players=2, messages=1, concurrency=1, overhead_messages=2, in_flight=False, warmup=0, keep=True)
    await run_bench(settings, config)
    users, _ = await _bench_rows(settings)
    assert users == 2
    progress: list[str] = []
    await run_bench(settings, BenchConfig(players=1, messages=1, overhead_messages=1, in_flight=False, warmup=0), progress.append)
    assert any("removed 2 bench player" in line for line in progress)
    assert await _bench_rows(settings) == (0, 0)


def test_bench_refuses_an_empty_catalog_and_bad_sizes(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli.bench import bench

    app = typer.Typer()
    app.command("bench")(bench)
    app.command("noop")(lambda: None)  # a multi-command app, as `vitte` is
    monkeypatch.setenv("VITTE_DATABASE_URL", sqlite_url)
    runner = CliRunner()
    empty = runner.invoke(app, ["bench", "--players", "2", "--no-in-flight", "--json"])
    assert empty.exit_code == 1 and "vitte seed" in empty.output
    bad = runner.invoke(app, ["bench", "--players", "0"])
    assert bad.exit_code == 2
