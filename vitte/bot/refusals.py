"""What the bot says when the engine refuses (vitte/safety, vitte/billing): the age gate,
a blocked player, the rate limit, the daily quota; and the crisis resources, which follow
a crisis message whatever happened to it. The rules are the engine's; this only renders."""

from __future__ import annotations

import logging
import math

from aiogram import Bot
from aiogram.types import InlineKeyboardMarkup

from vitte.billing import low_quota_notice
from vitte.billing_texts import quota_exceeded_text
from vitte.bot.keyboards import age_kb
from vitte.bot.paywall import offer_kb
from vitte.bot.streaming import call_with_retry
from vitte.bot.texts import t
from vitte.core import Core
from vitte.dialogs import ReplyOutcome
from vitte.errors import AgeNotConfirmed, PlayerBlocked, QuotaExceeded, RateLimited
from vitte.safety import crisis_resources

log = logging.getLogger("vitte.bot")

REFUSALS = (AgeNotConfirmed, PlayerBlocked, RateLimited, QuotaExceeded)


def refusal(core: Core, exc: BaseException, lang: str) -> tuple[str, InlineKeyboardMarkup | None] | None:
    """The answer to a refusal, or None when `exc` is not one."""
    if isinstance(exc, AgeNotConfirmed):
        return t(lang, "age_question"), age_kb(lang)
    if isinstance(exc, PlayerBlocked):
        return t(lang, "blocked"), None
    if isinstance(exc, RateLimited):
        return t(lang, "rate_limited", seconds=max(1, math.ceil(exc.retry_after_seconds))), None
    if isinstance(exc, QuotaExceeded):
        return quota_exceeded_text(exc.entitlement, core.settings, lang), None
    return None


async def send(bot: Bot, chat_id: int, text: str, markup: InlineKeyboardMarkup | None = None) -> None:
    await call_with_retry(lambda: bot.send_message(chat_id=chat_id, text=text, reply_markup=markup))


async def answer_refusal(core: Core, bot: Bot, chat_id: int, lang: str, exc: BaseException) -> bool:
    """Say the refusal (and the crisis resources when the message was one); True if it was one."""
    answer = refusal(core, exc, lang)
    if answer is not None:
        text, markup = answer
        if isinstance(exc, QuotaExceeded):  # the paywall: buy Premium (invoice link) or a pack
            markup = await offer_kb(core, bot, exc.entitlement, lang)
        await send(bot, chat_id, text, markup)
    await crisis_care(core, bot, chat_id, lang, bool(getattr(exc, "crisis", False)))
    return answer is not None


async def crisis_care(core: Core, bot: Bot, chat_id: int, lang: str, crisis: bool) -> None:
    """A plain, separate message with help resources after a crisis signal."""
    if crisis:
        await send(bot, chat_id, crisis_resources(lang, core.settings))


async def after_reply(core: Core, bot: Bot, chat_id: int, lang: str, outcome: ReplyOutcome) -> None:
    """Under a delivered reply: crisis resources, then "осталось N ответов" when few are left."""
    await crisis_care(core, bot, chat_id, lang, outcome.crisis)
    notice = low_quota_notice(outcome.quota, lang)
    if notice:
        await send(bot, chat_id, notice)
