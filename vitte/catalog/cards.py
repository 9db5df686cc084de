"""Character cards: reading V1, V2 and V3 cards from JSON and PNG files. Pure parsing, no database.

Formats (see DESIGN.md, "Character cards"):

- V1: a flat object with name, description, personality, scenario, first_mes, mes_example.
- V2: ``{"spec": "chara_card_v2", "spec_version": "2.0", "data": {...}}`` adding system_prompt,
  post_history_instructions, alternate_greetings, character_book, tags, creator,
  character_version, creator_notes and extensions (unknown keys preserved).
- V3: ``{"spec": "chara_card_v3", ...}``; ``data`` also has assets, nickname,
  group_only_greetings. Those are kept in ``raw`` only.
- PNG: base64 JSON in a text chunk named ``ccv3`` (preferred) or ``chara``.

Vitte's own additions live in ``data.extensions.vitte``: id, tagline, order, avatar, i18n and
stories. Every problem is reported as one ``CardError`` line: ``<file>: <field>: <problem>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import struct
import unicodedata
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "CardError",
    "ParsedCard",
    "ParsedStory",
    "check_unique_ids",
    "default_fixtures_dir",
    "parse_card",
    "read_card_file",
    "read_cards",
    "slugify",
]

SPEC_V2 = "chara_card_v2"
SPEC_V3 = "chara_card_v3"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CARD_KEYWORDS = ("ccv3", "chara")  # in order of preference
CARD_SUFFIXES = (".json", ".png")

MAX_ID = 64  # personas.id
MAX_STORY_ID = 64  # the story's own part; stored as f"{card_id}.{story_id}" (<= 129 < 130)
MAX_NAME = 128
MAX_TAGLINE = 300
MAX_AVATAR = 500
MAX_CREATOR = 200
MAX_STORY_TITLE = 200
MAX_DERIVED_TAGLINE = 140

DEFAULT_STORY_SUFFIX = "-main"
DEFAULT_STORY_TITLE = "Знакомство"
DEFAULT_STORY_TITLE_EN = "First meeting"

_SLUG_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")
_LANG_RE = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})?$")

_TEXT_FIELDS = (
    "description",
    "personality",
    "scenario",
    "first_mes",
    "mes_example",
    "system_prompt",
    "post_history_instructions",
    "creator",
    "creator_notes",
    "character_version",
)

# The old TavernAI / Pygmalion flat layout, accepted as V1.
_LEGACY_V1 = {
    "char_name": "name",
    "char_persona": "personality",
    "world_scenario": "scenario",
    "char_greeting": "first_mes",
    "example_dialogue": "mes_example",
}

_TRANSLIT = {
    "а": "a", "б": "b", "в": "v", "г": "g", "д": "d", "е": "e", "ё": "e", "ж": "zh",
    "з": "z", "и": "i", "й": "y", "к": "k", "л": "l", "м": "m", "н": "n", "о": "o",
    "п": "p", "р": "r", "с": "s", "т": "t", "у": "u", "ф": "f", "х": "kh", "ц": "ts",
    "ч": "ch", "ш": "sh", "щ": "shch", "ъ": "", "ы": "y", "ь": "", "э": "e", "ю": "yu",
    "я": "ya", "і": "i", "ї": "yi", "є": "ye", "ґ": "g", "ў": "u",
}  # fmt: skip


class CardError(Exception):
    """A card cannot be used. ``str(e)`` is one line: ``<source>: <field>: <problem>``."""

    def __init__(self, source: str, field: str, problem: str) -> None:
        self.source = _one_line(source)
        self.field = _one_line(field)
        self.problem = _one_line(problem)
        super().__init__(f"{self.source}: {self.field}: {self.problem}")


@dataclass
class ParsedStory:
    id: str  # globally unique: f"{card_id}.{story_id}" (the default story: f"{card_id}-main")
    title: str
    premise: str
    opening: str
    order: int
    i18n: dict[str, Any] = field(default_factory=dict)


@dataclass
class ParsedCard:
    id: str
    name: str
    tagline: str
    description: str
    personality: str
    scenario: str
    first_mes: str
    mes_example: str
    system_prompt: str
    post_history_instructions: str
    alternate_greetings: list[str]
    tags: list[str]
    avatar: str | None
    creator: str
    creator_notes: str
    i18n: dict[str, Any]
    order: int
    stories: list[ParsedStory]
    raw: dict[str, Any]
    # where the card came from (for messages only; not part of the content hash)
    source: str = field(default="", compare=False)

    def content_hash(self) -> str:
        """sha256 hex of a canonical JSON of the card's content (stable across runs)."""
        content = asdict(self)
        content.pop("source", None)
        blob = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- helpers


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


# JSON's name for a Python value's type, first match (bool before int: a bool is an int)
_JSON_TYPES: tuple[tuple[type | tuple[type, ...], str], ...] = (
    (type(None), "null"),
    (bool, "boolean"),
    ((int, float), "number"),
    (str, "string"),
    (list, "array"),
    (dict, "object"),
)


def _json_type(value: object) -> str:
    return next((name for cls, name in _JSON_TYPES if isinstance(value, cls)), type(value).__name__)


def slugify(text: str, max_len: int = MAX_ID) -> str:
    """ASCII slug of [a-z0-9-]: Cyrillic is transliterated, accents dropped, at most max_len."""
    out: list[str] = []
    for ch in text.lower():
        if ch in _TRANSLIT:
            out.append(_TRANSLIT[ch])
        else:
            decomposed = unicodedata.normalize("NFKD", ch)
            out.append("".join(c for c in decomposed if not unicodedata.combining(c)))
    slug = re.sub(r"[^a-z0-9]+", "-", "".join(out)).strip("-")
    return slug[:max_len].rstrip("-")


class _Reader:
    """Typed access to one card's fields; every failure names the field's full path."""

    def __init__(self, source: str) -> None:
        self.source = source

    def error(self, path: str, problem: str) -> CardError:
        return CardError(self.source, path, problem)

    def obj(self, container: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        value = container.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(path, f"expected an object, got {_json_type(value)}")
        return value

    def text(self, container: dict[str, Any], key: str, path: str, max_len: int = 0) -> str:
        value = container.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.error(path, f"expected a string, got {_json_type(value)}")
        if max_len and len(value.strip()) > max_len:
            raise self.error(path, f"too long ({len(value.strip())} > {max_len} characters)")
        return value

    def required_text(self, container: dict[str, Any], key: str, path: str, max_len: int = 0) -> str:
        if container.get(key) is None:
            raise self.error(path, "missing")
        value = self.text(container, key, path, max_len).strip()
        if not value:
            raise self.error(path, "empty")
        return value

    def str_list(self, container: dict[str, Any], key: str, path: str) -> list[str]:
        value = container.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(path, f"expected an array of strings, got {_json_type(value)}")
        items: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                raise self.error(f"{path}[{i}]", f"expected a string, got {_json_type(item)}")
            items.append(item)
        return items

    def integer(self, container: dict[str, Any], key: str, path: str, default: int) -> int:
        value = container.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"expected an integer, got {_json_type(value)}")
        return value

    def slug(self, container: dict[str, Any], key: str, path: str, max_len: int) -> str | None:
        value = container.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(path, f"expected a string, got {_json_type(value)}")
        if len(value) > max_len:
            raise self.error(path, f"too long ({len(value)} > {max_len} characters)")
        if not _SLUG_RE.match(value):
            raise self.error(path, f"{value!r} is not a slug (use a-z, 0-9 and '-')")
        return value

    def i18n(self, container: dict[str, Any], key: str, path: str) -> dict[str, Any]:
        """{"en": {"name": "…", …}, …}: language codes to objects of strings."""
        table = self.obj(container, key, path)
        result: dict[str, Any] = {}
        for lang, entry in table.items():
            lang_path = f"{path}.{lang}"
            if not _LANG_RE.match(lang):
                raise self.error(lang_path, f"{lang!r} is not a language code")
            if not isinstance(entry, dict):
                raise self.error(lang_path, f"expected an object, got {_json_type(entry)}")
            clean: dict[str, str] = {}
            for k, v in entry.items():
                if not isinstance(v, str):
                    raise self.error(f"{lang_path}.{k}", f"expected a string, got {_json_type(v)}")
                clean[k] = v
            result[lang] = clean
        return result


def _derive_tagline(name: str, description: str) -> str:
    """A card without a tagline gets the first sentence of its description."""
    text = " ".join(description.replace("{{char}}", name).split())
    if not text:
        return ""
    m = re.match(r"(.+?[.!?…])(?:\s|$)", text)
    first = m.group(1) if m else text
    if len(first) > MAX_DERIVED_TAGLINE:
        first = first[: MAX_DERIVED_TAGLINE - 1].rstrip() + "…"
    return first


def _check_avatar(r: _Reader, value: str, path: str) -> str:
    value = value.strip()
    if value.startswith(("https://", "http://")):
        return value
    if not value or value.startswith(("/", "~")) or "\\" in value or ":" in value or ".." in value.split("/"):
        raise r.error(path, f"{value!r} must be a relative path (e.g. avatars/x.svg) or an http(s) URL")
    return value


# --------------------------------------------------------------------------- parsing


def parse_card(data: object, source: str) -> ParsedCard:
    """Parse a decoded card (V1 flat object, V2 or V3 envelope). Raises CardError."""
    r = _Reader(source)
    if not isinstance(data, dict):
        raise r.error("card", f"expected a JSON object, got {_json_type(data)}")

    spec = data.get("spec")
    if spec is None:
        if isinstance(data.get("data"), dict) and "name" not in data and "char_name" not in data:
            fields, prefix = data["data"], "data."  # a V2 body without its spec line
        else:
            fields, prefix = dict(data), ""
            for old, new in _LEGACY_V1.items():
                if old in fields and new not in fields:
                    fields[new] = fields[old]
    elif spec in (SPEC_V2, SPEC_V3):
        version = data.get("spec_version")
        if version is not None and not isinstance(version, str | int | float):
            raise r.error("spec_version", f"expected a string, got {_json_type(version)}")
        if data.get("data") is None:
            raise r.error("data", "missing")
        if not isinstance(data["data"], dict):
            raise r.error("data", f"expected an object, got {_json_type(data['data'])}")
        fields, prefix = data["data"], "data."
    else:
        raise r.error("spec", f"unsupported card spec {spec!r} (expected {SPEC_V2} or {SPEC_V3})")

    def p(name: str) -> str:
        return prefix + name

    name = r.required_text(fields, "name", p("name"), MAX_NAME)
    texts = {key: r.text(fields, key, p(key)) for key in _TEXT_FIELDS}
    if len(texts["creator"]) > MAX_CREATOR:
        raise r.error(p("creator"), f"too long ({len(texts['creator'])} > {MAX_CREATOR} characters)")
    alternate_greetings = r.str_list(fields, "alternate_greetings", p("alternate_greetings"))
    tags: list[str] = []
    for tag in r.str_list(fields, "tags", p("tags")):
        tag = tag.strip()
        if tag and tag not in tags:
            tags.append(tag)
    if prefix and "group_only_greetings" in fields:
        r.str_list(fields, "group_only_greetings", p("group_only_greetings"))

    ext_path = p("extensions")
    extensions = r.obj(fields, "extensions", ext_path)
    vp = ext_path + ".vitte"
    vitte = r.obj(extensions, "vitte", vp)

    card_id = r.slug(vitte, "id", vp + ".id", MAX_ID)
    if card_id is None:
        card_id = slugify(name) or "persona-" + hashlib.sha256(name.encode()).hexdigest()[:8]

    tagline = r.text(vitte, "tagline", vp + ".tagline", MAX_TAGLINE).strip()
    if not tagline:
        tagline = _derive_tagline(name, texts["description"])
    order = r.integer(vitte, "order", vp + ".order", 0)
    avatar: str | None = None
    if vitte.get("avatar") is not None:
        raw_avatar = r.text(vitte, "avatar", vp + ".avatar", MAX_AVATAR)
        avatar = _check_avatar(r, raw_avatar, vp + ".avatar")
    i18n = r.i18n(vitte, "i18n", vp + ".i18n")

    stories = _parse_stories(r, vitte, vp, card_id)
    if not stories:
        stories = [_default_story(card_id, texts["scenario"], texts["first_mes"], i18n)]

    return ParsedCard(
        id=card_id,
        name=name,
        tagline=tagline,
        description=texts["description"],
        personality=texts["personality"],
        scenario=texts["scenario"],
        first_mes=texts["first_mes"],
        mes_example=texts["mes_example"],
        system_prompt=texts["system_prompt"],
        post_history_instructions=texts["post_history_instructions"],
        alternate_greetings=alternate_greetings,
        tags=tags,
        avatar=avatar,
        creator=texts["creator"].strip(),
        creator_notes=texts["creator_notes"],
        i18n=i18n,
        order=order,
        stories=stories,
        raw=data,
        source=source,
    )


def _parse_stories(r: _Reader, vitte: dict[str, Any], vp: str, card_id: str) -> list[ParsedStory]:
    items = vitte.get("stories")
    path = vp + ".stories"
    if items is None:
        return []
    if not isinstance(items, list):
        raise r.error(path, f"expected an array, got {_json_type(items)}")
    stories: list[ParsedStory] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        sp = f"{path}[{i}]"
        if not isinstance(item, dict):
            raise r.error(sp, f"expected an object, got {_json_type(item)}")
        title = r.required_text(item, "title", sp + ".title", MAX_STORY_TITLE)
        opening = r.required_text(item, "opening", sp + ".opening")
        premise = r.text(item, "premise", sp + ".premise").strip()
        local_id = r.slug(item, "id", sp + ".id", MAX_STORY_ID)
        if local_id is None:
            local_id = slugify(title, MAX_STORY_ID) or f"story-{i + 1}"
        if local_id in seen:
            raise r.error(sp + ".id", f"duplicate story id {local_id!r} (also stories[{seen[local_id]}])")
        seen[local_id] = i
        stories.append(
            ParsedStory(
                id=f"{card_id}.{local_id}",
                title=title,
                premise=premise,
                opening=opening,
                order=r.integer(item, "order", sp + ".order", i),
                i18n=r.i18n(item, "i18n", sp + ".i18n"),
            )
        )
    return stories


def _default_story(card_id: str, scenario: str, first_mes: str, i18n: dict[str, Any]) -> ParsedStory:
    """A card without Vitte stories gets one story: its scenario and first message."""
    en = i18n.get("en") or {}
    story_en: dict[str, str] = {"title": DEFAULT_STORY_TITLE_EN}
    if en.get("first_mes"):
        story_en["opening"] = en["first_mes"]
    if en.get("scenario"):
        story_en["premise"] = en["scenario"]
    return ParsedStory(
        id=f"{card_id}{DEFAULT_STORY_SUFFIX}",
        title=DEFAULT_STORY_TITLE,
        premise=scenario.strip(),
        opening=first_mes.strip(),
        order=0,
        i18n={"en": story_en},
    )


# --------------------------------------------------------------------------- files


def _decode_json(blob: bytes, source: str, where: str) -> object:
    try:
        text = blob.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CardError(source, where, f"not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CardError(
            source, where, f"invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None


def png_text_chunks(blob: bytes, source: str) -> list[tuple[str, str, str]]:
    """(chunk type, keyword, text) of every tEXt / zTXt / iTXt chunk of a PNG file."""
    if not blob.startswith(PNG_SIGNATURE):
        raise CardError(source, "png", "not a PNG file (bad signature)")
    chunks: list[tuple[str, str, str]] = []
    pos = len(PNG_SIGNATURE)
    while pos < len(blob):
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
            chunks.append(_text_chunk(ctype, body, source))
        pos = end
        if ctype == "IEND":
            break
    return chunks


def _inflate(data: bytes, source: str, where: str) -> bytes:
    try:
        return zlib.decompress(data)
    except zlib.error as exc:
        raise CardError(source, where, f"bad compressed data ({exc})") from None


def _text_chunk(ctype: str, body: bytes, source: str) -> tuple[str, str, str]:
    keyword_raw, sep, rest = body.partition(b"\x00")
    if not sep:
        raise CardError(source, ctype, "no keyword separator")
    keyword = keyword_raw.decode("latin-1")
    where = f"{ctype}[{keyword}]"
    if ctype == "tEXt":
        return ctype, keyword, rest.decode("latin-1")
    if ctype == "zTXt":
        if not rest or rest[0] != 0:
            raise CardError(source, where, "unknown compression method")
        return ctype, keyword, _inflate(rest[1:], source, where).decode("latin-1")
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
        text = _inflate(text, source, where)
    try:
        return ctype, keyword, text.decode("utf-8")
    except UnicodeDecodeError:
        raise CardError(source, where, "text is not UTF-8") from None


def _png_card_json(blob: bytes, source: str) -> object:
    chunks = png_text_chunks(blob, source)
    found = {kw.lower(): (ctype, kw, text) for ctype, kw, text in reversed(chunks)}
    for wanted in PNG_CARD_KEYWORDS:
        if wanted in found:
            ctype, kw, text = found[wanted]
            where = f"{ctype}[{kw}]"
            payload = "".join(text.split())
            payload += "=" * (-len(payload) % 4)
            try:
                decoded = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise CardError(source, where, "not valid base64") from None
            return _decode_json(decoded, source, where)
    raise CardError(source, "chara", "no 'ccv3' or 'chara' text chunk (not a character card)")


def _is_png_card(blob: bytes, source: str) -> bool:
    """Does this PNG carry a card chunk at all? (Plain images in a card folder are skipped.)"""
    try:
        chunks = png_text_chunks(blob, source)
    except CardError:
        return True  # a damaged PNG: let read_card_file report it
    return any(kw.lower() in PNG_CARD_KEYWORDS for _, kw, _ in chunks)


def read_card_file(path: Path) -> ParsedCard:
    """Read one .json or .png card. Errors name the file by its name."""
    path = Path(path)
    source = path.name
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CardError(source, "file", exc.strerror or str(exc)) from None
    suffix = path.suffix.lower()
    if suffix == ".png" or blob.startswith(PNG_SIGNATURE):
        data = _png_card_json(blob, source)
    elif suffix == ".json":
        data = _decode_json(blob, source, "json")
    else:
        raise CardError(source, "file", "not a card file (expected .json or .png)")
    return parse_card(data, source)


def check_unique_ids(cards: list[ParsedCard]) -> None:
    """Two cards with the same persona id would overwrite each other: refuse."""
    seen: dict[str, ParsedCard] = {}
    for card in cards:
        if card.id in seen:
            other = seen[card.id].source or "another card"
            raise CardError(
                card.source or card.name, "id", f"duplicate persona id {card.id!r} (also in {other})"
            )
        seen[card.id] = card


def read_cards(path: Path) -> list[ParsedCard]:
    """One card file, or every *.json / *.png card in a folder (sorted by file name).

    Other files (and PNG images without a card chunk) in a folder are ignored. The first
    broken card raises CardError; so does a persona id used by two cards.
    """
    path = Path(path)
    if not path.exists():
        raise CardError(str(path), "path", "no such file or folder")
    if path.is_file():
        return [read_card_file(path)]
    cards: list[ParsedCard] = []
    for item in sorted(path.iterdir(), key=lambda p: p.name):
        if item.name.startswith(".") or not item.is_file():
            continue
        suffix = item.suffix.lower()
        if suffix not in CARD_SUFFIXES:
            continue
        if suffix == ".png" and not _is_png_card(item.read_bytes(), item.name):
            continue
        cards.append(read_card_file(item))
    check_unique_ids(cards)
    return cards


def default_fixtures_dir() -> Path:
    """The personas shipped with the product: vitte/fixtures/personas, inside the package."""
    return Path(__file__).resolve().parents[1] / "fixtures" / "personas"
