"""`vitte bench` runs end to end (tiny sizes), reports stable keys, and cleans up after itself."""

from __future__ import annotations

import asyncio
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


async def _redis_keys(settings: Settings) -> list[str]:
    """Every key under the test's own prefix (nothing but the bench writes there)."""
    import redis.asyncio as aioredis

    assert settings.redis_url
    r = aioredis.from_url(settings.redis_url)
    try:
        return sorted([k.decode() async for k in r.scan_iter(match=settings.redis_prefix + "*")])
    finally:
        await r.aclose()


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
    if backend == "postgres":  # and none of its Redis keys (the per-player lock keys among them)
        assert await _redis_keys(backend_settings) == []


@pytest.mark.slow
@pytest.mark.usefixtures("redis_cleanup")
async def test_a_bench_cut_short_with_every_reply_in_flight_leaves_no_key_behind(
    pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """Ctrl-C (asyncio.run cancels the bench's task) while every player holds its lock: the
    players, their dialogs and every Redis key of theirs (the per-player lock keys too) go."""
    import redis.asyncio as aioredis

    settings = load_settings(database_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix)
    await _seeded(settings)
    config = BenchConfig(players=3, messages=1, concurrency=1, overhead_messages=1, ttft=60, tps=0, warmup=0)
    in_flight = asyncio.Event()
    bench = asyncio.create_task(run_bench(settings, config, lambda line: in_flight.set() if line.startswith("in flight") else None))
    raw = aioredis.from_url(redis_url)
    try:
        waiting = asyncio.create_task(in_flight.wait())
        await asyncio.wait([bench, waiting], return_when=asyncio.FIRST_COMPLETED)
        assert not bench.done(), "the bench ended before its in-flight phase"
        held: list[bytes] = []
        while not held and not bench.done():  # every reply waits on the LLM holding its player's lock
            held = [k async for k in raw.scan_iter(match=f"{redis_prefix}lock:*")]
            await asyncio.sleep(0.01)
        assert held and not bench.done(), "no player's lock was seen held in the in-flight phase"
        bench.cancel()
        with pytest.raises(asyncio.CancelledError):
            await bench
    finally:
        await raw.aclose()
    assert await _bench_rows(settings) == (0, 0)
    assert await _redis_keys(settings) == []


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
