"""Player-facing texts for payments, in Russian and English (plain text, safe under HTML parse mode).

/paysupport and /terms are required by Telegram for bots that sell in Stars:
``paysupport_text(settings, lang)`` and ``terms_text(settings, lang)``. The raw templates are
PAYSUPPORT and TERMS ({"ru": …, "en": …}).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from vitte.billing import (
    ALREADY_SUBSCRIBED,
    BAD_PAYLOAD,
    FORGED_PAYLOAD,
    PACK,
    PREMIUM,
    UNKNOWN_PLAN,
    WRONG_CURRENCY,
    WRONG_PRICE,
    WRONG_USER,
    ru_plural,
)

if TYPE_CHECKING:
    from vitte.billing import Entitlement
    from vitte.config import Settings
    from vitte.models import Payment

__all__ = [
    "PAYSUPPORT",
    "TERMS",
    "payment_thanks_text",
    "paysupport_text",
    "pre_checkout_error_text",
    "quota_exceeded_text",
    "renewal_canceled_text",
    "replies_left_text",
    "terms_text",
]


def _lang(language: str) -> str:
    return "en" if language == "en" else "ru"


def _replies(n: int, lang: str) -> str:
    if lang == "en":
        return f"{n} {'reply' if n == 1 else 'replies'}"
    return f"{n} {ru_plural(n, 'ответ', 'ответа', 'ответов')}"


def _date(value: datetime | None, lang: str) -> str:
    if value is None:
        return "—"
    return value.strftime("%Y-%m-%d %H:%M UTC") if lang == "en" else value.strftime("%d.%m.%Y %H:%M UTC")


# --------------------------------------------------------------------------- /paysupport, /terms
PAYSUPPORT: dict[str, str] = {
    "ru": (
        "Поддержка по платежам\n\n"
        "Покупки в Vitte оплачиваются звёздами Telegram (XTR).\n\n"
        "• Премиум — подписка на 30 дней, она продлевается сама. Отменить продление можно в любой "
        "момент: командой /premium или в Telegram (Настройки → Мои звёзды → Подписки). Премиум "
        "действует до конца оплаченного периода.\n"
        "• Если звёзды списались, а Премиум или пакет ответов не появились, или списание было "
        "ошибочным — {contact} Укажите дату покупки. Мы проверим платёж и, если что-то пошло "
        "не так, включим покупку или вернём звёзды.\n"
        "• Возврат звёзд завершает Премиум (или забирает оставшиеся ответы пакета), за который они "
        "были заплачены.\n\n"
        "Поддержка Telegram не может помочь с покупками в этом боте: по вопросам оплаты пишите нам."
    ),
    "en": (
        "Payment support\n\n"
        "Purchases in Vitte are paid in Telegram Stars (XTR).\n\n"
        "• Premium is a 30-day subscription that renews by itself. You can cancel the renewal at "
        "any time: with /premium or in Telegram (Settings → My Stars → Subscriptions). "
        "Premium stays on until the end of the paid period.\n"
        "• If Stars were charged but Premium or the reply pack did not appear, or the charge was a "
        "mistake — {contact} Include the date of the purchase. We will check the payment and, if "
        "something went wrong, turn the purchase on or refund the Stars.\n"
        "• A refund ends the Premium (or takes back the remaining pack replies) it paid for.\n\n"
        "Telegram support cannot help with purchases in this bot: write to us about payments."
    ),
}

_CONTACT = {
    "ru": "напишите нам: {contact}.",
    "en": "write to us: {contact}.",
}
_CONTACT_COMMAND = {
    "ru": "опишите проблему одним сообщением после команды, например: /paysupport оплатил Премиум, "
    "но он не включился.",
    "en": "describe the problem in one message after the command, for example: /paysupport I paid "
    "for Premium but it is not on.",
}

TERMS: dict[str, str] = {
    "ru": (
        "Условия Vitte\n\n"
        "1. Vitte — развлекательный чат с вымышленными персонажами. Ответы пишет искусственный "
        "интеллект: это не живой человек, ответы могут быть неточными и не являются советом "
        "(медицинским, юридическим, финансовым или иным).\n"
        "2. Сервис предназначен только для взрослых (18+).\n"
        "3. Бесплатно — {free} в день. Счётчик обнуляется в 00:00 UTC.\n"
        "4. Премиум — {premium_price} ⭐ за 30 дней, до {premium} в день. Подписка продлевается "
        "автоматически каждые 30 дней, пока вы её не отмените; после отмены Премиум действует до "
        "конца оплаченного периода.\n"
        "{pack_line}"
        "{refund_n}. Оплата — звёздами Telegram. Если покупка не была предоставлена или списание "
        "ошибочное, мы вернём звёзды: см. /paysupport. Возврат завершает Премиум или забирает "
        "ответы пакета, за которые он был оплачен.\n"
        "{change_n}. Цены и лимиты могут меняться; уже оплаченный период и оформленная подписка "
        "продолжаются на прежних условиях."
    ),
    "en": (
        "Vitte terms\n\n"
        "1. Vitte is an entertainment chat with fictional characters. Replies are written by an "
        "AI: it is not a real person, replies can be wrong and are not advice (medical, legal, "
        "financial or any other).\n"
        "2. The service is for adults only (18+).\n"
        "3. Free: {free} a day. The count resets at 00:00 UTC.\n"
        "4. Premium: {premium_price} ⭐ for 30 days, up to {premium} a day. The subscription "
        "renews automatically every 30 days until you cancel it; after cancelling, Premium stays "
        "on until the end of the paid period.\n"
        "{pack_line}"
        "{refund_n}. Payments are in Telegram Stars. If a purchase was not delivered or the charge "
        "was a mistake, we refund the Stars: see /paysupport. A refund ends the Premium or takes "
        "back the pack replies it paid for.\n"
        "{change_n}. Prices and limits may change; a period already paid for and a running "
        "subscription continue on the terms they were bought with."
    ),
}

_PACK_LINE = {
    "ru": "5. Пакет ответов — {pack_price} ⭐ за {pack}; они тратятся, когда дневной лимит исчерпан, "
    "и не сгорают.\n",
    "en": "5. Reply pack: {pack_price} ⭐ for {pack}; they are used once the daily limit is reached "
    "and never expire.\n",
}


def paysupport_text(settings: Settings, language: str) -> str:
    lang = _lang(language)
    contact = settings.support_contact
    how = _CONTACT[lang].format(contact=contact) if contact else _CONTACT_COMMAND[lang]
    return PAYSUPPORT[lang].format(contact=how)


def terms_text(settings: Settings, language: str) -> str:
    lang = _lang(language)
    has_pack = settings.pack_replies > 0
    pack_line = (
        _PACK_LINE[lang].format(pack_price=settings.pack_stars, pack=_replies(settings.pack_replies, lang))
        if has_pack
        else ""
    )
    first_free = 6 if has_pack else 5
    return TERMS[lang].format(
        free=_replies(settings.free_daily_replies, lang),
        premium_price=settings.premium_stars_month,
        premium=_replies(settings.premium_daily_replies, lang),
        pack_line=pack_line,
        refund_n=first_free,
        change_n=first_free + 1,
    )


# --------------------------------------------------------------------------- quota
def replies_left_text(left: int, language: str) -> str:
    """ "Осталось 3 ответа на сегодня." (the low-quota notice under a reply)."""
    if _lang(language) == "en":
        if left <= 0:
            return "That was the last reply for today."
        return f"{_replies(left, 'en')} left for today."
    if left <= 0:
        return "Это был последний ответ на сегодня."
    verb = "Остался" if left % 10 == 1 and left % 100 != 11 else "Осталось"
    return f"{verb} {_replies(left, 'ru')} на сегодня."


def quota_exceeded_text(entitlement: Entitlement, settings: Settings, language: str) -> str:
    """The paywall line when the engine raised QuotaExceeded."""
    lang = _lang(language)
    pack = settings.pack_replies
    if lang == "en":
        head = (
            f"Today's Premium limit of {_replies(entitlement.daily_limit, 'en')} is used up."
            if entitlement.is_premium
            else f"Today's free replies ({entitlement.daily_limit}) are used up."
        )
        tail = " New ones arrive at 00:00 UTC."
        offers = []
        if not entitlement.is_premium:
            offers.append(f"Premium gives up to {_replies(settings.premium_daily_replies, 'en')} a day")
        if pack > 0:
            offers.append(f"a pack adds {_replies(pack, 'en')} for {settings.pack_stars} ⭐")
        return head + tail + _offers(offers)
    head = (
        f"Дневной лимит Премиума ({_replies(entitlement.daily_limit, 'ru')}) исчерпан."
        if entitlement.is_premium
        else f"Бесплатные ответы на сегодня закончились ({entitlement.daily_limit} в день)."
    )
    tail = " Новые появятся в 00:00 UTC."
    offers = []
    if not entitlement.is_premium:
        offers.append(f"с Премиумом — до {_replies(settings.premium_daily_replies, 'ru')} в день")
    if pack > 0:
        offers.append(f"пакет добавит {_replies(pack, 'ru')} за {settings.pack_stars} ⭐")
    return head + tail + _offers(offers)


def _offers(offers: list[str]) -> str:
    if not offers:
        return ""
    text = "; ".join(offers)
    return " " + text[0].upper() + text[1:] + "."


# --------------------------------------------------------------------------- buying
_PRE_CHECKOUT_ERRORS = {
    "ru": {
        BAD_PAYLOAD: "Этот счёт не от нас. Откройте покупку заново в боте.",
        FORGED_PAYLOAD: "Этот счёт не от нас. Откройте покупку заново в боте.",
        UNKNOWN_PLAN: "Этот тариф больше не продаётся. Откройте покупку заново в боте.",
        WRONG_USER: "Этот счёт выставлен другому пользователю. Откройте покупку в своём чате с ботом.",
        WRONG_CURRENCY: "Оплата возможна только звёздами Telegram.",
        WRONG_PRICE: "Цена изменилась. Откройте покупку заново в боте.",
        ALREADY_SUBSCRIBED: "Премиум уже оформлен и продлевается — вторая подписка не нужна.",
    },
    "en": {
        BAD_PAYLOAD: "This invoice is not ours. Please start the purchase again in the bot.",
        FORGED_PAYLOAD: "This invoice is not ours. Please start the purchase again in the bot.",
        UNKNOWN_PLAN: "This plan is no longer on sale. Please start the purchase again in the bot.",
        WRONG_USER: "This invoice was made for someone else. Please buy from your own chat with the bot.",
        WRONG_CURRENCY: "Only Telegram Stars are accepted.",
        WRONG_PRICE: "The price has changed. Please start the purchase again in the bot.",
        ALREADY_SUBSCRIBED: "Your Premium is already active and renewing: no second subscription needed.",
    },
}


def pre_checkout_error_text(reason: str, language: str) -> str:
    """answerPreCheckoutQuery's error_message for a refusal reason from Billing.pre_checkout."""
    texts = _PRE_CHECKOUT_ERRORS[_lang(language)]
    return texts.get(reason, texts[BAD_PAYLOAD])


def payment_thanks_text(payment: Payment | Any, language: str) -> str:
    lang = _lang(language)
    if payment.plan == PREMIUM:
        if lang == "en":
            return f"Thank you! Premium is on until {_date(payment.expires_at, lang)}."
        return f"Спасибо! Премиум включён до {_date(payment.expires_at, lang)}."
    if payment.plan == PACK:
        n = int(payment.extra_replies or 0)
        if lang == "en":
            return f"Thank you! {_replies(n, lang)} added."
        return f"Спасибо! Добавлено: {_replies(n, lang)}."
    return "Thank you! Payment received." if lang == "en" else "Спасибо! Платёж получен."


def renewal_canceled_text(entitlement: Entitlement, language: str) -> str:
    lang = _lang(language)
    until = _date(entitlement.premium_until, lang)
    if lang == "en":
        return f"Renewal is off. Premium stays on until {until}."
    return f"Продление отключено. Премиум действует до {until}."
