"""The one `make_bot`: the bot, the Web App and the CLI all talk to Telegram through it."""

from __future__ import annotations

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer

from vitte.config import Settings
from vitte.perf import install_pinning

DEFAULT_API_URL = "https://api.telegram.org"


def make_bot(settings: Settings, session: BaseSession | None = None) -> Bot:
    """A Bot for the configured token; VITTE_TELEGRAM_API_URL selects the Bot API server.

    Raises vitte.config.ConfigError when the token is missing or malformed.
    """
    token = settings.require_bot_token()
    if session is None:
        url = settings.telegram_api_url.rstrip("/")
        session = (
            AiohttpSession(api=TelegramAPIServer.from_base(url))
            if url != DEFAULT_API_URL
            else AiohttpSession()
        )
    install_pinning(session)  # aiogram rebuilds a pydantic model per call otherwise (vitte.perf)
    return Bot(token=token, session=session)
