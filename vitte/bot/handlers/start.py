"""/start: a greeting in the player's language with "💕 Начать общение"; deep links
`/start persona_<id>` open that persona's card in the Web App."""

from __future__ import annotations

from datetime import tzinfo

from aiogram import Bot, F, Router
from aiogram.filters import CommandObject, CommandStart
from aiogram.types import Message

from vitte.bot.handlers.common import persona_names, seen_player
from vitte.bot.keyboards import persona_kb, start_kb
from vitte.bot.runtime import Runtime
from vitte.bot.texts import t
from vitte.catalog.shown import player_macros, shown
from vitte.core import Core
from vitte.errors import UnknownPersona
from vitte.players import zone_of

DEEP_LINK_PREFIX = "persona_"


async def start(message: Message, command: CommandObject, core: Core, runtime: Runtime, bot: Bot) -> None:
    assert message.from_user is not None
    user = message.from_user
    player = await seen_player(core, runtime, user, refuse_blocked=True)  # no greeting for a blocked player
    lang = player.language
    called = player.called or user.first_name  # the name the player set in Settings, else Telegram's
    args = (command.args or "").strip()
    if args.startswith(DEEP_LINK_PREFIX):
        zone = zone_of(player, core.settings.default_timezone)
        await _persona_link(core, message, lang, args[len(DEEP_LINK_PREFIX) :], called, zone)
        return
    greeting = t(lang, "greet_named", name=called) if called else t(lang, "greet_anon")
    await message.answer(f"{greeting}\n\n{t(lang, 'greet_body')}", reply_markup=start_kb(lang))


async def _persona_link(
    core: Core, message: Message, lang: str, persona_id: str, called: str | None, zone: tzinfo
) -> None:
    try:
        persona = await core.catalog.persona(persona_id)
    except UnknownPersona:
        text = t(lang, "persona_unknown")
        names = await persona_names(core, lang)
        if names:
            text += "\n\n" + t(lang, "personas_list", names=names)
        await message.answer(text, reply_markup=start_kb(lang))
        return
    name = persona.name_in(lang)
    url = core.settings.webapp_url
    if not url:
        text = t(lang, "webapp_missing")
        names = await persona_names(core, lang)
        if names:
            text += "\n\n" + t(lang, "personas_list", names=names)
        await message.answer(text)
        return
    tagline = shown(persona.tagline_in(lang), player_macros(persona, lang, called, zone=zone))  # {{user}}, {{time}} …
    text = (
        t(lang, "persona_card", persona=name, tagline=tagline)
        if tagline
        else t(lang, "persona_card_short", persona=name)
    )
    await message.answer(text, reply_markup=persona_kb(lang, url, persona.id, name))


def router() -> Router:
    """A fresh Router with this module's handlers (vitte.bot.handlers explains why fresh)."""
    r = Router(name="start")
    r.message.filter(F.chat.type == "private", F.from_user)
    r.message.register(start, CommandStart())
    return r
