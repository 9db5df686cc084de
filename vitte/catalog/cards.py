"""Character cards: reading V1, V2 and V3 cards from JSON and PNG files. Pure parsing, no database.

Formats (see DESIGN.md, "Character cards"):

- V1: a flat object with name, description, personality, scenario, first_mes, mes_example.
- V2: ``{"spec": "chara_card_v2", "spec_version": "2.0", "data": {...}}`` adding system_prompt,
  post_history_instructions, alternate_greetings, character_book, tags, creator,
  character_version, creator_notes and extensions (unknown keys preserved).
- V3: ``{"spec": "chara_card_v3", ...}``; ``data`` also has assets, nickname,
  group_only_greetings. Those are kept in ``raw`` only.
- PNG: base64 JSON in a text chunk named ``ccv3`` (preferred) or ``chara``; CHARX: a zip with
  ``card.json``. Files are read, bounded, by vitte.catalog.formats; Chub's older V2 layout (the
  fields beside ``spec``, no ``data``) is read too; numbers where strings belong become strings.

Vitte's own additions live in ``data.extensions.vitte``: id, tagline, order, avatar, i18n and
stories. Every problem is reported as one ``CardError`` line: ``<file>: <field>: <problem>``.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vitte.catalog.blurbs import derive_tagline, greeting_title
from vitte.catalog.book_embed import split_books
from vitte.catalog.errors import CardError
from vitte.catalog.formats import CARD_SUFFIXES, is_lorebook, is_png_card, read_bounded, read_raw_card

__all__ = [
    "CardError",
    "FileResult",
    "ParsedCard",
    "ParsedStory",
    "check_unique_ids",
    "default_fixtures_dir",
    "parse_card",
    "read_card_file",
    "read_cards",
    "read_folder",
    "read_one",
    "slugify",
]

SPEC_V2 = "chara_card_v2"
SPEC_V3 = "chara_card_v3"

MAX_ID = 64  # personas.id
MAX_STORY_ID = 64  # the story's own part; stored as f"{card_id}.{story_id}" (<= 129 < 130)
MAX_NAME = 256  # the personas.name column keeps 128 (a longer name is shortened for display)
MAX_TAGLINE = 300
MAX_AVATAR = 500
MAX_CREATOR = 1000  # the personas.creator column keeps 200 (the whole one stays in the card)
MAX_CREATOR_NOTES = 10_000
MAX_TEXT = 200_000  # any other text field of a card (description, first_mes, …)
MAX_LIST_ITEMS = 1000  # tags, alternate greetings
MAX_ORDER = 1_000_000  # |order| of personas and stories
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

_TEXT_LIMITS = {"creator": MAX_CREATOR, "creator_notes": MAX_CREATOR_NOTES}

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
    # the card's picture as found in the file (PNG image, CHARX icon); its hash is in the content hash
    image: bytes | None = field(default=None, compare=False, repr=False)
    # the id was written in the card (extensions.vitte.id), not derived from the name
    explicit_id: bool = field(default=False, compare=False)
    # standalone lorebooks an exported card carried (vitte.catalog.book_embed): id -> the book's JSON;
    # stored with the card when missing, not part of the persona's content hash
    lorebooks: dict[str, dict[str, Any]] = field(default_factory=dict, compare=False, repr=False)

    def content_hash(self) -> str:
        """sha256 hex of a canonical JSON of the card's content (stable across runs)."""
        content = asdict(self)
        content.pop("source", None)
        content.pop("explicit_id", None)
        content.pop("lorebooks", None)
        image = content.pop("image", None)
        if image is not None:
            content["image_sha256"] = hashlib.sha256(image).hexdigest()
        blob = json.dumps(content, sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# --------------------------------------------------------------------------- helpers


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

    def text(self, container: dict[str, Any], key: str, path: str, max_len: int = MAX_TEXT) -> str:
        value = container.get(key)
        if value is None:
            return ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = _number_text(value)  # a number where a string belongs: its digits
        if not isinstance(value, str):
            raise self.error(path, f"expected a string, got {_json_type(value)}")
        limit = max_len or MAX_TEXT
        if len(value.strip()) > limit:
            raise self.error(path, f"too long ({len(value.strip())} > {limit} characters)")
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
        if len(value) > MAX_LIST_ITEMS:
            raise self.error(path, f"too many items ({len(value)} > {MAX_LIST_ITEMS})")
        items: list[str] = []
        for i, item in enumerate(value):
            if isinstance(item, int | float) and not isinstance(item, bool):
                item = _number_text(item)
            if not isinstance(item, str):
                raise self.error(f"{path}[{i}]", f"expected a string, got {_json_type(item)}")
            if len(item) > MAX_TEXT:
                raise self.error(f"{path}[{i}]", f"too long ({len(item)} > {MAX_TEXT} characters)")
            items.append(item)
        return items

    def integer(self, container: dict[str, Any], key: str, path: str, default: int) -> int:
        value = container.get(key)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            if abs(value) > MAX_ORDER:
                raise self.error(path, f"out of range ({value:g} is beyond ±{MAX_ORDER})")
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(path, f"expected an integer, got {_json_type(value)}")
        if abs(value) > MAX_ORDER:
            raise self.error(path, f"out of range ({value} is beyond ±{MAX_ORDER})")
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


def _number_text(value: int | float) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _derive_tagline(name: str, creator_notes: str, description: str) -> str:
    """A card without a tagline: its creator's notes' first line, else its description's first
    sentence when that reads as prose, else "" (never W++ or brackets; vitte.catalog.blurbs)."""
    return derive_tagline(name, creator_notes, description)


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
        if data.get("data") is None and "name" in data:
            fields, prefix = data, ""  # Chub's older V2 layout: the fields beside spec
        elif data.get("data") is None:
            raise r.error("data", "missing")
        elif not isinstance(data["data"], dict):
            raise r.error("data", f"expected an object, got {_json_type(data['data'])}")
        else:
            fields, prefix = data["data"], "data."
    else:
        raise r.error("spec", f"unsupported card spec {spec!r} (expected {SPEC_V2} or {SPEC_V3})")

    def p(name: str) -> str:
        return prefix + name

    name = r.required_text(fields, "name", p("name"), MAX_NAME)
    texts = {key: r.text(fields, key, p(key), _TEXT_LIMITS.get(key, MAX_TEXT)) for key in _TEXT_FIELDS}
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
    explicit_id = card_id is not None
    if card_id is None:
        card_id = slugify(name) or "persona-" + hashlib.sha256(name.encode()).hexdigest()[:8]

    tagline = r.text(vitte, "tagline", vp + ".tagline", MAX_TAGLINE).strip()
    if not tagline:
        tagline = _derive_tagline(name, texts["creator_notes"], texts["description"])
    order = r.integer(vitte, "order", vp + ".order", 0)
    avatar: str | None = None
    if vitte.get("avatar") is not None:
        raw_avatar = r.text(vitte, "avatar", vp + ".avatar", MAX_AVATAR)
        avatar = _check_avatar(r, raw_avatar, vp + ".avatar")
    i18n = r.i18n(vitte, "i18n", vp + ".i18n")

    stories = _parse_stories(r, vitte, vp, card_id)
    if not stories:
        stories = _greeting_stories(r, vitte, vp, card_id, texts, alternate_greetings, i18n)
    # an exported card's standalone lorebooks: out of the stored card, into their own table
    raw, lorebooks = split_books(data)

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
        raw=raw,
        source=source,
        explicit_id=explicit_id,
        lorebooks=lorebooks,
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


def _greeting_stories(
    r: _Reader,
    vitte: dict[str, Any],
    vp: str,
    card_id: str,
    texts: dict[str, str],
    alternates: list[str],
    i18n: dict[str, Any],
) -> list[ParsedStory]:
    """A card without Vitte stories: each greeting (``first_mes``, then every
    ``alternate_greetings`` entry; V3 ``group_only_greetings`` are for group chats and ignored)
    is a story with the card's scenario, titled by its first words or by
    ``extensions.vitte.greeting_titles`` (one per greeting, in that order). The first keeps the
    id of the old single default story (``<id>-main``); the others are ``<id>-alt-<n>``."""
    titles = r.str_list(vitte, "greeting_titles", vp + ".greeting_titles")
    first_mes = texts["first_mes"]
    if not first_mes.strip() and not any(a.strip() for a in alternates):
        return [_default_story(card_id, texts["scenario"], first_mes, i18n)]
    stories: list[ParsedStory] = []
    for i, greeting in enumerate([first_mes, *alternates]):
        if not greeting.strip():
            continue
        title = (titles[i].strip() if i < len(titles) else "") or greeting_title(greeting)
        if i == 0:
            story = _default_story(card_id, texts["scenario"], first_mes, i18n)
            story.title = title[:MAX_STORY_TITLE]
            en = story.i18n["en"]
            en["title"] = greeting_title(en["opening"]) if en.get("opening") and not titles else story.title
            stories.append(story)
            continue
        stories.append(
            ParsedStory(
                id=f"{card_id}-alt-{i}",
                title=title[:MAX_STORY_TITLE],
                premise=texts["scenario"].strip(),
                opening=greeting.strip(),
                order=i,
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


def read_card_file(path: Path) -> ParsedCard:
    """Read one .json, .png or .charx card (bounded; see vitte.catalog.formats)."""
    path = Path(path)
    raw = read_raw_card(path)
    if raw.kind == "json" and is_lorebook(raw.data):
        raise CardError(path.name, "file", "a lorebook, not a character card")
    card = parse_card(raw.data, path.name)
    card.image = raw.image
    return card


def check_unique_ids(cards: list[ParsedCard]) -> None:
    """Two cards naming the same persona id in their `vitte` extension would overwrite each other."""
    seen: dict[str, ParsedCard] = {}
    for card in cards:
        if not card.explicit_id:
            continue  # a derived id is only a wish: seeding gives a different card another id
        if card.id in seen:
            other = seen[card.id].source or "another card"
            raise CardError(
                card.source or card.name, "id", f"duplicate persona id {card.id!r} (also in {other})"
            )
        seen[card.id] = card


@dataclass
class FileResult:
    """What one file of an import is: a card, a standalone lorebook, or skipped (and why)."""

    file: str
    card: ParsedCard | None = None
    lorebook: dict[str, Any] | None = None
    skipped: str | None = None  # one line: the reason
    refused: bool = False  # skipped because it is a broken or hostile card (not merely another file)


def _card_files(path: Path) -> list[Path]:
    return sorted((p for p in path.iterdir() if not p.name.startswith(".")), key=lambda p: p.name)


def read_one(path: Path) -> FileResult:
    """One file of an import, never raising: a bad file is a skipped result with its reason."""
    name = path.name
    try:
        if path.is_dir():
            return FileResult(name, skipped=f"{name}: file: a folder (folders are not read recursively)")
        suffix = path.suffix.lower()
        if suffix not in CARD_SUFFIXES:
            return FileResult(name, skipped=f"{name}: file: not a card file (expected .json, .png or .charx)")
        if suffix == ".png" and not is_png_card(read_bounded(path), name):
            return FileResult(name, skipped=f"{name}: file: a picture without a card ('chara' / 'ccv3' chunk)")
        raw = read_raw_card(path)
        if raw.kind == "json" and is_lorebook(raw.data):
            assert isinstance(raw.data, dict)
            return FileResult(name, lorebook=raw.data)
        card = parse_card(raw.data, name)
        card.image = raw.image
        return FileResult(name, card=card)
    except CardError as exc:
        return FileResult(name, skipped=str(exc), refused=True)
    except OSError as exc:
        return FileResult(name, skipped=f"{name}: file: {exc.strerror or type(exc).__name__}", refused=True)


def read_folder(path: Path) -> list[FileResult]:
    """Every file at `path` (one file, or a folder's files sorted by name), each read on its own."""
    path = Path(path)
    if not path.exists():
        raise CardError(str(path), "path", "no such file or folder")
    if not path.is_dir():
        return [read_one(path)]
    return [read_one(item) for item in _card_files(path)]


def read_cards(path: Path) -> list[ParsedCard]:
    """One card file, or every card in a folder (sorted by file name), all or nothing.

    Other files (and PNG images without a card chunk, and standalone lorebooks) in a folder are
    ignored. The first broken card raises CardError; so does a `vitte` id used by two cards.
    """
    path = Path(path)
    if not path.exists():
        raise CardError(str(path), "path", "no such file or folder")
    if not path.is_dir():
        return [read_card_file(path)]
    cards: list[ParsedCard] = []
    for item in _card_files(path):
        suffix = item.suffix.lower()
        if not item.is_file() or suffix not in CARD_SUFFIXES:
            continue
        if suffix == ".png" and not is_png_card(read_bounded(item), item.name):
            continue
        raw = read_raw_card(item)
        if raw.kind == "json" and is_lorebook(raw.data):
            continue
        card = parse_card(raw.data, item.name)
        card.image = raw.image
        cards.append(card)
    check_unique_ids(cards)
    return cards


def default_fixtures_dir() -> Path:
    """The personas shipped with the product: vitte/fixtures/personas, inside the package."""
    return Path(__file__).resolve().parents[1] / "fixtures" / "personas"
