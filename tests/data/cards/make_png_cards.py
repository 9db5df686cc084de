"""Writes the PNG character cards beside this file (run: python tests/data/cards/make_png_cards.py).

A PNG card is an ordinary image with the card's JSON, base64-encoded, in a tEXt chunk named
`chara` (V2) or `ccv3` (V3). This builds a 1x1 image with zlib/struct only, no Pillow.
"""

from __future__ import annotations

import base64
import json
import struct
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent


def chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data) & 0xFFFFFFFF)


def png(*text_chunks: tuple[str, dict]) -> bytes:
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
    for keyword, card in text_chunks:
        payload = base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))
        out += chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + payload)
    out += chunk(b"IDAT", zlib.compress(b"\x00\xe8\x9a\xb0"))
    return out + chunk(b"IEND", b"")


IRINA_V2 = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Ирина",
        "description": "Ирине 27, она фотограф и снимает рассветы на плёнку.",
        "personality": "Тихая, наблюдательная, упрямая.",
        "scenario": "Утро на крыше в Петербурге.",
        "first_mes": "*Ирина опускает камеру.* Тоже за рассветом? Садись, его хватит на двоих.",
        "mes_example": "",
        "creator_notes": "",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "tags": ["фото"],
        "creator": "tests",
        "character_version": "1",
        "extensions": {},
    },
}

TEODOR_V3 = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        **IRINA_V2["data"],
        "name": "Теодор",
        "nickname": "Тео",
        "description": "Теодору 32, он часовщик с Патриарших.",
        "first_mes": "*Тео откладывает лупу.* Часы не спешат. Спешат люди.",
        "group_only_greetings": [],
        "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
    },
}
# The V2 projection a V3 exporter writes beside it for older readers.
TEODOR_V2 = {"spec": "chara_card_v2", "spec_version": "2.0", "data": {**TEODOR_V3["data"], "name": "Теодор (V2)"}}


def main() -> None:
    (HERE / "chara_card.png").write_bytes(png(("chara", IRINA_V2)))
    (HERE / "ccv3_card.png").write_bytes(png(("chara", TEODOR_V2), ("ccv3", TEODOR_V3)))


if __name__ == "__main__":
    main()
