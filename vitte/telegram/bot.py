"""The one `make_bot`: the bot, the Web App and the CLI all talk to Telegram through it."""

from __future__ import annotations

from typing import Any

from aiogram import Bot
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.client.telegram import TelegramAPIServer
from aiogram.exceptions import ClientDecodeError, TelegramServerError
from aiogram.methods import TelegramMethod

from vitte.config import Settings
from vitte.perf import install_pinning

DEFAULT_API_URL = "https://api.telegram.org"


class BotApiUnreadable(TelegramServerError):
    """The Bot API server answered with something that is not a Bot API reply (a proxy's HTML
    error page, a cut body). A Telegram error like any other — the Web App answers 502, the CLI
    one line — and its body is dropped, never shown or logged: it can repeat the request's URL,
    which holds the token (`/bot<TOKEN>/…`)."""


class UnreadableReplies(BaseRequestMiddleware):
    """aiogram raises ClientDecodeError (not a TelegramAPIError, and carrying the whole body)
    for a reply it cannot read; this turns it into BotApiUnreadable without the body."""

    async def __call__(
        self, make_request: NextRequestMiddlewareType[Any], bot: Bot, method: TelegramMethod[Any]
    ) -> Any:
        try:
            return await make_request(bot, method)
        except ClientDecodeError:
            pass
        # raised outside the except block: no __context__ that still holds the body
        raise BotApiUnreadable(method=method, message="the Bot API's reply was not a Bot API reply (body not shown)")


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
    if not any(isinstance(m, UnreadableReplies) for m in session.middleware):
        session.middleware(UnreadableReplies())
    return Bot(token=token, session=session)
