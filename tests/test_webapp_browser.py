"""The Web App in real headless Chromium, with a fake Telegram.WebApp injected before the page.

One browser for the session; each test gets a fresh web app (SQLite, the shipped personas,
an aiogram Bot pointed at a fake Bot API server) and a fresh 390x844 phone context.
Screenshots of every page in light and dark themes go to artifacts/webapp/.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from tests.support.fake_telegram import DARK_THEME, LIGHT_THEME, fake_telegram_script
from tests.support.initdata import OTHER_BOT_TOKEN, make_init_data
from tests.support.webapp import WebAppHarness, running_webapp
from vitte.billing import verify_payload
from vitte.config import load_settings
from vitte.models import ACTIVE, ENDED

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

CHROMIUM = os.environ.get("VITTE_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "webapp"
ANYA = 1001
ANYA_USER = {"id": ANYA, "first_name": "Аня", "username": "anya", "language_code": "ru"}
MILA_STORY = "mila.rainy-closing"


def _need_chromium() -> None:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"Chromium not found at {CHROMIUM}")
        pytest.skip(f"Chromium not found at {CHROMIUM}")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Any]:
    _need_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest_asyncio.fixture(loop_scope="session")
async def app(sqlite_url: str) -> AsyncIterator[WebAppHarness]:
    async with running_webapp(load_settings(database_url=sqlite_url)) as h:
        yield h


class Phone:
    """A page on a phone-sized context, with helpers for the fake Telegram."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.console_errors: list[str] = []
        page.on("pageerror", lambda exc: self.console_errors.append(str(exc)))

    async def open(self, route: str = "#/") -> None:
        await self.page.goto(self.base_url + route)

    async def until(self, expression: str, within: float = 8.0) -> None:
        """Poll a JS expression (the page's CSP forbids Playwright's eval-based wait_for_function)."""
        deadline = asyncio.get_running_loop().time() + within
        while not await self.page.evaluate(expression):
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"timed out waiting for {expression}")
            await asyncio.sleep(0.05)

    async def tg(self) -> dict[str, Any]:
        return await self.page.evaluate("window.__tg")

    async def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), animations="disabled")


@pytest_asyncio.fixture(loop_scope="session")
async def phone_factory(browser: Any, app: WebAppHarness) -> AsyncIterator[Any]:
    contexts: list[Any] = []

    async def make(
        init_data: str | None = None,
        *,
        user: dict[str, Any] | None = None,
        scheme: str = "light",
        telegram: bool = True,
        confirm_answer: bool = True,
        start_param: str | None = None,
    ) -> Phone:
        ctx = await browser.new_context(
            viewport={"width": 390, "height": 844},
            device_scale_factor=2,
            is_mobile=True,
            has_touch=True,
            color_scheme=scheme,
            locale="ru-RU",
        )
        contexts.append(ctx)
        await ctx.route("https://telegram.org/**", lambda route: route.abort())
        if telegram:
            init = make_init_data(ANYA) if init_data is None else init_data
            script = fake_telegram_script(
                init,
                user=ANYA_USER if user is None else user,
                scheme=scheme,
                confirm_answer=confirm_answer,
                start_param=start_param,
            )
            await ctx.add_init_script(script)
        page = await ctx.new_page()
        page.set_default_timeout(8000)
        return Phone(page, app.base_url)

    yield make
    for ctx in contexts:
        await ctx.close()


async def test_choose_persona_and_story_sends_the_opening(app: WebAppHarness, phone_factory: Any) -> None:
    phone = await phone_factory()
    page = phone.page
    await phone.open()
    await page.locator(".pcard[data-persona=mila]").wait_for()
    assert await page.locator(".pcard").count() == 5
    assert await page.locator(".list-title").inner_text() == "С кем поговорим?"
    assert await page.locator(".pcard.is-current").count() == 0
    tg = await phone.tg()
    assert tg["ready"] == 1 and tg["expanded"] == 1 and tg["backVisible"] is False
    await phone.shot("list-light")

    await page.locator(".pcard[data-persona=mila]").click()
    await page.wait_for_url("**/#/persona/mila")
    button = page.locator(f'[data-story="{MILA_STORY}"]')
    await button.wait_for()
    assert await button.inner_text() == "Начать разговор"
    assert (await phone.tg())["backVisible"] is True
    assert await page.locator(".hero-name").inner_text() == "Мила"
    await phone.shot("details-light")

    await button.click()
    # a new player answers the age gate first ("Мне есть 18"), then the dialog opens
    gate = page.locator(".sheet [data-age=yes]")
    await gate.wait_for()
    assert await gate.inner_text() == "Мне есть 18"
    assert await page.locator(".sheet [data-age=no]").inner_text() == "Мне нет 18"
    await phone.shot("age-gate-light")
    await gate.click()
    await phone.until("window.__tg.closed > 0")
    assert (await app.core.players.get(ANYA)).adult_confirmed_at is not None
    dialog = await app.core.dialogs.current(ANYA)
    assert dialog is not None and (dialog.persona_id, dialog.story_id, dialog.status) == ("mila", MILA_STORY, ACTIVE)
    sent = app.botapi.sent_messages(ANYA)
    story = await app.core.catalog.story(MILA_STORY)
    assert [m["text"] for m in sent] == [story.opening]
    assert int(sent[0]["chat_id"]) == ANYA
    assert (await phone.tg())["confirms"] == []  # a first dialog needs no confirmation
    assert phone.console_errors == []


async def test_refresh_and_continue_asks_then_restarts(app: WebAppHarness, phone_factory: Any) -> None:
    await app.core.players.confirm_adult(ANYA)
    await app.core.players.seen(ANYA, first_name="Аня")
    first = await app.core.dialogs.choose(ANYA, "mila", MILA_STORY)
    phone = await phone_factory()
    page = phone.page
    await phone.open("#/")
    await page.locator(".pcard.is-current[data-persona=mila]").wait_for()
    assert await page.locator(".now-card").count() == 1
    await phone.shot("list-current-light")
    await phone.open("#/persona/mila")
    await page.reload()
    button = page.locator(f'[data-story="{MILA_STORY}"]')
    await button.wait_for()
    assert await button.inner_text() == "Обновить и продолжить"
    other = page.locator('[data-story="mila.white-nights"]')
    assert await other.inner_text() == "Начать разговор"
    await phone.shot("details-current-light")

    await button.click()
    await phone.until("window.__tg.closed > 0")
    tg = await phone.tg()
    assert tg["confirms"] == ["Начать эту историю заново? Память текущего диалога будет очищена."]
    dialogs = await app.dialogs_of(ANYA)
    assert [(d.status, d.story_id) for d in dialogs] == [(ENDED, MILA_STORY), (ACTIVE, MILA_STORY)]
    assert dialogs[0].id == first.dialog.id
    assert len(app.botapi.sent_messages(ANYA)) == 1  # the opening of the new dialog (the first was not via the web)


async def test_declined_confirmation_changes_nothing(app: WebAppHarness, phone_factory: Any) -> None:
    await app.core.players.confirm_adult(ANYA)
    await app.core.dialogs.choose(ANYA, "mila", MILA_STORY)
    phone = await phone_factory(confirm_answer=False)
    page = phone.page
    await phone.open("#/persona/mila")
    button = page.locator(f'[data-story="{MILA_STORY}"]')
    await button.wait_for()
    await button.click()
    await phone.until("window.__tg.confirms.length > 0")
    await phone.until(f"!document.querySelector('[data-story=\"{MILA_STORY}\"]').disabled")
    # switching to another persona while a dialog is active also asks first
    await phone.open("#/persona/lev")
    await page.locator('[data-story="lev.perseids"]').click()
    await phone.until("window.__tg.confirms.length > 1")
    tg = await phone.tg()
    assert tg["closed"] == 0 and "Мила" in tg["confirms"][1]
    assert len(await app.dialogs_of(ANYA)) == 1 and app.botapi.sent_messages() == []


async def test_double_click_opens_one_dialog(app: WebAppHarness, phone_factory: Any) -> None:
    await app.core.players.confirm_adult(ANYA)
    phone = await phone_factory()
    page = phone.page
    await phone.open("#/persona/lev")
    button = page.locator('[data-story="lev.perseids"]')
    await button.wait_for()
    await button.dblclick()
    await phone.until("window.__tg.closed > 0")
    assert len(await app.dialogs_of(ANYA)) == 1
    assert len(app.botapi.sent_messages(ANYA)) == 1


async def test_settings_change_reaches_the_player(app: WebAppHarness, phone_factory: Any) -> None:
    phone = await phone_factory()
    page = phone.page
    await phone.open("#/settings")
    await page.locator("[data-style=long]").wait_for()
    await phone.shot("settings-light")
    await page.locator("[data-style=long]").click()
    await page.locator("[data-style=long][aria-checked=true]").wait_for()
    player = await app.core.players.get(ANYA)
    assert player.style == "long"
    await page.locator("[data-lang=en]").click()
    await page.locator(".topbar-title", has_text="Settings").wait_for()
    player = await app.core.players.get(ANYA)
    assert (player.language, player.style) == ("en", "long")
    # the language follows the player across pages
    await page.evaluate("location.hash = '#/'")
    await page.locator(".list-title", has_text="Who shall we talk to?").wait_for()
    assert await page.locator(".pcard[data-persona=mila] .pcard-name").inner_text() == "Mila"


async def test_delete_my_data(app: WebAppHarness, phone_factory: Any) -> None:
    await app.core.players.confirm_adult(ANYA)
    await app.core.dialogs.choose(ANYA, "mila", MILA_STORY)
    phone = await phone_factory()
    page = phone.page
    await phone.open("#/settings")
    await page.locator("[data-test=delete-data]").click()
    await page.locator(".toast", has_text="Ваши данные удалены").wait_for()
    tg = await phone.tg()
    assert tg["confirms"] == ["Удалить все ваши диалоги и память персонажей? Это нельзя отменить."]
    assert await app.dialogs_of(ANYA) == []


async def test_download_my_data_sends_the_file_to_the_chat(app: WebAppHarness, phone_factory: Any) -> None:
    import json

    await app.core.players.seen(ANYA, first_name="Аня")
    await app.core.players.confirm_adult(ANYA)
    await app.core.dialogs.choose(ANYA, "mila", MILA_STORY)
    phone = await phone_factory()
    page = phone.page
    await phone.open("#/settings")
    button = page.locator("[data-test=export-data]")
    assert "Скачать мои данные" in await button.inner_text()
    await button.click()
    await page.locator(".toast", has_text="Файл с данными отправлен в чат с ботом").wait_for()
    await phone.shot("settings-export-light")
    ((filename, raw, _caption),) = app.botapi.sent_documents(ANYA)  # the bot sent it into the chat
    assert filename == f"vitte-data-{ANYA}.json"
    data = json.loads(raw)
    assert data["profile"]["id"] == ANYA and data["dialogs"][0]["persona_id"] == "mila"
    assert len(await app.dialogs_of(ANYA)) == 1  # nothing else changed
    assert phone.console_errors == []


async def test_forged_init_data_is_rejected(app: WebAppHarness, phone_factory: Any) -> None:
    phone = await phone_factory(make_init_data(ANYA, OTHER_BOT_TOKEN))
    page = phone.page
    await phone.open()
    banner = page.locator(".banner.banner-auth")
    await banner.wait_for()
    assert "Telegram не подтвердил вход" in await banner.inner_text()
    await page.locator(".pcard[data-persona=mila]").wait_for()  # browsing still works
    await phone.shot("forged-light")
    await page.locator(".pcard[data-persona=mila]").click()
    await page.locator(f'[data-story="{MILA_STORY}"]').click()
    await page.locator(".toast-error").wait_for()
    assert await app.dialogs_of(ANYA) == [] and app.botapi.sent_messages() == []
    assert (await phone.tg())["closed"] == 0


async def test_server_unreachable_banner_and_retry(app: WebAppHarness, phone_factory: Any) -> None:
    phone = await phone_factory()
    page = phone.page
    await page.route("**/api/**", lambda route: route.abort("connectionrefused"))
    await phone.open()
    banner = page.locator(".banner.banner-offline")
    await banner.wait_for()
    assert "Нет связи с сервером" in await banner.inner_text()
    await phone.shot("offline-light")
    await page.unroute("**/api/**")
    await page.locator("#banner-retry").click()
    await page.locator(".pcard[data-persona=mila]").wait_for()
    await banner.wait_for(state="hidden")


async def test_unknown_persona_shows_a_message(app: WebAppHarness, phone_factory: Any) -> None:
    phone = await phone_factory()
    page = phone.page
    await phone.open("#/persona/nobody")
    await page.locator(".empty h2", has_text="Такого персонажа нет").wait_for()
    await page.locator(".empty .btn").click()
    await page.locator(".pcard[data-persona=mila]").wait_for()


async def test_premium_page_opens_an_invoice(app: WebAppHarness, phone_factory: Any) -> None:
    phone = await phone_factory()
    page = phone.page
    await phone.open("#/premium")
    buy = page.locator("[data-plan=premium]")
    await buy.wait_for()
    assert await buy.inner_text() == "Оформить за 250 ⭐"
    assert await page.locator(".plan-status-name").inner_text() == "Бесплатный"
    await phone.shot("premium-light")
    await buy.click()
    await phone.until("window.__tg.invoices.length > 0")
    await page.locator("[data-plan=pack]").click()
    await phone.until("window.__tg.invoices.length > 1")
    # openInvoice gets exactly the links the Bot API made, each for THIS player's signed payload
    opened = (await phone.tg())["invoices"]
    calls = [c for c in app.botapi.calls if c.method.lower() == "createinvoicelink"]
    assert opened == [c.result for c in calls]
    signed = [verify_payload(app.core.billing.secret, c.params["payload"]) for c in calls]
    assert [(s.plan_id, s.user_id) for s in signed if s] == [("premium", ANYA), ("pack", ANYA)]
    assert calls[0].params["subscription_period"] == "2592000" and "subscription_period" not in calls[1].params
    assert all(c.params["currency"] == "XTR" and not c.params.get("provider_token") for c in calls)

    # another player's page gets a link of their own, never Anya's
    boris = {"id": 2002, "first_name": "Борис", "language_code": "ru"}
    other = await phone_factory(make_init_data(2002, user=boris), user=boris)
    await other.open("#/premium")
    await other.page.locator("[data-plan=premium]").click()
    await other.until("window.__tg.invoices.length > 0")
    link = (await other.tg())["invoices"][0]
    (call,) = [c for c in app.botapi.calls if c.method.lower() == "createinvoicelink" and c.result == link]
    payload = verify_payload(app.core.billing.secret, call.params["payload"])
    assert payload is not None and payload.user_id == 2002 and link not in opened


async def test_premium_page_sells_one_photo_and_one_voice_reply(app: WebAppHarness, phone_factory: Any) -> None:
    """Issue 19: with photos and voice replies on, the Premium page sells one of each for Stars
    (VITTE_PHOTO_STARS, VITTE_VOICE_STARS) through the same signed invoice link."""
    settings = app.core.settings
    settings.llm_base_url = settings.llm_base_url or "http://127.0.0.1:9/v1"
    settings.image_model, settings.tts_model = "img", "tts-1"
    settings.photo_stars, settings.voice_stars = 25, 10
    phone = await phone_factory()
    page = phone.page
    await phone.open("#/premium")
    voice = page.locator("[data-plan-card=voice]")
    await voice.wait_for()
    assert "Одно голосовое" in await voice.inner_text() and "10 ⭐" in await voice.inner_text()
    assert "Одно фото" in await page.locator("[data-plan-card=photo]").inner_text()
    await page.locator("[data-plan=voice]").click()
    await phone.until("window.__tg.invoices.length > 0")
    (call,) = [c for c in app.botapi.calls if c.method.lower() == "createinvoicelink"]
    payload = verify_payload(app.core.billing.secret, call.params["payload"])
    assert payload is not None and (payload.plan_id, payload.user_id) == ("voice", ANYA)
    assert call.params["currency"] == "XTR" and "subscription_period" not in call.params


async def test_without_telegram_the_page_still_works(app: WebAppHarness, phone_factory: Any) -> None:
    phone = await phone_factory(telegram=False)
    page = phone.page
    await phone.open("#/persona/vera")
    button = page.locator('[data-story="vera.margin-notes"]')
    await button.wait_for()
    assert await page.locator(".hero-back").is_visible()  # no Telegram BackButton: our own
    await button.click()
    await page.locator(".toast", has_text="Откройте приложение из чата с ботом").wait_for()
    assert await app.dialogs_of(ANYA) == []


async def test_deep_link_start_param_and_back_button(app: WebAppHarness, phone_factory: Any) -> None:
    phone = await phone_factory(start_param="persona_kira")
    page = phone.page
    await phone.open("")
    await page.locator(".hero-name", has_text="Кира").wait_for()
    assert not await page.locator(".hero-back").is_visible()  # Telegram's BackButton is used instead
    await page.evaluate("window.__tgPressBack()")
    await page.locator(".pcard[data-persona=kira]").wait_for()
    assert (await phone.tg())["backVisible"] is False


async def test_dark_theme_screenshots_and_theme_change(app: WebAppHarness, phone_factory: Any) -> None:
    await app.core.players.confirm_adult(ANYA)
    await app.core.dialogs.choose(ANYA, "vera", "vera.margin-notes")
    phone = await phone_factory(scheme="dark")
    page = phone.page
    await phone.open()
    await page.locator(".pcard[data-persona=vera].is-current").wait_for()
    scheme = await page.evaluate("document.documentElement.dataset.scheme")
    assert scheme == "dark"
    bg = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(28, 28, 29)"  # secondary_bg_color of the dark theme
    await phone.shot("list-dark")
    await phone.open("#/persona/vera")
    await page.locator('[data-story="vera.margin-notes"]').wait_for()
    await phone.shot("details-dark")
    await phone.open("#/settings")
    await page.locator("[data-style=normal]").wait_for()
    await phone.shot("settings-dark")
    await phone.open("#/premium")
    await page.locator("[data-plan=premium]").wait_for()
    await phone.shot("premium-dark")
    # Telegram switches to the light theme while the app is open
    await page.evaluate("(theme) => window.__tgSetTheme(theme, 'light')", LIGHT_THEME)
    assert await page.evaluate("document.documentElement.dataset.scheme") == "light"
    bg = await page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(242, 242, 247)"
    assert DARK_THEME["secondary_bg_color"] == "#1c1c1d"
    assert phone.console_errors == []


async def test_the_page_texts_and_plurals_are_the_servers(app: WebAppHarness, phone_factory: Any) -> None:
    from vitte.i18n import COMMON, LANGUAGES
    from vitte.webapp.texts import language_texts

    phone = await phone_factory()
    page = phone.page
    await phone.open("#/")
    badge = page.locator(".pcard[data-persona=mila] .badge-count")
    await badge.wait_for()
    stories = len((await app.core.catalog.persona("mila")).stories)
    assert await badge.inner_text() == COMMON.nt("ru", "stories", stories)
    # the browser's plural categories (Intl.PluralRules) pick the catalogue's form for every number
    for lang in LANGUAGES:
        categories = await page.evaluate(
            f"Array.from({{length: 200}}, (_, n) => new Intl.PluralRules('{lang}').select(n))"
        )
        forms = language_texts(lang)["plurals"]["stories"]
        assert [forms[c].format(n=n) for n, c in enumerate(categories)] == [
            COMMON.nt(lang, "stories", n) for n in range(200)
        ]
    assert phone.console_errors == []
