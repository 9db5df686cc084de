"""A nudge sent to Telegram: the text (cut at 4096 characters) to the player's private chat,
429s waited out (`call_with_retry`); "Forbidden: bot was blocked by the user" (and a
deactivated user) becomes `Unreachable`, which the scheduler records on the player."""

from __future__ import annotations

from aiogram import Bot
from aiogram.exceptions import TelegramForbiddenError

from vitte.initiative.nudger import Sender, Unreachable
from vitte.telegram.calls import call_with_retry, split_text


def blocked_the_bot(exc: BaseException) -> bool:
    """Telegram's only signal that the player blocked the bot (or is gone): 403 Forbidden."""
    return isinstance(exc, TelegramForbiddenError)


def nudge_sender(bot: Bot) -> Sender:
    async def send(user_id: int, text: str) -> int | None:
        message_id: int | None = None
        try:
            for piece in split_text(text):
                sent = await call_with_retry(
                    lambda piece=piece: bot.send_message(chat_id=user_id, text=piece)  # type: ignore[misc]
                )
                message_id = sent.message_id
        except TelegramForbiddenError as exc:
            raise Unreachable(str(exc)) from exc
        return message_id

    return send
