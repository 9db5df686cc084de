"""Building the bot: `build_dispatcher(core)` (the one Dispatcher that polling, webhooks, the
local console and the tests all feed) and `make_bot(settings)`."""

from __future__ import annotations

from aiogram import Bot, Dispatcher
from aiogram.client.session.aiohttp import AiohttpSession
from aiogram.client.session.base import BaseSession
from aiogram.client.telegram import TelegramAPIServer
from aiogram.types import BotCommand

from vitte.bot.handlers import admin, chat, other, payments, safety, settings, start
from vitte.bot.middlewares import UpdateMiddleware
from vitte.bot.runtime import Runtime
from vitte.bot.texts import t
from vitte.config import Settings
from vitte.core import Core
from vitte.perf import inline_magic_filters, install_pinning

DEFAULT_API_URL = "https://api.telegram.org"
COMMANDS = ("start", "chat", "premium", "settings", "mydata", "help", "paysupport", "terms")


def build_dispatcher(core: Core, runtime: Runtime | None = None) -> Dispatcher:
    """A Dispatcher with every Vitte handler; `dp["runtime"]` holds the per-process state."""
    runtime = runtime or Runtime()
    dp = Dispatcher(disable_fsm=True, name="vitte")
    dp["core"] = core
    dp["runtime"] = runtime
    dp.update.outer_middleware(UpdateMiddleware(core, runtime))
    dp.include_routers(
        other.make_groups_router(core),  # group chats first: the companion is private-only
        start.make_router(core),
        settings.make_router(core),
        admin.make_router(core),  # before chat: /stats of a non-admin falls to "unknown command"
        payments.make_router(core),  # /premium, /paysupport, /terms, pre-checkout, payments
        safety.make_router(core),  # /mydata; admins' /block, /unblock (before chat, as /stats)
        chat.make_router(core),
        other.make_router(core),  # stickers, photos, edits … last
    )
    inline_magic_filters(dp)  # aiogram runs them in threads otherwise (vitte.perf)
    return dp


def make_bot(settings: Settings, session: BaseSession | None = None) -> Bot:
    """A Bot for the configured token; VITTE_TELEGRAM_API_URL selects the Bot API server.

    Raises vitte.config.ConfigError when the token is missing or malformed.
    """
    token = settings.require_bot_token()
    if session is None:
        url = settings.telegram_api_url.rstrip("/")
        session = AiohttpSession(api=TelegramAPIServer.from_base(url)) if url != DEFAULT_API_URL else AiohttpSession()
    install_pinning(session)  # aiogram rebuilds a pydantic model per call otherwise (vitte.perf)
    return Bot(token=token, session=session)


def bot_commands(lang: str) -> list[BotCommand]:
    return [BotCommand(command=c, description=t(lang, f"cmd_{c}")) for c in COMMANDS]

