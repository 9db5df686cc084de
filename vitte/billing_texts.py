"""Player-facing texts for payments: the `billing` part of the catalogues (vitte/locales, see
vitte.i18n). Plain text, safe under HTML parse mode.

/paysupport and /terms are required by Telegram for bots that sell in Stars:
``paysupport_text(settings, lang)`` and ``terms_text(settings, lang)``.

This module reads only the catalogues (no aiogram, and nothing of vitte.billing at run time:
vitte.billing imports it, not the other way round). Refusal reasons and plan ids are the keys'
suffixes (``precheckout_<reason>``, ``thanks_<plan>``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from vitte.i18n import COMMON, Texts, format_date

if TYPE_CHECKING:
    from datetime import datetime

    from vitte.config import Settings
    from vitte.models import Payment

__all__ = [
    "BILLING",
    "payment_thanks_text",
    "paysupport_text",
    "pre_checkout_error_text",
    "quota_exceeded_text",
    "renewal_canceled_text",
    "replies_left_text",
    "terms_text",
]

BILLING = Texts("billing")


class Entitlement(Protocol):
    """What these texts read of a player's plan (`vitte.billing.Entitlement`)."""

    @property
    def daily_limit(self) -> int: ...

    @property
    def is_premium(self) -> bool: ...

    @property
    def premium_until(self) -> datetime | None: ...


def _replies(n: int, lang: str | None) -> str:
    return COMMON.nt(lang, "replies", n)


# --------------------------------------------------------------------------- /paysupport, /terms
def paysupport_text(settings: Settings, language: str | None) -> str:
    contact = settings.support_contact
    how = (
        BILLING.t(language, "paysupport_contact", contact=contact)
        if contact
        else BILLING.t(language, "paysupport_contact_command")
    )
    return BILLING.t(language, "paysupport", contact=how)


def terms_text(settings: Settings, language: str | None) -> str:
    has_pack = settings.pack_replies > 0
    pack_line = (
        BILLING.t(
            language,
            "terms_pack_line",
            pack_price=settings.pack_stars,
            pack=_replies(settings.pack_replies, language),
        )
        + "\n"
        if has_pack
        else ""
    )
    first_free = 6 if has_pack else 5
    return BILLING.t(
        language,
        "terms",
        free=_replies(settings.free_daily_replies, language),
        premium_price=settings.premium_stars_month,
        premium=_replies(settings.premium_daily_replies, language),
        pack_line=pack_line,
        refund_n=first_free,
        change_n=first_free + 1,
    )


# --------------------------------------------------------------------------- quota
def replies_left_text(left: int, language: str | None) -> str:
    """ "Осталось 3 ответа на сегодня." (the low-quota notice under a reply)."""
    if left <= 0:
        return BILLING.t(language, "last_reply_today")
    return BILLING.nt(language, "replies_left", left)


def quota_exceeded_text(entitlement: Entitlement, settings: Settings, language: str | None) -> str:
    """The paywall line when the engine raised QuotaExceeded."""
    pack = settings.pack_replies
    head = (
        BILLING.t(language, "quota_premium_used", replies=_replies(entitlement.daily_limit, language))
        if entitlement.is_premium
        else BILLING.t(language, "quota_free_used", limit=entitlement.daily_limit)
    )
    offers = []
    if not entitlement.is_premium:
        offers.append(_premium_offer(settings, language))
    if pack > 0:
        offers.append(
            BILLING.t(language, "offer_pack", replies=_replies(pack, language), price=settings.pack_stars)
        )
    items = _items_offer(settings, language)
    if items:
        offers.append(items)
    return f"{head} {BILLING.t(language, 'quota_new_at')}{_offers(offers)}"


# photos and voice replies are on only with their model and the LLM API (as vitte.billing's
# plans and items say: this module does not import it)
def _photos_on(settings: Settings) -> bool:
    return bool(settings.image_model and settings.llm_base_url)


def _voice_on(settings: Settings) -> bool:
    return bool(settings.tts_model and settings.llm_base_url)


def _premium_offer(settings: Settings, language: str | None) -> str:
    """ "с Премиумом — до 50 ответов в день", with its voice replies and photos when those are on
    (VITTE_PREMIUM_DAILY_VOICE_REPLIES, VITTE_PREMIUM_DAILY_PHOTOS), as /premium lists them."""
    replies = _replies(settings.premium_daily_replies, language)
    media = []
    if _voice_on(settings) and settings.premium_daily_voice_replies > 0:
        media.append(COMMON.nt(language, "voice_count", settings.premium_daily_voice_replies))
    if _photos_on(settings) and settings.premium_daily_photos > 0:
        media.append(COMMON.nt(language, "photos_count", settings.premium_daily_photos))
    if not media:
        return BILLING.t(language, "offer_premium", replies=replies)
    return BILLING.t(language, "offer_premium_media", perks=_listed([replies, *media], language))


def _items_offer(settings: Settings, language: str | None) -> str:
    """ "поштучно в /premium: фото — 25 ⭐, голосовой ответ — 10 ⭐" for the items on sale
    (VITTE_PHOTO_STARS, VITTE_VOICE_STARS; 0: not on sale), "" when none is."""
    items = []
    if _photos_on(settings) and settings.photo_stars > 0:
        items.append(BILLING.t(language, "offer_item_photo", price=settings.photo_stars))
    if _voice_on(settings) and settings.voice_stars > 0:
        items.append(BILLING.t(language, "offer_item_voice", price=settings.voice_stars))
    return BILLING.t(language, "offer_items", items=", ".join(items)) if items else ""


def _listed(parts: list[str], language: str | None) -> str:
    """ "a, b and c" (the catalogue's ``list_and``)."""
    if len(parts) == 1:
        return parts[0]
    return BILLING.t(language, "list_and", first=", ".join(parts[:-1]), last=parts[-1])


def _offers(offers: list[str]) -> str:
    if not offers:
        return ""
    text = "; ".join(offers)
    return " " + text[0].upper() + text[1:] + "."


# --------------------------------------------------------------------------- buying
def pre_checkout_error_text(reason: str, language: str | None) -> str:
    """answerPreCheckoutQuery's error_message for a refusal reason from Billing.pre_checkout."""
    text = BILLING.get(language, f"precheckout_{reason}")
    return text if text is not None else BILLING.t(language, "precheckout_bad_payload")


def payment_thanks_text(payment: Payment | Any, language: str | None) -> str:
    """The plain thanks: ``thanks_<plan>`` (Premium until {date}, the pack's {replies} added), or
    ``thanks_payment`` for a plan without its own line."""
    text = BILLING.get(language, f"thanks_{payment.plan}") if payment.plan else None
    if text is None:
        return BILLING.t(language, "thanks_payment")
    return text.format(
        date=format_date(payment.expires_at, language),
        replies=_replies(int(payment.extra_replies or 0), language),
    )


def renewal_canceled_text(entitlement: Entitlement, language: str | None) -> str:
    return BILLING.t(language, "renewal_canceled", date=format_date(entitlement.premium_until, language))
