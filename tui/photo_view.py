"""Photos in the console drawn by textual-image's widget where the terminal shows pictures
(Sixel or the Terminal Graphics Protocol), else None: the bubble keeps its half-block
thumbnail and 'Открыть файл' (tui.chat).

`detect()` asks the terminal once and must run before the Textual app takes it (the
library's rule); the console's entry points call it. Until then — and in tests — nothing is
detected and the bubble is drawn as before, so snapshots stay the same. `VITTE_CONSOLE_IMAGES=off`
keeps the bubble on any terminal."""

from __future__ import annotations

import io
import logging
import os
from typing import Any

from textual.widget import Widget

log = logging.getLogger("vitte.console")

PHOTO_SIZE = (32, 12)  # columns × rows the picture takes in its bubble

# the textual-image widget class photos are drawn with; None: the half-block bubble
widget_class: type[Widget] | None = None


def detect() -> type[Widget] | None:
    """The widget class for this terminal (Sixel / TGP), else None; sets `widget_class`."""
    global widget_class
    if os.environ.get("VITTE_CONSOLE_IMAGES", "").strip().lower() in ("off", "0", "no", "false"):
        widget_class = None
        return None
    try:
        from textual_image.renderable import Image as Detected
        from textual_image.renderable import SixelImage, TGPImage
        from textual_image.widget import Image as AutoWidget
    except Exception as exc:  # a terminal that cannot be asked: the bubble
        log.info("no terminal images: %s", exc)
        return None
    widget_class = AutoWidget if Detected in (SixelImage, TGPImage) else None
    return widget_class


def photo_widget(data: bytes | None) -> Widget | None:
    """The photo as an image widget (sized PHOTO_SIZE), or None: no widget class, or bytes
    Pillow cannot read (the bubble then says so as before)."""
    if widget_class is None or not data:
        return None
    from PIL import Image as PILImage

    try:
        picture: Any = PILImage.open(io.BytesIO(data))
        picture.load()
    except Exception as exc:
        log.info("photo not drawn: %s", exc)
        return None
    widget = widget_class(picture, classes="photo-image")
    widget.styles.width, widget.styles.height = PHOTO_SIZE
    return widget
