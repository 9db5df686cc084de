"""Photos in the console through textual-image (issue 19, item 6): where the terminal shows
pictures the bot's photo is an image widget above its caption (forced here to textual-image's
half-cell renderer, which needs no terminal); otherwise — and whenever the bytes cannot be read
— today's bubble: the half-block thumbnail or '🖼 photo', with 'Открыть файл'. Pilot, against
the real core and the local Bot API."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiogram.types import BufferedInputFile

from tests.test_console import _database, _template_db, _with_dialog, button_labels, make_app, until
from tui import photo_view
from vitte.devtools.media_server import png_bytes

__all__ = ["_database", "_template_db"]


@pytest.fixture
def halfcell() -> Iterator[type[Any]]:
    from textual_image.widget import HalfcellImage

    photo_view.widget_class = HalfcellImage
    try:
        yield HalfcellImage
    finally:
        photo_view.widget_class = None


async def test_a_photo_is_drawn_by_the_image_widget_where_the_terminal_can(halfcell: type[Any]) -> None:
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await _with_dialog(pilot, message=None)
        bot = app.backend.bot
        sent = await bot.send_photo(1001, BufferedInputFile(png_bytes("drawn", 48), "p.png"), caption="Это я 📸")
        await until(pilot, lambda: sent.message_id in app.chat_view.rows, what="photo row")
        await pilot.pause()
        row = app.chat_view.rows[sent.message_id]
        assert isinstance(row.picture, halfcell) and row.picture.is_mounted
        assert row.picture.image is not None and row.picture.image.size == (48, 48)
        assert (row.picture.size.width, row.picture.size.height) == photo_view.PHOTO_SIZE
        bubble = str(row.bubble.render())
        assert bubble.startswith("Это я 📸")  # the caption under the picture
        assert "▀" not in bubble and "🖼" not in bubble  # no second, half-block thumbnail
        assert "Открыть файл" in button_labels(app)  # the file still opens

        # bytes that are no picture: the bubble says so, as before
        junk = await bot.send_photo(1001, BufferedInputFile(b"not a picture", "x.png"))
        await until(pilot, lambda: junk.message_id in app.chat_view.rows, what="junk row")
        junk_row = app.chat_view.rows[junk.message_id]
        assert junk_row.picture is None and "🖼" in str(junk_row.bubble.render())


async def test_without_terminal_images_the_bubble_keeps_its_thumbnail() -> None:
    assert photo_view.widget_class is None  # nothing detected: tests and snapshots stay the same
    app = make_app()
    async with app.run_test(size=(100, 40)) as pilot:
        await _with_dialog(pilot, message=None)
        sent = await app.backend.bot.send_photo(1001, BufferedInputFile(png_bytes("thumb"), "p.png"))
        await until(pilot, lambda: sent.message_id in app.chat_view.rows, what="photo row")
        row = app.chat_view.rows[sent.message_id]
        assert row.picture is None and "▀" * 16 in str(row.bubble.render())


def test_detect_finds_no_pictures_off_a_terminal_or_when_switched_off(monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        assert photo_view.detect() is None  # pytest's stdout is no terminal: the bubble
        monkeypatch.setenv("VITTE_CONSOLE_IMAGES", "off")
        photo_view.widget_class = object  # type: ignore[assignment]
        assert photo_view.detect() is None and photo_view.widget_class is None
    finally:
        photo_view.widget_class = None
