"""Buying in the bot, rendered: the buy buttons under the quota refusal, the /premium view,
the in-character thanks after a payment. The rules are vitte.billing's; this only renders.

Premium is a Stars subscription, and only an invoice *link* can sell one (Telegram's rule):
its button is a URL button with `vitte.telegram.payments.create_invoice_link` (a fresh, signed
payload for this player). The reply pack is a one-off purchase: its button is a callback (`PayCb`,
action "pack") whose handler (vitte.bot.handlers.payments) sends an invoice with sendInvoice.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.filters.callback_data import CallbackData
from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from vitte.billing import ITEM_COLUMNS, PACK, PHOTO, PREMIUM, SUB_CANCELED, SUB_FAILED, VOICE, Entitlement
from vitte.billing_texts import payment_thanks_text
from vitte.config import ConfigError
from vitte.errors import NotFound, UnknownPlan
from vitte.i18n import COMMON, Texts, format_date
from vitte.telegram.payments import create_invoice_link

if TYPE_CHECKING:
    from vitte.core import Core
    from vitte.models import Payment

log = logging.getLogger("vitte.bot")


class PayCb(CallbackData, prefix="pay"):
    """Buying buttons: action pack (send the pack's invoice) | photo (one photo's invoice) |
    voice (one voice reply's invoice) | view (the /premium view) |
    cancel (ask) | cancel_yes (editUserStarSubscription) | resume | back."""

    action: str


# the `paywall` part of the catalogues (vitte/locales, see vitte.i18n): msgid = the key
PAYWALL = Texts("paywall")


def pt(lang: str | None, key: str, /, **kw: Any) -> str:
    return PAYWALL.t(lang, key, **kw)


def fmt_date(value: datetime | None, lang: str | None) -> str:
    """The catalogue's date format (vitte.i18n.format_date), as every payment text writes it."""
    return format_date(value, lang)


def replies(n: int, lang: str | None) -> str:
    return COMMON.nt(lang, "replies", n)


# --------------------------------------------------------------------------- buttons
async def premium_link(core: Core, bot: Bot, user_id: int, lang: str) -> str | None:
    """An invoice link for the subscription (None, logged, when it cannot be made now)."""
    try:
        return await create_invoice_link(core.billing, bot, user_id, PREMIUM, lang)
    except (TelegramAPIError, ConfigError, UnknownPlan) as exc:
        log.warning("no Premium invoice link for user %s: %s", user_id, exc)
        return None


def _pack_button(core: Core, lang: str) -> InlineKeyboardButton | None:
    settings = core.settings
    if settings.pack_replies <= 0:
        return None
    text = pt(lang, "btn_pack", replies=replies(settings.pack_replies, lang), price=settings.pack_stars)
    return InlineKeyboardButton(text=text, callback_data=PayCb(action="pack").pack())


def item_button(core: Core, kind: str, lang: str) -> InlineKeyboardButton | None:
    """'📷 Ещё фото — 25 ⭐' / '🎤 Ещё голосовое — 10 ⭐' (PayCb action = the item), None when
    the item is not on sale (Billing.item_plan)."""
    plan = core.billing.item_plan(kind)
    if plan is None:
        return None
    return InlineKeyboardButton(
        text=pt(lang, f"btn_{kind}", price=plan.price_stars), callback_data=PayCb(action=kind).pack()
    )


async def _premium_button(core: Core, bot: Bot, user_id: int, lang: str) -> InlineKeyboardButton:
    text = pt(lang, "btn_premium", price=core.settings.premium_stars_month)
    link = await premium_link(core, bot, user_id, lang)
    if link is None:  # Telegram or the configuration failed just now: the /premium view retries
        return InlineKeyboardButton(text=text, callback_data=PayCb(action="view").pack())
    return InlineKeyboardButton(text=text, url=link)


async def _offer_rows(core: Core, bot: Bot, ent: Entitlement, lang: str) -> list[list[InlineKeyboardButton]]:
    """The buy buttons: the subscription (if not premium), the pack (if on sale)."""
    rows: list[list[InlineKeyboardButton]] = []
    if not ent.is_premium:
        rows.append([await _premium_button(core, bot, ent.user_id, lang)])
    pack = _pack_button(core, lang)
    if pack is not None:
        rows.append([pack])
    return rows


async def offer_kb(core: Core, bot: Bot, ent: Entitlement, lang: str) -> InlineKeyboardMarkup | None:
    """The buy buttons under the quota refusal."""
    rows = await _offer_rows(core, bot, ent, lang)
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


# --------------------------------------------------------------------------- /premium
def _status_lines(ent: Entitlement, lang: str) -> list[str]:
    if ent.is_premium:
        date = fmt_date(ent.premium_until, lang)
        if ent.renews:
            head = pt(lang, "plan_renews", date=date)
        elif ent.subscription_state == SUB_CANCELED:
            head = pt(lang, "plan_canceled", date=date)
        else:
            head = pt(lang, "plan_until", date=date)
        lines = [head]
    else:
        lines = [pt(lang, "plan_free")]
        if ent.subscription_state == SUB_FAILED:
            lines.append(pt(lang, "renewal_failed"))
    daily_left = max(ent.daily_limit - ent.used_today, 0)
    lines.append(pt(lang, "today", left=daily_left, limit=ent.daily_limit))
    if ent.extra_replies > 0:
        lines.append(pt(lang, "pack_left", replies=replies(ent.extra_replies, lang)))
    if ent.extra_photos > 0:  # bought for Stars, not asked for yet (issue 19)
        lines.append(pt(lang, "photos_left", n=ent.extra_photos))
    if ent.extra_voice > 0:
        lines.append(pt(lang, "voice_left", n=ent.extra_voice))
    return lines


def premium_text(core: Core, ent: Entitlement, lang: str) -> str:
    parts = [pt(lang, "title"), "\n".join(_status_lines(ent, lang))]
    for plan in [*core.billing.plans(), *core.billing.item_plans()]:
        if not plan.purchasable:
            continue
        key = "offer_period" if plan.is_subscription else "offer"
        head = pt(lang, key, title=plan.title(lang), price=plan.price_stars)
        parts.append("\n".join([head, *(f"• {perk}" for perk in plan.perks(lang))]))
    parts.append(pt(lang, "footer"))
    return "\n\n".join(parts)


async def premium_kb(core: Core, bot: Bot, ent: Entitlement, lang: str) -> InlineKeyboardMarkup | None:
    rows = await _offer_rows(core, bot, ent, lang)
    items = [b for b in (item_button(core, kind, lang) for kind in ITEM_COLUMNS) if b is not None]
    if items:  # one photo / one voice reply for Stars (issue 19)
        rows.append(items)
    if ent.renews:
        rows.append(
            [
                InlineKeyboardButton(
                    text=pt(lang, "btn_cancel_renewal"), callback_data=PayCb(action="cancel").pack()
                )
            ]
        )
    elif ent.is_premium and ent.subscription_state == SUB_CANCELED:
        rows.append(
            [
                InlineKeyboardButton(
                    text=pt(lang, "btn_resume_renewal"), callback_data=PayCb(action="resume").pack()
                )
            ]
        )
    return InlineKeyboardMarkup(inline_keyboard=rows) if rows else None


async def premium_view(
    core: Core, bot: Bot, user_id: int, lang: str
) -> tuple[str, InlineKeyboardMarkup | None, Entitlement]:
    """The /premium answer: the player's plan, renewal date and quota, the plans, the buttons."""
    ent = await core.billing.entitlement(user_id)
    return premium_text(core, ent, lang), await premium_kb(core, bot, ent, lang), ent


def cancel_confirm_kb(lang: str) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(
        inline_keyboard=[
            [
                InlineKeyboardButton(
                    text=pt(lang, "btn_cancel_yes"), callback_data=PayCb(action="cancel_yes").pack()
                ),
                InlineKeyboardButton(text=pt(lang, "btn_back"), callback_data=PayCb(action="back").pack()),
            ]
        ]
    )


# --------------------------------------------------------------------------- after a payment
def persona_thanks(persona_id: str | None, persona_name: str | None, lang: str) -> str | None:
    """A short thank-you in the voice of the persona: ``thanks_<persona id>`` for the shipped
    personas, ``thanks_generic`` for any other ({name}: the persona's name); None without one."""
    if not persona_id or not persona_name:
        return None
    line = PAYWALL.get(lang, f"thanks_{persona_id}")
    return (line if line is not None else PAYWALL.t(lang, "thanks_generic")).format(name=persona_name)


def _facts(payment: Payment, lang: str) -> str:
    if payment.plan == PREMIUM:
        return pt(lang, "premium_on", date=fmt_date(payment.expires_at, lang))
    if payment.plan == PACK:
        return pt(lang, "pack_added", replies=replies(int(payment.extra_replies or 0), lang))
    if payment.plan == PHOTO:
        return pt(lang, "photo_added")
    if payment.plan == VOICE:
        return pt(lang, "voice_added")
    return payment_thanks_text(payment, lang)


async def thanks_text(core: Core, payment: Payment, lang: str) -> str:
    """What the player reads after a new payment.

    A renewal: one short line. A purchase: a line in the voice of the player's active persona
    and what was bought; with no active dialog, the plain thanks (vitte.billing_texts).
    """
    if payment.plan == PREMIUM and payment.is_recurring and not payment.is_first_recurring:
        return pt(lang, "premium_renewed", date=fmt_date(payment.expires_at, lang))
    line = None
    if payment.user_id is not None:
        try:
            view = await core.dialogs.current(payment.user_id)
        except NotFound:
            view = None
        if view is not None:
            line = persona_thanks(view.persona_id, view.persona_name, lang)
    if line is None or not payment.plan:
        return payment_thanks_text(payment, lang)
    return f"{line}\n\n{_facts(payment, lang)}"
