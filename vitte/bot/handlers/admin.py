"""Admin commands (VITTE_ADMIN_IDS only). For anybody else /stats is an unknown command."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.filters import Command
from aiogram.types import Message

from vitte.bot.handlers.common import player_lang
from vitte.bot.runtime import Runtime
from vitte.bot.texts import t
from vitte.core import Core
from vitte.db import unavailable_as
from vitte.errors import StoreUnavailable
from vitte.stats import counters


def make_router(core: Core) -> Router:
    router = Router(name="admin")
    admins = frozenset(core.settings.admin_ids)
    router.message.filter(F.chat.type == "private", F.from_user.id.in_(admins))

    @router.message(Command("stats"))
    async def stats_command(message: Message, runtime: Runtime) -> None:
        assert message.from_user is not None
        lang = await player_lang(core, runtime, message.from_user)
        async with unavailable_as(StoreUnavailable):
            s = await counters(core)
        await message.answer(
            t(
                lang,
                "stats",
                players=s["players"],
                dialogs=s["active_dialogs"],
                messages=s["messages_today"],
                online=s["online_now"],
            )
        )

    return router
