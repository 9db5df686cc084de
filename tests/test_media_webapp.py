"""The Web App's part of issue 19's Stars items, in real headless Chromium: the Premium page's
status card says how many photos and voice replies the player bought and has not spent yet
("Куплено в запас: 1 фото, 2 голосовых ответа"), with the catalogue's plural forms; the counts
come from /api/me (SQLite, payments recorded as the bot records them)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.initdata import make_init_data
from tests.support.webapp import WebAppHarness
from tests.test_webapp_browser import ANYA, Phone, app, browser, phone_factory  # noqa: F401
from vitte.media_allowance import PHOTO, VOICE

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

BOUGHT = ".plan-status-bought"


def _items_on(app: WebAppHarness) -> None:  # noqa: F811
    settings = app.core.settings
    settings.llm_base_url = settings.llm_base_url or "http://127.0.0.1:9/v1"
    settings.image_model, settings.tts_model = "img", "tts-1"
    settings.photo_stars, settings.voice_stars = 25, 10
    settings.free_daily_photos = 0  # a photo asked for spends a bought one


async def _buy(app: WebAppHarness, user_id: int, kind: str, times: int = 1, language: str = "ru") -> None:  # noqa: F811
    """Payments of the photo / voice item, recorded as the bot records Telegram's."""
    billing = app.core.billing
    await app.core.players.seen(user_id, language_code=language)
    for _ in range(times):
        done = len(await billing.list_payments(user_id))
        _, created = await billing.record_payment(
            user_id,
            telegram_payment_charge_id=f"charge-{user_id}-{kind}-{done}",
            total_amount=25 if kind == PHOTO else 10,
            invoice_payload=billing.make_invoice(user_id, kind).payload,
        )
        assert created


async def _bought_text(phone: Phone) -> str | None:
    """The Premium page's status card's line (None: no such line), the page loaded afresh (it
    reads /api/me once per load)."""
    await phone.open("#/premium")
    await phone.page.reload()
    await phone.page.locator(".plan-status-name").wait_for()  # the card: /api/me answered
    line = phone.page.locator(BOUGHT)
    return await line.inner_text() if await line.count() else None


async def test_the_premium_page_shows_the_photos_and_voice_replies_bought_and_not_spent(
    app: WebAppHarness,  # noqa: F811
    phone_factory: Any,  # noqa: F811
) -> None:
    _items_on(app)
    phone = await phone_factory()
    assert await _bought_text(phone) is None  # nothing bought: no line

    await _buy(app, ANYA, PHOTO)
    assert await _bought_text(phone) == "Куплено в запас: 1 фото"
    await _buy(app, ANYA, VOICE)
    assert await _bought_text(phone) == "Куплено в запас: 1 фото, 1 голосовой ответ"
    await _buy(app, ANYA, VOICE)
    assert await _bought_text(phone) == "Куплено в запас: 1 фото, 2 голосовых ответа"
    await _buy(app, ANYA, VOICE, 3)
    assert await _bought_text(phone) == "Куплено в запас: 1 фото, 5 голосовых ответов"
    await phone.shot("premium-bought-light")

    taken = await app.core.dialogs.allowance.take(ANYA, PHOTO)  # the photo asked for: spent
    assert taken.bought
    assert await _bought_text(phone) == "Куплено в запас: 5 голосовых ответов"
    assert phone.console_errors == []


async def test_the_counts_are_the_players_own_and_in_their_language(
    app: WebAppHarness,  # noqa: F811
    phone_factory: Any,  # noqa: F811
) -> None:
    _items_on(app)
    await _buy(app, ANYA, VOICE, 2)
    john = {"id": 3003, "first_name": "John", "language_code": "en"}
    await _buy(app, 3003, PHOTO, 2, language="en")
    await _buy(app, 3003, VOICE, language="en")
    phone = await phone_factory(make_init_data(3003, user=john), user=john)
    assert await _bought_text(phone) == "Bought, not used yet: 2 photos, 1 voice reply"
    anya = await phone_factory()
    assert await _bought_text(anya) == "Куплено в запас: 2 голосовых ответа"
