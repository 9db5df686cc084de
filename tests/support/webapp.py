"""A running Web App for tests: real Core (SQLite or PostgreSQL), the shipped personas,
an aiogram Bot pointed at a fake Bot API server on loopback, an aiohttp server on 127.0.0.1."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiogram import Bot
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import select

from tests.support.fake_botapi import FakeBotApi
from tests.support.initdata import TEST_BOT_TOKEN
from vitte.catalog.cards import default_fixtures_dir, read_cards
from vitte.catalog.seed import seed_cards
from vitte.config import Settings
from vitte.core import Core
from vitte.models import Dialog
from vitte.telegram.bot import make_bot
from vitte.webapp.app import make_webapp


@dataclass
class WebAppHarness:
    core: Core
    bot: Bot
    botapi: FakeBotApi
    client: TestClient

    @property
    def base_url(self) -> str:
        return str(self.client.make_url("/"))

    async def dialogs_of(self, user_id: int) -> list[Dialog]:
        async with self.core.db.session() as s:
            return list(
                (await s.execute(select(Dialog).where(Dialog.user_id == user_id).order_by(Dialog.id))).scalars()
            )


def webapp_settings(base: Settings, botapi_url: str, **overrides: object) -> Settings:
    update: dict[str, object] = {"bot_token": SecretStr(TEST_BOT_TOKEN), "telegram_api_url": botapi_url}
    update.update(overrides)
    return base.model_copy(update=update)


@asynccontextmanager
async def running_webapp(
    base: Settings, *, seed: bool = True, avatars_dir: Path | None = None, **overrides: object
) -> AsyncIterator[WebAppHarness]:
    botapi = await FakeBotApi().start()
    settings = webapp_settings(base, botapi.url, **overrides)
    core = await Core.open(settings)
    bot = make_bot(settings)
    client: TestClient | None = None
    try:
        if seed:
            await seed_cards(core.db, read_cards(default_fixtures_dir()))
            core.catalog.invalidate()
        app = make_webapp(core, bot, avatars_dir=avatars_dir)
        client = TestClient(TestServer(app, host="127.0.0.1"))
        await client.start_server()
        yield WebAppHarness(core=core, bot=bot, botapi=botapi, client=client)
    finally:
        if client is not None:
            await client.close()
        await bot.session.close()
        await core.close()
        await botapi.close()
