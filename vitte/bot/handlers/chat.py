"""The conversation: "💕 Начать общение" / /chat, "Продолжить общение", "Начать заново",
plain text → the persona's reply (streamed), 🔄, [Повторить], and the stop button.

Every rule lives in the dialogs engine; this module parses, calls it, renders.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command
from aiogram.types import CallbackQuery, InlineKeyboardButton, Message, MessageGenerationStopped

from vitte.bot.callbacks import AgeCb, DialogCb, EntryCb, NoteCb, RegenCb, RetryCb
from vitte.bot.handlers.common import (
    current_dialog,
    entry_answer,
    player_lang,
    send_entry,
    write_reply,
)
from vitte.bot.handlers.photos import photo_buttons
from vitte.bot.runtime import Runtime, drop_markup
from vitte.bot.speaking import speaker
from vitte.bot.streaming import edit_or_send
from vitte.bot.texts import t
from vitte.core import Core
from vitte.dialogs import OnText, ReplyOutcome, Turn
from vitte.errors import MessageTooLong, NoActiveDialog, StaleDialog
from vitte.models import ASSISTANT, USER
from vitte.telegram.messages import send_opening

log = logging.getLogger("vitte.bot")

REMINDER_MAX = 3000  # characters of the persona's last line quoted by "Продолжить общение"


def _quote(text: str) -> str:
    text = text.strip()
    return text if len(text) <= REMINDER_MAX else "…" + text[-REMINDER_MAX:].lstrip()


# ---------------------------------------------------------------------- the entry flow
async def chat_command(message: Message, core: Core, runtime: Runtime) -> None:
    assert message.from_user is not None
    text, markup = await entry_answer(core, runtime, message.from_user)
    await message.answer(text, reply_markup=markup)


async def entry_button(query: CallbackQuery, core: Core, runtime: Runtime, bot: Bot) -> None:
    await query.answer()
    await send_entry(core, runtime, bot, _chat_id(query), query.from_user)


async def _stale(core: Core, runtime: Runtime, query: CallbackQuery, lang: str | None = None) -> None:
    lang = lang or await player_lang(core, runtime, query.from_user)
    await query.answer(t(lang, "stale"))


async def continue_button(
    query: CallbackQuery, callback_data: DialogCb, core: Core, runtime: Runtime, bot: Bot, turn: Turn | None = None
) -> None:
    try:
        view, last = await core.dialogs.continue_dialog(turn or query.from_user.id, callback_data.dialog_id)
    except (StaleDialog, NoActiveDialog):
        await _stale(core, runtime, query)
        return
    await query.answer()
    lang = view.language
    text = (
        t(lang, "continue_reminder", persona=view.persona_name, last=_quote(last))
        if last.strip()
        else t(lang, "continue_empty", persona=view.persona_name)
    )
    await edit_or_send(bot, _chat_id(query), _message_id(query), text)


async def start_over_button(
    query: CallbackQuery, callback_data: DialogCb, core: Core, runtime: Runtime, bot: Bot, turn: Turn | None = None
) -> None:
    try:
        opening = await core.dialogs.start_over(turn or query.from_user.id, callback_data.dialog_id)
    except (StaleDialog, NoActiveDialog):
        await _stale(core, runtime, query)
        return
    await query.answer()
    chat_id = _chat_id(query)
    lang = opening.dialog.language
    await runtime.forget_last_reply(bot, chat_id)
    await edit_or_send(
        bot, chat_id, _message_id(query), t(lang, "started_over", persona=opening.dialog.persona_name)
    )
    await send_opening(bot, chat_id, opening)


# ---------------------------------------------------------------------- the age gate (vitte/safety)
async def age_button(
    query: CallbackQuery, callback_data: AgeCb, core: Core, runtime: Runtime, bot: Bot
) -> None:
    user = query.from_user
    chat_id = _chat_id(query)
    await query.answer()
    if callback_data.yes:
        player = await core.players.confirm_adult(user.id, language_code=user.language_code)
        runtime.remember_lang(user.id, player.language)
        await edit_or_send(bot, chat_id, _message_id(query), t(player.language, "age_thanks"))
        await send_entry(core, runtime, bot, chat_id, user)
    else:
        await core.players.decline_adult(user.id)
        lang = await player_lang(core, runtime, user)
        await edit_or_send(bot, chat_id, _message_id(query), t(lang, "age_declined"))


# ---------------------------------------------------------------------- 🔄 and [Повторить]
async def regenerate_button(
    query: CallbackQuery, callback_data: RegenCb, core: Core, runtime: Runtime, bot: Bot, turn: Turn | None = None
) -> None:
    """🔄: the reply written again, streamed, and put in place of the pressed one."""
    await _rewrite(query, callback_data.dialog_id, callback_data.message_id, ASSISTANT, core, runtime, bot, turn)


async def retry_button(
    query: CallbackQuery, callback_data: RetryCb, core: Core, runtime: Runtime, bot: Bot, turn: Turn | None = None
) -> None:
    """[Повторить]: the player's message whose reply failed (or a crash cut) answered."""
    await _rewrite(query, callback_data.dialog_id, callback_data.message_id, USER, core, runtime, bot, turn)


async def _rewrite(
    query: CallbackQuery,
    dialog_id: int,
    message_id: int,
    role: str,
    core: Core,
    runtime: Runtime,
    bot: Bot,
    turn: Turn | None,
) -> None:
    """🔄 (`role` ASSISTANT: the reply `message_id` rewritten in place) and [Повторить] (USER:
    the message `message_id` answered, in place of the failure notice): one streaming path.
    A button whose message is no longer the dialog's latest is stale (`DialogEngine.pressed`)."""
    user = query.from_user
    who = turn or user.id
    chat_id = _chat_id(query)
    view = await core.dialogs.pressed(who, dialog_id, message_id, role)
    if view is None:
        await _stale(core, runtime, query)
        await _drop_pressed(bot, query)
        return
    await query.answer()
    pressed = _message_id(query)
    if role == USER and pressed is not None:  # the failure notice goes; the reply takes its place
        try:
            await bot.delete_message(chat_id=chat_id, message_id=pressed)
        except TelegramAPIError:
            await drop_markup(bot, chat_id, pressed)

    async def write(on_text: OnText, stop: asyncio.Event) -> ReplyOutcome:
        return await core.dialogs.regenerate(
            who, view.id, expected_message_id=message_id, on_text=on_text, stop=stop
        )

    # 🔄 under a voice note: the new reply is spoken too (as the player's setting allows);
    # [Повторить] of a voice message's failed reply: answered as a heard message, 📝 beside 🔄
    spoken = role == ASSISTANT and isinstance(query.message, Message) and query.message.voice is not None
    heard = role == USER and await core.dialogs.hearing.transcript(user.id, message_id) is not None
    kept: Callable[[], list[InlineKeyboardButton]] | None = None
    if role == ASSISTANT:
        kept = lambda: _kept_buttons(query, message_id)  # noqa: E731
    elif heard:
        kept = lambda: [InlineKeyboardButton(text="📝", callback_data=NoteCb(message_id=message_id).pack())]  # noqa: E731
    await write_reply(
        core,
        runtime,
        bot,
        chat_id=chat_id,
        user=user,
        lang=view.language,
        dialog_id=view.id,
        write=write,
        user_message_id=message_id if role == USER else None,
        replaces=pressed if role == ASSISTANT else None,
        more_buttons=kept,
        speak=await speaker(core, bot, chat_id, user.id, heard=True, persona_id=view.persona_id, turn=turn)
        if spoken or heard
        else None,
    )


# ---------------------------------------------------------------------- the stop button
async def stopped(event: MessageGenerationStopped, runtime: Runtime) -> None:
    if not runtime.stop_stream(event.chat.id, event.draft_id):
        log.debug("stop for an unknown draft %s in chat %s", event.draft_id, event.chat.id)


# ---------------------------------------------------------------------- text
async def unknown_command(message: Message, core: Core, runtime: Runtime) -> None:
    assert message.from_user is not None
    lang = await player_lang(core, runtime, message.from_user)
    await message.answer(t(lang, "unknown_command"))


async def text_message(
    message: Message, core: Core, runtime: Runtime, bot: Bot, turn: Turn | None = None
) -> None:
    assert message.from_user is not None and message.text is not None
    user = message.from_user
    text = message.text.replace("\x00", "")  # PostgreSQL text cannot hold U+0000
    if not text.strip():
        return
    who = turn or user.id
    view = await current_dialog(core, who, optimistic=True)  # `reply` confirms it
    if view is None:
        await send_entry(core, runtime, bot, message.chat.id, user)
        return
    lang = view.language
    runtime.remember_lang(user.id, lang)
    try:
        core.dialogs.check_text(text)
    except MessageTooLong as exc:
        await message.answer(t(lang, "too_long", limit=exc.limit))
        return

    async def write(on_text: OnText, stop: asyncio.Event) -> ReplyOutcome:
        return await core.dialogs.reply(
            who, text, telegram_message_id=message.message_id, on_text=on_text, stop=stop
        )

    await write_reply(
        core,
        runtime,
        bot,
        chat_id=message.chat.id,
        user=user,
        lang=lang,
        dialog_id=view.id,
        write=write,
        speak=await speaker(core, bot, message.chat.id, user.id, heard=False, persona_id=view.persona_id, turn=turn),
        more_buttons=lambda: photo_buttons(core, view.id),  # 📷 when photos are on
    )


def router() -> Router:
    """A fresh Router with this module's handlers (vitte.bot.handlers explains why fresh)."""
    r = Router(name="chat")
    r.message.filter(F.chat.type == "private", F.from_user)
    r.message.register(chat_command, Command("chat"))
    r.callback_query.register(entry_button, EntryCb.filter())
    r.callback_query.register(continue_button, DialogCb.filter(F.action == "cont"))
    r.callback_query.register(start_over_button, DialogCb.filter(F.action == "over"))
    r.callback_query.register(age_button, AgeCb.filter())
    r.callback_query.register(regenerate_button, RegenCb.filter())
    r.callback_query.register(retry_button, RetryCb.filter())
    r.stopped_message_generation.register(stopped)
    r.message.register(unknown_command, F.text.startswith("/"))
    r.message.register(text_message, F.text)
    return r


def _kept_buttons(query: CallbackQuery, reply_id: int) -> list[InlineKeyboardButton]:
    """The buttons beside 🔄 under the rewritten reply that still hold for the new one: 📝 of the
    player's voice message, 📷 (🔄 is made anew; a 📝 of the old reply's own text goes — the
    new voice note gets its own)."""
    markup = query.message.reply_markup if isinstance(query.message, Message) else None
    if markup is None or not markup.inline_keyboard:
        return []
    kept: list[InlineKeyboardButton] = []
    for button in markup.inline_keyboard[0]:
        data = button.callback_data or ""
        if not data or data.startswith(RegenCb.__prefix__ + ":"):
            continue
        if data.startswith(NoteCb.__prefix__ + ":") and NoteCb.unpack(data).message_id == reply_id:
            continue
        kept.append(button)
    return kept


def _chat_id(query: CallbackQuery) -> int:
    if query.message is not None:
        return query.message.chat.id
    return query.from_user.id  # private chats: the chat id is the user id


def _message_id(query: CallbackQuery) -> int | None:
    return query.message.message_id if query.message is not None else None


async def _drop_pressed(bot: Bot, query: CallbackQuery) -> None:
    """A stale button goes away (best effort)."""
    message_id = _message_id(query)
    if message_id is not None:
        await drop_markup(bot, _chat_id(query), message_id)
