"""Payments in Telegram Stars (XTR), the daily reply quota, refunds.

For the faces (bot, Web App): everything goes through ``core.billing`` (a :class:`Billing`);
player-facing texts are in :mod:`vitte.billing_texts`.

Paywall and quota
    ``core.billing.plans()`` -> [Plan] (free, premium, pack); ``plan.to_json(lang)`` has the
    Web App's shape {id, title, price_stars, period_days, perks} plus kind/daily_replies/extra_replies.
    ``await core.billing.entitlement(user_id)`` -> Entitlement (plan, premium_until, renews,
    used/left today, pack replies); ``entitlement.to_json()`` for the API.
    ``core.dialogs.reply`` / ``regenerate`` raise ``QuotaExceeded`` (vitte.errors) when the day's
    replies are used up: nothing was stored, the LLM was not called. Show
    ``quota_exceeded_text(exc.entitlement, settings, lang)`` with the buy buttons.
    A written reply carries ``outcome.quota`` (a QuotaDecision, or None);
    ``low_quota_notice(outcome.quota, lang)`` is "Осталось 3 ответа на сегодня." or None.

Buying (billing computes and records; the Bot API calls are in vitte.telegram.payments)
    Premium is a subscription: only an invoice *link* can sell it (Telegram's rule):
        link = await create_invoice_link(core.billing, bot, user_id, "premium", lang)
    (Web App: ``Telegram.WebApp.openInvoice(link)``; bot: a URL button).
    The reply pack is a one-off purchase:
        await send_invoice(core.billing, bot, chat_id, user_id, "pack", lang)   # or a link as above
    Both send ``core.billing.make_invoice(user_id, plan_id, lang)`` (an InvoiceSpec).
    pre_checkout_query (answer within 10 s; one indexed read):
        ok, reason = await core.billing.pre_checkout(q.from_user.id, q.invoice_payload, q.currency,
                                                     q.total_amount)
        await q.answer(ok=True) if ok else await q.answer(
            ok=False, error_message=pre_checkout_error_text(reason, lang))
    message.successful_payment (may be delivered twice; recorded once):
        payment, created = await core.billing.record_successful_payment(message.from_user.id,
                                                                       message.successful_payment)
        if created: await message.answer(payment_thanks_text(payment, lang))
    update.subscription (BotSubscriptionUpdated):
        await core.billing.record_subscription_update(ev.user.id, ev.invoice_payload, ev.state)
    "Cancel renewal": ``await cancel_renewal(core.billing, bot, user_id)`` (NoSubscription if
        none), then ``renewal_canceled_text(entitlement, lang)``; ``resume_renewal`` undoes it.
    /paysupport and /terms (both required by Telegram): ``paysupport_text(settings, lang)``,
        ``terms_text(settings, lang)``. With no VITTE_SUPPORT_CONTACT the /paysupport text asks
        the player to write "/paysupport <problem>": forward such messages to VITTE_ADMIN_IDS.

Operator: ``vitte.telegram.payments.refund(core.billing, bot, charge_id)`` (UnknownPayment,
PaymentAlreadyRefunded, PaymentApiFailed), ``list_payments(user_id)``; the CLI has
``vitte payments list|refund`` and ``vitte user show``.

Rules
    * The quota counts replies per UTC day (table ``usage``). Free players get
      VITTE_FREE_DAILY_REPLIES, premium players VITTE_PREMIUM_DAILY_REPLIES; once those are used,
      pack replies (``users.extra_replies``, never expire) are spent one by one.
    * The engine takes one reply from the quota *before* storing the player's message (one
      conditional UPSERT: check and count in a single statement, race-free across processes)
      and gives it back if no reply gets written (LLM failure, stop before the first word,
      cancellation), so only written replies stay counted.
    * Invoice payloads are ``plan:user:nonce:signature`` (HMAC-SHA256 with VITTE_PAYLOAD_SECRET,
      else a key derived from the bot token): a payload for another player, a forged plan or a
      price that differs from the configured one is refused at pre-checkout. Set
      VITTE_PAYLOAD_SECRET in production so rotating the bot token keeps old invoices valid.
    * A successful payment is recorded once (``telegram_payment_charge_id`` is unique; INSERT …
      ON CONFLICT DO NOTHING, the grant happens in the same transaction): a redelivered or
      concurrently delivered update changes nothing. A payment is recorded even when its payload
      no longer verifies (Telegram has already taken the Stars); the payer is the player credited.
    * Premium lasts until ``subscription_expiration_date`` (Telegram's), else 30 days from the
      later of now and the current end; a renewal moves the end forward, never back.
    * Subscription states: ``active`` (renews), ``canceled`` (premium stays until premium_until,
      no renewal shown), ``failed`` (the renewal charge failed, which Telegram reports at the end
      of the paid period: premium ends now; a later successful renewal restores it).
    * A refund ends the premium the payment paid for (if that period is still running) or takes
      back the pack's replies (as many as are left); a second refund is refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import Integer, bindparam, case, literal, select, update
from sqlmodel import col

from vitte.billing_texts import BILLING, replies_left_text
from vitte.cache.base import Cache
from vitte.config import ConfigError, Settings
from vitte.db import Database, insert_ignore, unavailable_as
from vitte.errors import (
    NoSubscription,
    PaymentAlreadyRefunded,
    PaymentApiFailed,
    QuotaExceeded,
    StoreUnavailable,
    UnknownPayment,
    UnknownPlan,
    UnknownUser,
)
from vitte.i18n import COMMON
from vitte.models import Hold, Payment, Usage, User, UTCDateTime, table_of, utcnow
from vitte.prepared import Prepared, RawConnection

if TYPE_CHECKING:
    from sqlalchemy.engine import Dialect
    from sqlalchemy.ext.asyncio import AsyncSession

__all__ = [
    "FREE",
    "PACK",
    "PHOTO",
    "PREMIUM",
    "STARS",
    "SUBSCRIPTION_PERIOD",
    "VOICE",
    "Billing",
    "Entitlement",
    "InvoiceSpec",
    "Payload",
    "Plan",
    "Price",
    "QuotaDecision",
    "RefundResult",
    "low_quota_notice",
    "parse_payload",
    "plans",
    "sign_payload",
    "verify_payload",
]

log = logging.getLogger("vitte.billing")

STARS = "XTR"
SUBSCRIPTION_PERIOD = 2_592_000  # 30 days: the only period Telegram accepts
PREMIUM_PERIOD = timedelta(seconds=SUBSCRIPTION_PERIOD)

FREE = "free"
PREMIUM = "premium"
PACK = "pack"
PHOTO = "photo"  # one photo from the persona, bought for VITTE_PHOTO_STARS (issue 19)
VOICE = "voice"  # one reply as a voice note, bought for VITTE_VOICE_STARS (issue 19)
# items bought one by one (issue 19): the users column each payment adds one to
ITEM_COLUMNS = {PHOTO: "extra_photos", VOICE: "extra_voice"}

SUB_ACTIVE = "active"
SUB_CANCELED = "canceled"
SUB_FAILED = "failed"
SUBSCRIPTION_STATES = (SUB_ACTIVE, SUB_CANCELED, SUB_FAILED)

# pre-checkout refusal reasons (vitte.billing_texts.pre_checkout_error_text renders them)
BAD_PAYLOAD = "bad_payload"
FORGED_PAYLOAD = "forged_payload"
UNKNOWN_PLAN = "unknown_plan"
WRONG_USER = "wrong_user"
WRONG_CURRENCY = "wrong_currency"
WRONG_PRICE = "wrong_price"
ALREADY_SUBSCRIBED = "already_subscribed"
BLOCKED = "blocked"  # the operator blocked the player: they are sold nothing

QUOTA_DAILY = "daily"
QUOTA_EXTRA = "extra"


# --------------------------------------------------------------------------- plans
@dataclass(frozen=True, slots=True)
class Plan:
    """A plan; its title and perks are the catalogue's ``plan_<id>`` and ``plan_<id>_perks``
    (one perk a line, {replies}: the replies it gives a day, or adds)."""

    id: str
    price_stars: int  # XTR; 0 for the free plan
    period_seconds: int | None  # SUBSCRIPTION_PERIOD for the subscription, None otherwise
    daily_replies: int = 0  # the daily limit the plan gives (0 for the pack)
    extra_replies: int = 0  # replies a pack adds
    # issue 19: photos and voice replies a day on this plan (0: none, or the feature is off)
    daily_photos: int = 0
    daily_voice_replies: int = 0

    @property
    def purchasable(self) -> bool:
        return self.price_stars > 0

    @property
    def is_subscription(self) -> bool:
        return self.period_seconds is not None

    @property
    def kind(self) -> str:
        if self.id in ITEM_COLUMNS:
            return "item"  # one photo / voice reply for Stars
        return "subscription" if self.is_subscription else ("pack" if self.extra_replies else "free")

    def title(self, language: str | None) -> str:
        return BILLING.t(language, f"plan_{self.id}")

    def perks(self, language: str | None) -> tuple[str, ...]:
        replies = COMMON.nt(language, "replies", self.extra_replies or self.daily_replies)
        lines = BILLING.t(language, f"plan_{self.id}_perks", replies=replies).split("\n")
        if self.daily_voice_replies:
            lines.append(BILLING.t(language, "perk_voice_replies", n=self.daily_voice_replies))
        if self.daily_photos:
            lines.append(BILLING.t(language, "perk_photos", n=self.daily_photos))
        return tuple(lines)

    def to_json(self, language: str) -> dict[str, Any]:
        return {
            "id": self.id,
            "title": self.title(language),
            "price_stars": self.price_stars,
            "period_days": (self.period_seconds or 0) // 86400,
            "perks": list(self.perks(language)),
            "kind": self.kind,
            "daily_replies": self.daily_replies,
            "extra_replies": self.extra_replies,
        }


def plans(settings: Settings) -> list[Plan]:
    """The plans, from configuration: free, premium (a 30-day Stars subscription), the reply pack."""
    free, premium = settings.free_daily_replies, settings.premium_daily_replies
    # photos and voice replies count only when their model is configured (vitte.media_allowance)
    photos = bool(settings.image_model and settings.llm_base_url)
    voice = bool(settings.tts_model and settings.llm_base_url)
    out = [
        Plan(
            id=FREE,
            price_stars=0,
            period_seconds=None,
            daily_replies=free,
            daily_photos=settings.free_daily_photos if photos else 0,
            daily_voice_replies=settings.free_daily_voice_replies if voice else 0,
        ),
        Plan(
            id=PREMIUM,
            price_stars=settings.premium_stars_month,
            period_seconds=SUBSCRIPTION_PERIOD,
            daily_replies=premium,
            daily_photos=settings.premium_daily_photos if photos else 0,
            daily_voice_replies=settings.premium_daily_voice_replies if voice else 0,
        ),
    ]
    if settings.pack_replies > 0:
        out.append(
            Plan(
                id=PACK,
                price_stars=settings.pack_stars,
                period_seconds=None,
                extra_replies=settings.pack_replies,
            )
        )
    return out


# --------------------------------------------------------------------------- payloads
@dataclass(frozen=True, slots=True)
class Payload:
    plan_id: str
    user_id: int
    nonce: str


def payload_secret(settings: Settings) -> bytes:
    """The key that signs invoice payloads: VITTE_PAYLOAD_SECRET, else derived from the bot token."""
    if settings.payload_secret is not None and settings.payload_secret.get_secret_value().strip():
        raw = settings.payload_secret.get_secret_value().strip().encode()
        return hmac.new(b"vitte-invoice-payload", raw, hashlib.sha256).digest()
    if settings.bot_token is not None and settings.bot_token.get_secret_value().strip():
        raw = settings.bot_token.get_secret_value().strip().encode()
        return hmac.new(b"vitte-invoice-payload/bot-token", raw, hashlib.sha256).digest()
    raise ConfigError("set VITTE_PAYLOAD_SECRET or VITTE_BOT_TOKEN to sign invoice payloads")


def _mac(secret: bytes, body: str) -> str:
    digest = hmac.new(secret, body.encode(), hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign_payload(secret: bytes, plan_id: str, user_id: int, nonce: str | None = None) -> str:
    """``plan:user:nonce:mac`` — at most ~70 bytes (Telegram allows 128)."""
    nonce = nonce or secrets.token_urlsafe(6)
    body = f"{plan_id}:{int(user_id)}:{nonce}"
    return f"{body}:{_mac(secret, body)}"


def parse_payload(payload: str) -> Payload | None:
    """The payload's fields, without checking the signature (None if it is not ours)."""
    parts = (payload or "").split(":")
    if len(parts) != 4 or not all(parts):
        return None
    plan_id, user, nonce, _mac_text = parts
    if not user.isdigit() or len(user) > 20:
        return None
    return Payload(plan_id, int(user), nonce)


def verify_payload(secret: bytes, payload: str) -> Payload | None:
    """The payload's fields if its signature is right, else None."""
    parsed = parse_payload(payload)
    if parsed is None:
        return None
    body, _, mac = payload.rpartition(":")
    if not hmac.compare_digest(_mac(secret, body), mac):
        return None
    return parsed


# --------------------------------------------------------------------------- results
def _is_premium(premium_until: datetime | None, now: datetime) -> bool:
    return premium_until is not None and premium_until > now


@dataclass(frozen=True, slots=True)
class Entitlement:
    """What a player has today."""

    user_id: int
    plan_id: str  # premium | free
    is_premium: bool
    premium_until: datetime | None
    subscription_state: str | None  # active | canceled | failed | None (as Telegram last reported)
    daily_limit: int
    used_today: int  # replies counted against today's daily limit
    left_today: int  # replies still available today: the rest of the daily limit + pack replies
    extra_replies: int  # pack replies left (spent after the daily limit)
    day: date  # the UTC day the counts are for
    low_threshold: int = 5
    extra_photos: int = 0  # photos bought for Stars, not asked for yet (issue 19)
    extra_voice: int = 0  # voice replies bought for Stars, not spent yet

    @property
    def renews(self) -> bool:
        """Premium that Telegram will renew (show "renews on …" rather than "until …")."""
        return self.is_premium and self.subscription_state == SUB_ACTIVE

    @property
    def exhausted(self) -> bool:
        return self.left_today <= 0

    @property
    def low(self) -> bool:
        return self.left_today <= self.low_threshold

    def to_json(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "plan": self.plan_id,
            "is_premium": self.is_premium,
            "premium_until": self.premium_until.isoformat() if self.premium_until else None,
            "subscription_state": self.subscription_state,
            "renews": self.renews,
            "daily_limit": self.daily_limit,
            "used_today": self.used_today,
            "left_today": self.left_today,
            "extra_replies": self.extra_replies,
            "extra_photos": self.extra_photos,
            "extra_voice": self.extra_voice,
            "day": self.day.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class QuotaDecision:
    """One reply taken from the quota (the engine gives it back if no reply gets written)."""

    user_id: int
    day: date
    source: str  # daily | extra
    used_today: int
    daily_limit: int
    extra_replies: int  # pack replies left after this one
    low_threshold: int = 5

    @property
    def left_today(self) -> int:
        return max(self.daily_limit - self.used_today, 0) + self.extra_replies

    @property
    def low(self) -> bool:
        """Whether the faces should show "осталось N ответов" under the reply."""
        return self.left_today <= self.low_threshold


def low_quota_notice(quota: QuotaDecision | Entitlement | None, language: str) -> str | None:
    """ "Осталось 3 ответа на сегодня." when few replies are left today, else None."""
    if quota is None or not quota.low:
        return None
    return replies_left_text(quota.left_today, language)


@dataclass(frozen=True, slots=True)
class Price:
    """One price item of an invoice (the Bot API's LabeledPrice)."""

    label: str
    amount: int


@dataclass(frozen=True, slots=True)
class InvoiceSpec:
    """Everything sendInvoice / createInvoiceLink need for a Stars invoice (vitte.telegram.payments
    makes the call)."""

    title: str
    description: str
    payload: str
    prices: list[Price]  # exactly one item (Telegram's rule for Stars)
    currency: str = STARS
    subscription_period: int | None = None  # SUBSCRIPTION_PERIOD for the subscription

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "title": self.title,
            "description": self.description,
            "payload": self.payload,
            "currency": self.currency,
            "prices": [{"label": p.label, "amount": p.amount} for p in self.prices],
            "provider_token": "",  # empty for payments in Telegram Stars
        }
        if self.subscription_period is not None:
            out["subscription_period"] = self.subscription_period
        return out


@dataclass(frozen=True, slots=True)
class RefundResult:
    payment: Payment
    premium_ended: bool
    replies_removed: int


# --------------------------------------------------------------------------- the service
def quota_upsert(dialect: str, source: Any = None) -> Any:
    """The daily quota's rule, written once: count one reply for (:user_id, :day) unless the
    day's count has reached :limit, and return the new count (no row: the day is used up).

    INSERT … ON CONFLICT DO UPDATE … WHERE replies < :limit RETURNING replies: check and count
    in one race-free statement. `source`: a SELECT of (user_id, day, replies) to insert from
    instead of the bound values (the reply's turn statement, `vitte.dialogs.store`, inserts
    only when the player's rows are still fresh)."""
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    else:
        from sqlalchemy.dialects.postgresql import insert as dialect_insert  # type: ignore[assignment]
    stmt = dialect_insert(Usage)
    if source is None:
        stmt = stmt.values(user_id=bindparam("user_id"), day=bindparam("day"), replies=1)
    else:
        stmt = stmt.from_select(["user_id", "day", "replies"], source)
    return stmt.on_conflict_do_update(
        index_elements=["user_id", "day"],
        set_={"replies": col(Usage.replies) + 1},
        where=col(Usage.replies) < bindparam("limit", type_=Integer()),
    ).returning(col(Usage.replies))


# the quota's statements on the reply's hot path (vitte/prepared.py). When a connection drops
# under one, the read is sent again on a fresh connection; the two counters only when the error
# proves they did not commit (`vitte.prepared.never_ran`): counted twice, a reply would be lost
_COUNT = Prepared(quota_upsert, "quota: count today's reply")
_SPEND_EXTRA = Prepared(
    update(User)
    .where(col(User.id) == bindparam("user_id"), col(User.extra_replies) > 0)
    .values(extra_replies=col(User.extra_replies) - 1)
    .returning(col(User.extra_replies)),
    "quota: spend a pack reply",
)
_USER_ROW = Prepared(
    select(*table_of(User).c).where(table_of(User).c.id == bindparam("user_id")),
    "player row",
    idempotent=True,
)


class Billing:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        cache: Cache | None = None,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.db = db
        self.cache = cache
        self.clock = clock
        self._secret: bytes | None = None

    # ------------------------------------------------------------------ plans
    def plans(self) -> list[Plan]:
        return plans(self.settings)

    def plan(self, plan_id: str) -> Plan:
        for p in plans(self.settings):
            if p.id == plan_id:
                return p
        item = self.item_plan(plan_id)
        if item is not None:
            return item
        raise UnknownPlan(plan_id)

    def item_plan(self, kind: str) -> Plan | None:
        """One item bought for Stars (not among `plans()`: not a plan one subscribes to), or None
        when it is not on sale: one photo for VITTE_PHOTO_STARS while photos are on
        (VITTE_IMAGE_MODEL), one voice reply for VITTE_VOICE_STARS while VITTE_TTS_MODEL is set."""
        s = self.settings
        if kind == PHOTO:
            price, model = s.photo_stars, s.image_model
        elif kind == VOICE:
            price, model = s.voice_stars, s.tts_model
        else:
            return None
        if price <= 0 or not (model and s.llm_base_url):
            return None
        return Plan(id=kind, price_stars=price, period_seconds=None)

    def item_plans(self) -> list[Plan]:
        """The items on sale (photo, voice), in that order."""
        return [p for p in (self.item_plan(kind) for kind in ITEM_COLUMNS) if p is not None]

    def photo_plan(self) -> Plan | None:
        """One photo for VITTE_PHOTO_STARS (item_plan(PHOTO))."""
        return self.item_plan(PHOTO)

    def daily_limit(self, premium: bool) -> int:
        return self.settings.premium_daily_replies if premium else self.settings.free_daily_replies

    # ------------------------------------------------------------------ entitlement and quota
    async def entitlement(self, user_id: int) -> Entitlement:
        """The player's plan and today's quota in one query (a player never seen: free, nothing used)."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            return await self._entitlement(s, user_id, self.clock())

    async def _entitlement(self, s: AsyncSession, user_id: int, now: datetime) -> Entitlement:
        today = now.date()
        used_sq = (
            select(col(Usage.replies))
            .where(col(Usage.user_id) == col(User.id), col(Usage.day) == today)
            .scalar_subquery()
        )
        row = (
            await s.execute(
                select(
                    col(User.premium_until),
                    col(User.subscription_state),
                    col(User.extra_replies),
                    used_sq,
                    col(User.extra_photos),
                    col(User.extra_voice),
                ).where(col(User.id) == user_id)
            )
        ).first()
        premium_until, state, extra, used, photos, voice = row if row is not None else (None, None, 0, 0, 0, 0)
        premium = _is_premium(premium_until, now)
        limit = self.daily_limit(premium)
        used = int(used or 0)
        extra = int(extra or 0)
        return Entitlement(
            user_id=user_id,
            plan_id=PREMIUM if premium else FREE,
            is_premium=premium,
            premium_until=premium_until,
            subscription_state=state,
            daily_limit=limit,
            used_today=used,
            left_today=max(limit - used, 0) + extra,
            extra_replies=extra,
            day=today,
            low_threshold=self.settings.low_quota_threshold,
            extra_photos=int(photos or 0),
            extra_voice=int(voice or 0),
        )

    @staticmethod
    def warm_up(dialect: Dialect) -> None:
        """The quota's hot statements compiled for this dialect (see Core.warm_up)."""
        for prepared in (_COUNT, _SPEND_EXTRA, _USER_ROW):
            prepared.compiled(dialect)

    async def check_and_count(
        self, user_id: int, *, user: User | None = None, conn: RawConnection | None = None
    ) -> QuotaDecision:
        """Take one reply from today's quota or raise QuotaExceeded(entitlement).

        Within the daily limit this is ONE statement (a conditional UPSERT on `usage`: check and
        count at once, race-free); after it, one pack reply is spent (a second statement). The
        engine passes the `user` row it already loaded and its own connection (`conn`, from
        `Database.raw()`: each statement commits on its own). A refusal changes nothing.
        Give the reply back with `release` if no reply gets written.
        """
        if conn is not None:
            return await self._take(conn, user_id, user)
        async with unavailable_as(StoreUnavailable), self.db.raw() as own:
            return await self._take(own, user_id, user)

    def today(self, user: User) -> tuple[date, int]:
        """Today's (UTC) day and this player's daily limit (0: no daily quota, only packs)."""
        now = self.clock()
        return now.date(), self.daily_limit(_is_premium(user.premium_until, now))

    def daily_decision(self, user: User, day: date, used: int, limit: int) -> QuotaDecision:
        """The decision for a reply counted in today's quota (`used`: the count, this one included)."""
        extra = int(user.extra_replies or 0)
        return QuotaDecision(user.id, day, QUOTA_DAILY, used, limit, extra, self.settings.low_quota_threshold)

    async def _take(self, conn: RawConnection, user_id: int, user: User | None) -> QuotaDecision:
        threshold = self.settings.low_quota_threshold
        if user is None:
            found = await conn.mapping(_USER_ROW, {"user_id": user_id})
            if found is None:
                raise UnknownUser(user_id)
            user = User(**found)
        day, limit = self.today(user)
        if limit > 0:
            counted = await conn.first(_COUNT, {"user_id": user_id, "day": day, "limit": limit})
            if counted is not None:
                return self.daily_decision(user, day, int(counted[0]), limit)
        spent = await conn.first(_SPEND_EXTRA, {"user_id": user_id})
        if spent is not None:
            return QuotaDecision(user_id, day, QUOTA_EXTRA, limit, limit, int(spent[0]), threshold)
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            raise QuotaExceeded(await self._entitlement(s, user_id, self.clock()))

    async def release(self, decision: QuotaDecision) -> None:
        """Give back a reply taken by check_and_count (no reply was written). Never raises."""
        try:
            async with self.db.session() as s:
                if decision.source == QUOTA_DAILY:
                    await s.execute(
                        update(Usage)
                        .where(
                            col(Usage.user_id) == decision.user_id,
                            col(Usage.day) == decision.day,
                            col(Usage.replies) > 0,
                        )
                        .values(replies=col(Usage.replies) - 1)
                    )
                else:
                    await s.execute(
                        update(User)
                        .where(col(User.id) == decision.user_id)
                        .values(extra_replies=col(User.extra_replies) + 1)
                    )
                await s.commit()
        except Exception as exc:  # the player loses one reply; never hide the original error
            log.warning("could not give back a reply to user %s: %s", decision.user_id, exc)

    # ------------------------------------------------------------------ invoices
    @property
    def secret(self) -> bytes:
        if self._secret is None:
            self._secret = payload_secret(self.settings)
        return self._secret

    def make_invoice(self, user_id: int, plan_id: str, language: str = "ru") -> InvoiceSpec:
        """A Stars invoice for this player and plan (UnknownPlan for free or unknown plans)."""
        plan = self.plan(plan_id)
        if not plan.purchasable:
            raise UnknownPlan(plan_id)
        title = plan.title(language)
        if plan.is_subscription:
            title = BILLING.t(language, "invoice_title_period", title=title)
        description = "; ".join(plan.perks(language))
        return InvoiceSpec(
            title=title[:32],
            description=description[:255],
            payload=sign_payload(self.secret, plan.id, user_id),
            prices=[Price(label=title[:32], amount=plan.price_stars)],
            currency=STARS,
            subscription_period=plan.period_seconds,
        )

    def validate_pre_checkout(
        self, query_user_id: int, payload: str, currency: str, total_amount: int
    ) -> tuple[bool, str]:
        """(True, "") or (False, reason): our signed payload, for this player, a plan on sale, its price."""
        parsed = parse_payload(payload)
        if parsed is None:
            return False, BAD_PAYLOAD
        if verify_payload(self.secret, payload) is None:
            return False, FORGED_PAYLOAD
        on_sale = [*self.plans(), *self.item_plans()]
        plan = next((p for p in on_sale if p.id == parsed.plan_id and p.purchasable), None)
        if plan is None:
            return False, UNKNOWN_PLAN
        if parsed.user_id != query_user_id:
            return False, WRONG_USER
        if currency != STARS:
            return False, WRONG_CURRENCY
        if total_amount != plan.price_stars:
            return False, WRONG_PRICE
        return True, ""

    async def pre_checkout(
        self, query_user_id: int, payload: str, currency: str, total_amount: int
    ) -> tuple[bool, str]:
        """validate_pre_checkout, no payment from a blocked player, and no second subscription
        while one renews (Telegram allows several). One indexed read (two after a deletion)."""
        ok, reason = self.validate_pre_checkout(query_user_id, payload, currency, total_amount)
        if not ok:
            return ok, reason
        parsed = parse_payload(payload)
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            row = (
                await s.execute(
                    select(col(User.premium_until), col(User.subscription_state), col(User.blocked_at)).where(
                        col(User.id) == query_user_id
                    )
                )
            ).first()
            # no row: the player deleted their data; a block held after it still counts
            held = (
                None
                if row is not None
                else (
                    await s.execute(select(col(Hold.blocked_at)).where(col(Hold.user_id) == query_user_id))
                ).scalar_one_or_none()
            )
        if (row is not None and row[2] is not None) or held is not None:
            return False, BLOCKED
        if (
            parsed is not None
            and parsed.plan_id == PREMIUM
            and row is not None
            and _is_premium(row[0], self.clock())
            and row[1] == SUB_ACTIVE
        ):
            return False, ALREADY_SUBSCRIBED
        return True, ""

    # ------------------------------------------------------------------ recording
    def _plan_of_payment(self, payload: str, is_recurring: bool, expiration: int | None) -> str:
        if is_recurring or expiration:
            return PREMIUM
        parsed = parse_payload(payload)
        if parsed is not None and parsed.plan_id in (PREMIUM, PACK, *ITEM_COLUMNS):
            return parsed.plan_id
        return ""

    async def record_payment(
        self,
        user_id: int,
        *,
        telegram_payment_charge_id: str,
        total_amount: int,
        invoice_payload: str,
        currency: str = STARS,
        provider_payment_charge_id: str | None = "",
        subscription_expiration_date: int | None = None,
        is_recurring: bool | None = False,
        is_first_recurring: bool | None = False,
    ) -> tuple[Payment, bool]:
        """Record a successful payment once and grant what it bought; (payment, created).

        A repeated (or concurrent) delivery of the same charge returns the stored row with
        created=False and changes nothing.
        """
        if not telegram_payment_charge_id:
            raise ValueError("telegram_payment_charge_id is empty")
        now = self.clock()
        plan_id = self._plan_of_payment(invoice_payload, bool(is_recurring), subscription_expiration_date)
        if not plan_id:
            log.warning(
                "payment %s from user %s: unrecognised payload %r; recorded, nothing granted",
                telegram_payment_charge_id,
                user_id,
                invoice_payload,
            )
        grant = self.settings.pack_replies if plan_id == PACK else 0
        expiration = (
            datetime.fromtimestamp(subscription_expiration_date, UTC)
            if subscription_expiration_date
            else None
        )
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            # the first statement writes, so SQLite takes the write lock at once (no stale snapshot)
            await s.execute(
                insert_ignore(
                    s,
                    User,
                    {"id": user_id, "settings": {}, "created_at": now, "last_seen_at": now},
                    ["id"],
                )
            )
            new_id = (
                await s.execute(
                    insert_ignore(
                        s,
                        Payment,
                        {
                            "telegram_payment_charge_id": telegram_payment_charge_id[:255],
                            "provider_payment_charge_id": (provider_payment_charge_id or "")[:255],
                            "user_id": user_id,
                            "amount": int(total_amount),
                            "currency": (currency or "")[:8],
                            "payload": (invoice_payload or "")[:256],
                            "plan": plan_id,
                            "is_recurring": bool(is_recurring),
                            "is_first_recurring": bool(is_first_recurring),
                            "expires_at": None,
                            "extra_replies": grant,
                            "refunded_at": None,
                            "created_at": now,
                        },
                        ["telegram_payment_charge_id"],
                    ).returning(col(Payment.id))
                )
            ).scalar_one_or_none()
            if new_id is None:
                await s.commit()
                existing = (
                    await s.execute(
                        select(Payment).where(
                            col(Payment.telegram_payment_charge_id) == telegram_payment_charge_id
                        )
                    )
                ).scalar_one()
                return existing, False
            if plan_id == PREMIUM:
                user = (
                    await s.execute(select(User).where(col(User.id) == user_id).with_for_update())
                ).scalar_one()
                current = user.premium_until
                if expiration is not None:
                    until = max(expiration, current) if current is not None else expiration
                else:
                    until = max(current or now, now) + PREMIUM_PERIOD
                values: dict[str, Any] = {"premium_until": until}
                if is_recurring:
                    values["subscription_state"] = SUB_ACTIVE
                await s.execute(update(User).where(col(User.id) == user_id).values(**values))
                await s.execute(update(Payment).where(col(Payment.id) == new_id).values(expires_at=until))
            elif grant:
                await s.execute(
                    update(User)
                    .where(col(User.id) == user_id)
                    .values(extra_replies=col(User.extra_replies) + grant)
                )
            elif plan_id in ITEM_COLUMNS:  # one photo / voice reply, spent once the day's are used
                bought = getattr(User, ITEM_COLUMNS[plan_id])
                await s.execute(
                    update(User).where(col(User.id) == user_id).values({bought: col(bought) + 1})
                )
            await s.commit()
            payment = (await s.execute(select(Payment).where(col(Payment.id) == new_id))).scalar_one()
        log.info(
            "payment %s: user %s paid %s %s for %s",
            telegram_payment_charge_id,
            user_id,
            total_amount,
            currency,
            plan_id or "?",
        )
        return payment, True

    async def record_successful_payment(self, user_id: int, sp: Any) -> tuple[Payment, bool]:
        """record_payment from an aiogram SuccessfulPayment (message.successful_payment)."""
        return await self.record_payment(
            user_id,
            telegram_payment_charge_id=sp.telegram_payment_charge_id,
            total_amount=sp.total_amount,
            invoice_payload=sp.invoice_payload,
            currency=sp.currency,
            provider_payment_charge_id=sp.provider_payment_charge_id,
            subscription_expiration_date=sp.subscription_expiration_date,
            is_recurring=sp.is_recurring,
            is_first_recurring=sp.is_first_recurring,
        )

    async def record_subscription_update(self, user_id: int, payload: str, state: str) -> Entitlement | None:
        """Telegram's `subscription` update: active | canceled | failed (None for an unknown player).

        canceled keeps premium until premium_until; failed ends it now (see the module notes).
        """
        now = self.clock()
        if state not in SUBSCRIPTION_STATES:
            log.warning("subscription update for user %s: unknown state %r", user_id, state)
        values: dict[str, Any] = {"subscription_state": (state or "")[:16] or None}
        if state == SUB_FAILED:
            values["premium_until"] = case(
                (col(User.premium_until) > now, literal(now, UTCDateTime())), else_=col(User.premium_until)
            )
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            result = await s.execute(update(User).where(col(User.id) == user_id).values(**values))
            await s.commit()
        if not result.rowcount:  # type: ignore[attr-defined]
            log.warning("subscription update %r for unknown user %s (payload %r)", state, user_id, payload)
            return None
        return await self.entitlement(user_id)

    # ------------------------------------------------------------------ refunds, renewal
    async def payment(self, charge_id: str) -> Payment:
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            found = (
                await s.execute(select(Payment).where(col(Payment.telegram_payment_charge_id) == charge_id))
            ).scalar_one_or_none()
        if found is None:
            raise UnknownPayment(charge_id)
        return found

    async def list_payments(self, user_id: int | None = None, limit: int = 100) -> list[Payment]:
        """Payments, newest first."""
        query = select(Payment).order_by(col(Payment.id).desc()).limit(limit)
        if user_id is not None:
            query = query.where(col(Payment.user_id) == user_id)
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            return list((await s.execute(query)).scalars())

    async def refundable(self, charge_id: str) -> Payment:
        """The payment, if it may be refunded (refundStarPayment: vitte.telegram.payments.refund).

        UnknownPayment for an unknown charge, PaymentAlreadyRefunded for a second refund,
        PaymentApiFailed when the player's data was deleted (Telegram needs the player's id).
        """
        payment = await self.payment(charge_id)
        if payment.refunded_at is not None:
            raise PaymentAlreadyRefunded(charge_id, payment.refunded_at)
        if payment.user_id is None:
            raise PaymentApiFailed(
                f"payment {charge_id}: the player's data was deleted; refund it in Telegram"
            )
        return payment

    async def mark_refunded(self, payment: Payment) -> RefundResult:
        """Record a refund Telegram made: the payment refunded, what it paid for ended."""
        now = self.clock()
        premium_ended = False
        removed = 0
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            marked = (
                await s.execute(
                    update(Payment)
                    .where(col(Payment.id) == payment.id, col(Payment.refunded_at).is_(None))
                    .values(refunded_at=now)
                    .returning(col(Payment.id))
                )
            ).scalar_one_or_none()
            if marked is not None and payment.user_id is not None:
                user = (
                    await s.execute(select(User).where(col(User.id) == payment.user_id).with_for_update())
                ).scalar_one_or_none()
                if user is not None:
                    if payment.plan == PREMIUM and (payment.expires_at is None or payment.expires_at > now):
                        if _is_premium(user.premium_until, now):
                            await s.execute(
                                update(User).where(col(User.id) == user.id).values(premium_until=now)
                            )
                            premium_ended = True
                    elif payment.plan in ITEM_COLUMNS:  # the photo / voice reply, if not taken yet
                        bought = getattr(User, ITEM_COLUMNS[payment.plan])
                        await s.execute(
                            update(User)
                            .where(col(User.id) == user.id, col(bought) > 0)
                            .values({bought: col(bought) - 1})
                        )
                    elif payment.extra_replies:
                        removed = min(int(user.extra_replies or 0), int(payment.extra_replies))
                        await s.execute(
                            update(User)
                            .where(col(User.id) == user.id)
                            .values(
                                extra_replies=case(
                                    (
                                        col(User.extra_replies) > payment.extra_replies,
                                        col(User.extra_replies) - payment.extra_replies,
                                    ),
                                    else_=0,
                                )
                            )
                        )
            await s.commit()
            fresh = (await s.execute(select(Payment).where(col(Payment.id) == payment.id))).scalar_one()
        log.info(
            "payment %s refunded (premium ended: %s, replies removed: %s)",
            payment.telegram_payment_charge_id,
            premium_ended,
            removed,
        )
        return RefundResult(fresh, premium_ended, removed)

    async def subscription_charge_id(self, user_id: int) -> str:
        """The charge id Telegram knows the player's running subscription by (its first payment)."""
        now = self.clock()
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            latest = (
                await s.execute(
                    select(Payment)
                    .where(
                        col(Payment.user_id) == user_id,
                        col(Payment.is_recurring).is_(True),
                        col(Payment.refunded_at).is_(None),
                    )
                    .order_by(col(Payment.id).desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
            if latest is None or (latest.expires_at is not None and latest.expires_at <= now):
                raise NoSubscription(user_id)
            if latest.is_first_recurring:
                return latest.telegram_payment_charge_id
            first = (
                await s.execute(
                    select(col(Payment.telegram_payment_charge_id))
                    .where(
                        col(Payment.user_id) == user_id,
                        col(Payment.payload) == latest.payload,
                        col(Payment.is_first_recurring).is_(True),
                    )
                    .order_by(col(Payment.id).desc())
                    .limit(1)
                )
            ).scalar_one_or_none()
        return first or latest.telegram_payment_charge_id

    async def record_renewal(self, user_id: int, *, canceled: bool) -> Entitlement:
        """Record a renewal change Telegram made (editUserStarSubscription:
        vitte.telegram.payments.cancel_renewal / resume_renewal)."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            await s.execute(
                update(User)
                .where(col(User.id) == user_id)
                .values(subscription_state=SUB_CANCELED if canceled else SUB_ACTIVE)
            )
            await s.commit()
        return await self.entitlement(user_id)
