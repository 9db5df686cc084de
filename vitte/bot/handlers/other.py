"""Everything that is not a conversation: group chats, stickers, photos, voice, documents,
edited messages. A short friendly answer; nothing crashes."""

from __future__ import annotations

from aiogram import F, Router
from aiogram.enums import ContentType
from aiogram.types import CallbackQuery, Message

from vitte.bot.handlers.common import player_lang
from vitte.bot.runtime import Runtime
from vitte.bot.texts import t
from vitte.core import Core
from vitte.players import language_from_telegram

# what a player may send instead of text; service messages (payments etc.) are not ours
NOT_TEXT = frozenset(
    {
        ContentType.STICKER,
        ContentType.PHOTO,
        ContentType.VOICE,
        ContentType.VIDEO,
        ContentType.VIDEO_NOTE,
        ContentType.AUDIO,
        ContentType.DOCUMENT,
        ContentType.ANIMATION,
        ContentType.LOCATION,
        ContentType.VENUE,
        ContentType.CONTACT,
        ContentType.POLL,
        ContentType.DICE,
        ContentType.STORY,
        ContentType.PAID_MEDIA,
        ContentType.CHECKLIST,
    }
)


async def group_message(message: Message, runtime: Runtime) -> None:
    if message.from_user is None or not (message.text or "").startswith("/"):
        return  # chatter in a group is not for us
    lang = runtime.lang_hint.get(message.from_user.id) or language_from_telegram(
        message.from_user.language_code
    )
    await message.answer(t(lang, "private_only"))


async def group_edit(message: Message) -> None:
    return None


async def edited(message: Message, core: Core, runtime: Runtime) -> None:
    assert message.from_user is not None
    lang = await player_lang(core, runtime, message.from_user)
    await message.answer(t(lang, "edited"))


async def unknown_button(query: CallbackQuery, core: Core, runtime: Runtime) -> None:
    """A button from an older version of the bot, or forged data: a notice, nothing else."""
    lang = await player_lang(core, runtime, query.from_user)
    await query.answer(t(lang, "stale"))


async def not_text(message: Message, core: Core, runtime: Runtime) -> None:
    assert message.from_user is not None
    lang = await player_lang(core, runtime, message.from_user)
    await message.answer(t(lang, "non_text"))


def groups_router() -> Router:
    """Registered first: the companion talks in private chats only."""
    r = Router(name="groups")
    r.message.register(group_message, F.chat.type != "private")
    r.edited_message.register(group_edit, F.chat.type != "private")
    return r


def router() -> Router:
    """Registered last: what the conversation handlers did not take."""
    r = Router(name="other")
    r.edited_message.register(edited, F.from_user)
    r.callback_query.register(unknown_button)
    r.message.register(not_text, F.from_user, F.content_type.in_(NOT_TEXT))
    return r
