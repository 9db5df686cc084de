"""The hot-path fixes of vitte.perf stay in place: no thread hop per filter, no pydantic model
rebuilt per Bot API call, the startup heap frozen by the runner."""

from __future__ import annotations

import gc

import aiogram.dispatcher.event.handler as aiogram_handler
import pytest
from aiogram.methods import SendMessage

from tests.support.bot_harness import BotEnv, env  # noqa: F401 - the fixture
from tests.support.players import chatting
from vitte.perf import _PINNED, freeze_heap, inline_magic_filters


async def test_no_update_runs_a_filter_in_a_thread(env: BotEnv, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    async def no_threads(*_a: object, **_k: object) -> None:
        raise AssertionError("aiogram ran a callable in a thread")

    monkeypatch.setattr(aiogram_handler.asyncio, "to_thread", no_threads)
    await chatting(env.core, 6101, persona_id="kira", story_id="kira.night-watch")
    player = env.player(6101, language_code="en")
    await player.send("/start")
    await player.send("Hello")
    assert player.last_bot_text()
    assert inline_magic_filters(env.dp) == 0  # build_dispatcher already did them all


async def test_response_models_are_pinned_per_method(env: BotEnv) -> None:  # noqa: F811
    await env.bot.send_message(chat_id=6102, text="hi")
    assert SendMessage in _PINNED
    pinned = _PINNED[SendMessage]
    gc.collect()
    assert _PINNED[SendMessage] is pinned  # a collection does not drop it


def test_freeze_heap_keeps_startup_objects_out_of_collections() -> None:
    threshold = gc.get_threshold()
    try:
        freeze_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold()[0] >= 10_000
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
