"""The Web App's part of issue 18: the browser sends its time zone (Intl) — in real headless
Chromium with a Tokyo clock — and Settings has "Пусть персонаж пишет первым" and the time zone;
the API checks initData and its input (SQLite)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.fake_telegram import fake_telegram_script
from tests.support.initdata import make_init_data
from tests.support.webapp import WebAppHarness
from tests.test_webapp_browser import ANYA, ANYA_USER, Phone, app, browser  # noqa: F401
from vitte.initiative.prefs import prefs_of

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def tokyo_phone(browser: Any, app: WebAppHarness, zone: str = "Asia/Tokyo") -> tuple[Phone, Any]:  # noqa: F811
    ctx = await browser.new_context(viewport={"width": 390, "height": 844}, locale="ru-RU", timezone_id=zone)
    await ctx.route("https://telegram.org/**", lambda route: route.abort())
    await ctx.add_init_script(fake_telegram_script(make_init_data(ANYA), user=ANYA_USER))
    page = await ctx.new_page()
    page.set_default_timeout(8000)
    return Phone(page, app.base_url), ctx


async def prefs(app: WebAppHarness) -> Any:  # noqa: F811
    return await prefs_of(app.core.db, app.core.settings, ANYA)


async def stored_zone(app: WebAppHarness, want: str, within: float = 8.0) -> str:  # noqa: F811
    """The stored zone once it is `want`, or what is stored when `within` seconds have passed."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        zone = (await prefs(app)).timezone
        if zone == want or asyncio.get_running_loop().time() > deadline:
            return zone
        await asyncio.sleep(0.05)


async def test_the_browser_sends_its_zone_and_settings_change_it(app: WebAppHarness, browser: Any) -> None:  # noqa: F811
    await app.core.players.seen(ANYA, first_name="Аня", language_code="ru")
    await app.core.players.confirm_adult(ANYA)
    assert (await prefs(app)).timezone == "Europe/Moscow"  # the default for ru
    phone, ctx = await tokyo_phone(browser, app)
    try:
        page = phone.page
        await phone.open("#/settings")
        await page.locator("[data-test=nudges-toggle]").wait_for()
        await phone.until("document.querySelector('[data-test=timezone]').value === 'Asia/Tokyo'")
        p = await prefs(app)
        assert (p.timezone, p.chosen, p.on) == ("Asia/Tokyo", True, True)
        assert await page.locator("[data-test=nudges] .section-title").text_content() == "Пусть персонаж пишет первым"
        assert await page.locator("[data-test=nudges-toggle]").get_attribute("aria-checked") == "true"
        assert await page.locator("[data-test=timezone]").input_value() == "Asia/Tokyo"
        # off
        await page.locator("[data-test=nudges-toggle]").click()
        await phone.until("document.querySelector('[data-test=nudges-toggle]').getAttribute('aria-checked') === 'false'")
        assert (await prefs(app)).on is False
        # the player's own choice of zone; the browser's no longer replaces it
        await page.locator("[data-test=timezone]").select_option("Europe/Berlin")
        # the toggle's "Сохранено" may still be on screen: wait for the store, not for a toast
        assert await stored_zone(app, "Europe/Berlin") == "Europe/Berlin"
        await phone.until("document.querySelector('[data-test=timezone]').value === 'Europe/Berlin'")
        await phone.shot("settings-nudges")
        assert phone.console_errors == []
    finally:
        await ctx.close()
    again, ctx = await tokyo_phone(browser, app)
    try:
        await again.open("#/settings")
        await again.page.locator("[data-test=nudges-toggle]").wait_for()
        await again.until("document.querySelector('[data-test=timezone]').value === 'Europe/Berlin'")
        assert (await prefs(app)).timezone == "Europe/Berlin"
    finally:
        await ctx.close()


async def test_the_api_checks_initdata_and_input(app: WebAppHarness) -> None:  # noqa: F811
    import aiohttp

    good = {"Authorization": f"tma {make_init_data(ANYA)}"}
    async with aiohttp.ClientSession() as http:
        url = app.base_url.rstrip("/") + "/api/me/nudges"
        async with http.get(url) as r:
            assert r.status == 401
        async with http.get(url, headers={"Authorization": "tma user=%7B%7D&hash=00"}) as r:
            assert r.status == 401
        async with http.get(url, headers=good) as r:
            assert r.status == 200
            assert await r.json() == {"available": True, "nudges": True, "timezone": "Europe/Moscow", "timezone_set": False}
        for body in ({"timezone": "Mars/Base"}, {"nudges": "yes"}, {}, {"timezone": "x" * 200}):
            async with http.post(url, json=body, headers=good) as r:
                assert r.status == 400, body
        async with http.post(url, json={"nudges": False, "timezone": "America/New_York"}, headers=good) as r:
            assert r.status == 200
            data = await r.json()
            assert (data["nudges"], data["timezone"], data["timezone_set"]) == (False, "America/New_York", True)
