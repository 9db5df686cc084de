"""The Web App's "Память" / "Memory" page in real headless Chromium (issue 16, item 4): the
list newest first, add ("запомни: …"), edit, forget, the summary read-only; markup in a fact
is text; forged initData shows no one's memory. Screenshots go to artifacts/webapp/."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.initdata import OTHER_BOT_TOKEN, make_init_data
from tests.support.webapp import WebAppHarness
from tests.test_webapp_browser import ANYA, MILA_STORY, app, browser, phone_factory  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def chatting(app: WebAppHarness) -> int:  # noqa: F811
    await app.core.players.seen(ANYA, first_name="Аня")
    await app.core.players.confirm_adult(ANYA)
    opening = await app.core.dialogs.choose(ANYA, "mila", MILA_STORY)
    return opening.dialog.id


async def texts(page: Any) -> list[str]:
    return [t.strip() for t in await page.locator("[data-test=fact] .fact-text").all_inner_texts()]


async def test_memory_page_lists_adds_edits_and_forgets(app: WebAppHarness, phone_factory: Any) -> None:  # noqa: F811
    dialog_id = await chatting(app)
    await app.core.dialogs.facts.add(ANYA, "у меня кот Барсик")
    await app.core.dialogs.facts.add(ANYA, "<img src=x onerror=alert(1)> люблю грозу")
    assert await app.core.dialogs.store.save_summary(dialog_id, 0, "Они встретились в книжном.", 0)
    phone = await phone_factory()
    page = phone.page
    await phone.open("#/")
    await page.locator("[data-test=to-memory]").click()
    await page.wait_for_url("**/#/memory")
    await page.locator("[data-test=facts]").wait_for()
    assert await page.locator(".topbar-title").inner_text() == "Память"
    assert await texts(page) == ["<img src=x onerror=alert(1)> люблю грозу", "у меня кот Барсик"]
    assert await page.locator("[data-test=fact] img").count() == 0  # markup stays text
    assert await page.locator("[data-test=summary]").inner_text() == "Они встретились в книжном."
    assert await page.locator("[data-test=summary] textarea, [data-test=summary] input").count() == 0
    assert await page.locator("[data-test=fact-new]").get_attribute("placeholder") == "запомни: …"
    await phone.shot("memory-light")

    # add: "запомни: …" typed into the field stores the fact itself
    await page.locator("[data-test=fact-new]").fill("запомни: мой день рождения 5 мая")
    await page.locator("[data-test=fact-add]").click()
    await page.locator(".toast", has_text="Сохранено").wait_for()
    await page.locator("[data-test=fact] .fact-text", has_text="мой день рождения 5 мая").wait_for()
    assert (await texts(page))[0] == "мой день рождения 5 мая"

    # edit the cat's name
    cat = page.locator("[data-test=fact]", has_text="кот Барсик")
    await cat.locator("[data-test=fact-edit]").click()
    await page.locator("[data-test=fact-input]").fill("у меня кот Мурзик")
    await page.locator("[data-test=fact-save]").click()
    await page.locator("[data-test=fact] .fact-text", has_text="кот Мурзик").wait_for()

    # forget the storm
    storm = page.locator("[data-test=fact]", has_text="грозу")
    assert await storm.locator("[data-test=fact-forget]").inner_text() == "Забыть"
    await storm.locator("[data-test=fact-forget]").click()
    await page.locator(".toast", has_text="Забыто").wait_for()
    await phone.until("document.querySelectorAll('[data-test=fact]').length === 2")
    assert await texts(page) == ["мой день рождения 5 мая", "у меня кот Мурзик"]
    shown = await app.core.dialogs.memory_page(ANYA)
    assert [f.text for f in shown.facts] == ["мой день рождения 5 мая", "у меня кот Мурзик"]
    assert phone.console_errors == []


async def test_memory_page_in_english_without_a_dialog_and_forged(
    app: WebAppHarness,  # noqa: F811
    phone_factory: Any,  # noqa: F811
) -> None:
    await app.core.players.seen(ANYA, first_name="Ann", language_code="en")
    phone = await phone_factory(user={"id": ANYA, "first_name": "Ann", "language_code": "en"})
    page = phone.page
    await phone.open("#/memory")
    await page.locator("[data-test=memory-no-dialog]").wait_for()
    assert await page.locator(".topbar-title").inner_text() in ("Память", "Memory")

    await chatting(app)
    await app.core.dialogs.facts.add(ANYA, "A secret only Ann may see")
    forged = await phone_factory(make_init_data(ANYA, OTHER_BOT_TOKEN))
    await forged.open("#/memory")
    await forged.page.locator(".card.notice").wait_for()
    assert "secret" not in await forged.page.locator("#view").inner_text()
    assert await forged.page.locator("[data-test=fact]").count() == 0


async def test_memory_start_param_opens_the_page(app: WebAppHarness, phone_factory: Any) -> None:  # noqa: F811
    await chatting(app)
    phone = await phone_factory(start_param="memory")
    await phone.open()
    await phone.page.wait_for_url("**/#/memory")
    await phone.page.locator("[data-test=facts-empty]").wait_for()
    assert await phone.page.locator("[data-test=facts-empty]").inner_text() == (
        "Пока ничего. Добавь то, что важно помнить."
    )
