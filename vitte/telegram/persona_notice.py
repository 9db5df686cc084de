"""The notice a player gets when an operator removes the persona of their active dialog."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError

from vitte.i18n import Texts
from vitte.telegram.calls import call_with_retry

if TYPE_CHECKING:
    from vitte.catalog.manage import Removed
    from vitte.config import Settings
    from vitte.db import Database

__all__ = ["notify_removed", "persona_removed_text", "send_persona_removed"]

_TEXTS = Texts("telegram")


def persona_removed_text(lang: str | None, persona: str) -> str:
    return _TEXTS.t(lang, "persona_removed", persona=persona)


async def send_persona_removed(bot: Bot, user_id: int, lang: str | None, persona: str) -> None:
    """Tell the player their dialog ended because its persona is gone (TelegramRetryAfter waited out)."""
    text = persona_removed_text(lang, persona)
    await call_with_retry(lambda: bot.send_message(user_id, text))


async def notify_removed(settings: Settings, db: Database, removed: Removed) -> list[int]:
    """Tell each player whose dialog `remove_persona` ended (`vitte personas remove --force`),
    but those who blocked the bot and have not written since (`Removed.unreachable`: never
    tried, as the nudges and the restart notices); a 403 here marks the player unreachable, as
    on every send of `vitte run-bot`. The ids not told: those, those Telegram refused, and
    everyone without a bot token."""
    if not removed.ended:
        return []
    if settings.bot_token is None:
        return [uid for uid, _ in removed.ended]
    from vitte.telegram.bot import make_bot
    from vitte.telegram.nudges import mark_unreachable_in

    bot = make_bot(settings)
    bot.session.middleware(mark_unreachable_in(db))
    unreached: list[int] = []
    try:
        for user_id, lang in removed.ended:
            if user_id in removed.unreachable:
                unreached.append(user_id)
                continue
            try:
                await send_persona_removed(bot, user_id, lang, removed.name)
            except TelegramAPIError:
                unreached.append(user_id)
    finally:
        await bot.session.close()
    return unreached
