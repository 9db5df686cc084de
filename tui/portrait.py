"""A persona's portrait as terminal cells: each cell is two pixels (upper half block, the top
pixel as its colour and the bottom one as its background), for the chat header's photo."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError
from rich.style import Style
from rich.text import Text

__all__ = ["portrait_cells"]

UPPER_HALF = "\u2580"


def _hex(rgb: tuple[int, ...]) -> str:
    return "#" + "".join(f"{c:02x}" for c in rgb[:3])


def portrait_cells(data: bytes, cols: int = 4, rows: int = 2) -> Text | None:
    """`cols` × `rows` cells showing the picture; None when the bytes are not a picture."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            small = img.convert("RGB").resize((cols, rows * 2), Image.Resampling.BOX)
    except (UnidentifiedImageError, OSError, ValueError):
        return None
    text = Text(no_wrap=True, overflow="crop")
    for row in range(rows):
        for col in range(cols):
            top = small.getpixel((col, 2 * row))
            bottom = small.getpixel((col, 2 * row + 1))
            assert isinstance(top, tuple) and isinstance(bottom, tuple)
            text.append(UPPER_HALF, Style(color=_hex(top), bgcolor=_hex(bottom)))
        if row < rows - 1:
            text.append("\n")
    return text
