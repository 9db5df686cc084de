"""The persona catalog: character cards (V1/V2/V3, JSON and PNG), the shipped fixtures, seeding."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import event
from sqlmodel import col

from vitte.catalog.cards import (
    CardError,
    ParsedCard,
    default_fixtures_dir,
    parse_card,
    read_card_file,
    read_cards,
    slugify,
)
from vitte.catalog.seed import SeedReport, list_personas, seed_cards, seed_path
from vitte.config import Settings
from vitte.db import Database
from vitte.models import Dialog, Persona, Story, User

DATA = Path(__file__).parent / "data" / "cards"
CYRILLIC = re.compile(r"[а-яё]", re.IGNORECASE)

# --------------------------------------------------------------------------- PNG helpers


def png_chunk(ctype: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data) & 0xFFFFFFFF)


def b64card(card: object) -> bytes:
    return base64.b64encode(json.dumps(card, ensure_ascii=False).encode("utf-8"))


def make_png(*chunks: tuple[bytes, bytes]) -> bytes:
    """A real 1x1 RGB PNG with the given extra chunks placed before the image data."""
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    for ctype, data in chunks:
        out += png_chunk(ctype, data)
    out += png_chunk(b"IDAT", zlib.compress(b"\x00\xff\x80\x40"))
    return out + png_chunk(b"IEND", b"")


def text_chunk(keyword: str, card: object) -> tuple[bytes, bytes]:
    return b"tEXt", keyword.encode("latin-1") + b"\x00" + b64card(card)


def v2(**data: Any) -> dict[str, Any]:
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": data}


def v3(**data: Any) -> dict[str, Any]:
    return {"spec": "chara_card_v3", "spec_version": "3.0", "data": data}


def write(path: Path, content: object) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- fixtures shipped


@pytest.fixture(scope="module")
def shipped() -> list[ParsedCard]:
    return read_cards(default_fixtures_dir())


def test_default_fixtures_dir_is_inside_the_package() -> None:
    d = default_fixtures_dir()
    assert d.is_dir()
    assert d == Path(__file__).resolve().parents[1] / "vitte" / "fixtures" / "personas"


def test_every_fixture_parses_and_is_a_v2_card(shipped: list[ParsedCard]) -> None:
    files = sorted(default_fixtures_dir().glob("*.json"))
    assert len(shipped) == len(files) >= 4
    for path, card in zip(files, shipped, strict=True):
        raw = json.loads(path.read_text(encoding="utf-8"))
        assert raw["spec"] == "chara_card_v2" and raw["spec_version"] == "2.0", path.name
        assert card.id == path.stem == raw["data"]["extensions"]["vitte"]["id"]
        assert card.raw == raw
        for key in (
            "name",
            "description",
            "personality",
            "scenario",
            "first_mes",
            "mes_example",
            "alternate_greetings",
            "system_prompt",
            "post_history_instructions",
            "tags",
            "creator",
            "character_version",
            "creator_notes",
            "extensions",
        ):
            assert key in raw["data"], f"{path.name}: data.{key}"


def test_fixtures_have_enough_personas_and_stories(shipped: list[ParsedCard]) -> None:
    assert len(shipped) >= 4
    assert len({c.id for c in shipped}) == len(shipped)
    assert len({c.order for c in shipped}) == len(shipped), "distinct catalog order"
    story_ids = [s.id for c in shipped for s in c.stories]
    assert len(set(story_ids)) == len(story_ids)
    for card in shipped:
        assert len(card.stories) >= 2, card.id
        assert all(s.id.startswith(card.id + ".") for s in card.stories)
        # stories end up in Telegram callback data (64 bytes) with a short prefix
        assert all(len(s.id.encode()) <= 40 for s in card.stories)
        assert [s.order for s in card.stories] == sorted(s.order for s in card.stories)


def test_fixtures_are_written_in_russian(shipped: list[ParsedCard]) -> None:
    for card in shipped:
        for text in (
            card.name,
            card.tagline,
            card.description,
            card.personality,
            card.scenario,
            card.first_mes,
            card.mes_example,
            card.system_prompt,
            *card.alternate_greetings,
            *card.tags,
        ):
            assert CYRILLIC.search(text), f"{card.id}: {text[:40]!r}"
        for story in card.stories:
            for text in (story.title, story.premise, story.opening):
                assert CYRILLIC.search(text), f"{story.id}: {text[:40]!r}"
            assert 2 <= len(re.findall(r"[.!?…](?:\s|$)", story.opening)) <= 8, story.id


def test_fixtures_have_english_variants(shipped: list[ParsedCard]) -> None:
    for card in shipped:
        en = card.i18n["en"]
        for key in ("name", "tagline", "description", "first_mes"):
            assert en.get(key, "").strip(), f"{card.id}: i18n.en.{key}"
            assert not CYRILLIC.search(en[key]), f"{card.id}: i18n.en.{key} is not English"
        for story in card.stories:
            s_en = story.i18n["en"]
            for key in ("title", "premise", "opening"):
                assert s_en.get(key, "").strip(), f"{story.id}: i18n.en.{key}"
                assert not CYRILLIC.search(s_en[key]), f"{story.id}: i18n.en.{key}"


def test_fixtures_are_adult_and_player_text_is_clean(shipped: list[ParsedCard]) -> None:
    for card in shipped:
        m = re.search(r"\b(\d{2})\b", card.description)
        assert m and 18 <= int(m.group(1)) <= 60, f"{card.id}: the description states an adult age"
        en_age = re.search(r"\b(\d{2})\b", card.i18n["en"]["description"])
        assert en_age and en_age.group(1) == m.group(1)
        # player-facing texts are shown as they are: no prompt macros in them
        for text in (card.name, card.tagline, card.description, *card.i18n["en"].values()):
            assert "{{" not in text, card.id
        # prompt-facing texts use the macros
        assert "{{char}}" in card.personality and "{{user}}" in card.scenario
        assert card.system_prompt.startswith("{{original}}")
        assert card.description not in (card.personality, card.scenario)
        assert "18+" in card.creator_notes


def test_fixture_mes_examples_use_sillytavern_format(shipped: list[ParsedCard]) -> None:
    for card in shipped:
        blocks = card.mes_example.split("<START>")
        assert blocks[0] == "" and len(blocks) >= 3, card.id
        for block in blocks[1:]:
            lines = [ln for ln in block.strip().splitlines() if ln.strip()]
            assert lines[0].startswith("{{user}}: "), card.id
            assert lines[1].startswith("{{char}}: "), card.id


def test_fixture_avatars_are_small_svgs(shipped: list[ParsedCard]) -> None:
    root = default_fixtures_dir().parent
    for card in shipped:
        assert card.avatar == f"avatars/{card.id}.svg"
        path = root / card.avatar
        assert path.is_file(), path
        assert path.stat().st_size < 2048, path
        tree = ET.parse(path)
        assert tree.getroot().tag == "{http://www.w3.org/2000/svg}svg"
        assert "linearGradient" in path.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- formats


def test_v1_card_gets_slug_and_default_story() -> None:
    card = read_card_file(DATA / "v1_card.json")
    assert card.name == "Алёна Морозова"
    assert card.id == "alena-morozova"
    assert card.system_prompt == "" and card.tags == [] and card.avatar is None
    assert card.tagline.startswith("Алёна Морозова — 28 лет")  # derived, macro resolved
    assert len(card.stories) == 1
    story = card.stories[0]
    assert story.id == "alena-morozova-main"
    assert story.premise == card.scenario.strip()
    assert story.opening == card.first_mes
    assert story.title and story.i18n["en"]["title"]


def test_legacy_tavern_v1_fields_are_understood() -> None:
    card = parse_card(
        {"char_name": "Зоя", "char_persona": "тихая", "world_scenario": "сад", "char_greeting": "Привет."},
        "old.json",
    )
    assert (card.name, card.personality, card.scenario, card.first_mes) == ("Зоя", "тихая", "сад", "Привет.")
    assert card.id == "zoya"


def test_v2_card_keeps_unknown_keys_and_cleans_tags() -> None:
    card = read_card_file(DATA / "v2_card.json")
    assert card.id == "captain-elena-reyes"
    assert card.tags == ["sea", "captain", "adventure"]
    assert card.system_prompt.startswith("{{original}}")
    assert card.alternate_greetings and card.creator == "tests"
    data = card.raw["data"]
    assert data["character_book"]["entries"][0]["keys"] == ["Meridian"]
    assert data["extensions"]["depth_prompt"]["depth"] == 4
    assert data["character_version"] == "1.2"


def test_v3_card_keeps_v3_fields_and_reads_stories() -> None:
    card = read_card_file(DATA / "v3_card.json")
    assert card.id == "sofia" and card.order == 7 and card.tagline == "Реставратор витражей"
    assert card.avatar == "avatars/sofia.svg"
    assert card.i18n["en"]["name"] == "Sofia"
    data = card.raw["data"]
    assert data["nickname"] == "Соня"
    assert data["group_only_greetings"]
    assert data["assets"][0]["uri"] == "ccdefault:"
    assert data["extensions"]["someone_else"] == {"keep": ["me", 1, None]}
    first, second = card.stories
    assert first.id == "sofia.blue-window" and first.order == 0
    assert first.i18n["en"]["title"] == "The blue window"
    assert second.id == "sofia.noch-v-sobore"  # no id: slug of the title
    assert second.order == 5 and second.premise == ""


def test_png_card_with_chara_chunk(tmp_path: Path) -> None:
    card_json = v2(name="Ирина", first_mes="Привет!", tags=["фото"])
    path = write(tmp_path / "irina.png", make_png(text_chunk("chara", card_json)))
    card = read_card_file(path)
    assert card.name == "Ирина" and card.id == "irina" and card.first_mes == "Привет!"
    assert card.avatar is None  # the PNG itself is the picture
    assert card.raw == card_json


def test_png_card_prefers_ccv3_over_chara(tmp_path: Path) -> None:
    old = v2(name="Old name")
    new = v3(name="New name", nickname="Newbie", assets=[], group_only_greetings=[])
    for order in ((old, "chara"), (new, "ccv3")), ((new, "ccv3"), (old, "chara")):
        png = make_png(*(text_chunk(kw, c) for c, kw in order))
        card = read_card_file(write(tmp_path / "both.png", png))
        assert card.name == "New name"
        assert card.raw["spec"] == "chara_card_v3"


def test_png_card_in_ztxt_and_itxt_chunks(tmp_path: Path) -> None:
    payload = b64card(v2(name="Zed"))
    ztxt = (b"zTXt", b"chara\x00\x00" + zlib.compress(payload))
    assert read_card_file(write(tmp_path / "z.png", make_png(ztxt))).name == "Zed"
    itxt_plain = (b"iTXt", b"ccv3\x00\x00\x00en\x00\x00" + b64card(v3(name="Ида")))
    assert read_card_file(write(tmp_path / "i.png", make_png(itxt_plain))).name == "Ида"
    itxt_zip = (b"iTXt", b"ccv3\x00\x01\x00\x00\x00" + zlib.compress(b64card(v3(name="Ия"))))
    assert read_card_file(write(tmp_path / "iz.png", make_png(itxt_zip))).name == "Ия"


def test_shipped_png_test_cards_parse() -> None:
    irina = read_card_file(DATA / "chara_card.png")
    assert irina.id == "irina" and irina.raw["spec"] == "chara_card_v2"
    teodor = read_card_file(DATA / "ccv3_card.png")
    assert teodor.name == "Теодор" and teodor.raw["data"]["nickname"] == "Тео"


def test_read_cards_folder_is_sorted_and_ignores_other_files(tmp_path: Path) -> None:
    cards = read_cards(DATA)
    assert [c.source for c in cards] == [
        "ccv3_card.png",
        "chara_card.png",
        "v1_card.json",
        "v2_card.json",
        "v3_card.json",
    ]  # make_png_cards.py is not a card
    folder = tmp_path / "cards"
    folder.mkdir()
    write(folder / "b.json", v2(name="Бета"))
    write(folder / "a.json", {"name": "Альфа"})
    write(folder / "notes.txt", b"not a card")
    write(folder / "picture.png", make_png())  # a plain image beside the cards
    (folder / "sub").mkdir()
    write(folder / "sub" / "c.json", {"name": "Гамма"})
    assert [c.name for c in read_cards(folder)] == ["Альфа", "Бета"]
    assert [c.name for c in read_cards(folder / "b.json")] == ["Бета"]


def test_slugify() -> None:
    assert slugify("Алёна Морозова") == "alena-morozova"
    assert slugify("Щука & Ёжик!") == "shchuka-ezhik"
    assert slugify("Élodie O'Brien") == "elodie-o-brien"
    assert slugify("Юлия Чайковская") == "yuliya-chaykovskaya"
    long = slugify("Очень " * 40)
    assert len(long) <= 64 and not long.endswith("-") and re.fullmatch(r"[a-z0-9-]+", long)
    assert parse_card({"name": "!!!"}, "x.json").id.startswith("persona-")


def test_content_hash_is_stable_and_sensitive() -> None:
    a = read_card_file(DATA / "v3_card.json")
    b = read_card_file(DATA / "v3_card.json")
    assert a.content_hash() == b.content_hash()
    assert re.fullmatch(r"[0-9a-f]{64}", a.content_hash())
    # key order in the file does not matter
    raw = json.loads((DATA / "v3_card.json").read_text(encoding="utf-8"))
    shuffled = {"data": dict(reversed(list(raw["data"].items()))), **{k: raw[k] for k in ("spec_version", "spec")}}
    assert parse_card(shuffled, "other-name.json").content_hash() == a.content_hash()
    # any change does
    assert replace(a, description=a.description + " ").content_hash() != a.content_hash()
    assert replace(a, stories=a.stories[:1]).content_hash() != a.content_hash()
    raw["data"]["extensions"]["someone_else"]["keep"].append(2)
    assert parse_card(raw, "v3_card.json").content_hash() != a.content_hash()


def test_content_hash_is_the_same_in_another_process() -> None:
    code = (
        "from pathlib import Path; from vitte.catalog.cards import read_cards;"
        f"print(','.join(c.content_hash() for c in read_cards(Path({str(DATA)!r}))))"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            check=True,
            capture_output=True,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {",".join(c.content_hash() for c in read_cards(DATA))}


# --------------------------------------------------------------------------- broken cards

STORY = {"id": "one", "title": "Раз", "opening": "Привет."}


def vitte(**ext: Any) -> dict[str, Any]:
    return v2(name="Ника", extensions={"vitte": ext})


BROKEN: list[tuple[str, object, str]] = [
    ("broken.json", v2(description="x"), "broken.json: data.name: missing"),
    ("blank.json", v2(name="   "), "blank.json: data.name: empty"),
    ("num.json", {"name": {"x": 5}}, "num.json: name: expected a string, got object"),
    ("list.json", [1, 2], "list.json: card: expected a JSON object, got array"),
    ("desc.json", v2(name="A", description=["x"]), "desc.json: data.description: expected a string, got array"),
    ("v3.json", v3(name="A", first_mes=False), "v3.json: data.first_mes: expected a string, got boolean"),
    ("tags.json", v2(name="A", tags="a,b"), "tags.json: data.tags: expected an array of strings, got string"),
    ("tag.json", v2(name="A", tags=["a", None]), "tag.json: data.tags[1]: expected a string, got null"),
    ("alt.json", v2(name="A", alternate_greetings=[None]), "alt.json: data.alternate_greetings[0]: expected a string, got null"),
    ("spec.json", {"spec": "chara_card_v9", "data": {"name": "A"}}, "spec.json: spec: unsupported card spec 'chara_card_v9' (expected chara_card_v2 or chara_card_v3)"),
    ("data.json", {"spec": "chara_card_v2", "data": "A"}, "data.json: data: expected an object, got string"),
    ("nodata.json", {"spec": "chara_card_v3"}, "nodata.json: data: missing"),
    ("ext.json", v2(name="A", extensions=[]), "ext.json: data.extensions: expected an object, got array"),
    ("id.json", vitte(id="Ника"), "id.json: data.extensions.vitte.id: 'Ника' is not a slug (use a-z, 0-9 and '-')"),
    ("order.json", vitte(order=True), "order.json: data.extensions.vitte.order: expected an integer, got boolean"),
    ("avatar.json", vitte(avatar="../../etc/passwd"), "avatar.json: data.extensions.vitte.avatar: '../../etc/passwd' must be a relative path (e.g. avatars/x.svg) or an http(s) URL"),
    ("i18n.json", vitte(i18n={"en": {"name": 1}}), "i18n.json: data.extensions.vitte.i18n.en.name: expected a string, got number"),
    ("stories.json", vitte(stories={"a": STORY}), "stories.json: data.extensions.vitte.stories: expected an array, got object"),
    ("dup.json", vitte(stories=[STORY, dict(STORY, title="Два")]), "dup.json: data.extensions.vitte.stories[1].id: duplicate story id 'one' (also stories[0])"),
    ("title.json", vitte(stories=[{"id": "x", "opening": "Hi."}]), "title.json: data.extensions.vitte.stories[0].title: missing"),
    ("opening.json", vitte(stories=[STORY, {"id": "y", "title": "T", "opening": ""}]), "opening.json: data.extensions.vitte.stories[1].opening: empty"),
    ("sid.json", vitte(stories=[dict(STORY, id="a.b")]), "sid.json: data.extensions.vitte.stories[0].id: 'a.b' is not a slug (use a-z, 0-9 and '-')"),
    ("longname.json", {"name": "Я" * 300}, "longname.json: name: too long (300 > 256 characters)"),
    ("json.json", b'{"name": "A",\n  "x": }', "json.json: json: invalid JSON at line 2 column 8: Expecting value"),
    ("cp1251.json", '{"name": "Ёж"}'.encode("cp1251"), "cp1251.json: json: not UTF-8 text (byte 10)"),
    ("plain.png", make_png(), "plain.png: chara: no 'ccv3' or 'chara' text chunk (not a character card)"),
    ("b64.png", make_png((b"tEXt", b"chara\x00%%%not base64%%%")), "b64.png: tEXt[chara]: not valid base64"),
    ("notjson.png", make_png((b"tEXt", b"chara\x00" + base64.b64encode(b"hello"))), "notjson.png: tEXt[chara]: invalid JSON at line 1 column 1: Expecting value"),
    ("noname.png", make_png(text_chunk("ccv3", v3(nickname="x"))), "noname.png: data.name: missing"),
    ("fake.png", b"GIF89a not a png", "fake.png: png: not a PNG file (bad signature)"),
    ("short.png", make_png(text_chunk("chara", v2(name="A")))[:60], "short.png: png: truncated tEXt chunk at byte 33"),
]


@pytest.mark.parametrize(("name", "content", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_cards_give_one_line_naming_file_and_field(
    tmp_path: Path, name: str, content: object, expected: str
) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(CardError) as info:
        read_card_file(path)
    message = str(info.value)
    assert message == expected
    assert "\n" not in message
    assert info.value.source == name


def test_card_error_is_always_one_line() -> None:
    err = CardError("a\nb.json", "data.\nname", "bad\n\tvalue")
    assert str(err) == "a b.json: data. name: bad value"


def test_bad_crc_is_reported(tmp_path: Path) -> None:
    png = bytearray(make_png(text_chunk("chara", v2(name="A"))))
    png[45] ^= 0xFF  # inside the tEXt chunk's data
    with pytest.raises(CardError, match=r"^crc\.png: tEXt: bad CRC"):
        read_card_file(write(tmp_path / "crc.png", bytes(png)))


def test_folder_with_a_broken_card_raises_naming_it(tmp_path: Path) -> None:
    write(tmp_path / "a_good.json", v2(name="Хорошая"))
    write(tmp_path / "b_bad.json", v2(name="Плохая", tags=[None]))
    write(tmp_path / "c_good.json", v2(name="Тоже хорошая"))
    with pytest.raises(CardError, match=r"^b_bad\.json: data\.tags\[0\]: "):
        read_cards(tmp_path)


def test_folder_with_duplicate_persona_ids_raises(tmp_path: Path) -> None:
    write(tmp_path / "a.json", vitte(id="mila"))
    write(tmp_path / "b.json", vitte(id="mila"))
    with pytest.raises(CardError) as info:
        read_cards(tmp_path)
    assert str(info.value) == "b.json: id: duplicate persona id 'mila' (also in a.json)"


def test_missing_path() -> None:
    with pytest.raises(CardError, match="no such file or folder"):
        read_cards(Path("/nonexistent/cards"))


# --------------------------------------------------------------------------- seeding


@pytest.fixture
async def db(backend_settings: Settings) -> AsyncIterator[Database]:
    database = Database(backend_settings)
    await database.ensure_ready()
    try:
        yield database
    finally:
        await database.dispose()


async def snapshot(db: Database) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    async with db.session() as s:
        personas = (await s.execute(sa.select(Persona))).scalars().all()
        stories = (await s.execute(sa.select(Story))).scalars().all()
        return (
            {p.id: p.model_dump() for p in personas},
            {st.id: st.model_dump() for st in stories},
        )


class WriteCounter:
    """Counts INSERT / UPDATE / DELETE statements sent to the database."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.writes: list[str] = []

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip().split(None, 1)[0].upper() in {"INSERT", "UPDATE", "DELETE"}:
            self.writes.append(statement)

    def __enter__(self) -> WriteCounter:
        event.listen(self.db.engine.sync_engine, "before_cursor_execute", self._before)
        return self

    def __exit__(self, *exc: object) -> None:
        event.remove(self.db.engine.sync_engine, "before_cursor_execute", self._before)


async def test_seed_fixtures_twice_second_run_changes_nothing(db: Database, shipped: list[ParsedCard]) -> None:
    ids = sorted(c.id for c in shipped)
    first = await seed_cards(db, shipped)
    assert sorted(first.added) == ids and first.updated == [] and first.unchanged == []
    personas, stories = await snapshot(db)
    assert sorted(personas) == ids
    assert len(stories) == sum(len(c.stories) for c in shipped)
    mila = personas["mila"]
    card = next(c for c in shipped if c.id == "mila")
    assert mila["name"] == "Мила" and mila["tagline"] == card.tagline and mila["sort_order"] == card.order
    assert mila["card"] == card.raw and mila["content_hash"] == card.content_hash()
    assert mila["i18n"]["en"]["name"] == "Mila" and mila["avatar"] == "avatars/mila.svg"
    assert stories["mila.white-nights"]["persona_id"] == "mila"
    assert stories["mila.white-nights"]["i18n"]["en"]["title"] == "White nights"

    with WriteCounter(db) as counter:
        second = await seed_cards(db, read_cards(default_fixtures_dir()))
    assert second == SeedReport(added=[], updated=[], unchanged=[c.id for c in shipped])
    assert counter.writes == []
    assert await snapshot(db) == (personas, stories)  # updated_at included


async def test_folder_with_one_broken_card_writes_nothing(db: Database, tmp_path: Path) -> None:
    shutil.copy(default_fixtures_dir() / "mila.json", tmp_path / "a_mila.json")
    write(tmp_path / "b_broken.json", v2(description="no name"))
    with WriteCounter(db) as counter, pytest.raises(CardError, match=r"^b_broken\.json: data\.name: missing$"):
        await seed_path(db, tmp_path)
    assert counter.writes == []
    assert await snapshot(db) == ({}, {})


async def test_a_database_error_rolls_back_every_card(db: Database, shipped: list[ParsedCard]) -> None:
    good, other = shipped[0], shipped[1]
    bad_story = replace(other.stories[0], title=None)  # type: ignore[arg-type]  # NOT NULL violation in the database
    bad = replace(other, stories=[bad_story, *other.stories[1:]])
    with pytest.raises(sa.exc.IntegrityError):
        await seed_cards(db, [good, bad])
    assert await snapshot(db) == ({}, {})

    # and an update that fails leaves the earlier state intact
    await seed_cards(db, [good])
    before = await snapshot(db)
    changed = replace(good, description=good.description + " Изменено.")
    with pytest.raises(sa.exc.IntegrityError):
        await seed_cards(db, [changed, bad])
    assert await snapshot(db) == before


async def test_changing_a_card_updates_it(db: Database, tmp_path: Path) -> None:
    folder = tmp_path / "cards"
    shutil.copytree(default_fixtures_dir(), folder)
    await seed_path(db, folder)
    personas_before, _ = await snapshot(db)

    # a player is in a dialog on one of the stories about to be dropped (Core inserts name only
    # the columns this test needs, so it does not depend on the rest of the users table)
    async with db.session() as s, s.begin():
        await s.execute(sa.insert(User).values(id=42))
        await s.execute(sa.insert(Dialog).values(user_id=42, persona_id="mila", story_id="mila.white-nights"))

    path = folder / "mila.json"
    raw = json.loads(path.read_text(encoding="utf-8"))
    data = raw["data"]
    data["description"] = "Миле 27, и теперь у неё своя маленькая мастерская."
    stories = data["extensions"]["vitte"]["stories"]
    kept, dropped_referenced, dropped_free = stories
    kept["title"] = "Закрытие под ливнем"
    stories[:] = [
        kept,
        {"id": "new-year", "title": "Новый год", "opening": "*Мила вешает гирлянду.* Поможешь?"},
    ]
    assert dropped_referenced["id"] == "white-nights" and dropped_free["id"] == "first-exhibition"
    write(path, raw)

    report = await seed_path(db, folder)
    assert report.updated == ["mila"] and report.added == []
    assert sorted(report.unchanged) == sorted(set(personas_before) - {"mila"})
    assert report.kept_stories == ["mila.white-nights"]

    personas, stories_after = await snapshot(db)
    mila, mila_before = personas["mila"], personas_before["mila"]
    assert mila["description"].startswith("Миле 27")
    assert mila["card"]["data"]["description"] == mila["description"]
    assert mila["content_hash"] != mila_before["content_hash"]
    assert mila["updated_at"] > mila_before["updated_at"]
    assert mila["created_at"] == mila_before["created_at"]
    for pid in set(personas) - {"mila"}:
        assert personas[pid] == personas_before[pid]
    assert stories_after["mila.rainy-closing"]["title"] == "Закрытие под ливнем"
    assert stories_after["mila.new-year"]["order"] == 1
    assert "mila.white-nights" in stories_after  # a dialog refers to it
    assert "mila.first-exhibition" not in stories_after
    async with db.session() as s:
        story_ids = (await s.execute(sa.select(col(Dialog.story_id)))).scalars().all()
    assert story_ids == ["mila.white-nights"]

    # and again: nothing to do
    with WriteCounter(db) as counter:
        again = await seed_path(db, folder)
    assert again.updated == [] and "mila" in again.unchanged and counter.writes == []


async def test_missing_story_rows_are_repaired(db: Database, shipped: list[ParsedCard]) -> None:
    await seed_cards(db, shipped)
    async with db.session() as s, s.begin():
        await s.execute(sa.delete(Story).where(col(Story.id) == "lev.perseids"))
    report = await seed_cards(db, shipped)
    assert report.updated == ["lev"]
    _, stories = await snapshot(db)
    assert "lev.perseids" in stories


async def test_list_personas_orders_and_counts(db: Database, shipped: list[ParsedCard]) -> None:
    assert await list_personas(db) == []
    extra = read_card_file(DATA / "v1_card.json")  # order 0, one default story
    await seed_cards(db, [*shipped, extra])
    rows = await list_personas(db)
    assert [p.id for p, _ in rows] == ["alena-morozova", *[c.id for c in sorted(shipped, key=lambda c: c.order)]]
    counts = {p.id: n for p, n in rows}
    assert counts["alena-morozova"] == 1
    for card in shipped:
        assert counts[card.id] == len(card.stories)


async def test_seed_refuses_duplicate_ids(db: Database) -> None:
    a = parse_card(vitte(id="mila"), "a.json")
    b = parse_card(vitte(id="mila"), "b.json")
    with pytest.raises(CardError, match="duplicate persona id 'mila'"):
        await seed_cards(db, [a, b])
    assert await snapshot(db) == ({}, {})


async def test_all_test_cards_seed(db: Database) -> None:
    report = await seed_path(db, DATA)
    assert sorted(report.added) == sorted(c.id for c in read_cards(DATA))
    _, stories = await snapshot(db)
    assert {"sofia.blue-window", "sofia.noch-v-sobore", "irina-main", "teodor-main"} <= set(stories)


async def test_two_seeders_at_once_both_succeed(backend_settings: Settings, shipped: list[ParsedCard]) -> None:
    """Two services starting together may both seed an empty database: neither may fail."""
    first, second = Database(backend_settings), Database(backend_settings)
    try:
        await first.ensure_ready()
        reports = await asyncio.gather(seed_cards(first, shipped), seed_cards(second, shipped))
        ids = sorted(c.id for c in shipped)
        assert sorted(reports[0].added + reports[1].added) == ids
        assert sorted(reports[0].unchanged + reports[1].unchanged) == ids
        personas, _ = await snapshot(first)
        assert sorted(personas) == ids
    finally:
        await first.dispose()
        await second.dispose()
