"""Importing character cards (issue 17, items 5 and 6 and "Bad input"): formats, limits, hostile
files refused in one line naming the file and the limit, per-file folder reports, card identity.

Cards are written by the tests themselves (PNGs with text chunks, CHARX zips, JSON files).
"""

from __future__ import annotations

import base64
import io
import json
import os
import zipfile
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from tests.test_catalog import b64card, make_png, png_chunk, text_chunk, v2, v3, write
from vitte.catalog import formats
from vitte.catalog.cards import CardError, read_card_file, read_folder
from vitte.catalog.seed import seed_cards
from vitte.config import Settings
from vitte.db import Database
from vitte.models import Persona, Portrait, Story

runner = CliRunner()


def picture_png(
    *chunks: tuple[bytes, bytes], size: tuple[int, int] = (300, 400), color: str = "red"
) -> bytes:
    """A real picture (Pillow) with card chunks inserted after IHDR."""
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "PNG")
    blob = out.getvalue()
    ihdr_end = 8 + 25
    return blob[:ihdr_end] + b"".join(png_chunk(c, d) for c, d in chunks) + blob[ihdr_end:]


def charx(card: object, extra: dict[str, bytes] | None = None) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("card.json", json.dumps(card))
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return out.getvalue()


def refused(path: Path) -> str:
    with pytest.raises(CardError) as info:
        read_card_file(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(path.name + ": ")
    return text


def seed_cli(url: str, *args: str) -> Any:
    return runner.invoke(app, ["seed", *args], env={"VITTE_DATABASE_URL": url})


# --------------------------------------------------------------------------- formats


def test_chub_top_level_v2_layout(tmp_path: Path) -> None:
    card = read_card_file(
        write(
            tmp_path / "aqua.json",
            {"spec": "chara_card_v2", "name": "Aqua", "description": "A goddess.", "tags": [1, "x"]},
        )
    )
    assert card.name == "Aqua" and card.description == "A goddess."
    assert card.tags == ["1", "x"]  # numbers where strings belong become strings


def test_numbers_where_strings_belong_are_coerced(tmp_path: Path) -> None:
    card = read_card_file(
        write(tmp_path / "n.json", v2(name=2077, creator=42, character_version=1.5, description=3.0))
    )
    assert (card.name, card.creator, card.raw["data"]["character_version"], card.description) == (
        "2077",
        "42",
        1.5,
        "3",
    )


def test_png_prefers_ccv3_over_chara(tmp_path: Path) -> None:
    blob = make_png(text_chunk("chara", v2(name="Old")), text_chunk("ccv3", v3(name="New")))
    assert read_card_file(write(tmp_path / "both.png", blob)).name == "New"


def test_generous_named_limits(tmp_path: Path) -> None:
    ok = read_card_file(
        write(tmp_path / "ok.json", v2(name="N" * 256, creator="c" * 300, creator_notes="n" * 10_000))
    )
    assert len(ok.name) == 256 and len(ok.creator) == 300
    assert refused(write(tmp_path / "name.json", v2(name="N" * 300))) == (
        "name.json: data.name: too long (300 > 256 characters)"
    )
    assert refused(write(tmp_path / "notes.json", v2(name="A", creator_notes="n" * 10_001))) == (
        "notes.json: data.creator_notes: too long (10001 > 10000 characters)"
    )


def test_charx_card_with_its_icon(tmp_path: Path) -> None:
    icon = picture_png()
    card = v3(
        name="Shodan",
        assets=[
            {"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main", "ext": "png"}
        ],
    )
    parsed = read_card_file(write(tmp_path / "s.charx", charx(card, {"assets/icon/images/main.png": icon})))
    assert parsed.name == "Shodan" and parsed.image == icon


def test_png_card_picture_is_kept(tmp_path: Path) -> None:
    blob = picture_png(text_chunk("chara", v2(name="Pic")))
    assert read_card_file(write(tmp_path / "p.png", blob)).image == blob


def test_standalone_lorebooks_are_recognised(tmp_path: Path) -> None:
    write(tmp_path / "v3book.json", {"spec": "lorebook_v3", "data": {"name": "World", "entries": []}})
    write(tmp_path / "v2book.json", {"name": "World", "entries": [{"keys": ["a"], "content": "b"}]})
    results = {r.file: r for r in read_folder(tmp_path)}
    assert results["v3book.json"].lorebook is not None and results["v2book.json"].lorebook is not None
    assert results["v2book.json"].card is None and results["v2book.json"].skipped is None


# --------------------------------------------------------------------------- hostile files


def _bomb(size: int) -> bytes:
    comp = zlib.compressobj(9)
    block = b"A" * (1 << 20)
    return b"".join(comp.compress(block) for _ in range(size >> 20)) + comp.flush()


@pytest.mark.parametrize("kind", ["zTXt", "iTXt"])
def test_compressed_chunk_bomb_is_refused_without_inflating_it(tmp_path: Path, kind: str) -> None:
    bomb = _bomb(64 << 20)  # 64 MiB of text in ~64 KB
    body = b"chara\x00\x00" + bomb if kind == "zTXt" else b"chara\x00\x01\x00\x00\x00" + bomb
    text = refused(write(tmp_path / "bomb.png", make_png((kind.encode(), body))))
    assert text == f"bomb.png: {kind}[chara]: inflates to more than 16 MiB"


def test_repeated_card_chunks_are_not_inflated_again(tmp_path: Path) -> None:
    six_mib = b"chara\x00\x00" + zlib.compress(
        b64card(v2(name="First", extensions={"junk": "x" * (6 << 20)})), 9
    )
    blob = make_png(*[(b"zTXt", six_mib)] * 200)  # 200 × 8 MiB if each were inflated
    assert read_card_file(write(tmp_path / "many.png", blob)).name == "First"


def test_a_bomb_in_an_unrelated_chunk_is_never_inflated(tmp_path: Path) -> None:
    blob = make_png((b"zTXt", b"comment\x00\x00" + _bomb(64 << 20)), text_chunk("chara", v2(name="Calm")))
    assert read_card_file(write(tmp_path / "calm.png", blob)).name == "Calm"


HOSTILE_JSON: list[tuple[str, bytes, str]] = [
    (
        "deep.json",
        b"[" * 100_000 + b"]" * 100_000,
        "deep.json: json: JSON nested too deeply (limit 64 levels)",
    ),
    (
        "deep2.json",
        json.dumps(v2(name="A", extensions={"x": json.loads("[" * 70 + "]" * 70)})).encode(),
        "deep2.json: json: JSON nested too deeply (limit 64 levels)",
    ),
    (
        "digits.json",
        b'{"name": "A", "x": ' + b"9" * 5000 + b"}",
        "digits.json: json: a number of 5000 digits (limit 40)",
    ),
    ("nan.json", b'{"name": "A", "x": NaN}', "nan.json: json: NaN is not a number JSON allows"),
    ("inf.json", b'{"name": "A", "x": 1e999}', "inf.json: json: the number 1e999 is out of range"),
    ("nul.json", b'{"name": "A\\u0000B"}', "nul.json: name: contains a NUL character"),
    (
        "surrogate.json",
        b'{"name": "A", "description": "\\ud800"}',
        "surrogate.json: description: contains a lone surrogate (not Unicode text)",
    ),
    (
        "order.json",
        json.dumps(v2(name="A", extensions={"vitte": {"order": 1e30}})).encode(),
        "order.json: data.extensions.vitte.order: out of range (1e+30 is beyond ±1000000)",
    ),
    (
        "bigint.json",
        b'{"name": "A", "x": 1000000000000000000000000000000}',
        "bigint.json: json: the integer 1000000000000000000000000000000 is out of range (limit ±2^53)",
    ),
    (
        "longdesc.json",
        json.dumps({"name": "A", "description": "d" * 300_000}).encode(),
        "longdesc.json: description: too long (300000 > 200000 characters)",
    ),
]


@pytest.mark.parametrize(("name", "blob", "expected"), HOSTILE_JSON, ids=[h[0] for h in HOSTILE_JSON])
def test_hostile_json_is_one_line_naming_the_limit(
    tmp_path: Path, name: str, blob: bytes, expected: str
) -> None:
    assert refused(write(tmp_path / name, blob)) == expected


def test_a_50_mb_description_is_refused_by_the_file_size(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with path.open("wb") as fh:
        fh.write(b'{"name": "A", "description": "')
        fh.write(b"d" * (50 << 20))
        fh.write(b'"}')
    assert refused(path) == f"huge.json: file: too large ({path.stat().st_size} bytes > 32 MiB)"


def test_devices_and_fifos_are_refused_without_reading(tmp_path: Path) -> None:
    fifo = tmp_path / "card.json"
    os.mkfifo(fifo)  # opening it would block forever
    assert refused(fifo) == "card.json: file: not a regular file"
    with pytest.raises(CardError, match=r"^null: file: not a regular file$"):
        read_card_file(Path("/dev/null"))


def test_charx_bounds(tmp_path: Path) -> None:
    many = {f"assets/other/{i}.txt": b"x" for i in range(formats.MAX_CHARX_ENTRIES)}
    assert refused(write(tmp_path / "many.charx", charx(v3(name="A"), many))) == (
        f"many.charx: charx: too many entries ({formats.MAX_CHARX_ENTRIES + 1} > {formats.MAX_CHARX_ENTRIES})"
    )
    escape = write(tmp_path / "escape.charx", charx(v3(name="A"), {"../../etc/passwd": b"x"}))
    assert refused(escape) == "escape.charx: charx: entry '../../etc/passwd' escapes the archive"
    absolute = write(tmp_path / "abs.charx", charx(v3(name="A"), {"/etc/passwd": b"x"}))
    assert refused(absolute) == "abs.charx: charx: entry '/etc/passwd' escapes the archive"
    nocard = io.BytesIO()
    with zipfile.ZipFile(nocard, "w") as zf:
        zf.writestr("other.json", "{}")
    assert (
        refused(write(tmp_path / "nocard.charx", nocard.getvalue()))
        == "nocard.charx: card.json: missing (not a CHARX card)"
    )
    assert (
        refused(write(tmp_path / "junk.charx", b"PK\x03\x04 not really"))
        == "junk.charx: charx: not a zip file"
    )


def test_charx_whose_card_json_inflates_to_256_mib(tmp_path: Path) -> None:
    out = io.BytesIO()
    with (
        zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf,
        zf.open("card.json", "w", force_zip64=True) as fh,
    ):
        block = b" " * (1 << 20)
        for _ in range(256):
            fh.write(block)
    path = write(tmp_path / "bomb.charx", out.getvalue())
    assert path.stat().st_size < 2 << 20
    assert refused(path) == f"bomb.charx: card.json: too large ({256 << 20} bytes > 8 MiB)"


# --------------------------------------------------------------------------- seeding: reports and identity


@pytest.fixture
async def db(backend_settings: Settings) -> AsyncIterator[Database]:
    database = Database(backend_settings)
    await database.ensure_ready()
    try:
        yield database
    finally:
        await database.dispose()


async def personas(db: Database) -> dict[str, Persona]:
    async with db.session() as s:
        return {p.id: p for p in (await s.execute(sa.select(Persona))).scalars()}


def seraphina(
    creator: str = "OtisAlejandro", description: str = "A guardian of the forest."
) -> dict[str, Any]:
    return v2(name="Seraphina", creator=creator, description=description, first_mes="*You wake up.*")


async def test_identity_same_card_updates_a_different_one_gets_a_new_id(db: Database, tmp_path: Path) -> None:
    a = write(tmp_path / "st_default_Seraphina.png", make_png(text_chunk("chara", seraphina())))
    copy = write(tmp_path / "Seraphina2.png", a.read_bytes())  # SillyTavern's copy on a second import
    other = write(tmp_path / "Seraphina1.png", make_png(text_chunk("chara", seraphina(creator="Somebody"))))
    cards = [r.card for r in read_folder(tmp_path) if r.card]
    report = await seed_cards(db, cards, strict=False)
    by_file = {f.file: (f.status, f.id) for f in report.files}
    assert by_file == {
        "Seraphina1.png": ("added", "seraphina"),
        "Seraphina2.png": ("added", "seraphina-2"),
        "st_default_Seraphina.png": ("unchanged", "seraphina-2"),
    }
    stored = await personas(db)
    assert stored["seraphina"].creator == "Somebody" and stored["seraphina-2"].creator == "OtisAlejandro"
    async with db.session() as s:
        story_ids = set((await s.execute(sa.select(Story.id))).scalars())
    assert {"seraphina-main", "seraphina-2-main"} <= story_ids

    # the same card edited (same name and creator) updates its persona, whatever the file is called
    write(tmp_path / "renamed.png", make_png(text_chunk("chara", seraphina(description="Changed."))))
    report = await seed_cards(db, [read_card_file(tmp_path / "renamed.png")])
    assert report.updated == ["seraphina-2"] and report.added == []
    assert (await personas(db))["seraphina-2"].description == "Changed."
    del copy, other


async def test_replace_puts_a_card_in_a_personas_place(db: Database, tmp_path: Path) -> None:
    await seed_cards(db, [read_card_file(write(tmp_path / "a.json", seraphina()))])
    new = read_card_file(write(tmp_path / "b.json", v2(name="Lilith", first_mes="Hello.")))
    report = await seed_cards(db, [new], replace="seraphina")
    assert report.updated == ["seraphina"]
    assert (await personas(db))["seraphina"].name == "Lilith"
    with pytest.raises(CardError, match=r"^b\.json: replace: no persona 'nobody' to replace$"):
        await seed_cards(db, [new], replace="nobody")


async def test_portrait_is_stored_in_sizes(db: Database, tmp_path: Path) -> None:
    blob = picture_png(text_chunk("chara", v2(name="Pic")), size=(600, 900))
    await seed_cards(db, [read_card_file(write(tmp_path / "pic.png", blob))])
    async with db.session() as s:
        rows = (await s.execute(sa.select(Portrait).where(Portrait.persona_id == "pic"))).scalars().all()
    persona = (await personas(db))["pic"]
    assert persona.portrait is not None and {r.digest for r in rows} == {persona.portrait}
    sizes = {r.size: Image.open(io.BytesIO(r.data)) for r in rows}
    assert {k: (v.format, v.size) for k, v in sizes.items()} == {
        512: ("WEBP", (512, 512)),
        128: ("WEBP", (128, 128)),
    }
    # a card without a picture: no portrait (the drawn initials)
    await seed_cards(db, [read_card_file(write(tmp_path / "plain.json", v2(name="Plain")))])
    assert (await personas(db))["plain"].portrait is None


def test_cli_folder_reports_every_file_and_one_bad_file_blocks_nothing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'v.sqlite3'}"
    cards = tmp_path / "cards"
    cards.mkdir()
    write(cards / "a_good.json", v2(name="Good"))
    write(cards / "b_bad.png", make_png((b"zTXt", b"chara\x00\x00" + _bomb(32 << 20))))
    write(cards / "c_plain.png", picture_png())
    write(cards / "d_notes.txt", b"hello")
    write(cards / "e_book.json", {"spec": "lorebook_v3", "data": {"entries": []}})
    write(cards / "f_charx.charx", charx(v3(name="Zipped")))
    done = seed_cli(url, str(cards), "--json")
    assert done.exit_code == 1, done.output  # a broken card was left out
    files = {f["file"]: f for f in json.loads(done.stdout)["files"]}
    assert {k: v["status"] for k, v in files.items()} == {
        "a_good.json": "added",
        "b_bad.png": "skipped",
        "c_plain.png": "skipped",
        "d_notes.txt": "skipped",
        "e_book.json": "skipped",
        "f_charx.charx": "added",
    }
    assert files["b_bad.png"]["reason"] == "b_bad.png: zTXt[chara]: inflates to more than 16 MiB"
    again = seed_cli(url, str(cards))
    assert again.exit_code == 1 and "0 added, 0 updated, 2 unchanged, 4 skipped" in again.stdout


def test_cli_strict_is_all_or_nothing(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'v.sqlite3'}"
    cards = tmp_path / "cards"
    cards.mkdir()
    write(cards / "a_good.json", v2(name="Good"))
    write(cards / "b_bad.json", b'{"name": NaN}')
    done = seed_cli(url, str(cards), "--strict")
    assert (
        done.exit_code == 2
        and done.output.strip() == "error: b_bad.json: json: NaN is not a number JSON allows"
    )
    listed = runner.invoke(app, ["personas", "list", "--json"], env={"VITTE_DATABASE_URL": url})
    assert json.loads(listed.stdout) == []


def test_cli_one_bad_file_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'v.sqlite3'}"
    done = seed_cli(url, str(write(tmp_path / "deep.json", b"[" * 50_000)))
    assert done.exit_code == 2
    assert done.output.strip() == "error: deep.json: json: JSON nested too deeply (limit 64 levels)"
    replace = seed_cli(url, str(write(tmp_path / "x.json", v2(name="X"))), "--replace", "nobody")
    assert (
        replace.exit_code == 1
        and replace.output.strip() == "error: x.json: replace: no persona 'nobody' to replace"
    )


def _png_declaring(width: int, height: int, *chunks: tuple[bytes, bytes]) -> bytes:
    """A PNG whose header declares width × height (its data is a few bytes)."""
    import struct

    ihdr = png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    body = b"".join(png_chunk(c, d) for c, d in chunks)
    return (
        b"\x89PNG\r\n\x1a\n"
        + ihdr
        + body
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


async def test_a_pixel_bomb_picture_is_refused_and_nothing_is_written(db: Database, tmp_path: Path) -> None:
    bomb = read_card_file(
        write(tmp_path / "huge.png", _png_declaring(60_000, 60_000, text_chunk("chara", v2(name="Huge"))))
    )
    good = read_card_file(write(tmp_path / "good.json", v2(name="Good")))
    with pytest.raises(CardError) as info:
        await seed_cards(db, [good, bomb])  # strict: all or nothing
    assert str(info.value) == "huge.png: picture: too large (more than 40000000 pixels)"
    assert await personas(db) == {}
    report = await seed_cards(db, [good, bomb], strict=False)  # one bad file blocks nothing
    assert report.added == ["good"]
    assert [(f.file, f.reason) for f in report.skipped] == [
        ("huge.png", "huge.png: picture: too large (more than 40000000 pixels)")
    ]


async def test_personas_imported_before_card_keys_are_recognised(db: Database, tmp_path: Path) -> None:
    await seed_cards(db, [read_card_file(write(tmp_path / "a.json", seraphina()))])
    async with db.session() as s, s.begin():  # as an older Vitte stored it: no card key
        await s.execute(sa.update(Persona).values(card_key=None))
    report = await seed_cards(db, [read_card_file(write(tmp_path / "a.json", seraphina(description="New.")))])
    assert report.updated == ["seraphina"] and report.added == []
    assert (await personas(db))["seraphina"].card_key is not None


def test_cli_replace(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'v.sqlite3'}"
    assert seed_cli(url, str(write(tmp_path / "a.json", seraphina()))).exit_code == 0
    done = seed_cli(
        url, str(write(tmp_path / "b.json", v2(name="Lilith"))), "--replace", "seraphina", "--json"
    )
    assert done.exit_code == 0 and json.loads(done.stdout)["updated"] == ["seraphina"]
    folder = seed_cli(url, str(tmp_path), "--replace", "seraphina")
    assert folder.exit_code == 2 and "--replace takes one card file" in folder.output


def test_charx_icon_bomb_is_refused(tmp_path: Path) -> None:
    out = io.BytesIO()
    card = v3(
        name="A", assets=[{"type": "icon", "uri": "embeded://assets/icon/images/main.png", "name": "main"}]
    )
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("card.json", json.dumps(card))
        with zf.open("assets/icon/images/main.png", "w", force_zip64=True) as fh:
            for _ in range(64):
                fh.write(b"\x00" * (1 << 20))
    path = write(tmp_path / "icon.charx", out.getvalue())
    assert path.stat().st_size < 1 << 20
    assert (
        refused(path)
        == f"icon.charx: assets/icon/images/main.png: entry too large ({64 << 20} bytes > 16 MiB)"
    )


async def test_long_names_and_creators_are_stored_shortened_and_kept_whole_in_the_card(
    db: Database, tmp_path: Path
) -> None:
    card = read_card_file(
        write(tmp_path / "long.json", v2(name="Н" * 256, creator="c" * 1000, first_mes="Hi."))
    )
    report = await seed_cards(db, [card])
    (pid,) = report.added
    stored = (await personas(db))[pid]
    assert len(stored.name) == 128 and stored.name.endswith("…") and len(stored.creator) == 200
    assert stored.card["data"]["name"] == "Н" * 256 and stored.card["data"]["creator"] == "c" * 1000
    again = await seed_cards(db, [read_card_file(tmp_path / "long.json")])
    assert again.unchanged == [pid]  # the same card: recognised by its whole name and creator


def test_v3_json_icon_asset_named_main_is_the_picture(tmp_path: Path) -> None:
    main, other = picture_png(color="red"), picture_png(color="blue")

    def uri(blob: bytes) -> str:
        return "data:image/png;base64," + base64.b64encode(blob).decode()

    assets = [
        {"type": "icon", "uri": uri(other), "name": "alt", "ext": "png"},
        {"type": "icon", "uri": uri(main), "name": "main", "ext": "png"},
        {"type": "background", "uri": uri(other), "name": "main", "ext": "png"},
    ]
    card = read_card_file(write(tmp_path / "v3.json", v3(name="Icon", assets=assets)))
    assert card.image == main
    plain = read_card_file(
        write(tmp_path / "plain.json", v3(name="Plain", assets=[{"type": "icon", "uri": "ccdefault:"}]))
    )
    assert plain.image is None


async def test_two_files_claiming_one_vitte_id_the_second_is_skipped(db: Database, tmp_path: Path) -> None:
    a = read_card_file(write(tmp_path / "a.json", v2(name="A", extensions={"vitte": {"id": "same"}})))
    b = read_card_file(write(tmp_path / "b.json", v2(name="B", extensions={"vitte": {"id": "same"}})))
    report = await seed_cards(db, [a, b], strict=False)
    assert report.added == ["same"] and (await personas(db))["same"].name == "A"
    assert [f.reason for f in report.skipped] == ["b.json: id: duplicate persona id 'same' (also in a.json)"]


async def test_a_picture_pillow_cannot_read_leaves_the_drawn_initials(db: Database, tmp_path: Path) -> None:
    card = v3(
        name="Odd", assets=[{"type": "icon", "uri": "embeded://assets/icon/images/main.svg", "name": "main"}]
    )
    blob = charx(card, {"assets/icon/images/main.svg": b"<svg xmlns='http://www.w3.org/2000/svg'/>"})
    report = await seed_cards(db, [read_card_file(write(tmp_path / "odd.charx", blob))])
    assert report.added == ["odd"] and (await personas(db))["odd"].portrait is None
