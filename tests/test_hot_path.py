"""The hot path's cost, counted (not timed): one reply on a cache hit through the real
Dispatcher, on PostgreSQL + Redis.

SQL round trips are counted on the wire by a proxy in front of PostgreSQL
(`vitte.devtools.pgwire`): every simple query (BEGIN, COMMIT, ROLLBACK, a ping) and every
extended-protocol Sync is one, so nothing is estimated. `vitte bench` counts with SQLAlchemy
events instead; the two must agree.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.bot_harness import cards
from vitte.bench import RedisCounter, SqlCounter
from vitte.bot.factory import build_dispatcher
from vitte.bot.runtime import Runtime
from vitte.cache import CachedMessage
from vitte.catalog.seed import seed_cards
from vitte.config import load_settings
from vitte.core import Core
from vitte.devtools.llm_server import FakeLLMServer
from vitte.devtools.pgwire import PgWireCounter
from vitte.localapi import LocalBotSession, LocalPlayer, make_local_bot

# the target is 4; on PostgreSQL: read the dialog, take the quota AND store the turn (one
# statement), store the reply
SQL_ROUND_TRIPS_PER_REPLY = 3
# lock + de-dup, rate count + recent list, unlock + the turn appended (the online mark is
# refreshed at most once a minute per player)
REDIS_ROUND_TRIPS_PER_REPLY = 3
REPLY = "The night is quiet here, and I was thinking of you."


@pytest.fixture
async def wired(pg_url: str, redis_url: str, redis_prefix: str, redis_cleanup: None) -> AsyncIterator[dict[str, Any]]:
    async with FakeLLMServer(default_reply=REPLY) as llm, PgWireCounter.for_url(pg_url) as proxy:
        settings = load_settings(
            database_url=proxy.rewrite(pg_url),
            redis_url=redis_url,
            redis_prefix=redis_prefix,
            llm_base_url=llm.base_url,
            llm_retries=0,
        )
        core = await Core.open(settings)
        await seed_cards(core.db, cards())
        core.catalog.invalidate()
        session = LocalBotSession(update_id_start=secrets.randbelow(2**40) + 1)
        bot = make_local_bot(session)
        runtime = Runtime()
        dp = build_dispatcher(core, runtime)
        try:
            yield {"core": core, "proxy": proxy, "dp": dp, "bot": bot, "session": session, "runtime": runtime}
        finally:
            await runtime.drain(0)
            await core.close()


async def _player(w: dict[str, Any], user_id: int) -> LocalPlayer:
    core: Core = w["core"]
    await core.players.seen(user_id, language_code="en", first_name="Ann")
    confirm = getattr(core.players, "confirm_adult", None)
    if confirm is not None:
        await confirm(user_id, language_code="en")
    persona = next(p for p in await core.catalog.personas() if p.stories)
    await core.dialogs.choose(user_id, persona.id, persona.stories[0].id, language_code="en")
    return LocalPlayer(w["dp"], w["bot"], w["session"], user_id=user_id, language_code="en")


async def test_one_reply_on_a_cache_hit_costs_three_sql_round_trips(wired: dict[str, Any]) -> None:
    core: Core = wired["core"]
    proxy: PgWireCounter = wired["proxy"]
    player = await _player(wired, 7001)
    await player.send("Hello!")  # the first message: connections, prepared statements, caches
    assert player.last_bot_text() == REPLY

    sql = SqlCounter(core.db.engine, core.db.raw_statements)
    redis = RedisCounter.attach(core.cache)
    assert redis is not None
    try:
        counted = []
        for text in ("How was your evening?", "Tell me more."):
            proxy.reset()
            before, redis_before = sql.snapshot(), redis.round_trips
            await player.send(text)
            assert player.last_bot_text() == REPLY
            estimate = sql.snapshot().minus(before)
            counted.append((proxy.round_trips, dict(proxy.queries), estimate, redis.round_trips - redis_before))
    finally:
        sql.close()
        redis.close()

    for wire, queries, estimate, redis_trips in counted:
        # no BEGIN/COMMIT/ROLLBACK and no ping on the hot path: every round trip is a statement
        assert queries == {}, queries
        assert wire == SQL_ROUND_TRIPS_PER_REPLY, (wire, estimate)
        # what `vitte bench` reports is what went over the wire
        assert estimate.round_trips == wire, (estimate, wire)
        assert redis_trips == REDIS_ROUND_TRIPS_PER_REPLY, redis_trips
    # the turns reached the cache with the lock's release
    view = await core.dialogs.current(7001)
    assert view is not None
    cached = await core.cache.recent_get(view.id)
    assert cached is not None
    assert [m.text for m in cached[-4:]] == ["How was your evening?", REPLY, "Tell me more.", REPLY]
    assert cached == [
        CachedMessage(m.id, m.role, m.text, m.status) for m in (await core.dialogs.messages(view.id))[-len(cached) :]
    ]


async def test_the_first_reply_after_a_cache_loss_rebuilds_from_the_database(wired: dict[str, Any]) -> None:
    """A cache miss costs one more read (the recent messages) and nothing else."""
    core: Core = wired["core"]
    proxy: PgWireCounter = wired["proxy"]
    player = await _player(wired, 7002)
    await player.send("Hello!")
    view = await core.dialogs.current(7002)
    assert view is not None
    await core.cache.recent_drop(view.id)
    proxy.reset()
    await player.send("Do you remember me?")
    assert player.last_bot_text() == REPLY
    assert proxy.queries == {}
    assert proxy.round_trips <= SQL_ROUND_TRIPS_PER_REPLY + 1
    rows = [m.text for m in await core.dialogs.messages(view.id)]
    assert rows[-2:] == ["Do you remember me?", REPLY]
