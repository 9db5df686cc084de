"""`vitte bench nudges` (issue 18, item 7), small: every due nudge sent once by one scheduler,
and once by two schedulers sharing the schedule; the bench players removed afterwards; the
figures' keys present. No timing is asserted (the figures are printed, not tested)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import sqlalchemy as sa
from typer.testing import CliRunner

from cli.main import app
from vitte.bench_nudges import PLAYER_BASE, NudgeBenchConfig, run_nudge_bench
from vitte.config import load_settings
from vitte.db import Database
from vitte.initiative.nudger import Pacer, SharedPacer, pacer_for
from vitte.models import User, table_of


async def test_bench_nudges_sends_each_once_and_cleans_up(pg_url: str) -> None:
    settings = load_settings(database_url=pg_url)
    result: dict[str, Any] = await run_nudge_bench(
        settings, NudgeBenchConfig(players=60, two_players=40, batch=25), lambda _m: None
    )
    one, two = result["one"], result["two"]
    assert (one["sent"], one["duplicates"], one["lost"], one["failed"]) == (60, 0, 0, 0)
    assert (two["sent"], two["duplicates"], two["lost"], two["schedulers"]) == (40, 0, 0, 2)
    assert one["claim_batches"] >= 3 and one["claims_per_second"] > 0 and one["batch_db_ms_p99"] > 0
    assert result["targets"]["duplicates"]["ok"] and result["targets"]["lost"]["ok"]
    db = Database(settings)
    try:
        async with db.engine.connect() as conn:
            users = table_of(User)
            left = (await conn.execute(sa.select(sa.func.count()).where(users.c.id >= PLAYER_BASE))).scalar_one()
        assert left == 0
    finally:
        await db.dispose()


def test_bench_nudges_refuses_sqlite_and_bad_flags(tmp_path: Any) -> None:
    runner = CliRunner()
    env = {"VITTE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'x.sqlite3'}"}
    res = runner.invoke(app, ["bench", "nudges", "--players", "10"], env=env)
    assert res.exit_code == 2 and "PostgreSQL" in res.output
    res = runner.invoke(app, ["bench", "nudges", "--players", "0", "--json"], env=env)
    assert res.exit_code == 2 and "--players" in res.output


def test_pacer_spaces_starts_by_the_rate() -> None:
    assert Pacer(0).interval == 0.0
    assert Pacer(30).interval == 1 / 30


async def test_two_pacers_on_redis_share_the_rate(redis_url: str, redis_prefix: str, redis_cleanup: None) -> None:
    """VITTE_NUDGE_RATE with Redis is the bot's, not each process's: two processes' pacers (two
    caches on one Redis) at 10 a second start 26 sends together, never more than 10 in one
    wall-clock second's window (so at least three windows), both sending. Without Redis, or
    unpaced, the process's own pace."""
    from vitte.cache.memory import MemoryCache
    from vitte.cache.redis import RedisCache

    caches = [RedisCache(redis_url, prefix=redis_prefix) for _ in range(2)]
    try:
        pacers = [pacer_for(10, c) for c in caches]
        assert all(isinstance(p, SharedPacer) and p.budget == 10 and p.window == 1.0 for p in pacers)
        starts: list[tuple[int, int | None]] = []

        async def start(n: int) -> None:
            starts.append((n, await pacers[n].wait()))

        await asyncio.gather(*(start(n) for n in (0, 1) for _ in range(13)))
        assert len(starts) == 26 and all(w is not None for _, w in starts)
        per_window = Counter(w for _, w in starts)
        assert max(per_window.values()) <= 10, per_window
        assert len(per_window) >= 3
        assert {n for n, _ in starts} == {0, 1}
    finally:
        for c in caches:
            await c.close()
    assert type(pacer_for(10, MemoryCache())) is Pacer and type(pacer_for(0, caches[0])) is Pacer
    slow = SharedPacer(0.5, caches[0])
    assert (slow.window, slow.budget) == (2.0, 1)
