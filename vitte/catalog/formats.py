"""Card files as bytes: bounded reading of JSON, PNG (``chara``/``ccv3``) and CHARX cards.

Cards come from the internet, so every step is bounded and every refusal is one `CardError`
line naming the file and the limit: the file's size (regular files only: never a FIFO or a
device), the inflated size of a compressed PNG text chunk (stream-inflated with a cap), the
JSON text's size, nesting depth, node count and number sizes (no NaN/Infinity), NUL characters
and lone surrogates, and a CHARX zip's entry count, entry sizes, compression ratio and paths.

The result is a `RawCard`: the decoded JSON and, when the file carries one, the picture's
bytes (a PNG card's own image, the V3 ``icon`` asset named ``main``, a CHARX
``assets/icon/images/…``). Parsing the fields is vitte.catalog.cards' job.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
import re
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from vitte.catalog.errors import CardError

__all__ = [
    "CARD_SUFFIXES",
    "MAX_FILE_BYTES",
    "MAX_JSON_BYTES",
    "RawCard",
    "decode_json",
    "is_lorebook",
    "png_text_chunks",
    "read_bounded",
    "read_raw_card",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CARD_KEYWORDS = ("ccv3", "chara")  # in order of preference
CARD_SUFFIXES = (".json", ".png", ".charx")

MAX_FILE_BYTES = 32 * 1024 * 1024  # a card file (PNG with its picture, CHARX with assets)
MAX_JSON_BYTES = 8 * 1024 * 1024  # a card's JSON text (after base64 / inflating)
MAX_DEPTH = 64  # nesting of JSON arrays and objects
MAX_NODES = 200_000  # values in one card's JSON
MAX_NUMBER_CHARS = 40  # digits of one JSON number
MAX_INT = 2**53  # larger integers are refused (not exact in JavaScript either)
MAX_PNG_CHUNKS = 10_000
MAX_CHARX_ENTRIES = 512
MAX_CHARX_ENTRY_BYTES = 16 * 1024 * 1024  # one inflated entry that is read (card.json, the icon)
MAX_CHARX_TOTAL_BYTES = 256 * 1024 * 1024  # the inflated sizes of all entries, as declared
MAX_CHARX_RATIO = 200  # inflated / compressed size of an entry that is read
MAX_IMAGE_BYTES = 16 * 1024 * 1024

_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")


@dataclass
class RawCard:
    """A card file decoded: its JSON and, when it has one, its picture's bytes."""

    data: object
    image: bytes | None
    kind: str  # json | png | charx


def _mib(n: int) -> str:
    return f"{n // (1024 * 1024)} MiB" if n >= 1024 * 1024 else f"{n} bytes"


# --------------------------------------------------------------------------- files


def read_bounded(path: Path, limit: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes (never opens a FIFO or a device)."""
    source = path.name or str(path)
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CardError(source, "file", exc.strerror or str(exc)) from None
    if not stat.S_ISREG(st.st_mode):
        raise CardError(source, "file", "not a regular file")
    if st.st_size > limit:
        raise CardError(source, "file", f"too large ({st.st_size} bytes > {_mib(limit)})")
    try:
        with open(path, "rb") as fh:
            blob = fh.read(limit + 1)
    except OSError as exc:
        raise CardError(source, "file", exc.strerror or str(exc)) from None
    if len(blob) > limit:  # it grew while being read
        raise CardError(source, "file", f"too large (> {_mib(limit)})")
    return blob


# --------------------------------------------------------------------------- JSON


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _parse_int(text: str) -> int:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text)} digits (limit {MAX_NUMBER_CHARS})")
    value = int(text)
    if abs(value) > MAX_INT:
        raise ValueError(f"the integer {text} is out of range (limit ±2^53)")
    return value


def _parse_float(text: str) -> float:
    if len(text) > MAX_NUMBER_CHARS:
        raise ValueError(f"a number of {len(text)} characters (limit {MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text} is out of range")
    return value


def decode_json(blob: bytes, source: str, where: str) -> object:
    """Bounded JSON: size, depth, node count, number sizes; no NaN, NUL or lone surrogates."""
    if len(blob) > MAX_JSON_BYTES:
        raise CardError(source, where, f"JSON too large ({len(blob)} bytes > {_mib(MAX_JSON_BYTES)})")
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CardError(source, where, f"not UTF-8 text (byte {exc.start})") from None
    try:
        data = json.loads(
            text, parse_constant=_reject_constant, parse_int=_parse_int, parse_float=_parse_float
        )
    except json.JSONDecodeError as exc:
        raise CardError(
            source, where, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    except RecursionError:
        raise CardError(source, where, f"JSON nested too deeply (limit {MAX_DEPTH} levels)") from None
    except ValueError as exc:
        raise CardError(source, where, str(exc)) from None
    check_tree(data, source, where)
    return data


def check_tree(data: object, source: str, where: str) -> None:
    """Depth, node count and characters of decoded JSON (iterative: no recursion to exhaust)."""
    stack: list[tuple[object, int, str]] = [(data, 1, "")]
    nodes = 0
    while stack:
        value, depth, path = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise CardError(source, where, f"too many JSON values (limit {MAX_NODES})")
        if depth > MAX_DEPTH:
            raise CardError(source, where, f"JSON nested too deeply (limit {MAX_DEPTH} levels)")
        if isinstance(value, str):
            _check_chars(value, source, where, path)
        elif isinstance(value, dict):
            for k, v in value.items():
                _check_chars(k, source, where, path)
                stack.append((v, depth + 1, f"{path}.{k}" if path else k))
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{path}[{i}]") for i, v in enumerate(value))


def _check_chars(text: str, source: str, where: str, path: str) -> None:
    m = _BAD_CHARS.search(text)
    if m is None:
        return
    what = "a NUL character" if m.group() == "\x00" else "a lone surrogate (not Unicode text)"
    raise CardError(source, path[:120] or where, f"contains {what}")


# --------------------------------------------------------------------------- PNG


def _inflate(data: bytes, source: str, where: str, cap: int = MAX_JSON_BYTES) -> bytes:
    """zlib data inflated as a stream, refused as soon as it passes `cap` bytes."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, cap + 1)
    except zlib.error as exc:
        raise CardError(source, where, f"bad compressed data ({exc})") from None
    if len(out) > cap or d.unconsumed_tail:
        raise CardError(source, where, f"inflates to more than {_mib(cap)}")
    return out


def png_text_chunks(
    blob: bytes, source: str, keywords: tuple[str, ...] | None = None
) -> list[tuple[str, str, str]]:
    """(chunk type, keyword, text) of the tEXt / zTXt / iTXt chunks of a PNG file.

    With `keywords`, only the first chunk of each of those keywords (any case) is decoded (and
    inflated): a file repeating a compressed chunk cannot multiply the inflated size.
    """
    if not blob.startswith(PNG_SIGNATURE):
        raise CardError(source, "png", "not a PNG file (bad signature)")
    chunks: list[tuple[str, str, str]] = []
    seen: set[str] = set()
    pos = len(PNG_SIGNATURE)
    count = 0
    while pos < len(blob):
        count += 1
        if count > MAX_PNG_CHUNKS:
            raise CardError(source, "png", f"too many chunks (limit {MAX_PNG_CHUNKS})")
        if pos + 8 > len(blob):
            raise CardError(source, "png", f"truncated chunk header at byte {pos}")
        length, ctype_raw = struct.unpack(">I4s", blob[pos : pos + 8])
        ctype = ctype_raw.decode("latin-1")
        end = pos + 8 + length + 4
        if end > len(blob):
            raise CardError(source, "png", f"truncated {ctype} chunk at byte {pos}")
        body = blob[pos + 8 : pos + 8 + length]
        if ctype in ("tEXt", "zTXt", "iTXt"):
            (crc,) = struct.unpack(">I", blob[end - 4 : end])
            if zlib.crc32(ctype_raw + body) & 0xFFFFFFFF != crc:
                raise CardError(source, ctype, f"bad CRC in the chunk at byte {pos}")
            keyword = body.partition(b"\x00")[0].decode("latin-1")
            if keywords is None or (keyword.lower() in keywords and keyword.lower() not in seen):
                seen.add(keyword.lower())  # a repeated card chunk is never inflated: the first one counts
                chunks.append(_text_chunk(ctype, body, source))
        pos = end
        if ctype == "IEND":
            break
    return chunks


def _text_chunk(ctype: str, body: bytes, source: str) -> tuple[str, str, str]:
    keyword_raw, sep, rest = body.partition(b"\x00")
    if not sep:
        raise CardError(source, ctype, "no keyword separator")
    keyword = keyword_raw.decode("latin-1")
    where = f"{ctype}[{keyword}]"
    if ctype == "tEXt":
        if len(rest) > MAX_JSON_BYTES * 2:
            raise CardError(source, where, f"text chunk too large (> {_mib(MAX_JSON_BYTES * 2)})")
        return ctype, keyword, rest.decode("latin-1")
    if ctype == "zTXt":
        if not rest or rest[0] != 0:
            raise CardError(source, where, "unknown compression method")
        return ctype, keyword, _inflate(rest[1:], source, where, MAX_JSON_BYTES * 2).decode("latin-1")
    # iTXt: compression flag, method, language tag \0, translated keyword \0, UTF-8 text
    if len(rest) < 2:
        raise CardError(source, where, "truncated chunk")
    flag, method = rest[0], rest[1]
    parts = rest[2:].split(b"\x00", 2)
    if len(parts) != 3:
        raise CardError(source, where, "truncated chunk")
    text = parts[2]
    if flag:
        if method != 0:
            raise CardError(source, where, "unknown compression method")
        text = _inflate(text, source, where, MAX_JSON_BYTES * 2)
    try:
        return ctype, keyword, text.decode("utf-8")
    except UnicodeDecodeError:
        raise CardError(source, where, "text is not UTF-8") from None


def _base64_json(text: str, source: str, where: str) -> object:
    payload = "".join(text.split())
    payload += "=" * (-len(payload) % 4)
    try:
        decoded = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise CardError(source, where, "not valid base64") from None
    return decode_json(decoded, source, where)


def png_card_json(blob: bytes, source: str) -> object:
    """The card in a PNG: its ``ccv3`` chunk when there is one, else its ``chara`` chunk."""
    chunks = png_text_chunks(blob, source, PNG_CARD_KEYWORDS)
    found = {kw.lower(): (ctype, kw, text) for ctype, kw, text in reversed(chunks)}
    for wanted in PNG_CARD_KEYWORDS:
        if wanted in found:
            ctype, kw, text = found[wanted]
            return _base64_json(text, source, f"{ctype}[{kw}]")
    raise CardError(source, "chara", "no 'ccv3' or 'chara' text chunk (not a character card)")


def is_png_card(blob: bytes, source: str) -> bool:
    """Does this PNG carry a card chunk at all? (Plain images in a card folder are skipped.)"""
    if not blob.startswith(PNG_SIGNATURE):
        return True  # let the reader report it
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(blob):
        length, ctype = struct.unpack(">I4s", blob[pos : pos + 8])
        if ctype in (b"tEXt", b"zTXt", b"iTXt"):
            keyword = blob[pos + 8 : pos + 8 + min(length, 80)].partition(b"\x00")[0]
            if keyword.decode("latin-1").lower() in PNG_CARD_KEYWORDS:
                return True
        if ctype == b"IEND":
            return False
        pos += 12 + length
    return pos != len(blob)  # truncated: let the reader report it


# --------------------------------------------------------------------------- CHARX


def _safe_member(name: str) -> bool:
    if not name or "\\" in name or "\x00" in name or name.startswith("/") or ":" in name.split("/")[0]:
        return False
    return ".." not in PurePosixPath(name).parts


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, source: str) -> bytes:
    where = info.filename[:120]
    if info.file_size > MAX_CHARX_ENTRY_BYTES:
        raise CardError(
            source, where, f"entry too large ({info.file_size} bytes > {_mib(MAX_CHARX_ENTRY_BYTES)})"
        )
    cap = min(MAX_CHARX_ENTRY_BYTES, max(info.compress_size, 1) * MAX_CHARX_RATIO + 65536)
    out = bytearray()
    try:
        with zf.open(info) as fh:
            while chunk := fh.read(65536):
                out += chunk
                if len(out) > cap:
                    raise CardError(source, where, f"inflates past its limit ({_mib(cap)}; a zip bomb?)")
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise CardError(source, where, f"cannot be read ({type(exc).__name__})") from None
    return bytes(out)


def read_charx(blob: bytes, source: str) -> RawCard:
    """A CHARX (RisuAI): a zip with ``card.json`` (V3) and its assets."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(blob))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError):
        raise CardError(source, "charx", "not a zip file") from None
    with zf:
        infos = zf.infolist()
        if len(infos) > MAX_CHARX_ENTRIES:
            raise CardError(source, "charx", f"too many entries ({len(infos)} > {MAX_CHARX_ENTRIES})")
        total = 0
        members: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            if not _safe_member(info.filename):
                raise CardError(source, "charx", f"entry {info.filename[:120]!r} escapes the archive")
            total += info.file_size
            if total > MAX_CHARX_TOTAL_BYTES:
                raise CardError(
                    source, "charx", f"entries too large in total (> {_mib(MAX_CHARX_TOTAL_BYTES)})"
                )
            members.setdefault(info.filename, info)
        card_info = members.get("card.json")
        if card_info is None:
            raise CardError(source, "card.json", "missing (not a CHARX card)")
        if card_info.file_size > MAX_JSON_BYTES:
            raise CardError(
                source, "card.json", f"too large ({card_info.file_size} bytes > {_mib(MAX_JSON_BYTES)})"
            )
        data = decode_json(_read_member(zf, card_info, source), source, "card.json")
        image = None
        uri = _main_icon_uri(data)
        name = None
        if uri is not None and uri.startswith(("embeded://", "embedded://")):
            name = uri.split("://", 1)[1]
        if name is None or name not in members:
            icons = sorted(n for n in members if n.startswith("assets/icon/images/") and not n.endswith("/"))
            name = icons[0] if icons else None
        if name is not None:
            image = _read_member(zf, members[name], source)
        elif uri and uri.startswith("data:"):
            image = _data_uri(uri)
    return RawCard(data, image, "charx")


def _main_icon_uri(data: object) -> str | None:
    """The URI of the V3 ``icon`` asset named ``main`` (else the first icon)."""
    if not isinstance(data, dict) or not isinstance(data.get("data"), dict):
        return None
    assets = data["data"].get("assets")
    if not isinstance(assets, list):
        return None
    icons = [
        a for a in assets if isinstance(a, dict) and a.get("type") == "icon" and isinstance(a.get("uri"), str)
    ]
    main = [a for a in icons if a.get("name") == "main"]
    chosen = main or icons
    return str(chosen[0]["uri"]) if chosen else None


def _data_uri(uri: str) -> bytes | None:
    head, sep, payload = uri.partition(",")
    if not sep or not head.startswith("data:image/") or not head.endswith(";base64"):
        return None
    if len(payload) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        return None
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None


# --------------------------------------------------------------------------- any card file


def is_lorebook(data: object) -> bool:
    """A standalone lorebook: V3 ``lorebook_v3``, or a V2 ``character_book`` object on its own."""
    if not isinstance(data, dict):
        return False
    if data.get("spec") == "lorebook_v3":
        return True
    card_keys = ("data", "first_mes", "description", "personality", "char_name", "char_persona")
    return (
        data.get("spec") is None
        and isinstance(data.get("entries"), list | dict)
        and not any(k in data for k in card_keys)
    )


def read_raw_card(path: Path) -> RawCard:
    """Read one .json, .png or .charx file, bounded. Errors name the file by its name."""
    path = Path(path)
    source = path.name
    blob = read_bounded(path)
    suffix = path.suffix.lower()
    if blob.startswith(PNG_SIGNATURE):
        return RawCard(png_card_json(blob, source), blob, "png")
    if blob.startswith(b"PK\x03\x04") or suffix == ".charx":
        return read_charx(blob, source)
    if suffix == ".png":
        raise CardError(source, "png", "not a PNG file (bad signature)")
    if suffix == ".json":
        data = decode_json(blob, source, "json")
        uri = _main_icon_uri(data)
        return RawCard(data, _data_uri(uri) if uri and uri.startswith("data:") else None, "json")
    raise CardError(source, "file", "not a card file (expected .json, .png or .charx)")
