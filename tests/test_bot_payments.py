"""Payments in Telegram Stars through the real Dispatcher and the local Bot API session, on
PostgreSQL + Redis and on SQLite + the in-process cache: the paywall when the quota runs out,
/premium, pre-checkout, successful_payment (once), renewals, the `subscription` update,
"Отменить продление", refunds, /paysupport and /terms."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from pydantic import SecretStr

from tests.support.bot_harness import ADMIN_ID, BotEnv, env, wait_until
from vitte.billing import (
    FORGED_PAYLOAD,
    SUBSCRIPTION_PERIOD,
    WRONG_PRICE,
    WRONG_USER,
    parse_payload,
    verify_payload,
)
from vitte.billing_texts import paysupport_text, pre_checkout_error_text, terms_text
from vitte.bot.factory import bot_commands
from vitte.bot.paywall import fmt_date
from vitte.localapi import LocalPlayer, PaymentDeclined
from vitte.telegram import payments as telegram_payments

__all__ = ["env"]

PREMIUM_STARS = 250
PACK_STARS = 100
PACK_REPLIES = 200


@pytest.fixture
def shop(env: BotEnv) -> BotEnv:
    s = env.core.settings
    s.payload_secret = SecretStr("test-payload-secret")
    s.free_daily_replies = 1
    s.premium_stars_month = PREMIUM_STARS
    s.pack_stars = PACK_STARS
    s.pack_replies = PACK_REPLIES
    return env


def _stars_invoice(params: dict, amount: int) -> None:
    """What Telegram requires of an invoice in Stars, as aiogram sent it."""
    assert params["currency"] == "XTR"
    # billing passes provider_token="" and aiogram's session drops empty fields from the
    # request, so Telegram gets no provider_token at all: empty, as Stars require
    assert params.get("provider_token", "") == ""
    assert len(params["prices"]) == 1 and params["prices"][0]["amount"] == amount


async def _paywall(env: BotEnv, p: LocalPlayer) -> tuple[str, str]:
    """Use up the day's replies; the refusal offers Premium (a link) and the pack (a callback)."""
    await env.choose(p)
    await p.send("раз")
    await p.send("два")
    refusal = p.last_bot_message()
    assert refusal is not None and refusal.text is not None
    premium, pack = refusal.iter_buttons()
    assert premium.url is not None and premium.callback_data is None
    assert pack.callback_data is not None and pack.url is None
    return refusal.text, premium.url


def _link_call(env: BotEnv, link: str) -> dict:
    (call,) = [c for c in env.session.calls_of("createInvoiceLink") if c.result == link]
    return call.params


async def test_quota_offer_pre_checkout_payment_renewal_cancel_refund(shop: BotEnv) -> None:
    env = shop
    p = env.player()
    text, link = await _paywall(env, p)
    assert text.startswith("Бесплатные ответы на сегодня закончились")
    assert p.buttons() == [
        f"💎 Премиум — {PREMIUM_STARS} ⭐ / 30 дней",
        f"➕ {PACK_REPLIES} ответов — {PACK_STARS} ⭐",
    ]
    assert len(env.llm.completions) == 1

    # the subscription is sold through a link made for THIS player
    params = _link_call(env, link)
    _stars_invoice(params, PREMIUM_STARS)
    assert params["subscription_period"] == SUBSCRIPTION_PERIOD == 2_592_000
    payload = params["payload"]
    signed = verify_payload(env.core.billing.secret, payload)
    assert signed is not None and (signed.plan_id, signed.user_id) == ("premium", p.user_id)

    # the pack: a callback that sends an invoice (sendInvoice; no subscription there)
    await p.click("➕")
    (send,) = env.sent("sendInvoice", p.user_id)
    _stars_invoice(send.params, PACK_STARS)
    assert "subscription_period" not in send.params
    assert parse_payload(send.params["payload"]).plan_id == "pack"
    assert p.last_bot_message().kind == "invoice"

    # pre-checkout: another player's invoice, a wrong price, a forged payload are refused
    other = env.player(2002, language_code="en")
    answer = other.pre_checkout_answer(await other.pre_checkout(payload, PREMIUM_STARS))
    assert answer == {
        "ok": False,
        "error_message": pre_checkout_error_text(WRONG_USER, "en"),
        "ts": answer["ts"],
    }
    answer = p.pre_checkout_answer(await p.pre_checkout(payload, 1))
    assert not answer["ok"] and answer["error_message"] == pre_checkout_error_text(WRONG_PRICE, "ru")
    forged = payload.rsplit(":", 1)[0] + ":AAAAAAAAAAAAAAAAAAAAAA"
    answer = p.pre_checkout_answer(await p.pre_checkout(forged, PREMIUM_STARS))
    assert not answer["ok"] and answer["error_message"] == pre_checkout_error_text(FORGED_PAYLOAD, "ru")
    assert await env.core.billing.list_payments(p.user_id) == []

    # the player pays the link: pre-checkout ok, then successful_payment
    await p.buy(link=link, charge_id="charge-first")
    assert [a["ok"] for a in env.session.pre_checkout_answers.values()].count(True) == 1
    ent = await env.core.billing.entitlement(p.user_id)
    assert ent.is_premium and ent.renews
    expected_until = env.session.payments["charge-first"]["subscription_expiration_date"]
    assert ent.premium_until == datetime.fromtimestamp(expected_until, UTC)
    thanks = p.last_bot_text()
    assert thanks.startswith("*Кира щурится поверх очков")  # in the voice of the active persona
    assert thanks.endswith(f"Премиум включён до {fmt_date(ent.premium_until, 'ru')}.")

    # the quota is lifted
    await p.send("три")
    assert p.last_bot_text() == "You said: три"

    # /premium: the plan, the renewal date, today's quota; cancel instead of buy
    await p.send("/premium")
    view = p.last_bot_text()
    assert f"Ваш тариф: Премиум — продлится {fmt_date(ent.premium_until, 'ru')}" in view
    assert "Сегодня осталось 998 из 1000" in view
    assert f"Премиум — {PREMIUM_STARS} ⭐ за 30 дней" in view
    assert p.buttons() == [f"➕ {PACK_REPLIES} ответов — {PACK_STARS} ⭐", "Отменить продление"]

    # a renewal moves the end forward, with a short note
    renewed_until = expected_until + SUBSCRIPTION_PERIOD
    await p.pay(
        payload,
        PREMIUM_STARS,
        charge_id="charge-renewal",
        is_recurring=True,
        subscription_expiration_date=renewed_until,
    )
    ent = await env.core.billing.entitlement(p.user_id)
    assert ent.premium_until == datetime.fromtimestamp(renewed_until, UTC)
    assert (
        p.last_bot_text()
        == f"⭐ Премиум продлён до {fmt_date(ent.premium_until, 'ru')}. Спасибо, что вы с нами!"
    )
    assert len(await env.core.billing.list_payments(p.user_id)) == 2

    # the player cancels in Telegram: the `subscription` update is recorded and shown
    await p.subscription_update("canceled", payload)
    assert (
        p.last_bot_text()
        == f"Продление Премиума отключено. Премиум действует до {fmt_date(ent.premium_until, 'ru')}."
    )
    await p.send("/premium")
    assert f"Премиум — до {fmt_date(ent.premium_until, 'ru')}, продление отключено" in p.last_bot_text()
    assert "Отменить продление" not in p.buttons()
    assert "Возобновить продление" in p.buttons()

    # the operator refunds the renewal: the period it paid for ends now
    result = await telegram_payments.refund(env.core.billing, env.bot, "charge-renewal")
    assert result.premium_ended
    (refund,) = env.sent("refundStarPayment")
    assert refund.params == {"user_id": p.user_id, "telegram_payment_charge_id": "charge-renewal"}
    assert not (await env.core.billing.entitlement(p.user_id)).is_premium
    await p.send("/premium")
    assert "Ваш тариф: Бесплатный" in p.last_bot_text()
    assert p.buttons()[0].startswith("💎 Премиум")
    await p.send("четыре")
    assert p.last_bot_text().startswith("Бесплатные ответы на сегодня закончились")


async def test_the_same_successful_payment_twice_records_once_and_thanks_once(shop: BotEnv) -> None:
    env = shop
    p = env.player()
    await p.send("/start")  # no dialog: the plain thanks
    payload = env.core.billing.make_invoice(p.user_id, "pack").payload
    update = await p.pay(payload, PACK_STARS, charge_id="charge-pack")
    await p.resend(update)  # the same update again (same update_id)
    await p.pay(payload, PACK_STARS, charge_id="charge-pack")  # the same charge, a new update
    (payment,) = await env.core.billing.list_payments(p.user_id)
    assert payment.extra_replies == PACK_REPLIES
    assert (await env.core.billing.entitlement(p.user_id)).extra_replies == PACK_REPLIES
    thanks = [m.text for m in p.bot_messages() if m.text and m.text.startswith("Спасибо!")]
    assert thanks == [f"Спасибо! Добавлено: {PACK_REPLIES} ответов."]


async def test_pre_checkout_is_answered_while_a_reply_streams(shop: BotEnv) -> None:
    """The per-player lock is not taken for pre_checkout_query: it never waits for a reply."""
    env = shop
    env.core.settings.free_daily_replies = 30
    env.llm.default_reply = " ".join(f"Sentence {i} is here and goes on." for i in range(60))
    env.llm.tps = 60  # several seconds of streaming
    p = env.player()
    await env.choose(p)
    sending = asyncio.create_task(p.send("Рассказывай"))
    try:
        await wait_until(lambda: p.current_draft is not None and len(p.current_draft.text) > 10)
        payload = env.core.billing.make_invoice(p.user_id, "premium").payload
        started = time.monotonic()
        update = await asyncio.wait_for(p.pre_checkout(payload, PREMIUM_STARS), 2.0)
        assert time.monotonic() - started < 1.0
        assert p.pre_checkout_answer(update)["ok"] is True
        assert not sending.done()  # the reply is still being written
    finally:
        await p.stop_generation()
        await asyncio.wait_for(sending, 5)


async def test_cancel_and_resume_renewal_from_premium(shop: BotEnv) -> None:
    env = shop
    p = env.player(3003, language_code="en")
    await p.send("/premium")
    view = p.last_bot_text()
    assert view.startswith("💎 Premium\n\nYour plan: Free\nLeft today: 1 of 1")
    link = p.button("💎 Premium")[1].url
    await p.buy(link=link, charge_id="sub-1")
    payload = _link_call(env, link)["payload"]
    until = (await env.core.billing.entitlement(p.user_id)).premium_until
    assert p.last_bot_text() == f"Thank you! Premium is on until {fmt_date(until, 'en')}."  # no dialog: plain

    await p.send("/premium")
    assert f"Your plan: Premium — renews on {fmt_date(until, 'en')}" in p.last_bot_text()
    await p.click("Cancel renewal")
    assert p.last_bot_text().startswith("Cancel the Premium renewal?")
    await p.click("Back")
    assert p.last_bot_text().startswith("💎 Premium")
    await p.click("Cancel renewal")
    await p.click("Yes, cancel it")
    (edit,) = env.sent("editUserStarSubscription")
    assert edit.params == {"user_id": p.user_id, "telegram_payment_charge_id": "sub-1", "is_canceled": True}
    assert p.last_bot_text().startswith(f"Renewal is off. Premium stays on until {fmt_date(until, 'en')}.")
    assert p.buttons()[-1] == "Resume renewal"
    ent = await env.core.billing.entitlement(p.user_id)
    assert ent.is_premium and not ent.renews

    # Telegram then reports the cancellation: recorded already, no second message
    before = len(p.bot_messages())
    await p.subscription_update("canceled", payload)
    assert len(p.bot_messages()) == before

    await p.click("Resume renewal")
    assert env.sent("editUserStarSubscription")[-1].params["is_canceled"] is False
    assert p.last_bot_text().startswith(f"Renewal is on again: Premium renews on {fmt_date(until, 'en')}.")
    assert (await env.core.billing.entitlement(p.user_id)).renews

    # a failed renewal ends Premium now and says so
    await p.subscription_update("failed", payload)
    assert p.last_bot_text().startswith("Premium could not be renewed")
    assert not (await env.core.billing.entitlement(p.user_id)).is_premium
    await p.send("/premium")
    assert "The last renewal did not go through" in p.last_bot_text()


async def test_english_paywall_and_a_declined_payment(shop: BotEnv) -> None:
    env = shop
    p = env.player(2002, language_code="en")
    text, link = await _paywall(env, p)
    assert text.startswith("Today's free replies (1) are used up.")
    assert p.buttons() == [
        f"💎 Premium — {PREMIUM_STARS} ⭐ / 30 days",
        f"➕ {PACK_REPLIES} replies — {PACK_STARS} ⭐",
    ]
    # someone else pays this player's link: refused before any Stars move
    thief = env.player(2003, language_code="en")
    with pytest.raises(PaymentDeclined) as info:
        await thief.buy(link=link)
    assert info.value.answer["error_message"] == pre_checkout_error_text(WRONG_USER, "en")
    assert await env.core.billing.list_payments() == []


async def test_paysupport_terms_and_the_command_list(shop: BotEnv) -> None:
    env = shop
    p = env.player()
    await p.send("/paysupport")
    assert p.last_bot_text() == paysupport_text(env.core.settings, "ru")
    await p.send("/terms")
    assert p.last_bot_text() == terms_text(env.core.settings, "ru")
    en = env.player(2002, language_code="en")
    await en.send("/terms")
    assert en.last_bot_text() == terms_text(env.core.settings, "en")
    await en.send("/paysupport")
    assert en.last_bot_text() == paysupport_text(env.core.settings, "en")

    # "/paysupport <problem>" goes to the admins, with the player's recent payments
    await p.send("/paysupport оплатил Премиум, но он не включился")
    assert p.last_bot_text().startswith("Спасибо, передали ваше сообщение в поддержку")
    (forwarded,) = env.sent("sendMessage", ADMIN_ID)
    assert "оплатил Премиум, но он не включился" in forwarded.params["text"]
    assert f"id {p.user_id}" in forwarded.params["text"]

    await p.send("/help")
    for command in ("/premium", "/paysupport", "/terms"):
        assert command in p.last_bot_text()
    for lang in ("ru", "en"):
        names = [c.command for c in bot_commands(lang)]
        assert {"premium", "paysupport", "terms"} <= set(names)
        assert names[:2] == ["start", "chat"]

    # the runner sets them on start
    from vitte.bot.runner import _startup

    await _startup(env.bot, env.core, env.core.settings)
    for lang in ("ru", "en"):
        listed = [c["command"] for c in env.session.commands[("type=default", lang)]]
        assert {"premium", "paysupport", "terms"} <= set(listed)


async def test_polling_asks_telegram_for_payment_updates(shop: BotEnv) -> None:
    used = set(shop.dp.resolve_used_update_types())
    assert {"pre_checkout_query", "subscription", "message", "callback_query"} <= used
