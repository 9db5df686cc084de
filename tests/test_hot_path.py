"""The hot path's cost, counted (not timed): one reply on a cache hit through the real
Dispatcher, on PostgreSQL + Redis.

SQL round trips are counted on the wire by a proxy in front of PostgreSQL
(`vitte.devtools.pgwire`): every simple query (BEGIN, COMMIT, ROLLBACK, a ping) and every
extended-protocol Sync is one, so nothing is estimated. `vitte bench` counts with SQLAlchemy
events instead; the two must agree.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col

from tests.support.bot_harness import cards
from tests.support.players import chatting
from vitte.bench import RedisCounter, SqlCounter
from vitte.bot.factory import build_dispatcher
from vitte.bot.runtime import Runtime
from vitte.bot.texts import t
from vitte.cache import CachedMessage
from vitte.cache.base import user_key, window_index, window_remaining
from vitte.catalog.seed import seed_cards
from vitte.config import load_settings
from vitte.core import Core
from vitte.devtools.llm_server import FakeLLMServer
from vitte.devtools.pgwire import PgWireCounter
from vitte.localapi import LocalBotSession, LocalPlayer, make_local_bot
from vitte.models import Dialog

# the target is 4. On PostgreSQL, for a player this process answered before: take the quota
# AND store the turn (one statement, which also confirms that the player's rows are still the
# ones read for the previous reply), store the reply
SQL_ROUND_TRIPS_PER_REPLY = 2
# the lock taken with the update's de-duplication, the rate count and the recent messages read;
# the lock given back with the hit counted and the turn appended (the online mark is refreshed
# at most once a minute per player)
REDIS_ROUND_TRIPS_PER_REPLY = 2
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
            yield {
                "core": core,
                "proxy": proxy,
                "dp": dp,
                "bot": bot,
                "session": session,
                "runtime": runtime,
                "llm": llm,
            }
        finally:
            await runtime.drain(0)
            await core.close()


async def _player(w: dict[str, Any], user_id: int) -> LocalPlayer:
    await chatting(w["core"], user_id)
    return LocalPlayer(w["dp"], w["bot"], w["session"], user_id=user_id, language_code="en")


async def test_one_reply_on_a_cache_hit_costs_two_sql_round_trips(wired: dict[str, Any]) -> None:
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


async def _known_player(w: dict[str, Any], user_id: int) -> tuple[LocalPlayer, int]:
    """A player this process has answered (it remembers their rows); their dialog's id."""
    player = await _player(w, user_id)
    await player.send("Hello!")
    assert player.last_bot_text() == REPLY
    view = await w["core"].dialogs.current(user_id)
    assert view is not None
    return player, view.id


async def test_a_dialog_changed_since_the_last_reply_is_read_again(wired: dict[str, Any]) -> None:
    """The memory was folded (or anything else changed the dialog) after the previous reply:
    the turn's statement sees the new row version, stores nothing, and the reply starts over
    from the row as it is now (its summary reaches the prompt)."""
    core: Core = wired["core"]
    proxy: PgWireCounter = wired["proxy"]
    llm: FakeLLMServer = wired["llm"]
    player, dialog_id = await _known_player(wired, 7101)
    async with core.db.session() as s:
        await s.execute(update(Dialog).where(col(Dialog.id) == dialog_id).values(summary="They met at the lake."))
        await s.commit()
    proxy.reset()
    await player.send("Do you remember where we met?")
    assert player.last_bot_text() == REPLY
    system = " ".join(m["content"] for m in llm.completions[-1].json["messages"] if m["role"] == "system")
    assert "They met at the lake." in system
    assert proxy.round_trips == SQL_ROUND_TRIPS_PER_REPLY + 2  # the refused turn, the row read again
    texts = [m.text for m in await core.dialogs.messages(dialog_id)]
    assert texts[-4:] == ["Hello!", REPLY, "Do you remember where we met?", REPLY]  # stored once
    proxy.reset()
    await player.send("And then?")  # confirmed again: back to the short path
    assert proxy.round_trips == SQL_ROUND_TRIPS_PER_REPLY


async def test_a_player_blocked_since_the_last_reply_gets_no_reply(wired: dict[str, Any]) -> None:
    core: Core = wired["core"]
    llm: FakeLLMServer = wired["llm"]
    player, dialog_id = await _known_player(wired, 7102)
    before = len(await core.dialogs.messages(dialog_id))
    asked = len(llm.completions)
    await core.players.block(7102, "spam")  # an operator, e.g. from another process
    await player.send("Still there?")
    assert player.last_bot_text() != REPLY
    assert len(llm.completions) == asked  # the LLM was not called
    assert len(await core.dialogs.messages(dialog_id)) == before  # nothing stored
    # unblocked: the row this process read while the player was blocked refuses nothing
    await core.players.unblock(7102)
    await player.send("Back again!")
    assert player.last_bot_text() == REPLY


async def test_a_dialog_replaced_by_another_process_gets_the_message(
    wired: dict[str, Any], pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """The player started over in the Web App, served by another process: the next message
    goes to the new dialog, not to the one this process remembers."""
    core: Core = wired["core"]
    player, old_id = await _known_player(wired, 7103)
    other = await Core.open(load_settings(database_url=pg_url, redis_url=redis_url, redis_prefix=redis_prefix))
    try:
        opening = await other.dialogs.start_over(7103)
    finally:
        await other.close()
    assert opening.dialog.id != old_id
    old_texts = [m.text for m in await core.dialogs.messages(old_id)]
    await player.send("Let's begin again.")
    assert player.last_bot_text() == REPLY
    new_texts = [m.text for m in await core.dialogs.messages(opening.dialog.id)]
    assert new_texts == [opening.text, "Let's begin again.", REPLY]
    assert [m.text for m in await core.dialogs.messages(old_id)] == old_texts


async def test_the_rate_limit_counts_each_reply_once_across_processes(
    wired: dict[str, Any], pg_url: str, redis_url: str, redis_prefix: str
) -> None:
    """The rate count is read with the lock and each reply's hit is counted with the release:
    a player's messages alternating between two processes are counted once each, in order."""
    core: Core = wired["core"]
    window = core.dialogs.rate_window
    if window_remaining(window) < 5:  # all six hits in one window
        await asyncio.sleep(window_remaining(window) + 0.01)
    player, _dialog_id = await _known_player(wired, 7104)  # hit 1
    other_settings = core.settings.model_copy()
    other = await Core.open(other_settings)
    try:
        other_dp = build_dispatcher(other, Runtime())
        elsewhere = LocalPlayer(other_dp, wired["bot"], wired["session"], user_id=7104, language_code="en")
        for core_ in (core, other):
            core_.settings.rate_limit_per_minute = 4
        replies = 0
        for i, who in enumerate((elsewhere, player, elsewhere, player, elsewhere)):
            await who.send(f"message {i}")
            replies += who.last_bot_text() == REPLY
        assert replies == 3  # hits 2, 3, 4 answered; 5 and 6 refused
        key = core.cache._hit_key(user_key(7104, "replies"), window_index(window))  # type: ignore[attr-defined]
        assert int(await core.cache._redis.get(key)) == 6  # type: ignore[attr-defined]
    finally:
        await other.close()


async def test_a_blocked_player_over_the_rate_limit_hears_blocked(wired: dict[str, Any]) -> None:
    """The rate count, read with the lock, refuses before the turn's statement would confirm
    the rows: the refusal waits for the rows as they are (the block comes first)."""
    core: Core = wired["core"]
    window = core.dialogs.rate_window
    if window_remaining(window) < 5:
        await asyncio.sleep(window_remaining(window) + 0.01)
    player, _dialog_id = await _known_player(wired, 7105)  # hit 1
    core.settings.rate_limit_per_minute = 1
    await player.send("too fast?")
    assert player.last_bot_text().startswith("Not so fast")
    await core.players.block(7105, "spam")
    await player.send("and now?")
    assert player.last_bot_text() == t("en", "blocked")
