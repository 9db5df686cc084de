"""The persona sends a photo (issue 19, item 3): "Пришли фото" / "send me a photo", or the 📷
button under a reply when photos are on (VITTE_IMAGE_MODEL), answered with sendPhoto and an
in-character caption (`vitte.dialogs.pictures` makes it); a short "not now" with [Повторить]
when it cannot be made. "upload_photo" while it is made."""

from __future__ import annotations

import contextlib

from aiogram import Bot, F, Router
from aiogram.dispatcher.event.bases import SkipHandler
from aiogram.enums import ChatAction
from aiogram.exceptions import TelegramAPIError
from aiogram.types import (
    BufferedInputFile,
    CallbackQuery,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    User,
)

from vitte.billing import PHOTO
from vitte.bot.callbacks import PhotoCb
from vitte.bot.handlers.common import current_dialog, player_lang, send_entry
from vitte.bot.paywall import item_button, offer_kb
from vitte.bot.refusals import REFUSALS, answer_refusal
from vitte.bot.runtime import Runtime, drop_markup
from vitte.bot.streaming import call_with_retry
from vitte.bot.texts import t
from vitte.core import Core
from vitte.dialogs import Turn
from vitte.dialogs.pictures import Photo, photo_request
from vitte.errors import MediaQuotaExceeded, NoActiveDialog, PhotoFailed, StaleDialog

_NO_ROWS = InlineKeyboardMarkup(inline_keyboard=[])


def photo_buttons(core: Core, dialog_id: int) -> list[InlineKeyboardButton]:
    """📷 beside 🔄 when photos are on."""
    if not core.dialogs.pictures.on:
        return []
    return [InlineKeyboardButton(text="📷", callback_data=PhotoCb(dialog_id=dialog_id).pack())]


async def photo_message(message: Message, core: Core, runtime: Runtime, bot: Bot, turn: Turn | None = None) -> None:
    if not core.dialogs.pictures.on:
        raise SkipHandler  # photos off: the text is answered as any other
    assert message.from_user is not None and message.text is not None
    view = await current_dialog(core, turn or message.from_user.id)
    if view is None:
        raise SkipHandler
    await _send_photo(core, runtime, bot, message.chat.id, message.from_user, view.language, view.id, turn,
                      request=message.text, telegram_message_id=message.message_id)


async def photo_button(
    query: CallbackQuery, callback_data: PhotoCb, core: Core, runtime: Runtime, bot: Bot, turn: Turn | None = None
) -> None:
    user = query.from_user
    lang = await player_lang(core, runtime, user)
    chat_id = query.message.chat.id if query.message is not None else user.id
    view = await current_dialog(core, turn or user.id)
    if not core.dialogs.pictures.on or view is None or view.id != callback_data.dialog_id:
        await query.answer(t(lang, "stale"))
        return
    await query.answer()
    if callback_data.message_id and query.message is not None:  # [Повторить]: the notice's button goes
        await drop_markup(bot, chat_id, query.message.message_id)
    await _send_photo(core, runtime, bot, chat_id, user, view.language, view.id, turn,
                      request=t(view.language, "photo_asked"), again=callback_data.message_id or None)


async def _send_photo(
    core: Core,
    runtime: Runtime,
    bot: Bot,
    chat_id: int,
    user: User,
    lang: str,
    dialog_id: int,
    turn: Turn | None,
    *,
    request: str,
    telegram_message_id: int | None = None,
    again: int | None = None,
) -> None:
    pictures = core.dialogs.pictures
    with contextlib.suppress(TelegramAPIError):
        await bot.send_chat_action(chat_id=chat_id, action=ChatAction.UPLOAD_PHOTO)
    try:
        photo: Photo
        if again is not None:
            photo = await pictures.again(turn or user.id, dialog_id, again)
        else:
            photo = await pictures.take(turn or user.id, request, telegram_message_id=telegram_message_id)
    except NoActiveDialog:
        await send_entry(core, runtime, bot, chat_id, user)
        return
    except StaleDialog:
        await bot.send_message(chat_id=chat_id, text=t(lang, "stale"))
        return
    except PhotoFailed as exc:
        retry = PhotoCb(dialog_id=dialog_id, message_id=exc.message_id).pack()
        markup = InlineKeyboardMarkup(inline_keyboard=[[InlineKeyboardButton(text=t(lang, "btn_retry"), callback_data=retry)]])
        await call_with_retry(lambda: bot.send_message(chat_id=chat_id, text=t(lang, "photo_failed"), reply_markup=markup))
        return
    except REFUSALS as exc:
        await answer_refusal(core, bot, chat_id, lang, exc)
        return
    except MediaQuotaExceeded as exc:  # today's photos used up (or none on this plan): Premium
        key = "photo_quota" if exc.limit else "photo_premium_only"
        text = t(lang, key, limit=exc.limit, premium_limit=exc.premium_limit)
        rows = [] if exc.premium else list((await offer_kb(core, bot, await core.billing.entitlement(user.id), lang) or _NO_ROWS).inline_keyboard)
        buy = item_button(core, PHOTO, lang)
        if buy is not None:  # one more photo for Stars (VITTE_PHOTO_STARS)
            rows.insert(0, [buy])
        offer = InlineKeyboardMarkup(inline_keyboard=rows) if rows else None
        await call_with_retry(lambda: bot.send_message(chat_id=chat_id, text=text, reply_markup=offer))
        return
    await call_with_retry(
        lambda: bot.send_photo(
            chat_id=chat_id,
            photo=BufferedInputFile(photo.image, filename="photo.png"),
            caption=photo.caption or t(lang, "photo_caption"),
        )
    )


def router() -> Router:
    """A fresh Router with this module's handlers (vitte.bot.handlers explains why fresh)."""
    r = Router(name="photos")
    r.message.filter(F.chat.type == "private", F.from_user)
    r.message.register(photo_message, F.text.func(photo_request))
    r.callback_query.register(photo_button, PhotoCb.filter())
    return r
