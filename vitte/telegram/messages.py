"""Messages sent into a player's chat on behalf of several faces: the story's opening (the bot's
"Начать заново" and the Web App's story choice) and the player's data as a file (the bot's /mydata
and the Web App's "Download my data")."""

from __future__ import annotations

import functools
import json

from aiogram import Bot
from aiogram.types import BufferedInputFile, InlineKeyboardButton, InlineKeyboardMarkup

from vitte.cache.base import user_key, window_remaining
from vitte.core import Core
from vitte.dialogs import Opening
from vitte.i18n import Texts
from vitte.telegram.callbacks import SettingsCb
from vitte.telegram.calls import call_with_retry, split_text


def opening_kb(opening: Opening) -> InlineKeyboardMarkup | None:
    """The keyboard a freshly opened dialog's first message carries.

    None: the story's opening cannot be rewritten (there is nothing it answers), and the
    player simply writes back. Both the bot ("Начать заново") and the Web App (via
    `send_opening`) use this one function, so they always agree.
    """
    return None


async def send_opening(bot: Bot, chat_id: int, opening: Opening) -> int:
    """Send the story's opening message into the player's chat; returns the Telegram message id.

    The same message (and keyboard, `opening_kb`) whichever face opened the dialog: the bot's
    "Начать заново" or the Web App's story choice. A long opening is split on sentence
    boundaries; the id returned is the last part's. `TelegramRetryAfter` is waited out.
    """
    parts = split_text(opening.text) or ["…"]
    markup = opening_kb(opening)
    message_id = 0
    for i, part in enumerate(parts):
        part_markup = markup if i == len(parts) - 1 else None
        sent = await call_with_retry(
            functools.partial(bot.send_message, chat_id=chat_id, text=part, reply_markup=part_markup)
        )
        message_id = sent.message_id
    return message_id


# ---------------------------------------------------------------------- deleting the player's data
_BOT = Texts("bot")


def delete_confirm_kb(lang: str) -> InlineKeyboardMarkup:
    """[Удалить мои данные] [Отмена] under /settings' question (the bot's settings handler acts)."""
    table = _BOT.table(lang)
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(text=table["btn_delete_yes"], callback_data=SettingsCb(action="delete_yes").pack()),
                InlineKeyboardButton(text=table["btn_cancel"], callback_data=SettingsCb(action="back").pack()),
            ]
        ]
    )


async def send_delete_confirmation(bot: Bot, chat_id: int, lang: str) -> int:
    """/settings' "delete my data?" with its buttons, sent into the chat: the Web App's way to
    confirm a deletion when its own proof (initData) is too old. The message's id."""
    sent = await call_with_retry(
        functools.partial(
            bot.send_message, chat_id=chat_id, text=_BOT.table(lang)["delete_confirm"], reply_markup=delete_confirm_kb(lang)
        )
    )
    return sent.message_id


# ---------------------------------------------------------------------- the player's data (#8)
EXPORTS_PER_MINUTE = 3  # each export is a file the bot uploads: a double click is fine, a loop is not
EXPORT_WINDOW = 60.0

# the file's caption, the same whichever face asked for it (the catalogues' `telegram` part)
_TEXTS = Texts("telegram")


def export_caption(lang: str | None) -> str:
    return _TEXTS.t(lang, "export_caption")


class ExportThrottled(Exception):
    """More than EXPORTS_PER_MINUTE exports asked for in a minute; nothing was sent."""

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__(f"export asked for too often; retry in {retry_after_seconds:.0f} s")
        self.retry_after_seconds = retry_after_seconds


def export_filename(user_id: int) -> str:
    return f"vitte-data-{int(user_id)}.json"


async def send_player_data(core: Core, bot: Bot, chat_id: int, user_id: int, lang: str) -> int:
    """Send `core.players.export(user_id)` as a JSON file (vitte-data-<id>.json) into the chat;
    returns the Telegram message id. The bot's /mydata and the Web App's "Download my data" both
    use it: a Web App cannot reliably download a file inside Telegram, a chat can.

    Raises UnknownUser (nothing stored about the player), ExportThrottled, TelegramAPIError.
    """
    if await core.cache.hit(user_key(user_id, "export"), EXPORT_WINDOW) > EXPORTS_PER_MINUTE:
        raise ExportThrottled(window_remaining(EXPORT_WINDOW))
    data = await core.players.export(user_id)
    raw = json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8")
    document = BufferedInputFile(raw, filename=export_filename(user_id))
    sent = await call_with_retry(
        lambda: bot.send_document(chat_id=chat_id, document=document, caption=export_caption(lang))
    )
    return sent.message_id
