"""Replies as voice notes (issue 19, item 2): the face's part of `vitte.dialogs.speech`.

`speaker(...)` gives `write_reply` its `speak` step when the player's setting asks for voice:
the drafts have shown the text meanwhile; "record_voice" while the voice is made; then
sendVoice (OGG/Opus) with the reply's text as the caption when it fits, else [📝] beside 🔄
to read it; what is past VITTE_TTS_MAX_CHARS follows as text. When the voice cannot be made,
None: the reply goes as text, as always. When today's voice replies are used up, the player is
told so once a day, with '🎤 Ещё голосовое — N ⭐' (VITTE_VOICE_STARS) and Premium if not on it.
"""

from __future__ import annotations

import contextlib
import logging

from aiogram import Bot
from aiogram.enums import ChatAction
from aiogram.exceptions import TelegramAPIError
from aiogram.types import BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup

from vitte.bot.callbacks import NoteCb
from vitte.bot.handlers.common import Speaker
from vitte.bot.paywall import item_button, offer_kb
from vitte.bot.runtime import drop_markup
from vitte.bot.streaming import ReplyStream, call_with_retry
from vitte.bot.texts import t
from vitte.core import Core
from vitte.dialogs import ReplyOutcome, Turn
from vitte.errors import MediaQuotaExceeded, StoreUnavailable, UnknownUser
from vitte.llm.media import MediaError, opus_seconds
from vitte.media_allowance import VOICE
from vitte.media_keep import keep
from vitte.models import utcnow
from vitte.players import player_view

log = logging.getLogger("vitte.bot")

MAX_CAPTION = 1024  # Telegram's caption limit


async def _voice_mode(core: Core, user_id: int, turn: Turn | None) -> str | None:
    """The player's "Голосом отвечать" setting: from the row the reply's turn read (no query),
    else read; None for an unknown player."""
    if turn is not None and turn.row_known and turn.confirmed and turn.row is not None:
        return player_view(turn.row.user).voice_replies
    try:
        return (await core.players.get(user_id)).voice_replies
    except UnknownUser:
        return None


async def speaker(
    core: Core,
    bot: Bot,
    chat_id: int,
    user_id: int,
    *,
    heard: bool,
    persona_id: str | None = None,
    turn: Turn | None = None,
) -> Speaker | None:
    """The `speak` step for this reply, or None (text) without VITTE_TTS_MODEL. The player's
    setting is looked at once the reply is written: in the turn's row, so a typed message costs
    no query for it."""
    speech = core.dialogs.speech
    if not speech.on:
        return None

    async def speak(stream: ReplyStream, outcome: ReplyOutcome, markup: InlineKeyboardMarkup) -> int | None:
        mode = await _voice_mode(core, user_id, turn)
        if mode is None or not speech.wanted(mode, heard):
            return None
        spoken, rest = speech.split(outcome.text)
        try:  # today's voice replies (VITTE_*_DAILY_VOICE_REPLIES): used up, the text goes
            taken = await core.dialogs.allowance.take(user_id, VOICE)
        except MediaQuotaExceeded as exc:
            await _voice_offer(core, bot, chat_id, user_id, exc)
            return None
        except (UnknownUser, StoreUnavailable):
            return None
        sent = await _speak(stream, outcome, markup, spoken, rest)
        if sent is None:
            await core.dialogs.allowance.give_back(taken)
        return sent

    async def _speak(
        stream: ReplyStream, outcome: ReplyOutcome, markup: InlineKeyboardMarkup, spoken: str, rest: str
    ) -> int | None:
        with contextlib.suppress(TelegramAPIError):
            await bot.send_chat_action(chat_id=chat_id, action=ChatAction.RECORD_VOICE)
        try:
            ogg = await speech.synthesize(spoken, persona_id)
        except MediaError as exc:
            log.warning("voice reply for chat %s not made: %s", chat_id, exc)
            return None
        await keep(core.settings, "spoken", f"{outcome.message_id}.ogg", ogg)  # VITTE_MEDIA_DIR only
        await stream.abort()  # the drafts (or a progress message) go; the voice takes their place
        if stream.replaces is not None:  # 🔄 of a voice note: the new one takes the old one's place
            try:
                await bot.delete_message(chat_id=chat_id, message_id=stream.replaces)
            except TelegramAPIError:
                await drop_markup(bot, chat_id, stream.replaces)
        caption = spoken if not rest and len(spoken) <= MAX_CAPTION else None
        keyboard = markup
        if caption is None and not rest:  # the text to read: 📝
            note = InlineKeyboardButton(text="📝", callback_data=NoteCb(message_id=outcome.message_id).pack())
            keyboard = InlineKeyboardMarkup(inline_keyboard=[[*markup.inline_keyboard[0], note]])
        try:
            sent = await call_with_retry(
                lambda: bot.send_voice(
                    chat_id=chat_id,
                    voice=BufferedInputFile(ogg, filename="reply.ogg"),
                    duration=opus_seconds(ogg) or None,
                    caption=caption,
                    reply_markup=None if rest else keyboard,
                )
            )
        except TelegramAPIError as exc:
            log.warning("sendVoice to chat %s failed: %s", chat_id, exc)
            return None
        if not rest:
            return sent.message_id
        text_msg = await call_with_retry(
            lambda: bot.send_message(chat_id=chat_id, text=rest, reply_markup=markup)
        )
        return text_msg.message_id

    return speak


async def _voice_offer(core: Core, bot: Bot, chat_id: int, user_id: int, exc: MediaQuotaExceeded) -> None:
    """Once a UTC day: today's voice replies are used up (or none on this plan), the text
    comes instead; one voice reply for Stars, Premium. Never raises."""
    try:
        if not await core.cache.first_seen(f"voice_offer:{user_id}:{utcnow().date()}", ttl=86400):
            return
        lang = (await core.players.get(user_id)).language
        key = "voice_quota" if exc.limit else "voice_premium_only"
        text = t(lang, key, limit=exc.limit, premium_limit=exc.premium_limit)
        rows: list[list[InlineKeyboardButton]] = []
        buy = item_button(core, VOICE, lang)
        if buy is not None:
            rows.append([buy])
        if not exc.premium:
            offer = await offer_kb(core, bot, await core.billing.entitlement(user_id), lang)
            rows.extend(offer.inline_keyboard if offer is not None else [])
        markup = InlineKeyboardMarkup(inline_keyboard=rows) if rows else None
        await call_with_retry(lambda: bot.send_message(chat_id=chat_id, text=text, reply_markup=markup))
    except Exception as exc2:  # an offer must not cost the reply
        log.warning("voice offer to chat %s not sent: %s", chat_id, exc2)
