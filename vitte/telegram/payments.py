"""The Bot API's Stars calls, between the faces and `vitte.billing`.

Billing computes and records (the signed invoice, whether a payment may be refunded, what a
refund ends, the renewal state); the Telegram call is made here, so `vitte.billing` needs no
aiogram. The bot's buttons, the Web App's invoice links and `vitte payments refund` all come here.

    link = await create_invoice_link(core.billing, bot, user_id, "premium", lang)
    await send_invoice(core.billing, bot, chat_id, user_id, "pack", lang)
    result = await refund(core.billing, bot, charge_id)
    entitlement = await cancel_renewal(core.billing, bot, user_id)   # or resume_renewal
"""

from __future__ import annotations

from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import LabeledPrice, Message

from vitte.billing import Billing, Entitlement, InvoiceSpec, RefundResult
from vitte.errors import PaymentAlreadyRefunded, PaymentApiFailed


def invoice_params(spec: InvoiceSpec) -> dict[str, Any]:
    """sendInvoice / createInvoiceLink parameters for a billing invoice."""
    return spec.kwargs() | {"prices": [LabeledPrice(label=p.label, amount=p.amount) for p in spec.prices]}


async def create_invoice_link(
    billing: Billing, bot: Bot, user_id: int, plan_id: str, language: str = "ru"
) -> str:
    """An invoice link (the only way to sell the subscription); open it from the Web App or a button."""
    spec = billing.make_invoice(user_id, plan_id, language)
    return await bot.create_invoice_link(**invoice_params(spec))


async def send_invoice(
    billing: Billing, bot: Bot, chat_id: int, user_id: int, plan_id: str, language: str = "ru"
) -> Message:
    """An invoice message in the chat: one-off purchases only (subscriptions need a link)."""
    spec = billing.make_invoice(user_id, plan_id, language)
    if spec.subscription_period is not None:
        raise ValueError("a subscription is sold only through create_invoice_link")
    return await bot.send_invoice(chat_id=chat_id, **invoice_params(spec))


async def refund(billing: Billing, bot: Bot, charge_id: str) -> RefundResult:
    """refundStarPayment, then mark the payment refunded and end what it paid for.

    UnknownPayment for an unknown charge, PaymentAlreadyRefunded for a second refund,
    PaymentApiFailed when Telegram refuses or cannot be reached (nothing changes then).
    """
    payment = await billing.refundable(charge_id)
    assert payment.user_id is not None  # refundable() refuses a payment whose player is gone
    try:
        await bot.refund_star_payment(user_id=payment.user_id, telegram_payment_charge_id=charge_id)
    except TelegramAPIError as exc:  # bad request, network failure, …: nothing changes here
        if "CHARGE_ALREADY_REFUNDED" in exc.message:
            result = await billing.mark_refunded(payment)  # refunded elsewhere: record it
            raise PaymentAlreadyRefunded(charge_id, result.payment.refunded_at) from None
        raise PaymentApiFailed(f"refund failed: {exc.message}") from None
    return await billing.mark_refunded(payment)


async def cancel_renewal(billing: Billing, bot: Bot, user_id: int) -> Entitlement:
    """Stop the subscription's renewal (editUserStarSubscription); premium stays until its end.
    NoSubscription when there is none."""
    return await _edit_subscription(billing, bot, user_id, canceled=True)


async def resume_renewal(billing: Billing, bot: Bot, user_id: int) -> Entitlement:
    """Undo cancel_renewal (only for a renewal the bot canceled)."""
    return await _edit_subscription(billing, bot, user_id, canceled=False)


async def _edit_subscription(billing: Billing, bot: Bot, user_id: int, *, canceled: bool) -> Entitlement:
    charge_id = await billing.subscription_charge_id(user_id)
    try:
        await bot.edit_user_star_subscription(
            user_id=user_id, telegram_payment_charge_id=charge_id, is_canceled=canceled
        )
    except TelegramAPIError as exc:
        if "SUBSCRIPTION_NOT_MODIFIED" not in exc.message:  # else: already in that state
            raise PaymentApiFailed(f"subscription change failed: {exc.message}") from None
    return await billing.record_renewal(user_id, canceled=canceled)
