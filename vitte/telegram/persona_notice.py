"""The notice a player gets when an operator removes the persona of their active dialog."""

from __future__ import annotations

from aiogram import Bot

from vitte.i18n import Texts
from vitte.telegram.calls import call_with_retry

__all__ = ["persona_removed_text", "send_persona_removed"]

_TEXTS = Texts("telegram")


def persona_removed_text(lang: str | None, persona: str) -> str:
    return _TEXTS.t(lang, "persona_removed", persona=persona)


async def send_persona_removed(bot: Bot, user_id: int, lang: str | None, persona: str) -> None:
    """Tell the player their dialog ended because its persona is gone (TelegramRetryAfter waited out)."""
    text = persona_removed_text(lang, persona)
    await call_with_retry(lambda: bot.send_message(user_id, text))
