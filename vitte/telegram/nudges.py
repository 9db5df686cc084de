"""A nudge sent to Telegram: the text (cut at 4096 characters) to the player's private chat,
429s waited out (`call_with_retry`); "Forbidden: bot was blocked by the user" (and a
deactivated user) becomes `Unreachable`, which the scheduler records on the player.

`MarkUnreachable`: the same record for every send of a bot (a request middleware the bot
runner installs): any call to a player's chat that Telegram answers 403 marks the player
unreachable (no nudges until they write again)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import Bot
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.exceptions import TelegramForbiddenError
from aiogram.methods import TelegramMethod

from vitte.initiative.nudger import Sender, Unreachable
from vitte.metrics import TELEGRAM_BLOCKED
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


log = logging.getLogger("vitte.telegram")


class MarkUnreachable(BaseRequestMiddleware):
    """Any Bot API call to a player's chat answered 403: counted (vitte_telegram_blocked_total)
    and `mark(user_id)` (its errors suppressed, the call's own error raised as before). Every
    bot that writes to players installs it (`mark_unreachable_in`)."""

    def __init__(self, mark: Callable[[int], Awaitable[None]]) -> None:
        self.mark = mark

    async def __call__(
        self, make_request: NextRequestMiddlewareType[Any], bot: Bot, method: TelegramMethod[Any]
    ) -> Any:
        try:
            return await make_request(bot, method)
        except TelegramForbiddenError:
            chat_id = getattr(method, "chat_id", None)
            if isinstance(chat_id, int) and chat_id > 0:  # a private chat: the player's id
                TELEGRAM_BLOCKED.inc()
                with contextlib.suppress(Exception):
                    await self.mark(chat_id)
            raise


def mark_unreachable_in(db: Any) -> MarkUnreachable:
    """The middleware recording on `db` (users.unreachable_at, wall time)."""
    from vitte.initiative.schedule import Schedule
    from vitte.models import utcnow

    schedule = Schedule(db)
    return MarkUnreachable(lambda user_id: schedule.mark_unreachable(user_id, utcnow()))
