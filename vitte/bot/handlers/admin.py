"""Admin commands (VITTE_ADMIN_IDS only). For anybody else /stats is an unknown command."""

from __future__ import annotations

from collections.abc import Iterable

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


async def stats_command(message: Message, core: Core, runtime: Runtime) -> None:
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
        + "\n"
        + t(
            lang,
            "stats_nudges",
            sent=s["nudges_sent"],
            due=s["nudges_due"],
            scheduled=s["nudges_scheduled"],
            unreachable=s["players_unreachable"],
        )
    )


def router(admin_ids: Iterable[int]) -> Router:
    """A fresh Router with this module's handlers, for these admins (VITTE_ADMIN_IDS)."""
    r = Router(name="admin")
    r.message.filter(F.chat.type == "private", F.from_user.id.in_(frozenset(admin_ids)))
    r.message.register(stats_command, Command("stats"))
    return r
