"""/settings (language, reply style, voice replies, deleting the player's data) and /help."""

from __future__ import annotations

import contextlib

from aiogram import Bot, F, Router
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message

from vitte.bot.callbacks import SettingsCb
from vitte.bot.handlers.common import player_lang, seen
from vitte.bot.keyboards import delete_confirm_kb, settings_kb
from vitte.bot.nudge_settings import ACTION as NUDGES_ACTION
from vitte.bot.nudge_settings import toggle as toggle_nudges
from vitte.bot.nudge_settings import with_nudges
from vitte.bot.runtime import Runtime
from vitte.bot.streaming import edit_or_send
from vitte.bot.texts import t
from vitte.core import Core
from vitte.errors import UnknownUser
from vitte.players import LANGUAGES, VOICE_REPLIES, BadSetting, PlayerView
from vitte.prompt import STYLES


def settings_view(player: PlayerView, voice: bool = False) -> tuple[str, InlineKeyboardMarkup]:
    """The /settings message; `voice` (VITTE_TTS_MODEL set): "Голосом отвечать" and its row."""
    lang = player.language
    text = t(lang, "settings", language=t(lang, f"lang_{lang}"), style=t(lang, f"style_{player.style}"))
    markup = settings_kb(lang, player.style)
    if voice:
        mode = player.voice_replies
        text += "\n" + t(lang, "settings_voice", mode=t(lang, f"voice_{mode}"))
        row = [
            InlineKeyboardButton(
                text=f"✓ {t(lang, f'voice_{m}')}" if m == mode else t(lang, f"voice_{m}"),
                callback_data=SettingsCb(action="voice", value=m).pack(),
            )
            for m in VOICE_REPLIES
        ]
        rows = list(markup.inline_keyboard)
        markup = InlineKeyboardMarkup(inline_keyboard=[*rows[:-1], row, rows[-1]])  # before "delete"
    return text, markup


async def help_command(message: Message, core: Core, runtime: Runtime) -> None:
    assert message.from_user is not None
    lang = await player_lang(core, runtime, message.from_user)
    await message.answer(t(lang, "help"))


async def settings_command(message: Message, core: Core, runtime: Runtime) -> None:
    assert message.from_user is not None
    await seen(core, runtime, message.from_user)
    player = await core.players.get(message.from_user.id)
    text, markup = settings_view(player, core.dialogs.speech.on)
    text, markup = await with_nudges(core, player.id, player.language, text, markup)
    await message.answer(text, reply_markup=markup)


async def settings_button(
    query: CallbackQuery, callback_data: SettingsCb, core: Core, runtime: Runtime, bot: Bot
) -> None:
    user = query.from_user
    chat_id = query.message.chat.id if query.message else user.id
    message_id = query.message.message_id if query.message else None
    action, value = callback_data.action, callback_data.value
    lang = await player_lang(core, runtime, user)

    if action in ("lang", "style", "voice"):
        if (
            (action == "lang" and value not in LANGUAGES)
            or (action == "style" and value not in STYLES)
            or (action == "voice" and value not in VOICE_REPLIES)
        ):
            await query.answer(t(lang, "stale"))
            return
        try:
            player = await core.players.update_settings(
                user.id,
                language=value if action == "lang" else None,
                style=value if action == "style" else None,
                voice_replies=value if action == "voice" else None,
            )
        except (BadSetting, UnknownUser):
            await query.answer(t(lang, "stale"))
            return
        runtime.remember_lang(user.id, player.language)
        await query.answer(t(player.language, "saved"))
        text, markup = settings_view(player, core.dialogs.speech.on)
        text, markup = await with_nudges(core, user.id, player.language, text, markup)
        await edit_or_send(bot, chat_id, message_id, text, markup)
    elif action == NUDGES_ACTION:  # "Пусть персонаж пишет первым" (issue 18)
        try:
            changed = await toggle_nudges(core, user.id, value)
        except UnknownUser:
            changed = None
        if changed is None:
            await query.answer(t(lang, "stale"))
            return
        await query.answer(t(lang, "saved"))
        text, markup = settings_view(await core.players.get(user.id), core.dialogs.speech.on)
        text, markup = await with_nudges(core, user.id, lang, text, markup)
        await edit_or_send(bot, chat_id, message_id, text, markup)
    elif action == "delete":
        await query.answer()
        await edit_or_send(bot, chat_id, message_id, t(lang, "delete_confirm"), delete_confirm_kb(lang))
    elif action == "delete_yes":
        with contextlib.suppress(UnknownUser):  # already gone: the answer is the same
            await core.players.delete_data(user.id)
        runtime.last_reply.pop(chat_id, None)
        runtime.lang_hint.pop(user.id, None)
        await query.answer()
        await edit_or_send(bot, chat_id, message_id, t(lang, "deleted"))
    elif action == "back":
        await query.answer()
        text, markup = settings_view(await core.players.get(user.id), core.dialogs.speech.on)
        text, markup = await with_nudges(core, user.id, lang, text, markup)
        await edit_or_send(bot, chat_id, message_id, text, markup)
    else:
        await query.answer(t(lang, "stale"))


def router() -> Router:
    """A fresh Router with this module's handlers (vitte.bot.handlers explains why fresh)."""
    r = Router(name="settings")
    r.message.filter(F.chat.type == "private", F.from_user)
    r.message.register(help_command, Command("help"))
    r.message.register(settings_command, Command("settings"))
    r.callback_query.register(settings_button, SettingsCb.filter())
    return r
