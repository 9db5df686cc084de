"""The persona's portrait in Chromium (issue 17, item 4): the list shows the small size, the
details page the large one, both loaded from /portraits/… under the page's CSP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.webapp import WebAppHarness
from tests.test_cards_import import picture_png
from tests.test_catalog import text_chunk, v2, write
from tests.test_webapp_browser import app, browser, phone_factory  # noqa: F401  (fixtures)
from vitte.catalog.cards import read_card_file
from vitte.catalog.seed import seed_cards

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_portrait_in_the_list_and_on_the_details_page(
    app: WebAppHarness,  # noqa: F811
    phone_factory: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    card = picture_png(
        text_chunk("chara", v2(name="Pic", first_mes="Hello.")), size=(700, 700), color="orange"
    )
    await seed_cards(app.core.db, [read_card_file(write(tmp_path / "pic.png", card))])
    app.core.catalog.invalidate()
    phone = await phone_factory()
    page = phone.page
    await phone.open()
    img = page.locator('.pcard[data-persona=pic] img[src*="/portraits/pic/"]')
    await img.wait_for()
    await phone.until(
        "(() => { const i = document.querySelector('.pcard[data-persona=pic] img');"
        " return i && i.complete && i.naturalWidth === 128; })()"
    )
    assert "-128.webp" in (await img.get_attribute("src") or "")
    # a persona without a picture keeps its drawn monogram
    assert await page.locator(".pcard[data-persona=mila] .monogram").count() == 1

    await page.locator(".pcard[data-persona=pic]").click()
    await page.wait_for_url("**/#/persona/pic")
    await phone.until(
        "(() => { const i = document.querySelector('.hero-avatar img');"
        " return i && i.complete && i.naturalWidth === 512; })()"
    )
    assert phone.console_errors == []
