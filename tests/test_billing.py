"""Payments in Telegram Stars and the daily quota, on SQLite + in-process cache and PostgreSQL + Redis.

Bot API calls go to the in-process LocalBotSession (vitte/localapi); the CLI's refund goes over
HTTP to a tiny fake Bot API on loopback (VITTE_TELEGRAM_API_URL).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import typer
from pydantic import SecretStr
from sqlalchemy import event, func, select
from typer.testing import CliRunner

from vitte.billing import (
    ALREADY_SUBSCRIBED,
    BAD_PAYLOAD,
    FORGED_PAYLOAD,
    PACK,
    PREMIUM,
    STARS,
    SUBSCRIPTION_PERIOD,
    UNKNOWN_PLAN,
    WRONG_CURRENCY,
    WRONG_PRICE,
    WRONG_USER,
    low_quota_notice,
    parse_payload,
    sign_payload,
)
from vitte.billing_texts import (
    paysupport_text,
    pre_checkout_error_text,
    quota_exceeded_text,
    replies_left_text,
    terms_text,
)
from vitte.catalog.cards import default_fixtures_dir, read_cards
from vitte.catalog.seed import seed_cards
from vitte.config import Settings
from vitte.core import Core
from vitte.errors import (
    NoSubscription,
    PaymentAlreadyRefunded,
    QuotaExceeded,
    ReplyFailed,
    UnknownPayment,
)
from vitte.llm.base import LLMRequest, LLMUnavailable
from vitte.llm.demo import DemoWriter
from vitte.localapi import LocalBotSession, make_local_bot
from vitte.models import Message, Payment, utcnow
from vitte.telegram.payments import cancel_renewal, create_invoice_link, refund, resume_renewal, send_invoice

USER_ID = 2001
OTHER_ID = 2002
TOKEN = "123456:TEST-TOKEN-abcdefghijklmnopqrstuvwxyz"


class CountingLLM:
    """The demo writer, counting calls; `fail` makes it raise LLMUnavailable."""

    is_demo = True
    label = "counting demo"

    def __init__(self) -> None:
        self.inner = DemoWriter(delay=0)
        self.calls = 0
        self.fail = False
        self.lead = ""  # a first delta (" ": a stop right away leaves nothing written)

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        self.calls += 1
        if self.fail:
            raise LLMUnavailable("down")
        if self.lead:
            yield self.lead
        async for delta in self.inner.stream(request):
            yield delta

    async def complete(self, request: LLMRequest) -> str:
        self.calls += 1
        return await self.inner.complete(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def billing_settings(base: Settings, **kw: Any) -> Settings:
    values: dict[str, Any] = {
        "free_daily_replies": 3,
        "premium_daily_replies": 50,
        "premium_stars_month": 250,
        "pack_stars": 100,
        "pack_replies": 2,
        "low_quota_threshold": 1,
        "payload_secret": SecretStr("test-payload-secret"),
        **kw,
    }
    return base.model_copy(update=values)


async def open_core(settings: Settings, llm: Any = None) -> Core:
    core = await Core.open(settings, llm=llm or CountingLLM())
    if not await core.catalog.personas():
        await seed_cards(core.db, read_cards(default_fixtures_dir()))
        core.catalog.invalidate()
    return core


@pytest.fixture
def settings(backend_settings: Settings) -> Settings:
    return billing_settings(backend_settings)


@pytest.fixture
async def core(settings: Settings, redis_cleanup_if_any: None) -> AsyncIterator[Core]:
    c = await open_core(settings)
    try:
        yield c
    finally:
        await c.close()


async def start_dialog(core: Core, user_id: int = USER_ID) -> int:
    await core.players.seen(user_id, first_name="Аня")
    await core.players.confirm_adult(user_id)  # the engine lets in only players who confirmed 18+
    p = (await core.catalog.personas())[0]
    opening = await core.dialogs.choose(user_id, p.id, p.stories[0].id)
    return opening.dialog.id


async def scalar(core: Core, stmt: Any) -> Any:
    async with core.db.session() as s:
        return (await s.execute(stmt)).scalar_one()


async def message_count(core: Core) -> int:
    return int(await scalar(core, select(func.count()).select_from(Message)))


def payload_for(core: Core, plan_id: str, user_id: int = USER_ID) -> str:
    return core.billing.make_invoice(user_id, plan_id).payload


def near(a: datetime | None, b: datetime, seconds: float = 120) -> bool:
    return a is not None and abs((a - b).total_seconds()) < seconds


# --------------------------------------------------------------------------- the quota in the engine
async def test_quota_exhaustion_refuses_before_storing_and_calling_the_llm(core: Core) -> None:
    llm: CountingLLM = core.llm  # type: ignore[assignment]
    dialog_id = await start_dialog(core)
    outcomes = [await core.dialogs.reply(USER_ID, f"привет {i}") for i in range(3)]
    assert [o.quota.left_today for o in outcomes if o.quota] == [2, 1, 0]
    assert low_quota_notice(outcomes[0].quota, "ru") is None  # 2 left > threshold 1
    assert low_quota_notice(outcomes[1].quota, "ru") == "Остался 1 ответ на сегодня."
    assert low_quota_notice(outcomes[2].quota, "en") == "That was the last reply for today."

    stored, calls = await message_count(core), llm.calls
    with pytest.raises(QuotaExceeded) as info:
        await core.dialogs.reply(USER_ID, "ещё одно")
    ent = info.value.entitlement
    assert (ent.plan_id, ent.daily_limit, ent.used_today, ent.left_today) == ("free", 3, 3, 0)
    with pytest.raises(QuotaExceeded):
        await core.dialogs.regenerate(USER_ID, dialog_id)
    assert await message_count(core) == stored  # nothing stored
    assert llm.calls == calls  # the LLM was not called
    assert "00:00 UTC" in quota_exceeded_text(ent, core.settings, "ru")
    entitlement = await core.billing.entitlement(USER_ID)
    assert (entitlement.used_today, entitlement.left_today, entitlement.exhausted) == (3, 0, True)


async def test_only_written_replies_are_counted(core: Core) -> None:
    llm: CountingLLM = core.llm  # type: ignore[assignment]
    dialog_id = await start_dialog(core)
    llm.fail = True
    with pytest.raises(ReplyFailed):
        await core.dialogs.reply(USER_ID, "эй")
    assert (await core.billing.entitlement(USER_ID)).used_today == 0
    with pytest.raises(ReplyFailed):
        await core.dialogs.regenerate(USER_ID, dialog_id)  # "Повторить"
    assert (await core.billing.entitlement(USER_ID)).used_today == 0
    llm.fail, llm.lead = False, " "
    stop = asyncio.Event()
    stop.set()  # the player pressed stop before the first word
    out = await core.dialogs.regenerate(USER_ID, dialog_id, stop=stop)
    assert out.text == "" and out.quota is None
    assert (await core.billing.entitlement(USER_ID)).used_today == 0
    llm.lead = ""
    out = await core.dialogs.regenerate(USER_ID, dialog_id)
    assert out.text and out.quota is not None
    assert (await core.billing.entitlement(USER_ID)).used_today == 1
    out = await core.dialogs.reply(USER_ID, "а теперь?", stop=stop)  # stopped after a word: it counts
    assert out.status == "stopped" and out.text and out.quota is not None
    assert (await core.billing.entitlement(USER_ID)).used_today == 2


async def test_the_quota_costs_one_statement_on_the_hot_path(core: Core) -> None:
    await start_dialog(core)
    await core.dialogs.reply(USER_ID, "разогрев")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(core.db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        raw = core.db.raw_statements  # the hot path's own statements (vitte/prepared.py)
        before = raw[0]
        core.dialogs.turns.forget_all()  # both replies read the player's rows (see test_hot_path.py)
        await core.dialogs.reply(USER_ID, "с квотой")
        with_quota = len(statements) + raw[0] - before
        statements.clear()
        before = raw[0]
        core.dialogs.turns.forget_all()
        billing, core.dialogs.billing = core.dialogs.billing, None
        try:
            await core.dialogs.reply(USER_ID, "без квоты")
        finally:
            core.dialogs.billing = billing
        without = len(statements) + raw[0] - before
    finally:
        event.remove(core.db.engine.sync_engine, "before_cursor_execute", seen)
    # PostgreSQL counts the quota in the statement that stores the turn; SQLite needs one more
    assert with_quota - without == (1 if core.settings.is_sqlite else 0)


async def test_premium_limit_then_pack_replies(backend_settings: Settings, redis_cleanup_if_any: None) -> None:
    settings = billing_settings(backend_settings, free_daily_replies=1, premium_daily_replies=2, pack_replies=2)
    core = await open_core(settings)
    try:
        await start_dialog(core)
        await core.dialogs.reply(USER_ID, "1")
        with pytest.raises(QuotaExceeded):
            await core.dialogs.reply(USER_ID, "2")
        # a pack: two more replies after the daily limit
        _, created = await core.billing.record_payment(
            USER_ID, telegram_payment_charge_id="pack-1", total_amount=100, invoice_payload=payload_for(core, PACK)
        )
        assert created and (await core.billing.entitlement(USER_ID)).extra_replies == 2
        out = await core.dialogs.reply(USER_ID, "2")
        assert out.quota is not None and out.quota.source == "extra" and out.quota.left_today == 1
        # premium: the premium daily limit (2, one already used today), then the last pack reply
        await core.billing.record_payment(
            USER_ID,
            telegram_payment_charge_id="sub-1",
            total_amount=250,
            invoice_payload=payload_for(core, PREMIUM),
            is_recurring=True,
            is_first_recurring=True,
            subscription_expiration_date=int(time.time()) + SUBSCRIPTION_PERIOD,
        )
        ent = await core.billing.entitlement(USER_ID)
        assert (ent.plan_id, ent.daily_limit, ent.used_today, ent.left_today) == ("premium", 2, 1, 2)
        assert (await core.dialogs.reply(USER_ID, "3")).quota.source == "daily"  # type: ignore[union-attr]
        assert (await core.dialogs.reply(USER_ID, "4")).quota.source == "extra"  # type: ignore[union-attr]
        with pytest.raises(QuotaExceeded) as info:
            await core.dialogs.reply(USER_ID, "5")
        assert info.value.entitlement.is_premium and info.value.entitlement.extra_replies == 0
    finally:
        await core.close()


# --------------------------------------------------------------------------- invoices and pre-checkout
async def test_invoice_link_and_invoice_follow_the_stars_rules(core: Core) -> None:
    session = LocalBotSession()
    bot = make_local_bot(session)
    link = await create_invoice_link(core.billing, bot, USER_ID, PREMIUM, "en")
    invoice = session.invoice_links[link]
    assert invoice["currency"] == STARS and invoice["total_amount"] == 250
    assert invoice["subscription_period"] == SUBSCRIPTION_PERIOD
    assert len(invoice["prices"]) == 1
    call = next(c for c in session.calls if c.method == "createInvoiceLink")
    assert not call.params.get("provider_token")
    assert parse_payload(invoice["payload"]).user_id == USER_ID  # type: ignore[union-attr]

    await send_invoice(core.billing, bot, USER_ID, USER_ID, PACK, "ru")
    sent = session.chat(USER_ID).last_bot_message()
    assert sent is not None and sent.invoice is not None
    assert sent.invoice["total_amount"] == 100 and "subscription_period" not in sent.invoice
    with pytest.raises(ValueError):
        await send_invoice(core.billing, bot, USER_ID, USER_ID, PREMIUM)  # subscriptions need a link
    await bot.session.close()


async def test_pre_checkout_accepts_ours_and_refuses_the_rest(core: Core) -> None:
    b = core.billing
    premium, pack = payload_for(core, PREMIUM), payload_for(core, PACK)
    assert b.validate_pre_checkout(USER_ID, premium, STARS, 250) == (True, "")
    assert b.validate_pre_checkout(USER_ID, pack, STARS, 100) == (True, "")
    assert b.validate_pre_checkout(OTHER_ID, premium, STARS, 250) == (False, WRONG_USER)
    assert b.validate_pre_checkout(USER_ID, premium, STARS, 1) == (False, WRONG_PRICE)
    assert b.validate_pre_checkout(USER_ID, pack, STARS, 250) == (False, WRONG_PRICE)
    assert b.validate_pre_checkout(USER_ID, premium, "USD", 250) == (False, WRONG_CURRENCY)
    signed_unknown = sign_payload(b.secret, "gold", USER_ID)
    assert b.validate_pre_checkout(USER_ID, signed_unknown, STARS, 250) == (False, UNKNOWN_PLAN)
    assert b.validate_pre_checkout(USER_ID, sign_payload(b.secret, "free", USER_ID), STARS, 0) == (
        False,
        UNKNOWN_PLAN,
    )
    # forged: the plan or the user changed under a valid signature, or another secret
    plan, user, nonce, mac = pack.split(":")
    assert b.validate_pre_checkout(USER_ID, f"premium:{user}:{nonce}:{mac}", STARS, 250) == (False, FORGED_PAYLOAD)
    assert b.validate_pre_checkout(OTHER_ID, f"{plan}:{OTHER_ID}:{nonce}:{mac}", STARS, 100) == (
        False,
        FORGED_PAYLOAD,
    )
    foreign = sign_payload(b"another secret", PREMIUM, USER_ID)
    assert b.validate_pre_checkout(USER_ID, foreign, STARS, 250) == (False, FORGED_PAYLOAD)
    for garbage in ("", "premium", "premium:x:y:z", "a:b:c:d:e", "💥" * 40):
        assert b.validate_pre_checkout(USER_ID, garbage, STARS, 250) == (False, BAD_PAYLOAD)
    assert await b.pre_checkout(USER_ID, premium, STARS, 250) == (True, "")
    # no second subscription while one renews
    await b.record_payment(
        USER_ID,
        telegram_payment_charge_id="sub-a",
        total_amount=250,
        invoice_payload=premium,
        is_recurring=True,
        is_first_recurring=True,
        subscription_expiration_date=int(time.time()) + SUBSCRIPTION_PERIOD,
    )
    assert await b.pre_checkout(USER_ID, payload_for(core, PREMIUM), STARS, 250) == (False, ALREADY_SUBSCRIBED)
    assert await b.pre_checkout(USER_ID, payload_for(core, PACK), STARS, 100) == (True, "")
    assert "Stars" in pre_checkout_error_text(WRONG_CURRENCY, "en")


# --------------------------------------------------------------------------- recording
async def test_payment_gives_premium_and_a_redelivery_changes_nothing(core: Core) -> None:
    await start_dialog(core)
    expires = int(time.time()) + SUBSCRIPTION_PERIOD
    kw: dict[str, Any] = {
        "telegram_payment_charge_id": "charge-1",
        "total_amount": 250,
        "invoice_payload": payload_for(core, PREMIUM),
        "is_recurring": True,
        "is_first_recurring": True,
        "subscription_expiration_date": expires,
    }
    payment, created = await core.billing.record_payment(USER_ID, **kw)
    assert created and payment.plan == PREMIUM and payment.amount == 250
    ent = await core.billing.entitlement(USER_ID)
    assert ent.is_premium and ent.renews and ent.daily_limit == 50
    assert ent.premium_until == datetime.fromtimestamp(expires, UTC)
    assert (await core.players.get(USER_ID)).is_premium

    from aiogram.types import SuccessfulPayment

    redelivered = SuccessfulPayment(
        currency=STARS, total_amount=250, invoice_payload=kw["invoice_payload"],
        telegram_payment_charge_id="charge-1", provider_payment_charge_id="",
        subscription_expiration_date=expires, is_recurring=True, is_first_recurring=True,
    )
    again, created = await core.billing.record_successful_payment(USER_ID, redelivered)
    assert not created and again.id == payment.id
    assert await scalar(core, select(func.count()).select_from(Payment)) == 1
    assert (await core.billing.entitlement(USER_ID)).premium_until == ent.premium_until


async def test_concurrent_double_delivery_records_once_and_extends_once(
    settings: Settings, redis_cleanup_if_any: None
) -> None:
    """Two processes get the same successful_payment at once: one row, premium extended once."""
    first, second = await open_core(settings), await open_core(settings)
    try:
        await first.players.seen(USER_ID)
        payload = payload_for(first, PREMIUM)
        kw: dict[str, Any] = {"total_amount": 250, "invoice_payload": payload}  # no expiration: +30 days
        for attempt in range(3):
            charge = f"dup-{attempt}"
            results = await asyncio.gather(
                first.billing.record_payment(USER_ID, telegram_payment_charge_id=charge, **kw),
                second.billing.record_payment(USER_ID, telegram_payment_charge_id=charge, **kw),
            )
            assert sorted(created for _, created in results) == [False, True]
            assert results[0][0].id == results[1][0].id
        count = await scalar(first, select(func.count()).select_from(Payment))
        assert count == 3
        until = (await first.billing.entitlement(USER_ID)).premium_until
        assert near(until, utcnow() + timedelta(days=90))  # three payments, each counted once
        packs = await asyncio.gather(
            *(
                core.billing.record_payment(
                    USER_ID, telegram_payment_charge_id="pack-dup", total_amount=100,
                    invoice_payload=payload_for(first, PACK),
                )
                for core in (first, second, first, second)
            )
        )
        assert sum(created for _, created in packs) == 1
        assert (await first.billing.entitlement(USER_ID)).extra_replies == 2
    finally:
        await first.close()
        await second.close()


async def test_renewals_extend_premium(core: Core) -> None:
    payload = payload_for(core, PREMIUM)
    now = int(time.time())
    await core.billing.record_payment(
        USER_ID, telegram_payment_charge_id="r1", total_amount=250, invoice_payload=payload,
        is_recurring=True, is_first_recurring=True, subscription_expiration_date=now + SUBSCRIPTION_PERIOD,
    )
    await core.billing.record_payment(
        USER_ID, telegram_payment_charge_id="r2", total_amount=250, invoice_payload=payload,
        is_recurring=True, subscription_expiration_date=now + 2 * SUBSCRIPTION_PERIOD,
    )
    until = (await core.billing.entitlement(USER_ID)).premium_until
    assert until == datetime.fromtimestamp(now + 2 * SUBSCRIPTION_PERIOD, UTC)
    # a renewal without an expiration date: 30 more days from the current end
    payment, _ = await core.billing.record_payment(
        USER_ID, telegram_payment_charge_id="r3", total_amount=250, invoice_payload=payload, is_recurring=True
    )
    assert until is not None and payment.expires_at == until + timedelta(days=30)
    # an older expiration never moves the end back
    await core.billing.record_payment(
        USER_ID, telegram_payment_charge_id="r4", total_amount=250, invoice_payload=payload,
        is_recurring=True, subscription_expiration_date=now + 10,
    )
    assert (await core.billing.entitlement(USER_ID)).premium_until == until + timedelta(days=30)


async def test_subscription_updates(core: Core) -> None:
    payload = payload_for(core, PREMIUM)
    await core.billing.record_payment(
        USER_ID, telegram_payment_charge_id="s1", total_amount=250, invoice_payload=payload,
        is_recurring=True, is_first_recurring=True,
        subscription_expiration_date=int(time.time()) + SUBSCRIPTION_PERIOD,
    )
    ent = await core.billing.record_subscription_update(USER_ID, payload, "canceled")
    assert ent is not None and ent.is_premium and not ent.renews and ent.subscription_state == "canceled"
    ent = await core.billing.record_subscription_update(USER_ID, payload, "active")
    assert ent is not None and ent.renews
    ent = await core.billing.record_subscription_update(USER_ID, payload, "failed")
    assert ent is not None and not ent.is_premium and ent.subscription_state == "failed"
    assert ent.daily_limit == 3
    assert await core.billing.record_subscription_update(999_999, payload, "canceled") is None


# --------------------------------------------------------------------------- refunds and renewal
async def test_refund_ends_premium_and_a_second_refund_is_refused(core: Core) -> None:
    session = LocalBotSession()
    bot = make_local_bot(session)
    payload = payload_for(core, PREMIUM)
    session.register_payment("pay-1", user_id=USER_ID, total_amount=250, invoice_payload=payload, is_recurring=True)
    await core.billing.record_payment(
        USER_ID, telegram_payment_charge_id="pay-1", total_amount=250, invoice_payload=payload,
        is_recurring=True, is_first_recurring=True,
        subscription_expiration_date=int(time.time()) + SUBSCRIPTION_PERIOD,
    )
    assert (await core.billing.entitlement(USER_ID)).is_premium
    result = await refund(core.billing, bot, "pay-1")
    assert result.premium_ended and result.payment.refunded_at is not None
    assert not (await core.billing.entitlement(USER_ID)).is_premium
    refunds = [c for c in session.calls if c.method == "refundStarPayment"]
    assert [(c.params["user_id"], c.params["telegram_payment_charge_id"]) for c in refunds] == [(USER_ID, "pay-1")]

    with pytest.raises(PaymentAlreadyRefunded):
        await refund(core.billing, bot, "pay-1")
    assert session.counts["refundStarPayment"] == 1  # refused before asking Telegram
    with pytest.raises(UnknownPayment):
        await refund(core.billing, bot, "no-such-charge")
    await bot.session.close()


async def test_pack_refund_and_a_refund_made_elsewhere(core: Core) -> None:
    session = LocalBotSession()
    bot = make_local_bot(session)
    for charge in ("pk-1", "pk-2"):
        payload = payload_for(core, PACK)
        session.register_payment(charge, user_id=USER_ID, total_amount=100, invoice_payload=payload)
        await core.billing.record_payment(
            USER_ID, telegram_payment_charge_id=charge, total_amount=100, invoice_payload=payload
        )
    assert (await core.billing.entitlement(USER_ID)).extra_replies == 4
    result = await refund(core.billing, bot, "pk-1")
    assert result.replies_removed == 2 and not result.premium_ended
    assert (await core.billing.entitlement(USER_ID)).extra_replies == 2
    # refunded in Telegram already (another tool): recorded here, reported as already refunded
    await bot.refund_star_payment(user_id=USER_ID, telegram_payment_charge_id="pk-2")
    with pytest.raises(PaymentAlreadyRefunded):
        await refund(core.billing, bot, "pk-2")
    assert (await core.billing.payment("pk-2")).refunded_at is not None
    assert (await core.billing.entitlement(USER_ID)).extra_replies == 0
    await bot.session.close()


async def test_cancel_renewal(core: Core) -> None:
    session = LocalBotSession()
    bot = make_local_bot(session)
    with pytest.raises(NoSubscription):
        await cancel_renewal(core.billing, bot, USER_ID)
    payload = payload_for(core, PREMIUM)
    now = int(time.time())
    for charge, first, exp in (("c-1", True, now + 100), ("c-2", False, now + SUBSCRIPTION_PERIOD)):
        session.register_payment(charge, user_id=USER_ID, total_amount=250, invoice_payload=payload, is_recurring=True)
        await core.billing.record_payment(
            USER_ID, telegram_payment_charge_id=charge, total_amount=250, invoice_payload=payload,
            is_recurring=True, is_first_recurring=first, subscription_expiration_date=exp,
        )
    ent = await cancel_renewal(core.billing, bot, USER_ID)
    assert ent.is_premium and not ent.renews and ent.subscription_state == "canceled"
    call = next(c for c in session.calls if c.method == "editUserStarSubscription")
    assert call.params["telegram_payment_charge_id"] == "c-1"  # the subscription's first payment
    assert call.params["is_canceled"] is True
    assert (await resume_renewal(core.billing, bot, USER_ID)).renews
    await bot.session.close()


# --------------------------------------------------------------------------- texts
def test_configuration_names(monkeypatch: pytest.MonkeyPatch) -> None:
    from vitte.config import ConfigError, load_settings

    for name, value in {
        "VITTE_FREE_DAILY_REPLIES": "7",
        "VITTE_PREMIUM_DAILY_REPLIES": "700",
        "VITTE_PREMIUM_STARS_MONTH": "300",
        "VITTE_PACK_STARS": "50",
        "VITTE_PACK_REPLIES": "120",
        "VITTE_LOW_QUOTA_THRESHOLD": "2",
        "VITTE_PAYLOAD_SECRET": "s3cret",
        "VITTE_SUPPORT_CONTACT": "@vitte_help",
    }.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert (s.free_daily_replies, s.premium_daily_replies, s.premium_stars_month) == (7, 700, 300)
    assert (s.pack_stars, s.pack_replies, s.low_quota_threshold, s.support_contact) == (50, 120, 2, "@vitte_help")
    assert s.payload_secret is not None and s.payload_secret.get_secret_value() == "s3cret"
    monkeypatch.setenv("VITTE_PREMIUM_STARS_MONTH", "20000")  # Telegram caps subscriptions at 10,000 Stars
    with pytest.raises(ConfigError, match="VITTE_PREMIUM_STARS_MONTH"):
        load_settings()


def test_texts(backend_settings: Settings) -> None:
    s = billing_settings(backend_settings)
    for lang in ("ru", "en"):
        assert "250" in terms_text(s, lang) and "18+" in terms_text(s, lang)
        assert "/paysupport" in paysupport_text(s, lang)
    assert "@help_me" in paysupport_text(s.model_copy(update={"support_contact": "@help_me"}), "ru")
    assert "Пакет" not in terms_text(s.model_copy(update={"pack_replies": 0}), "ru")
    assert [replies_left_text(n, "ru") for n in (1, 2, 5, 11, 21)] == [
        "Остался 1 ответ на сегодня.",
        "Осталось 2 ответа на сегодня.",
        "Осталось 5 ответов на сегодня.",
        "Осталось 11 ответов на сегодня.",
        "Остался 21 ответ на сегодня.",
    ]
    assert replies_left_text(1, "en") == "1 reply left for today."


def test_the_paywall_names_photos_and_voice_replies_when_they_are_on(backend_settings: Settings) -> None:
    """Issue 19: the media perks (Premium's voice replies and photos a day, one of each for
    Stars) are in the reply-quota paywall as on /premium, only while they are on; off, the text
    is what it always was."""
    from types import SimpleNamespace

    free = SimpleNamespace(daily_limit=3, is_premium=False, premium_until=None)
    premium = SimpleNamespace(daily_limit=50, is_premium=True, premium_until=None)
    off = billing_settings(backend_settings, llm_base_url="http://127.0.0.1:9/v1", image_model=None, tts_model=None)
    assert quota_exceeded_text(free, off, "ru") == (
        "Бесплатные ответы на сегодня закончились (3 в день). Новые появятся в 00:00 UTC. "
        "С Премиумом — до 50 ответов в день; пакет добавит 2 ответа за 100 ⭐."
    )
    assert quota_exceeded_text(premium, off, "en") == (
        "Today's Premium limit of 50 replies is used up. New ones arrive at 00:00 UTC. A pack adds 2 replies for 100 ⭐."
    )
    # the models named but no LLM API to ask: still off
    no_api = off.model_copy(update={"llm_base_url": None, "image_model": "gpt-image-1", "tts_model": "tts-1"})
    assert quota_exceeded_text(free, no_api, "ru") == quota_exceeded_text(free, off, "ru")

    on = off.model_copy(
        update={
            "image_model": "gpt-image-1",
            "tts_model": "tts-1",
            "premium_daily_photos": 20,
            "premium_daily_voice_replies": 100,
            "photo_stars": 25,
            "voice_stars": 10,
        }
    )
    assert quota_exceeded_text(free, on, "ru") == (
        "Бесплатные ответы на сегодня закончились (3 в день). Новые появятся в 00:00 UTC. "
        "С Премиумом — до 50 ответов, 100 голосовых ответов и 20 фото в день; пакет добавит 2 ответа за 100 ⭐; "
        "поштучно в /premium: фото — 25 ⭐, голосовой ответ — 10 ⭐."
    )
    assert quota_exceeded_text(free, on, "en") == (
        "Today's free replies (3) are used up. New ones arrive at 00:00 UTC. "
        "Premium gives up to 50 replies, 100 voice replies and 20 photos a day; a pack adds 2 replies for 100 ⭐; "
        "one at a time in /premium: a photo for 25 ⭐, a voice reply for 10 ⭐."
    )
    assert quota_exceeded_text(premium, on, "en") == (  # on Premium: the items, not Premium again
        "Today's Premium limit of 50 replies is used up. New ones arrive at 00:00 UTC. "
        "A pack adds 2 replies for 100 ⭐; one at a time in /premium: a photo for 25 ⭐, a voice reply for 10 ⭐."
    )
    # photos only, not on sale one by one (VITTE_PHOTO_STARS=0); no pack
    photos = on.model_copy(update={"tts_model": None, "photo_stars": 0, "pack_replies": 0})
    assert quota_exceeded_text(free, photos, "ru") == (
        "Бесплатные ответы на сегодня закончились (3 в день). Новые появятся в 00:00 UTC. "
        "С Премиумом — до 50 ответов и 20 фото в день."
    )
    # no voice replies on Premium (0 a day), one for Stars
    voice = on.model_copy(update={"image_model": None, "premium_daily_voice_replies": 0})
    assert quota_exceeded_text(free, voice, "en") == (
        "Today's free replies (3) are used up. New ones arrive at 00:00 UTC. "
        "Premium gives up to 50 replies a day; a pack adds 2 replies for 100 ⭐; "
        "one at a time in /premium: a voice reply for 10 ⭐."
    )


# --------------------------------------------------------------------------- the operator's CLI
class FakeBotApi:
    """A tiny Bot API on loopback: answers refundStarPayment like Telegram, records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self.refunded: set[str] = set()
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            method = request.match_info["method"]
            data = {k: str(v) for k, v in (await request.post()).items()}
            self.calls.append((method, data))
            if method == "refundStarPayment":
                charge = data.get("telegram_payment_charge_id", "")
                if charge in self.refunded:
                    return web.json_response(
                        {"ok": False, "error_code": 400, "description": "Bad Request: CHARGE_ALREADY_REFUNDED"},
                        status=400,
                    )
                self.refunded.add(charge)
                return web.json_response({"ok": True, "result": True})
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)

        async def start() -> web.AppRunner:
            app = web.Application()
            app.router.add_post("/bot{token}/{method}", handle)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            self.url = f"http://127.0.0.1:{port}"
            return runner

        asyncio.set_event_loop(self._loop)
        self._runner = self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())

    def __enter__(self) -> FakeBotApi:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def cli_app() -> typer.Typer:
    """The two sub-apps as the lead registers them in cli/main.py."""
    from cli.payments import payments_app
    from cli.users import user_app

    root = typer.Typer()
    root.add_typer(payments_app, name="payments")
    root.add_typer(user_app, name="user")
    return root


def cli_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {"VITTE_DATABASE_URL": settings.database_url, "VITTE_PAYLOAD_SECRET": "test-payload-secret"}
    if settings.redis_url:
        env |= {"VITTE_REDIS_URL": settings.redis_url, "VITTE_REDIS_PREFIX": settings.redis_prefix}
    return env | extra


@pytest.fixture
def cli_setup(settings: Settings) -> Iterator[Settings]:
    """A player with a dialog, a premium subscription payment and a pack payment."""

    async def go() -> None:
        core = await open_core(settings)
        try:
            await start_dialog(core)
            await core.players.seen(USER_ID, username="anya")
            await core.dialogs.reply(USER_ID, "привет")
            await core.billing.record_payment(
                USER_ID, telegram_payment_charge_id="cli-sub", total_amount=250,
                invoice_payload=payload_for(core, PREMIUM), is_recurring=True, is_first_recurring=True,
                subscription_expiration_date=int(time.time()) + SUBSCRIPTION_PERIOD,
            )
            await core.billing.record_payment(
                USER_ID, telegram_payment_charge_id="cli-pack", total_amount=100,
                invoice_payload=payload_for(core, PACK),
            )
        finally:
            await core.close()

    asyncio.run(go())
    yield settings
    if settings.redis_url:
        import redis

        r = redis.Redis.from_url(settings.redis_url)
        keys = list(r.scan_iter(match=settings.redis_prefix + "*"))
        if keys:
            r.delete(*keys)
        r.close()


PAYMENT_KEYS = {
    "id", "charge_id", "user_id", "plan", "amount", "currency", "is_recurring", "is_first_recurring",
    "extra_replies", "expires_at", "refunded_at", "created_at",
}


def test_cli_payments_list_and_user_show(cli_setup: Settings) -> None:
    runner, app, env = CliRunner(), cli_app(), cli_env(cli_setup)
    done = runner.invoke(app, ["payments", "list", "--json"], env=env)
    assert done.exit_code == 0, done.output
    rows = json.loads(done.stdout)
    assert [r["charge_id"] for r in rows] == ["cli-pack", "cli-sub"]
    assert all(set(r) == PAYMENT_KEYS for r in rows)
    assert rows[1]["plan"] == "premium" and rows[1]["amount"] == 250 and rows[1]["is_recurring"] is True

    done = runner.invoke(app, ["payments", "list", "--user", "@anya", "--json"], env=env)
    assert done.exit_code == 0 and len(json.loads(done.stdout)) == 2
    done = runner.invoke(app, ["payments", "list", "--user", "424242"], env=env)
    assert done.exit_code == 1 and "unknown user" in done.output
    done = runner.invoke(app, ["payments", "list"], env=env)
    assert done.exit_code == 0 and "cli-sub" in done.stdout

    done = runner.invoke(app, ["user", "show", str(USER_ID), "--json"], env=env)
    assert done.exit_code == 0, done.output
    data = json.loads(done.stdout)
    assert set(data) == {
        "user_id", "username", "first_name", "language", "created_at", "blocked", "plan", "is_premium",
        "premium_until", "subscription_state", "renews", "day", "daily_limit", "used_today", "left_today",
        "extra_replies", "extra_photos", "extra_voice", "payments", "dialog",
    }
    assert (data["plan"], data["is_premium"], data["subscription_state"], data["renews"]) == (
        "premium", True, "active", True,
    )
    assert (data["used_today"], data["extra_replies"], data["payments"]) == (1, 2, 2)
    assert set(data["dialog"]) == {"id", "persona", "story", "status"} and data["dialog"]["status"] == "active"
    done = runner.invoke(app, ["user", "show", "@anya"], env=env)
    assert done.exit_code == 0 and "premium until" in done.stdout and "1/" in done.stdout
    done = runner.invoke(app, ["user", "show", "@nobody"], env=env)
    assert done.exit_code == 1 and done.output.strip().count("\n") == 0


def test_cli_refund(cli_setup: Settings) -> None:
    runner, app = CliRunner(), cli_app()
    no_token = runner.invoke(app, ["payments", "refund", "cli-sub", "--yes"], env=cli_env(cli_setup))
    assert no_token.exit_code == 2 and "VITTE_BOT_TOKEN" in no_token.output
    with FakeBotApi() as api:
        env = cli_env(cli_setup, VITTE_BOT_TOKEN=TOKEN, VITTE_TELEGRAM_API_URL=api.url)
        unconfirmed = runner.invoke(app, ["payments", "refund", "cli-sub"], env=env)
        assert unconfirmed.exit_code == 1 and "--yes" in unconfirmed.output
        assert api.calls == []
        done = runner.invoke(app, ["payments", "refund", "cli-sub", "--yes", "--json"], env=env)
        assert done.exit_code == 0, done.output
        data = json.loads(done.stdout)
        assert set(data) == {"payment", "premium_ended", "replies_removed"} and data["premium_ended"] is True
        assert data["payment"]["refunded_at"] is not None
        assert api.calls == [
            ("refundStarPayment", {"user_id": str(USER_ID), "telegram_payment_charge_id": "cli-sub"})
        ]
        twice = runner.invoke(app, ["payments", "refund", "cli-sub", "--yes"], env=env)
        assert twice.exit_code == 1 and "already refunded" in twice.output
        assert len(twice.output.strip().splitlines()) == 1
        unknown = runner.invoke(app, ["payments", "refund", "nope", "--yes"], env=env)
        assert unknown.exit_code == 1 and "unknown payment" in unknown.output
        # refunded in Telegram but not here: recorded, refused with one line
        api.refunded.add("cli-pack")
        elsewhere = runner.invoke(app, ["payments", "refund", "cli-pack", "--yes"], env=env)
        assert elsewhere.exit_code == 1 and "already refunded" in elsewhere.output
        done = runner.invoke(app, ["payments", "refund", "cli-pack", "--yes"], env=env)
        assert done.exit_code == 1
        assert len(api.calls) == 2
    done = runner.invoke(app, ["user", "show", str(USER_ID), "--json"], env=cli_env(cli_setup))
    data = json.loads(done.stdout)
    assert (data["is_premium"], data["extra_replies"]) == (False, 0)


def test_payload_fits_telegram_limits(backend_settings: Settings) -> None:
    from vitte.billing import Billing, plans

    s = billing_settings(backend_settings)
    b = Billing(s, db=None)  # type: ignore[arg-type]
    for plan in plans(s):
        assert plan.to_json("ru")["id"] == plan.id
        if not plan.purchasable:
            continue
        spec = b.make_invoice(9_223_372_036_854_775_807, plan.id, "ru")
        assert len(spec.payload.encode()) <= 128 and 1 <= len(spec.title) <= 32
        assert 1 <= len(spec.description) <= 255 and len(spec.prices) == 1
        assert spec.prices[0].amount == plan.price_stars
        assert spec.kwargs()["provider_token"] == ""
    assert [p.id for p in plans(s)] == ["free", "premium", "pack"]
    assert [p.id for p in plans(s.model_copy(update={"pack_replies": 0}))] == ["free", "premium"]
