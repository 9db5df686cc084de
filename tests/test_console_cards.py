"""A card's macros in the console (Textual Pilot): an alternate greeting picked on the console's
Web App screen opens the chat expanded, with the player's name (issue 17, items 1 and 3)."""

from __future__ import annotations

from tests.test_card_play import card
from tests.test_console import (  # noqa: F401  (the fixtures give each test its seeded SQLite file)
    SQLITE,
    _database,
    _template_db,
    bubble_texts,
    choose_in_webapp,
    make_app,
)
from vitte.catalog.cards import parse_card
from vitte.catalog.seed import seed_cards
from vitte.config import load_settings
from vitte.core import Core


async def test_a_card_with_macros_plays_in_the_console() -> None:
    core = await Core.open(load_settings(database_url=SQLITE))
    await seed_cards(core.db, [parse_card(card(), "rika.json")])
    await core.close()

    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await choose_in_webapp(pilot, persona="rika", story_index=1)  # the alternate greeting
        opening = app.player.chat.last_bot_message()
        assert opening is not None and opening.text == "Аня, is that you? It's Rika!"
        assert "Аня, is that you? It's Rika!" in bubble_texts(app)[-1]
        assert not any("{{" in text or "<USER>" in text for text in bubble_texts(app))
