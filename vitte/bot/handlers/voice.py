"""The player speaks: voice notes, audio files and round videos heard and answered like text
(`vitte.dialogs.voice`), [Повторить] when one could not be made out, and [📝] under the reply
showing what was understood. Without VITTE_STT_MODEL, voice gets the "text only" answer.

The audio comes through the Bot API: getFile, then the file URL of VITTE_TELEGRAM_API_URL,
read in memory and at most 20 MB (`telegram_fetch`); nothing is written to disk.
"""

from __future__ import annotations

import asyncio

import aiohttp
from aiogram import Bot, F, Router
from aiogram.enums import ContentType
from aiogram.exceptions import TelegramAPIError
from aiogram.types import CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, Message, User

from vitte.bot.callbacks import HearCb, NoteCb
from vitte.bot.handlers.common import Writer, current_dialog, player_lang, send_entry, write_reply
from vitte.bot.runtime import Runtime, drop_markup
from vitte.bot.speaking import speaker
from vitte.bot.streaming import call_with_retry
from vitte.bot.texts import t
from vitte.core import Core
from vitte.dialogs import OnText, ReplyOutcome, Turn
from vitte.dialogs.voice import Fetch, FileTooBig, Heard, Spoken, filename_for
from vitte.errors import MediaTooLarge, NotHeard, StaleDialog, UnsupportedAudio
from vitte.llm.media import MediaError

SPOKEN = frozenset({ContentType.VOICE, ContentType.AUDIO, ContentType.VIDEO_NOTE})
NOTE_MAX = 3500  # characters of a transcript quoted back


def telegram_fetch(bot: Bot) -> Fetch:
    """getFile, then the file's bytes from the Bot API's file URL, at most `limit` bytes."""

    async def fetch(file_id: str, limit: int) -> bytes:
        try:
            file = await bot.get_file(file_id)
            if file.file_size is not None and file.file_size > limit:
                raise FileTooBig(f"the file is over {limit} bytes")
            if not file.file_path:
                raise MediaError("getFile gave no file_path")
            url = bot.session.api.file_url(bot.token, file.file_path)
            got = bytearray()
            async for chunk in bot.session.stream_content(url=url, timeout=60, chunk_size=65536):
                got += chunk
                if len(got) > limit:  # Telegram did not tell its size: cut off here
                    raise FileTooBig(f"the file is over {limit} bytes")
            return bytes(got)
        except (TelegramAPIError, aiohttp.ClientError, TimeoutError, LookupError) as exc:
            raise MediaError(f"download: {type(exc).__name__}") from None

    return fetch


def _heard(message: Message) -> Heard | None:
    if message.voice is not None:
        v = message.voice
        return Heard("voice", v.duration, v.file_id, v.file_size, filename_for("voice", v.mime_type), message.message_id)
    if message.audio is not None:
        a = message.audio
        return Heard("audio", a.duration, a.file_id, a.file_size, filename_for("audio", a.mime_type), message.message_id)
    if message.video_note is not None:
        n = message.video_note
        return Heard("video_note", n.duration, n.file_id, n.file_size, filename_for("video_note"), message.message_id)
    return None


def _note_button(spoken: list[Spoken]) -> list[InlineKeyboardButton]:
    if not spoken:
        return []
    return [InlineKeyboardButton(text="📝", callback_data=NoteCb(message_id=spoken[0].message_id).pack())]


def _hear_retry_kb(lang: str, dialog_id: int, message_id: int) -> InlineKeyboardMarkup:
    data = HearCb(dialog_id=dialog_id, message_id=message_id).pack()
    return InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text=t(lang, "btn_retry"), callback_data=data)]])


def _too_large(lang: str, exc: MediaTooLarge) -> str:
    return t(lang, "voice_too_long" if exc.unit == "s" else "voice_too_big", limit=exc.limit)


def _quote(text: str) -> str:
    return text if len(text) <= NOTE_MAX else text[:NOTE_MAX].rstrip() + "…"


async def voice_message(message: Message, core: Core, runtime: Runtime, bot: Bot, turn: Turn | None = None) -> None:
    assert message.from_user is not None
    user = message.from_user
    heard = _heard(message)
    if heard is None or not core.dialogs.hearing.on:
        await message.answer(t(await player_lang(core, runtime, user), "non_text"))
        return
    who = turn or user.id
    view = await current_dialog(core, who)
    if view is None:
        await send_entry(core, runtime, bot, message.chat.id, user)
        return
    lang = view.language
    try:
        core.dialogs.hearing.check(heard)
    except MediaTooLarge as exc:
        await message.answer(_too_large(lang, exc))
        return
    spoken: list[Spoken] = []

    async def on_heard(text: str, uncertain: bool) -> None:
        if uncertain:  # the player sees what was understood when the model was unsure
            await call_with_retry(
                lambda: message.reply(t(lang, "voice_heard", text=_quote(text)))
            )

    async def write(on_text: OnText, stop: asyncio.Event) -> ReplyOutcome:
        result = await core.dialogs.hear(
            who, heard, telegram_fetch(bot), on_text=on_text, stop=stop, on_heard=on_heard
        )
        spoken.append(result)
        return result.outcome

    await _answer(core, runtime, bot, message.chat.id, user, lang, view.id, write, spoken, view.persona_id, turn)


async def hear_again_button(
    query: CallbackQuery, callback_data: HearCb, core: Core, runtime: Runtime, bot: Bot, turn: Turn | None = None
) -> None:
    """[Повторить] under "could not make out": the same voice message transcribed again."""
    user = query.from_user
    lang = await player_lang(core, runtime, user)
    chat_id = query.message.chat.id if query.message is not None else user.id
    pressed = query.message.message_id if query.message is not None else None
    view = await current_dialog(core, turn or user.id)
    if view is None or view.id != callback_data.dialog_id:
        await query.answer(t(lang, "stale"))
        if pressed is not None:
            await drop_markup(bot, chat_id, pressed)
        return
    await query.answer()
    if pressed is not None:
        await drop_markup(bot, chat_id, pressed)
    spoken: list[Spoken] = []

    async def write(on_text: OnText, stop: asyncio.Event) -> ReplyOutcome:
        result = await core.dialogs.hear_again(
            turn or user.id,
            callback_data.dialog_id,
            callback_data.message_id,
            telegram_fetch(bot),
            on_text=on_text,
            stop=stop,
        )
        spoken.append(result)
        return result.outcome

    await _answer(core, runtime, bot, chat_id, user, view.language, view.id, write, spoken, view.persona_id, turn)


async def _answer(
    core: Core,
    runtime: Runtime,
    bot: Bot,
    chat_id: int,
    user: User,
    lang: str,
    dialog_id: int,
    write: Writer,
    spoken: list[Spoken],
    persona_id: str,
    turn: Turn | None,
) -> None:
    """The reply streamed as for text (`write_reply`), 📝 beside 🔄; a voice message that was
    not made out gets a short line with [Повторить] (it stays stored), one whose file the
    endpoint refused the line naming what works, one found over 20 MB while downloading the
    line naming the limit (no [Повторить] for these two: it cannot help)."""
    try:
        await write_reply(
            core,
            runtime,
            bot,
            chat_id=chat_id,
            user=user,
            lang=lang,
            dialog_id=dialog_id,
            write=write,
            more_buttons=lambda: _note_button(spoken),
            speak=await speaker(core, bot, chat_id, user.id, heard=True, persona_id=persona_id, turn=turn),
        )
    except MediaTooLarge as exc:
        too_large = _too_large(lang, exc)
        await call_with_retry(lambda: bot.send_message(chat_id=chat_id, text=too_large))
    except UnsupportedAudio:
        await call_with_retry(lambda: bot.send_message(chat_id=chat_id, text=t(lang, "voice_unsupported")))
    except NotHeard as exc:
        markup = _hear_retry_kb(lang, dialog_id, exc.message_id)
        await call_with_retry(
            lambda: bot.send_message(chat_id=chat_id, text=t(lang, "voice_not_heard"), reply_markup=markup)
        )
    except StaleDialog:
        await bot.send_message(chat_id=chat_id, text=t(lang, "stale"))


async def note_button(query: CallbackQuery, callback_data: NoteCb, core: Core, runtime: Runtime, bot: Bot) -> None:
    """[📝]: what was understood of that voice message, as a message in the chat."""
    lang = await player_lang(core, runtime, query.from_user)
    text = await core.dialogs.hearing.transcript(query.from_user.id, callback_data.message_id)
    if text is None:
        await query.answer(t(lang, "stale"))
        return
    await query.answer()
    chat_id = query.message.chat.id if query.message is not None else query.from_user.id
    await call_with_retry(lambda: bot.send_message(chat_id=chat_id, text=t(lang, "voice_heard", text=_quote(text))))


def router() -> Router:
    """A fresh Router with this module's handlers (vitte.bot.handlers explains why fresh)."""
    r = Router(name="voice")
    r.message.filter(F.chat.type == "private", F.from_user)
    r.message.register(voice_message, F.content_type.in_(SPOKEN))
    r.callback_query.register(hear_again_button, HearCb.filter())
    r.callback_query.register(note_button, NoteCb.filter())
    return r
