"""Payments in Telegram Stars: /premium, the buy buttons, pre_checkout_query, successful_payment,
the `subscription` update, "Отменить продление", /paysupport and /terms.

Every rule lives in vitte.billing (core.billing); this module parses, calls it, renders
(vitte.bot.paywall). The quota refusal's buy buttons are added by vitte.bot.refusals.

pre_checkout_query must be answered within Telegram's 10 s: the update middleware takes no
player lock for it (vitte.bot.middlewares.LOCKED_UPDATES), and the handler does one indexed
read at most, bounded by PRE_CHECKOUT_BUDGET; a check that cannot finish refuses the payment
(nothing is charged then) rather than letting the query time out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math

from aiogram import Bot, F, Router
from aiogram.exceptions import TelegramAPIError
from aiogram.filters import Command, CommandObject
from aiogram.types import BotSubscriptionUpdated, CallbackQuery, Message, PreCheckoutQuery

from vitte.billing import ITEM_COLUMNS, PACK, SUB_ACTIVE, SUB_CANCELED, SUB_FAILED
from vitte.billing_texts import (
    paysupport_text,
    pre_checkout_error_text,
    renewal_canceled_text,
    terms_text,
)
from vitte.bot.handlers.common import player_lang, seen
from vitte.bot.paywall import PayCb, cancel_confirm_kb, fmt_date, premium_view, pt, thanks_text
from vitte.bot.runtime import Runtime
from vitte.bot.streaming import edit_or_send
from vitte.bot.texts import t
from vitte.core import Core
from vitte.errors import NoSubscription, PaymentApiFailed, RateLimited, UnknownPlan
from vitte.pace import INVOICES, PAYSUPPORT, keep_pace
from vitte.players import language_from_telegram
from vitte.telegram.payments import cancel_renewal, resume_renewal, send_invoice

log = logging.getLogger("vitte.bot.payments")

PRE_CHECKOUT_BUDGET = 5.0  # seconds for the checks; Telegram waits 10 s for the answer
SUPPORT_TEXT_MAX = 1000  # characters of the player's problem forwarded (and logged)
SUPPORT_WHO_MAX = 64  # the name the player chose, shown beside their id


def _hint_lang(runtime: Runtime, user_id: int, language_code: str | None) -> str:
    """The player's language without a database read (the hot, time-bound paths)."""
    return runtime.lang_hint.get(user_id) or language_from_telegram(language_code)


# ---------------------------------------------------------------------- pre-checkout (10 s)
async def pre_checkout(query: PreCheckoutQuery, core: Core, runtime: Runtime) -> None:
    user = query.from_user
    try:
        ok, reason = await asyncio.wait_for(
            core.billing.pre_checkout(user.id, query.invoice_payload, query.currency, query.total_amount),
            PRE_CHECKOUT_BUDGET,
        )
    except Exception as exc:  # a slow or unavailable store: refuse (nothing is charged)
        log.warning("pre-checkout %s of user %s not checked: %r", query.id, user.id, exc)
        await query.answer(
            ok=False,
            error_message=pt(_hint_lang(runtime, user.id, user.language_code), "pay_unavailable"),
        )
        return
    if ok:
        await query.answer(ok=True)
        return
    log.info(
        "pre-checkout %s of user %s refused: %s (payload %r, %s %s)",
        query.id,
        user.id,
        reason,
        query.invoice_payload,
        query.total_amount,
        query.currency,
    )
    lang = _hint_lang(runtime, user.id, user.language_code)
    await query.answer(ok=False, error_message=pre_checkout_error_text(reason, lang))


# ---------------------------------------------------------------------- successful_payment
async def successful_payment(message: Message, core: Core, runtime: Runtime) -> None:
    assert message.from_user is not None and message.successful_payment is not None
    user, sp = message.from_user, message.successful_payment
    try:
        payment, created = await core.billing.record_successful_payment(user.id, sp)
    except Exception:  # Telegram has taken the Stars: leave everything the operator needs
        log.exception(
            "PAYMENT NOT RECORDED: charge %s, user %s, %s %s, payload %r, recurring %s, expires %s",
            sp.telegram_payment_charge_id,
            user.id,
            sp.total_amount,
            sp.currency,
            sp.invoice_payload,
            sp.is_recurring,
            sp.subscription_expiration_date,
        )
        await message.answer(pt(_hint_lang(runtime, user.id, user.language_code), "pay_not_recorded"))
        return
    if not created:  # delivered again: recorded already, thanked already
        log.info("payment %s delivered again; nothing changes", sp.telegram_payment_charge_id)
        return
    lang = await player_lang(core, runtime, user)
    await message.answer(await thanks_text(core, payment, lang))


# ---------------------------------------------------------------------- the `subscription` update
async def subscription_update(event: BotSubscriptionUpdated, core: Core, runtime: Runtime, bot: Bot) -> None:
    user = event.user
    before = await core.billing.entitlement(user.id)
    after = await core.billing.record_subscription_update(user.id, event.invoice_payload, event.state)
    if after is None or before.subscription_state == event.state:
        return  # an unknown player, or a change the bot made itself ("Отменить продление")
    key = {SUB_CANCELED: "sub_canceled", SUB_ACTIVE: "sub_active", SUB_FAILED: "sub_failed"}.get(event.state)
    if key is None or (event.state != SUB_FAILED and not after.is_premium):
        return
    lang = await player_lang(core, runtime, user)
    with contextlib.suppress(TelegramAPIError):  # blocked the bot: the state is recorded anyway
        await bot.send_message(chat_id=user.id, text=pt(lang, key, date=fmt_date(after.premium_until, lang)))


# ---------------------------------------------------------------------- /premium and its buttons
async def premium_command(message: Message, core: Core, runtime: Runtime, bot: Bot) -> None:
    assert message.from_user is not None
    lang = await seen(core, runtime, message.from_user, refuse_blocked=True)  # nothing to buy
    text, markup, _ent = await premium_view(core, bot, message.from_user.id, lang)
    await message.answer(text, reply_markup=markup)


async def pay_button(
    query: CallbackQuery, callback_data: PayCb, core: Core, runtime: Runtime, bot: Bot
) -> None:
    user = query.from_user
    chat_id = query.message.chat.id if query.message is not None else user.id
    message_id = query.message.message_id if query.message is not None else None
    lang = await player_lang(core, runtime, user)
    action = callback_data.action

    if action == PACK or action in ITEM_COLUMNS:  # the reply pack; one photo / voice reply (issue 19)
        try:
            await keep_pace(core.cache, user.id, INVOICES)
        except RateLimited as exc:
            await query.answer(t(lang, "rate_limited", seconds=max(1, math.ceil(exc.retry_after_seconds))))
            return
        await query.answer()
        try:
            await send_invoice(core.billing, bot, chat_id, user.id, action, lang)
        except UnknownPlan:
            await bot.send_message(chat_id=chat_id, text=pt(lang, f"{action}_off"))
    elif action == "view":
        await query.answer()
        text, markup, _ent = await premium_view(core, bot, user.id, lang)
        await bot.send_message(chat_id=chat_id, text=text, reply_markup=markup)
    elif action in ("back", "cancel"):
        text, markup, ent = await premium_view(core, bot, user.id, lang)
        if action == "cancel" and ent.renews:
            text = pt(lang, "cancel_confirm", date=fmt_date(ent.premium_until, lang))
            markup = cancel_confirm_kb(lang)
        await query.answer()
        await edit_or_send(bot, chat_id, message_id, text, markup)
    elif action in ("cancel_yes", "resume"):
        try:
            if action == "cancel_yes":
                ent = await cancel_renewal(core.billing, bot, user.id)
                head = renewal_canceled_text(ent, lang)
            else:
                ent = await resume_renewal(core.billing, bot, user.id)
                head = pt(lang, "renewal_resumed", date=fmt_date(ent.premium_until, lang))
        except NoSubscription:
            head = pt(lang, "no_subscription")
        except PaymentApiFailed as exc:
            log.warning("renewal change (%s) for user %s failed: %s", action, user.id, exc)
            await query.answer(
                pt(lang, "resume_failed" if action == "resume" else "renewal_change_failed"),
                show_alert=True,
            )
            return
        await query.answer()
        text, markup, _ent = await premium_view(core, bot, user.id, lang)
        await edit_or_send(bot, chat_id, message_id, f"{head}\n\n{text}", markup)
    else:
        await query.answer(t(lang, "stale"))


# ---------------------------------------------------------------------- /paysupport, /terms
async def paysupport_command(
    message: Message, command: CommandObject, core: Core, runtime: Runtime, bot: Bot
) -> None:
    assert message.from_user is not None
    user = message.from_user
    lang = await seen(core, runtime, user)
    problem = (command.args or "").strip()
    if not problem:
        await message.answer(paysupport_text(core.settings, lang))
        return
    try:  # one forwarded message per player every few minutes: every admin chat gets each one
        await keep_pace(core.cache, user.id, PAYSUPPORT)
    except RateLimited as exc:
        await message.answer(pt(lang, "support_too_often", minutes=max(1, math.ceil(exc.retry_after_seconds / 60))))
        return
    who = " ".join((user.username or user.full_name).split())[:SUPPORT_WHO_MAX]
    await _forward_to_support(core, bot, user.id, who, problem)
    await message.answer(pt(lang, "support_sent"))


async def terms_command(message: Message, core: Core, runtime: Runtime) -> None:
    assert message.from_user is not None
    lang = await seen(core, runtime, message.from_user)
    await message.answer(terms_text(core.settings, lang))


def router() -> Router:
    """A fresh Router with this module's handlers (vitte.bot.handlers explains why fresh)."""
    r = Router(name="payments")
    private = (F.chat.type == "private", F.from_user)
    r.pre_checkout_query.register(pre_checkout)
    r.message.register(successful_payment, F.successful_payment, F.from_user)
    r.subscription.register(subscription_update)
    r.message.register(premium_command, Command("premium"), *private)
    r.callback_query.register(pay_button, PayCb.filter())
    r.message.register(paysupport_command, Command("paysupport"), *private)
    r.message.register(terms_command, Command("terms"), *private)
    return r


async def _forward_to_support(core: Core, bot: Bot, user_id: int, who: str, problem: str) -> None:
    """ "/paysupport <problem>": to every VITTE_ADMIN_IDS chat (and always to the log)."""
    log.warning("payment support request from user %s (%s): %s", user_id, who, problem[:SUPPORT_TEXT_MAX])
    payments = await core.billing.list_payments(user_id, limit=5)
    lines = [
        f"• {p.created_at:%Y-%m-%d %H:%M} {p.amount} {p.currency} {p.plan or '?'} "
        f"{p.telegram_payment_charge_id}{' (refunded)' if p.refunded_at else ''}"
        for p in payments
    ]
    for admin_id in sorted(core.settings.admin_ids):
        lang = "ru"  # the operators' language; the payload is the player's own words
        text = pt(
            lang,
            "support_forward",
            who=who,
            user_id=user_id,
            text=problem if len(problem) <= SUPPORT_TEXT_MAX else problem[: SUPPORT_TEXT_MAX - 1] + "…",
            payments="\n".join(lines) or pt(lang, "support_no_payments"),
        )
        try:
            await bot.send_message(chat_id=admin_id, text=text)
        except TelegramAPIError as exc:  # an admin who never started the bot, for instance
            log.warning("could not forward a support request to admin %s: %s", admin_id, exc)
