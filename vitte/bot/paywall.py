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

from vitte.billing import PACK, PREMIUM, SUB_CANCELED, SUB_FAILED, Entitlement, ru_plural
from vitte.billing_texts import payment_thanks_text
from vitte.config import ConfigError
from vitte.errors import NotFound, UnknownPlan
from vitte.telegram.payments import create_invoice_link

if TYPE_CHECKING:
    from vitte.core import Core
    from vitte.models import Payment

log = logging.getLogger("vitte.bot")


class PayCb(CallbackData, prefix="pay"):
    """Buying buttons: action pack (send the pack's invoice) | view (the /premium view) |
    cancel (ask) | cancel_yes (editUserStarSubscription) | resume | back."""

    action: str


TEXTS: dict[str, dict[str, str]] = {
    "ru": {
        "btn_premium": "💎 Премиум — {price} ⭐ / 30 дней",
        "btn_pack": "➕ {replies} — {price} ⭐",
        "btn_cancel_renewal": "Отменить продление",
        "btn_resume_renewal": "Возобновить продление",
        "btn_cancel_yes": "Да, отменить",
        "btn_back": "Назад",
        "title": "💎 Премиум",
        "plan_free": "Ваш тариф: Бесплатный",
        "plan_renews": "Ваш тариф: Премиум — продлится {date}",
        "plan_canceled": "Ваш тариф: Премиум — до {date}, продление отключено",
        "plan_until": "Ваш тариф: Премиум — до {date}",
        "renewal_failed": "Последнее продление не прошло: оплата не списалась, Премиум выключен.",
        "today": "Сегодня осталось {left} из {limit} (новые — в 00:00 UTC)",
        "pack_left": "Из пакета: ещё {replies}",
        "offer": "{title} — {price} ⭐",
        "offer_period": "{title} — {price} ⭐ за 30 дней",
        "footer": "Оплата — звёздами Telegram. Условия: /terms · помощь с оплатой: /paysupport",
        "cancel_confirm": (
            "Отменить продление Премиума?\n\n"
            "Премиум останется до {date}, потом подписка не продлится и звёзды больше не спишутся."
        ),
        "no_subscription": "Продлевать нечего: подписки сейчас нет.",
        "renewal_change_failed": (
            "Не получилось изменить продление. Попробуйте ещё раз чуть позже — или в Telegram: "
            "Настройки → Мои звёзды → Подписки."
        ),
        "resume_failed": (
            "Отсюда продление не включить. Включите его в Telegram: Настройки → Мои звёзды → Подписки."
        ),
        "renewal_resumed": "Продление снова включено: Премиум продлится {date}.",
        "pack_off": "Пакеты ответов сейчас не продаются.",
        "premium_on": "Премиум включён до {date}.",
        "premium_renewed": "⭐ Премиум продлён до {date}. Спасибо, что вы с нами!",
        "pack_added": "Добавлено: {replies}.",
        "pay_unavailable": "Сервис на мгновение недоступен. Попробуйте оплатить ещё раз через минуту.",
        "pay_not_recorded": (
            "Оплата прошла, но мы не смогли сразу её записать. Ничего не потеряется: напишите "
            "/paysupport — мы всё проверим и включим покупку."
        ),
        "sub_canceled": "Продление Премиума отключено. Премиум действует до {date}.",
        "sub_active": "Продление Премиума снова включено: следующее — {date}.",
        "sub_failed": (
            "Не получилось продлить Премиум: оплата не прошла, поэтому Премиум выключен. "
            "Оформить его снова можно в /premium."
        ),
        "support_sent": "Спасибо, передали ваше сообщение в поддержку. Ответим здесь, в этом чате.",
        "support_forward": "🧾 /paysupport от {who} (id {user_id}):\n\n{text}\n\nПоследние платежи:\n{payments}",
        "support_no_payments": "нет",
    },
    "en": {
        "btn_premium": "💎 Premium — {price} ⭐ / 30 days",
        "btn_pack": "➕ {replies} — {price} ⭐",
        "btn_cancel_renewal": "Cancel renewal",
        "btn_resume_renewal": "Resume renewal",
        "btn_cancel_yes": "Yes, cancel it",
        "btn_back": "Back",
        "title": "💎 Premium",
        "plan_free": "Your plan: Free",
        "plan_renews": "Your plan: Premium — renews on {date}",
        "plan_canceled": "Your plan: Premium — until {date}, renewal is off",
        "plan_until": "Your plan: Premium — until {date}",
        "renewal_failed": "The last renewal did not go through: the payment failed and Premium is off.",
        "today": "Left today: {left} of {limit} (new ones at 00:00 UTC)",
        "pack_left": "From packs: {replies} more",
        "offer": "{title} — {price} ⭐",
        "offer_period": "{title} — {price} ⭐ for 30 days",
        "footer": "Paid in Telegram Stars. Terms: /terms · help with payments: /paysupport",
        "cancel_confirm": (
            "Cancel the Premium renewal?\n\n"
            "Premium stays on until {date}; after that the subscription does not renew and no more "
            "Stars are charged."
        ),
        "no_subscription": "There is nothing to renew: you have no subscription right now.",
        "renewal_change_failed": (
            "Could not change the renewal. Please try again a bit later, or in Telegram: "
            "Settings → My Stars → Subscriptions."
        ),
        "resume_failed": (
            "The renewal can't be turned back on from here. Turn it on in Telegram: "
            "Settings → My Stars → Subscriptions."
        ),
        "renewal_resumed": "Renewal is on again: Premium renews on {date}.",
        "pack_off": "Reply packs are not on sale right now.",
        "premium_on": "Premium is on until {date}.",
        "premium_renewed": "⭐ Premium renewed until {date}. Thank you for staying with us!",
        "pack_added": "Added: {replies}.",
        "pay_unavailable": "The service is briefly unavailable. Please try paying again in a minute.",
        "pay_not_recorded": (
            "The payment went through, but we could not record it right away. Nothing is lost: "
            "write /paysupport and we will check it and turn the purchase on."
        ),
        "sub_canceled": "Premium renewal is off. Premium stays on until {date}.",
        "sub_active": "Premium renewal is on again: the next one is on {date}.",
        "sub_failed": (
            "Premium could not be renewed: the payment failed, so Premium is off. "
            "You can get it again in /premium."
        ),
        "support_sent": "Thank you, your message went to support. We will answer here, in this chat.",
        "support_forward": "🧾 /paysupport from {who} (id {user_id}):\n\n{text}\n\nRecent payments:\n{payments}",
        "support_no_payments": "none",
    },
}

# A short thank-you in the voice of the shipped personas ({name}: the persona's name in the
# player's language). Any other persona gets GENERIC_THANKS; no active persona, a plain thanks.
PERSONA_THANKS: dict[str, dict[str, str]] = {
    "kira": {
        "ru": "*{name} щурится поверх очков и коротко кивает.* Принято на борт. Теперь наша вахта "
        "длиннее — никуда не спешим ⚓",
        "en": "*{name} squints over her sunglasses and gives a short nod.* Welcome aboard. Our watch "
        "just got longer — no need to rush ⚓",
    },
    "lev": {
        "ru": "*{name} поправляет очки и едва заметно улыбается.* Спасибо. По моим расчётам, теперь "
        "нам хватит времени на все созвездия ✨",
        "en": "*{name} adjusts his glasses with the faintest smile.* Thank you. By my calculations we "
        "now have time for every constellation ✨",
    },
    "mila": {
        "ru": "*{name} ставит перед тобой чашку и рисует на пенке сердечко.* Это за счёт заведения. "
        "Спасибо, что остаёшься ☕",
        "en": "*{name} sets a cup in front of you and draws a heart in the foam.* This one's on the "
        "house. Thank you for staying ☕",
    },
    "vera": {
        "ru": "*{name} закладывает книгу на самом интересном месте.* Щедро. Значит, у нас впереди "
        "роман, а не рассказ 📚",
        "en": "*{name} marks her page at the best part.* Generous. So we have a whole novel ahead of "
        "us, not a short story 📚",
    },
    "mark": {
        "ru": "*{name} берёт на гитаре пару тёплых аккордов.* Спасибо! Похоже, у нашей песни будет ещё "
        "много куплетов 🎸",
        "en": "*{name} plays a couple of warm chords.* Thank you! Looks like our song gets a lot more "
        "verses 🎸",
    },
}
GENERIC_THANKS = {
    "ru": "*{name} улыбается.* Спасибо… Теперь мы сможем говорить дольше 💕",
    "en": "*{name} smiles.* Thank you… Now we can talk for longer 💕",
}


def _lang(lang: str | None) -> str:
    return "en" if lang == "en" else "ru"


def pt(lang: str | None, key: str, /, **kw: Any) -> str:
    text = TEXTS[_lang(lang)][key]
    return text.format(**kw) if kw else text


def fmt_date(value: datetime | None, lang: str) -> str:
    """The same format as vitte.billing_texts (the thanks and renewal texts)."""
    if value is None:
        return "—"
    return (
        value.strftime("%Y-%m-%d %H:%M UTC") if _lang(lang) == "en" else value.strftime("%d.%m.%Y %H:%M UTC")
    )


def replies(n: int, lang: str) -> str:
    if _lang(lang) == "en":
        return f"{n} {'reply' if n == 1 else 'replies'}"
    return f"{n} {ru_plural(n, 'ответ', 'ответа', 'ответов')}"


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


async def _premium_button(core: Core, bot: Bot, user_id: int, lang: str) -> InlineKeyboardButton:
    text = pt(lang, "btn_premium", price=core.settings.premium_stars_month)
    link = await premium_link(core, bot, user_id, lang)
    if link is None:  # Telegram or the configuration failed just now: the /premium view retries
        return InlineKeyboardButton(text=text, callback_data=PayCb(action="view").pack())
    return InlineKeyboardButton(text=text, url=link)


async def offer_kb(core: Core, bot: Bot, ent: Entitlement, lang: str) -> InlineKeyboardMarkup | None:
    """The buy buttons under the quota refusal: the subscription (if not premium), the pack."""
    rows: list[list[InlineKeyboardButton]] = []
    if not ent.is_premium:
        rows.append([await _premium_button(core, bot, ent.user_id, lang)])
    pack = _pack_button(core, lang)
    if pack is not None:
        rows.append([pack])
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
    return lines


def premium_text(core: Core, ent: Entitlement, lang: str) -> str:
    parts = [pt(lang, "title"), "\n".join(_status_lines(ent, lang))]
    for plan in core.billing.plans():
        if not plan.purchasable:
            continue
        key = "offer_period" if plan.is_subscription else "offer"
        head = pt(lang, key, title=plan.title(lang), price=plan.price_stars)
        parts.append("\n".join([head, *(f"• {perk}" for perk in plan.perks(lang))]))
    parts.append(pt(lang, "footer"))
    return "\n\n".join(parts)


async def premium_kb(core: Core, bot: Bot, ent: Entitlement, lang: str) -> InlineKeyboardMarkup | None:
    rows: list[list[InlineKeyboardButton]] = []
    if not ent.is_premium:
        rows.append([await _premium_button(core, bot, ent.user_id, lang)])
    pack = _pack_button(core, lang)
    if pack is not None:
        rows.append([pack])
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
    if not persona_id or not persona_name:
        return None
    lines = PERSONA_THANKS.get(persona_id, GENERIC_THANKS)
    return lines[_lang(lang)].format(name=persona_name)


def _facts(payment: Payment, lang: str) -> str:
    if payment.plan == PREMIUM:
        return pt(lang, "premium_on", date=fmt_date(payment.expires_at, lang))
    if payment.plan == PACK:
        return pt(lang, "pack_added", replies=replies(int(payment.extra_replies or 0), lang))
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
