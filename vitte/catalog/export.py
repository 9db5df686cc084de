"""Exporting a stored persona as a character card: V3 JSON, PNG or CHARX (issue 17, item 8).

The card is the stored one (every field and extension the import kept) written as
``chara_card_v3``, with the persona's id in ``extensions.vitte.id`` so importing it again updates
the same persona. A PNG carries the V3 card in a ``ccv3`` chunk and a V2 one in ``chara`` for
older readers (SillyTavern reads both); its picture is the persona's portrait (or a plain square
with its initial). A CHARX is a zip with ``card.json`` and ``assets/icon/images/main.png``.
The standalone lorebooks the persona names travel in the card (vitte.catalog.book_embed): their
entries in ``character_book`` for other applications, the books themselves for Vitte's import.
Pure functions over bytes: no database.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
import struct
import zipfile
import zlib
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw

from vitte.catalog.book_embed import embed_books

__all__ = ["FORMATS", "card_v2", "card_v3", "export_card"]

FORMATS = ("json", "png", "charx")
ICON_PATH = "assets/icon/images/main.png"
_V3_ONLY = ("assets", "nickname", "group_only_greetings", "creator_notes_multilingual", "source",
            "creation_date", "modification_date")  # fmt: skip


def _fields(stored: dict[str, Any]) -> dict[str, Any]:
    """The card's fields, whatever layout it was imported in (V1 flat, V2/V3 envelope, Chub's)."""
    data = stored.get("data")
    if isinstance(data, dict) and ("spec" in stored or "name" not in stored):
        return copy.deepcopy(data)
    return {k: copy.deepcopy(v) for k, v in stored.items() if k not in ("spec", "spec_version", "data")}


def card_v3(
    stored: dict[str, Any],
    persona: dict[str, Any],
    *,
    with_icon: bool = False,
    lorebooks: Sequence[tuple[str, dict[str, Any]]] = (),
) -> dict[str, Any]:
    """The V3 card of a stored persona (`persona`: its columns: id, name, description …), with
    the standalone `lorebooks` it names (id, stored JSON) in it (vitte.catalog.book_embed)."""
    data = _fields(stored)
    for key in ("name", "description", "personality", "scenario", "first_mes", "mes_example",
                "system_prompt", "post_history_instructions", "creator_notes"):  # fmt: skip
        if not isinstance(data.get(key), str):  # absent, or a number the import made a string
            data[key] = persona.get(key, "")
    data.setdefault("creator", persona.get("creator", ""))
    data.setdefault("character_version", "")
    data["tags"] = list(persona.get("tags") or [])
    data["alternate_greetings"] = list(persona.get("alternate_greetings") or [])
    data.setdefault("group_only_greetings", [])
    raw_ext = data.get("extensions")
    extensions: dict[str, Any] = raw_ext if isinstance(raw_ext, dict) else {}
    raw_vitte = extensions.get("vitte")
    vitte: dict[str, Any] = raw_vitte if isinstance(raw_vitte, dict) else {}
    extensions["vitte"] = {**vitte, "id": persona["id"]}
    data["extensions"] = extensions
    embed_books(data, lorebooks)
    if with_icon:
        data["assets"] = [{"type": "icon", "uri": f"embeded://{ICON_PATH}", "name": "main", "ext": "png"}]
    elif not isinstance(data.get("assets"), list):
        data["assets"] = [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}]
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def card_v2(v3: dict[str, Any]) -> dict[str, Any]:
    """The same card as V2 (older readers): V3-only fields left out."""
    data = {k: v for k, v in v3["data"].items() if k not in _V3_ONLY}
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def _chunk(ctype: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(ctype + body) & 0xFFFFFFFF)
    )


def _text(keyword: str, card: dict[str, Any]) -> bytes:
    payload = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))
    return _chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + payload)


def _picture_png(portrait: bytes | None, persona: dict[str, Any]) -> bytes:
    """The persona's portrait as PNG, or a plain square with its initial."""
    if portrait is not None:
        with Image.open(io.BytesIO(portrait)) as img:
            frame = img.convert("RGBA")
    else:
        hue = hashlib.sha256(str(persona["id"]).encode()).digest()
        frame = Image.new("RGBA", (512, 512), (hue[0] // 2 + 64, hue[1] // 2 + 64, hue[2] // 2 + 64, 255))
        initial = (str(persona.get("name") or "?")[:1] or "?").upper()
        ImageDraw.Draw(frame).text((256, 256), initial, fill=(255, 255, 255, 255), anchor="mm", font_size=256)
    out = io.BytesIO()
    frame.save(out, "PNG", optimize=True)
    return out.getvalue()


def _with_chunks(png: bytes, chunks: list[bytes]) -> bytes:
    """`png` with `chunks` right after its IHDR chunk (and no other text chunk of ours)."""
    ihdr_end = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4
    return png[:ihdr_end] + b"".join(chunks) + png[ihdr_end:]


def export_card(
    stored: dict[str, Any],
    persona: dict[str, Any],
    portrait: bytes | None,
    fmt: str,
    lorebooks: Sequence[tuple[str, dict[str, Any]]] = (),
) -> bytes:
    """The bytes of the exported card file in `fmt` (json | png | charx); `lorebooks`: the
    standalone books the card names (id, stored JSON), carried in the card."""
    if fmt == "json":
        return json.dumps(card_v3(stored, persona, lorebooks=lorebooks), ensure_ascii=False, indent=2).encode("utf-8")
    picture = _picture_png(portrait, persona)
    if fmt == "png":
        v3 = card_v3(stored, persona, lorebooks=lorebooks)
        return _with_chunks(picture, [_text("chara", card_v2(v3)), _text("ccv3", v3)])
    if fmt == "charx":
        v3 = card_v3(stored, persona, with_icon=True, lorebooks=lorebooks)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("card.json", json.dumps(v3, ensure_ascii=False, indent=2))
            zf.writestr(ICON_PATH, picture)
        return out.getvalue()
    raise ValueError(f"unknown format {fmt!r} (expected one of {', '.join(FORMATS)})")
