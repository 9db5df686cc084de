"""The console's chat header shows the persona's stored portrait as its photo (issue 17, item 4);
a persona without one keeps its initial."""

from __future__ import annotations

from pathlib import Path

from rich.style import Style

from tests.support.players import adult
from tests.test_cards_import import picture_png
from tests.test_catalog import text_chunk, v2, write
from tests.test_console import USER_ID, make_app, peer, started, until
from tui.chat import ChatHeader
from tui.portrait import UPPER_HALF, portrait_cells
from vitte.catalog.cards import read_card_file
from vitte.catalog.seed import seed_cards
from vitte.config import load_settings
from vitte.core import Core


def test_portrait_cells_are_half_blocks_in_the_pictures_colours() -> None:
    cells = portrait_cells(picture_png(size=(64, 64), color="red"))
    assert cells is not None and cells.plain == f"{UPPER_HALF * 4}\n{UPPER_HALF * 4}"
    style = cells.spans[0].style
    assert isinstance(style, Style) and style.color is not None and style.bgcolor is not None
    assert style.color.get_truecolor().red > 200 and style.bgcolor.get_truecolor().green < 50
    assert portrait_cells(b"not a picture") is None


async def test_chat_header_shows_the_portrait(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'console.sqlite3'}"
    core = await Core.open(load_settings(database_url=url), seed_if_empty=True)
    try:
        card = picture_png(
            text_chunk("chara", v2(name="Рыжая", first_mes="Привет!")), size=(200, 200), color="red"
        )
        await seed_cards(core.db, [read_card_file(write(tmp_path / "red.png", card))])
        core.catalog.invalidate()
        await adult(core, USER_ID)
        await core.dialogs.choose(USER_ID, "ryzhaya", "ryzhaya-main")
    finally:
        await core.close()

    app = make_app(database_url=url)
    async with app.run_test(size=(100, 30)) as pilot:
        await started(pilot)
        await until(pilot, lambda: peer(app) == "Рыжая", what="the persona's name in the header")
        avatar = app.query_one("#header", ChatHeader).avatar
        assert UPPER_HALF in str(avatar.render())  # the picture, not the initial "Р"
        picture = app._peer_picture
        assert picture is not None and isinstance(picture.spans[0].style, Style)
        colour = picture.spans[0].style.color
        assert colour is not None and colour.get_truecolor().red > 200
        assert avatar.has_class("-portrait")
