"""The Web App's "Как к вам обращаться" (issue 17: the name the player sets) in real headless
Chromium (SQLite): Settings stores it, the persona's texts read it for {{user}}, a name nothing
usable is left of is refused with the catalogue's message, and emptying the field brings the
Telegram first name back."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.support.webapp import WebAppHarness
from tests.test_webapp_browser import ANYA, app, browser, phone_factory  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def stored_name(app: WebAppHarness, want: str | None, within: float = 8.0) -> str | None:  # noqa: F811
    """The stored name once it is `want`, or what is stored when `within` seconds have passed."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        name = (await app.core.players.get(ANYA)).name
        if name == want or asyncio.get_running_loop().time() > deadline:
            return name
        await asyncio.sleep(0.05)


async def test_settings_set_the_name_the_persona_calls_the_player(app: WebAppHarness, phone_factory: Any) -> None:  # noqa: F811
    await app.core.players.seen(ANYA, first_name="Аня", language_code="ru")
    phone = await phone_factory()
    page = phone.page
    await phone.open("#/settings")
    field = page.locator("[data-test=call-me]")
    await field.wait_for()
    assert await page.locator(".section-title", has_text="Как к вам обращаться").count() == 1
    assert (await field.input_value(), await field.get_attribute("placeholder")) == ("", "Аня")

    await field.fill("  Анечка ")
    await field.press("Enter")
    assert await stored_name(app, "Анечка") == "Анечка"
    await page.locator(".toast", has_text="Сохранено").wait_for()
    await phone.until("document.querySelector('[data-test=call-me]').value === 'Анечка'")
    await phone.shot("settings-name")

    # the persona's texts call the player so ({{user}} in a story's premise)
    await page.evaluate("location.hash = '#/persona/mila'")
    premise = page.locator("[data-story-card='mila.rainy-closing'] .story-premise")
    await premise.wait_for()
    assert "а зонта у Анечка нет" in (await premise.inner_text())

    # nothing usable left: refused with the catalogue's message, the name kept
    await page.evaluate("location.hash = '#/settings'")
    field = page.locator("[data-test=call-me]")
    await phone.until("document.querySelector('[data-test=call-me]') && document.querySelector('[data-test=call-me]').value === 'Анечка'")
    await field.fill("{{ }}")
    await field.press("Enter")
    await page.locator(".toast-error", has_text="В имени должны быть буквы или цифры.").wait_for()
    assert (await app.core.players.get(ANYA)).name == "Анечка"

    # empty: the Telegram first name again
    await field.fill("")
    await field.press("Enter")
    assert await stored_name(app, None) is None
    await page.evaluate("location.hash = '#/persona/mila'")
    premise = page.locator("[data-story-card='mila.rainy-closing'] .story-premise")
    await premise.wait_for()
    await phone.until("document.querySelector(\"[data-story-card='mila.rainy-closing'] .story-premise\").textContent.indexOf('а зонта у Аня нет') >= 0")
    assert phone.console_errors == []
