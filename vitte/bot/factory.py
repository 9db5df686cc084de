"""Building the bot: `build_dispatcher(core)`, the one Dispatcher that polling, webhooks, the
local console, the tests and the benchmark all feed. (The Bot: `vitte.telegram.bot.make_bot`.)"""

from __future__ import annotations

from typing import Any

from aiogram import Dispatcher, Router
from aiogram.dispatcher.event.bases import UNHANDLED
from aiogram.dispatcher.event.handler import HandlerObject
from aiogram.filters import Command
from aiogram.types import BotCommand, Message

from vitte.bot.handlers import admin, chat, memory, other, payments, photos, safety, settings, start, voice
from vitte.bot.middlewares import (
    ErrorAnswersMiddleware,
    InFlightMiddleware,
    ObservabilityMiddleware,
    PlayerLockMiddleware,
)
from vitte.bot.runtime import Runtime
from vitte.bot.texts import t
from vitte.core import Core
from vitte.perf import inline_magic_filters

COMMANDS = ("start", "chat", "memory", "premium", "settings", "mydata", "help", "paysupport", "terms")


def build_dispatcher(core: Core, runtime: Runtime | None = None) -> Dispatcher:
    """A Dispatcher with every Vitte handler; `dp["runtime"]` holds the per-process state."""
    runtime = runtime or Runtime()
    dp = Dispatcher(disable_fsm=True, name="vitte")
    dp["core"] = core
    dp["runtime"] = runtime
    # the outermost first; each one's concern in vitte.bot.middlewares
    dp.update.outer_middleware(InFlightMiddleware(runtime))
    dp.update.outer_middleware(ObservabilityMiddleware())
    dp.update.outer_middleware(PlayerLockMiddleware(core))  # the lock and the de-duplication
    dp.update.outer_middleware(ErrorAnswersMiddleware(core, runtime))
    admins = core.settings.admin_ids
    dp.include_routers(  # fresh routers (vitte.bot.handlers); the first match wins
        other.groups_router(),  # group chats first: the companion is private-only
        start.router(),
        settings.router(),
        memory.router(),  # /memory and its buttons
        admin.router(admins),  # before chat: /stats of a non-admin falls to "unknown command"
        payments.router(),  # /premium, /paysupport, /terms, pre-checkout, payments
        safety.router(admins),  # /mydata; admins' /block, /unblock (before chat, as /stats)
        photos.router(),  # "Пришли фото" (before chat, when photos are on) and 📷 (issue 19)
        chat.router(),
        voice.router(),  # voice notes, audio, round videos (issue 19)
        other.router(),  # stickers, photos, edits … last
    )
    inline_magic_filters(dp)  # aiogram runs them in threads otherwise (vitte.perf)
    skip_non_commands(dp)
    return dp


def skip_non_commands(root: Router) -> int:
    """Turn a message that cannot be a command down at once where only a command could match.

    A message cannot be a command when it has no text or caption, or its text (leading spaces
    stripped) does not start with a command prefix: exactly when aiogram's `Command` filter
    answers no. aiogram gets there the long way: per router a closure, a middleware chain and a
    copy of the update's context, per handler and per filter another copy, then a parsed command
    object and an exception. A plain text message passes eleven command handlers in seven
    routers on its way to the chat. Here:

    - a router whose message handlers (its sub-routers' included) all start with a `Command`
      filter, with no outer middleware and only magic root filters, is skipped as a whole;
    - elsewhere, each handler whose first filter is a `Command` is skipped.

    Anything that may be a command, and every other update, takes aiogram's own path. Returns
    how many routers and handlers were set up this way.
    """
    count = 0
    for router in root.chain_tail:
        if router is not root:
            prefixes = _command_prefixes(router)
            if prefixes:
                router.propagate_event = _skip_router(router, prefixes)  # type: ignore[method-assign]
                count += 1
        for handler in router.observers["message"].handlers:
            if handler.filters and isinstance(handler.filters[0].callback, Command):
                handler.check = _skip_handler(handler, handler.filters[0].callback.prefix)  # type: ignore[method-assign]
                count += 1
    return count


def _cannot_be_command(event: Any, prefixes: str) -> bool:
    if not isinstance(event, Message):
        return False
    text = (event.text or event.caption or "").lstrip()
    return not text or text[0] not in prefixes


def _command_prefixes(router: Router) -> str:
    """The command prefixes of a router whose message handlers are all commands, else ""."""
    prefixes = ""
    for r in router.chain_tail:
        observer = r.observers["message"]
        if len(observer.outer_middleware) or any(f.magic is None for f in observer._handler.filters or ()):
            return ""
        for handler in observer.handlers:
            first = handler.filters[0].callback if handler.filters else None
            if not isinstance(first, Command):
                return ""
            prefixes += first.prefix
    return prefixes


def _skip_router(router: Router, prefixes: str) -> Any:
    propagate = router.propagate_event

    async def propagate_event(update_type: str, event: Any, **kwargs: Any) -> Any:
        if update_type == "message" and _cannot_be_command(event, prefixes):
            return UNHANDLED
        return await propagate(update_type=update_type, event=event, **kwargs)

    return propagate_event


def _skip_handler(handler: HandlerObject, prefixes: str) -> Any:
    check = handler.check

    async def checked(event: Any, /, **kwargs: Any) -> tuple[bool, dict[str, Any]]:
        if _cannot_be_command(event, prefixes):
            return False, kwargs
        return await check(event, **kwargs)

    return checked


def bot_commands(lang: str) -> list[BotCommand]:
    return [BotCommand(command=c, description=t(lang, f"cmd_{c}")) for c in COMMANDS]


async def warm_up(core: Core) -> None:
    """What the first updates would otherwise do on arrival, done before any arrives.

    aiogram's models are built on first use (vitte.aiogram_models), and the first update also
    opens the database and Redis connections and loads the catalog: ≈ 0.2 s in all. Behind a
    load balancer that is long enough for a player's next message, sent to a warm process, to
    overtake the first one (tests/test_scaleout.py); `vitte run-bot` takes updates once warm,
    and `vitte bench` measures a warm process.
    """
    from aiogram.methods.base import Response
    from aiogram.types import Update

    chat = {"id": 1, "type": "private"}
    sender = {"id": 1, "is_bot": False, "first_name": "warm-up"}
    message = {"message_id": 1, "date": 0, "chat": chat, "from": sender, "text": "."}
    Update.model_validate({"update_id": 0, "message": message})
    Update.model_validate({"update_id": 0, "callback_query": {"id": "1", "from": sender, "chat_instance": "1"}})
    Response[Message].model_validate({"ok": True, "result": message})  # sendMessage …
    Response[bool].model_validate({"ok": True, "result": True})  # answerCallbackQuery …
    Response[Message | bool].model_validate({"ok": True, "result": True})  # editMessageReplyMarkup …
    await core.warm_up()
