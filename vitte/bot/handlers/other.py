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


def make_groups_router(core: Core) -> Router:
    """Registered first: the companion talks in private chats only."""
    router = Router(name="groups")

    @router.message(F.chat.type != "private")
    async def group_message(message: Message, runtime: Runtime) -> None:
        if message.from_user is None or not (message.text or "").startswith("/"):
            return  # chatter in a group is not for us
        lang = runtime.lang_hint.get(message.from_user.id) or language_from_telegram(
            message.from_user.language_code
        )
        await message.answer(t(lang, "private_only"))

    @router.edited_message(F.chat.type != "private")
    async def group_edit(message: Message) -> None:
        return None

    return router


def make_router(core: Core) -> Router:
    """Registered last: what the conversation handlers did not take."""
    router = Router(name="other")

    @router.edited_message(F.from_user)
    async def edited(message: Message, runtime: Runtime) -> None:
        assert message.from_user is not None
        lang = await player_lang(core, runtime, message.from_user)
        await message.answer(t(lang, "edited"))

    @router.callback_query()
    async def unknown_button(query: CallbackQuery, runtime: Runtime) -> None:
        """A button from an older version of the bot, or forged data: a notice, nothing else."""
        lang = await player_lang(core, runtime, query.from_user)
        await query.answer(t(lang, "stale"))

    @router.message(F.from_user, F.content_type.in_(NOT_TEXT))
    async def not_text(message: Message, runtime: Runtime) -> None:
        assert message.from_user is not None
        lang = await player_lang(core, runtime, message.from_user)
        await message.answer(t(lang, "non_text"))

    return router
