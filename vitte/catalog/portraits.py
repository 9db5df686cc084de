"""Portraits: a card's picture decoded (bounded) and resized with Pillow to the sizes Vitte serves.

Every size is a square WebP (cropped to the centre, EXIF orientation applied, metadata dropped),
so the bytes never carry what the card's file carried beside the picture. The digest names the
whole set: it goes in the URL, so a changed picture is a new URL and a URL's bytes never change.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from vitte.catalog.errors import CardError

__all__ = ["MAX_PIXELS", "SIZES", "PictureUnreadable", "Portrait", "make_portrait"]

SIZES = (512, 128)  # the details page / the list and the console's chat header
MEDIA_TYPE = "image/webp"
MAX_PIXELS = 40_000_000  # width × height of the picture in the card
MAX_SIDE = 16_384
QUALITY = 82


class PictureUnreadable(CardError):
    """The card's picture is not one Pillow reads (damaged, or another format): the card can do
    without it. A picture over the limits is a plain CardError: the card is refused."""


@dataclass(frozen=True)
class Portrait:
    digest: str  # sha256 hex of the original picture's bytes
    media_type: str
    images: dict[int, bytes]  # size -> bytes


def make_portrait(blob: bytes, source: str) -> Portrait:
    """The portrait set of a picture; CardError (one line, naming the limit) when it can't be one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob)) as img:
                width, height = img.size
                if width * height > MAX_PIXELS or max(width, height) > MAX_SIDE:
                    raise CardError(
                        source, "picture", f"too large ({width}×{height} pixels > {MAX_PIXELS} pixels)"
                    )
                if img.format not in ("PNG", "JPEG", "WEBP", "GIF"):
                    raise PictureUnreadable(source, "picture", f"unsupported picture format {img.format}")
                img.seek(0)
                img.load()
                frame = ImageOps.exif_transpose(img)
                frame = frame.convert(
                    "RGBA" if "A" in frame.getbands() or "transparency" in img.info else "RGB"
                )
    except CardError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise CardError(source, "picture", f"too large (more than {MAX_PIXELS} pixels)") from None
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
    ) as exc:
        raise PictureUnreadable(source, "picture", f"cannot be decoded ({type(exc).__name__})") from None
    images: dict[int, bytes] = {}
    for size in SIZES:
        side = min(size, frame.width, frame.height)
        square = ImageOps.fit(frame, (side, side), Image.Resampling.LANCZOS, centering=(0.5, 0.3))
        out = io.BytesIO()
        square.save(out, "WEBP", quality=QUALITY, method=4)
        images[size] = out.getvalue()
    return Portrait(hashlib.sha256(blob).hexdigest(), MEDIA_TYPE, images)
