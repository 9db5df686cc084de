"""The Web App's Settings offer "Голосом отвечать: никогда / на голосовые / всегда" when the bot
can speak (VITTE_TTS_MODEL), in Chromium; the API keeps the choice for this initData's player
only and refuses unknown values (issue 19, item 2)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.support.initdata import make_init_data
from tests.support.webapp import WebAppHarness, running_webapp
from tests.test_webapp_browser import ANYA, browser, phone_factory
from vitte.config import load_settings

__all__ = ["browser", "phone_factory"]

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


@pytest_asyncio.fixture(loop_scope="session")
async def app(sqlite_url: str) -> AsyncIterator[WebAppHarness]:
    async with running_webapp(load_settings(database_url=sqlite_url)) as h:
        yield h


def _speaks(app: WebAppHarness, on: bool) -> None:
    media = app.core.dialogs.media
    if media is None:  # the harness has no LLM base URL: give the engine a client that speaks
        from vitte.llm.media import MediaAPI

        media = MediaAPI("http://127.0.0.1:9/v1", None)
        app.core.dialogs.media = app.core.dialogs.speech.media = media
    media.tts_model = "tts-1" if on else None


async def test_settings_page_offers_voice_replies_and_keeps_the_choice(app: WebAppHarness, phone_factory: Any) -> None:
    _speaks(app, True)
    phone = await phone_factory()
    page = phone.page
    await phone.open("#/settings")
    await page.locator("[data-voice=never][aria-checked=true]").wait_for()
    assert await page.locator(".section-title", has_text="Голосом отвечать").count() == 1
    assert [await page.locator(f"[data-voice={m}] .row-title").inner_text() for m in ("never", "voice", "always")] == [
        "никогда",
        "на голосовые",
        "всегда",
    ]
    await phone.shot("settings-voice-light")
    await page.locator("[data-voice=voice]").click()
    await page.locator("[data-voice=voice][aria-checked=true]").wait_for()
    assert (await app.core.players.get(ANYA)).voice_replies == "voice"
    await page.locator("[data-lang=en]").click()
    await page.locator(".section-title", has_text="Answer by voice").wait_for()
    assert await page.locator("[data-voice=voice] .row-title").inner_text() == "to voice messages"
    assert not phone.console_errors


async def test_settings_page_hides_voice_replies_when_the_bot_cannot_speak(app: WebAppHarness, phone_factory: Any) -> None:
    _speaks(app, False)
    phone = await phone_factory()
    page = phone.page
    await phone.open("#/settings")
    await page.locator("[data-style=normal]").wait_for()
    assert await page.locator("[data-voice]").count() == 0


async def test_the_api_refuses_an_unknown_voice_mode(app: WebAppHarness) -> None:
    _speaks(app, True)
    headers = {"Authorization": f"tma {make_init_data(ANYA)}"}
    ok = await app.client.post("/api/settings", json={"voice_replies": "always"}, headers=headers)
    assert ok.status == 200
    body = await ok.json()
    assert (body["voice_replies"], body["voice_available"]) == ("always", True)
    bad = await app.client.post("/api/settings", json={"voice_replies": "sometimes"}, headers=headers)
    assert bad.status == 400 and (await bad.json())["code"] == "bad_setting"
    assert (await app.core.players.get(ANYA)).voice_replies == "always"  # nothing changed
    forged = await app.client.post("/api/settings", json={"voice_replies": "never"}, headers={"Authorization": "tma x"})
    assert forged.status == 401
    assert (await app.core.players.get(ANYA)).voice_replies == "always"
