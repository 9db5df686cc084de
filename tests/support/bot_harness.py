"""The bot under test: the real Dispatcher, the real core (PostgreSQL + Redis or SQLite +
in-process cache), the local Bot API session, a loopback OpenAI-compatible LLM server.

Import the `env` fixture into a test module (`from tests.support.bot_harness import env`).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiogram import Bot, Dispatcher
from sqlalchemy import select

from tests.support.llm_server import FakeLLMServer
from tests.support.players import messages_of
from tests.support.redis_keys import drop_redis_prefix
from vitte.bot.factory import build_dispatcher
from vitte.bot.runtime import Runtime
from vitte.catalog.cards import default_fixtures_dir, read_cards
from vitte.catalog.seed import seed_cards
from vitte.config import Settings
from vitte.core import Core
from vitte.dialogs import Opening
from vitte.localapi import LocalBotSession, LocalMessage, LocalPlayer, make_local_bot
from vitte.models import Dialog, Message

WEBAPP_URL = "https://app.vitte.test"
ADMIN_ID = 4242
PERSONA = "kira"
STORY = "kira.night-watch"

_CARDS = None


def cards() -> list[Any]:
    global _CARDS
    if _CARDS is None:
        _CARDS = read_cards(default_fixtures_dir())
    return _CARDS


@dataclass
class BotEnv:
    settings: Settings
    core: Core
    session: LocalBotSession
    bot: Bot
    dp: Dispatcher
    runtime: Runtime
    llm: FakeLLMServer

    def player(
        self,
        user_id: int = 1001,
        *,
        language_code: str | None = "ru",
        first_name: str = "Player",
        **kw: Any,
    ) -> LocalPlayer:
        return LocalPlayer(
            self.dp,
            self.bot,
            self.session,
            user_id=user_id,
            language_code=language_code,
            first_name=first_name,
            **kw,
        )

    async def choose(self, player: LocalPlayer, persona: str = PERSONA, story: str = STORY) -> Opening:
        """The Web App's path to a dialog: the engine, directly (after the 18+ confirmation)."""
        await self.core.players.confirm_adult(player.user_id, language_code=player.user.get("language_code"))
        return await self.core.dialogs.choose(
            player.user_id, persona, story, language_code=player.user.get("language_code")
        )

    async def rows(self, user_id: int) -> list[Message]:
        return await messages_of(self.core, user_id)

    async def dialogs(self, user_id: int) -> list[Dialog]:
        async with self.core.db.session() as s:
            return list(
                (await s.execute(select(Dialog).where(Dialog.user_id == user_id).order_by(Dialog.id))).scalars()
            )

    def sent(self, method: str, chat_id: int | None = None) -> list[Any]:
        return [
            c for c in self.session.calls_of(method) if chat_id is None or c.params.get("chat_id") == chat_id
        ]


async def press(player: LocalPlayer, message: LocalMessage | int, data: str) -> Any:
    """A callback_query with arbitrary data on `message` (e.g. a button the bot removed since)."""
    target = message if isinstance(message, LocalMessage) else player.chat.message(message)
    assert target is not None
    query_id = f"q{player.user_id}{secrets.token_hex(6)}"
    player.session.expect_callback(query_id, chat_id=player.user_id, message_id=target.message_id, data=data)
    return await player.feed(
        {
            "update_id": player.session.next_update_id(),
            "callback_query": {
                "id": query_id,
                "from": player.user,
                "chat_instance": f"local-{player.user_id}",
                "message": player.session.message_json(player.bot, target),
                "data": data,
            },
        }
    )


async def wait_until(predicate: Callable[[], bool], within: float = 5.0, step: float = 0.01) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(step)


@pytest.fixture
async def env(backend_settings: Settings) -> AsyncIterator[BotEnv]:
    async with FakeLLMServer() as llm:
        settings = backend_settings.model_copy(
            update={
                "llm_base_url": llm.base_url,
                "llm_retries": 0,
                "llm_timeout": 10.0,
                "webapp_url": WEBAPP_URL,
                "admin_ids": frozenset({ADMIN_ID}),
            }
        )
        core = await Core.open(settings)
        await seed_cards(core.db, cards())
        core.catalog.invalidate()
        session = LocalBotSession()
        bot = make_local_bot(session)
        runtime = Runtime(draft_interval=0.05, edit_interval=0.1)
        dp = build_dispatcher(core, runtime)
        try:
            yield BotEnv(settings, core, session, bot, dp, runtime, llm)
        finally:
            await runtime.drain(0)
            await core.close()
            await drop_redis_keys(settings)


async def drop_redis_keys(settings: Settings) -> None:
    if settings.redis_url:
        await drop_redis_prefix(settings.redis_url, settings.redis_prefix)
