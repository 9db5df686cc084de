"""`vitte personas show / remove / export` (issue 17, items 6 and 8): a persona as stored, removal
refused while players are in a dialog with it (``--force`` ends those dialogs with a notice), and
export as a V3 card (PNG with ``ccv3`` and ``chara``, JSON, CHARX) that imports back to the same
persona, stories and lorebook."""

from __future__ import annotations

import asyncio
import base64
import json
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from typer.testing import CliRunner

from cli.main import app
from tests.support.fake_botapi import FakeBotApi
from tests.support.players import adult
from tests.test_cards_import import picture_png
from tests.test_catalog import text_chunk, v2, write
from vitte.catalog.cards import read_card_file
from vitte.catalog.export import export_card
from vitte.catalog.formats import png_text_chunks
from vitte.catalog.lorebook import book_of_card
from vitte.catalog.manage import PersonaInUse, export_persona, persona_details, remove_persona
from vitte.catalog.seed import seed_cards
from vitte.config import Settings, load_settings
from vitte.core import Core
from vitte.errors import UnknownPersona
from vitte.llm.demo import DemoWriter
from vitte.models import ACTIVE, Dialog, Persona, Portrait, Story
from vitte.telegram.bot import make_bot
from vitte.telegram.persona_notice import notify_removed, persona_removed_text, send_persona_removed

runner = CliRunner()
PLAYER = 4242

BOOK = {
    "name": "Eldoria",
    "scan_depth": 3,
    "token_budget": 500,
    "entries": [
        {
            "keys": ["Eldoria"],
            "content": "The forest of Eldoria.",
            "enabled": True,
            "insertion_order": 1,
            "id": 1,
        },
        {
            "keys": ["Shadowfang"],
            "content": "Beasts.",
            "enabled": True,
            "insertion_order": 2,
            "constant": True,
            "id": 2,
        },
    ],
}


def rich_card() -> dict[str, Any]:
    return v2(
        name="Seraphina",
        creator="OtisAlejandro",
        description="A guardian of the forest.",
        personality="caring",
        scenario="A glade.",
        first_mes="*You wake up.*",
        alternate_greetings=["*She smiles.*", "*Rain falls.*"],
        tags=["fantasy", "guardian"],
        creator_notes="ST Default Bot contest winner",
        character_book=BOOK,
        extensions={"talkativeness": "0.5", "depth_prompt": {"prompt": "x", "depth": 4}},
    )


@pytest.fixture
async def core(backend_settings: Settings, redis_cleanup_if_any: None) -> AsyncIterator[Core]:
    c = await Core.open(backend_settings, llm=DemoWriter(delay=0))
    try:
        yield c
    finally:
        await c.close()


async def stored(core: Core, persona_id: str) -> tuple[dict[str, Any], list[tuple[str, str, str]]]:
    async with core.db.session() as s:
        p = await s.get(Persona, persona_id)
        assert p is not None
        stories = (
            await s.execute(
                sa.select(Story.id, Story.title, Story.opening)
                .where(Story.persona_id == persona_id)
                .order_by(Story.order)
            )
        ).all()
        values = p.model_dump(exclude={"card", "content_hash", "created_at", "updated_at", "portrait"})
        return values, [tuple(r) for r in stories]  # type: ignore[misc]


@pytest.mark.parametrize("fmt", ["png", "json", "charx"])
async def test_export_then_import_gives_the_same_persona(core: Core, tmp_path: Path, fmt: str) -> None:
    card = read_card_file(
        write(tmp_path / "in.png", picture_png(text_chunk("chara", rich_card()), size=(600, 600)))
    )
    await seed_cards(core.db, [card])
    before, stories_before = await stored(core, "seraphina")
    async with core.db.session() as s:
        book_before = book_of_card((await s.get(Persona, "seraphina")).card)  # type: ignore[union-attr]

    blob = await export_persona(core.db, "seraphina", fmt)
    out = write(tmp_path / f"out.{fmt}", blob)
    again = read_card_file(out)
    assert again.raw["spec"] == "chara_card_v3" and again.explicit_id and again.id == "seraphina"
    if fmt != "json":
        assert again.image is not None  # the portrait travels with the card
    report = await seed_cards(core.db, [again])
    assert report.updated == ["seraphina"] and report.added == []
    after, stories_after = await stored(core, "seraphina")
    assert after == before and stories_after == stories_before
    assert len(stories_after) == 3  # first_mes and both alternate greetings
    async with core.db.session() as s:
        p = await s.get(Persona, "seraphina")
        assert p is not None
        book_after = book_of_card(p.card)
        assert p.card["data"]["extensions"]["talkativeness"] == "0.5"  # unknown keys preserved
    assert book_before is not None and book_after is not None
    assert [(e.content, e.keys) for e in book_after.entries] == [
        (e.content, e.keys) for e in book_before.entries
    ]

    # and into an empty catalogue it is the same persona too
    other = await Core.open(load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'other.sqlite3'}"))
    try:
        await seed_cards(other.db, [read_card_file(out)])
        moved, moved_stories = await stored(other, "seraphina")
        assert moved == before and moved_stories == stories_before
    finally:
        await other.close()


def test_png_export_has_ccv3_and_a_v2_chara_chunk() -> None:
    stored_card = rich_card()
    persona = {"id": "seraphina", "name": "Seraphina", "tags": ["fantasy"], "alternate_greetings": []}
    blob = export_card(stored_card, persona, None, "png")
    chunks = {kw: json.loads(base64.b64decode(text)) for _, kw, text in png_text_chunks(blob, "x.png")}
    assert chunks["ccv3"]["spec"] == "chara_card_v3" and chunks["chara"]["spec"] == "chara_card_v2"
    assert (
        chunks["chara"]["data"]["name"] == "Seraphina"
        and "group_only_greetings" not in chunks["chara"]["data"]
    )
    assert chunks["ccv3"]["data"]["character_book"] == BOOK
    charx = export_card(stored_card, persona, None, "charx")
    with zipfile.ZipFile(__import__("io").BytesIO(charx)) as zf:
        assert sorted(zf.namelist()) == ["assets/icon/images/main.png", "card.json"]
        assert (
            json.loads(zf.read("card.json"))["data"]["assets"][0]["uri"]
            == "embeded://assets/icon/images/main.png"
        )


async def test_show_lists_what_is_stored(core: Core, tmp_path: Path) -> None:
    await seed_cards(
        core.db, [read_card_file(write(tmp_path / "s.png", picture_png(text_chunk("chara", rich_card()))))]
    )
    data = await persona_details(core.db, "seraphina")
    assert (
        data["name"] == "Seraphina" and data["creator"] == "OtisAlejandro" and data["spec"] == "chara_card_v2"
    )
    assert [s["id"] for s in data["stories"]] == ["seraphina-main", "seraphina-alt-1", "seraphina-alt-2"]
    assert data["lorebook_entries"] == 2 and data["portrait"]["sizes"] == [512, 128]
    assert data["dialogs"] == {"active": 0, "total": 0}


async def test_remove_is_refused_while_a_player_is_in_a_dialog_and_force_ends_it(
    core: Core, tmp_path: Path
) -> None:
    await seed_cards(core.db, [read_card_file(write(tmp_path / "s.json", rich_card()))])
    core.catalog.invalidate()
    await adult(core, PLAYER)
    await core.dialogs.choose(PLAYER, "seraphina", "seraphina-main")
    with pytest.raises(PersonaInUse, match="persona seraphina has 1 active dialog"):
        await remove_persona(core, "seraphina")
    assert (await persona_details(core.db, "seraphina"))["dialogs"]["active"] == 1

    removed = await remove_persona(core, "seraphina", force=True)
    assert removed.ended == [(PLAYER, "ru")]
    async with core.db.session() as s:
        assert await s.get(Persona, "seraphina") is None
        assert (await s.execute(sa.select(sa.func.count()).select_from(Story))).scalar_one() == 0
        assert (await s.execute(sa.select(sa.func.count()).select_from(Portrait))).scalar_one() == 0
        active = (
            await s.execute(sa.select(Dialog).where(Dialog.user_id == PLAYER, Dialog.status == ACTIVE))
        ).all()
    assert active == []
    assert await core.dialogs.current(PLAYER) is None
    assert all(p.id != "seraphina" for p in await core.catalog.personas())


async def test_a_persona_another_process_removed_is_unknown_not_a_crash(
    core: Core, backend_settings: Settings, tmp_path: Path
) -> None:
    """Another process still lists the removed persona (its catalogue copy lives up to a minute):
    choosing it is UnknownPersona (the Web App's 404, the bot's friendly line), and the copy is
    dropped; nothing is half-opened."""
    await seed_cards(core.db, [read_card_file(write(tmp_path / "s.json", rich_card()))])
    core.catalog.invalidate()
    await adult(core, PLAYER)
    assert any(p.id == "seraphina" for p in await core.catalog.personas())  # this process's copy
    other = await Core.open(backend_settings, llm=DemoWriter(delay=0))
    try:
        await remove_persona(other, "seraphina")
    finally:
        await other.close()
    with pytest.raises(UnknownPersona):
        await core.dialogs.choose(PLAYER, "seraphina", "seraphina-main")
    assert await core.dialogs.current(PLAYER) is None
    assert all(p.id != "seraphina" for p in await core.catalog.personas())


async def test_the_notice_reaches_the_player() -> None:
    botapi = await FakeBotApi().start()
    settings = load_settings(bot_token="123456:" + "A" * 35, telegram_api_url=botapi.url)
    bot = make_bot(settings)
    try:
        await send_persona_removed(bot, PLAYER, "ru", "Серафина")
        sent = botapi.sent_messages(PLAYER)
        assert [m["text"] for m in sent] == [
            "Персонаж «Серафина» больше недоступен в Vitte, поэтому ваш диалог завершён. Выберите другого персонажа: /start"
        ]
    finally:
        await bot.session.close()
        await botapi.close()
    assert persona_removed_text("en", "Seraphina").startswith("Seraphina is no longer available")


async def test_the_notice_skips_players_who_blocked_the_bot(core: Core, tmp_path: Path) -> None:
    """`vitte personas remove --force` does not write to a player Telegram said blocked the bot
    who has not written in the dialog since (as the nudges and the restart notices); one who
    wrote since is told, and a 403 on the notice marks that player unreachable."""
    from datetime import timedelta

    from vitte.initiative.schedule import Schedule
    from vitte.models import MSG_OK, USER, Message, User, utcnow

    await seed_cards(core.db, [read_card_file(write(tmp_path / "s.json", rich_card()))])
    core.catalog.invalidate()
    gone, back, other, refuses = 4301, 4302, 4303, 4304
    for uid in (gone, back, other, refuses):
        await adult(core, uid)
        await core.dialogs.choose(uid, "seraphina", "seraphina-main")
    now = utcnow()
    async with core.db.session() as s, s.begin():
        dialogs = dict(
            (await s.execute(sa.select(Dialog.user_id, Dialog.id).where(Dialog.status == ACTIVE))).all()
        )
        for uid, said_at in ((gone, now - timedelta(hours=2)), (back, now - timedelta(hours=1))):
            s.add(Message(dialog_id=dialogs[uid], role=USER, text="hi", status=MSG_OK, created_at=said_at))
    schedule = Schedule(core.db)
    await schedule.mark_unreachable(gone, now - timedelta(hours=1))  # after their last message
    await schedule.mark_unreachable(back, now - timedelta(hours=2))  # they wrote since

    removed = await remove_persona(core, "seraphina", force=True)
    assert sorted(uid for uid, _ in removed.ended) == [gone, back, other, refuses]
    assert removed.unreachable == {gone}

    botapi = await FakeBotApi().start()
    botapi.fail_next[refuses] = (403, "Forbidden: bot was blocked by the user")
    settings = core.settings.model_copy(
        update={"bot_token": SecretStr("123456:" + "A" * 35), "telegram_api_url": botapi.url}
    )
    try:
        unreached = await notify_removed(settings, core.db, removed)
    finally:
        await botapi.close()
    assert sorted(unreached) == [gone, refuses]
    assert botapi.sent_messages(gone) == []  # never tried
    for uid in (back, other):
        assert [m["text"] for m in botapi.sent_messages(uid)] == [persona_removed_text("ru", "Seraphina")]
    async with core.db.session() as s:
        marked = {uid: (await s.get(User, uid)).unreachable_at for uid in (back, other, refuses)}  # type: ignore[union-attr]
    assert marked[other] is None and marked[refuses] is not None  # the notice's 403 recorded


def test_cli_show_remove_export(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'v.sqlite3'}"
    env = {"VITTE_DATABASE_URL": url}

    def vitte(*args: str) -> Any:
        return runner.invoke(app, list(args), env=env)

    assert vitte("seed", str(write(tmp_path / "s.json", rich_card()))).exit_code == 0
    pic = picture_png(text_chunk("chara", v2(name="Pic")))
    assert vitte("seed", str(write(tmp_path / "pic.png", pic))).exit_code == 0
    listed = {p["id"]: p["portrait"] for p in json.loads(vitte("personas", "list", "--json").stdout)}
    assert listed["seraphina"] is None and len(listed["pic"]) == 64
    shown = vitte("personas", "show", "seraphina", "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["lorebook_entries"] == 2
    missing = vitte("personas", "show", "nobody")
    assert missing.exit_code == 1 and missing.output.strip() == "error: unknown persona: nobody"

    async def in_dialog() -> None:
        core = await Core.open(load_settings(database_url=url))
        try:
            await adult(core, PLAYER)
            await core.dialogs.choose(PLAYER, "seraphina", "seraphina-main")
        finally:
            await core.close()

    asyncio.run(in_dialog())
    refused = vitte("personas", "remove", "seraphina")
    assert refused.exit_code == 1
    assert refused.output.strip() == (
        "error: persona seraphina has 1 active dialog(s): not removed (--force ends them with a notice)"
    )

    bad = vitte("personas", "export", "seraphina", "--format", "gif")
    assert (
        bad.exit_code == 2 and bad.output.strip() == "error: --format: 'gif' is not one of json, png, charx"
    )
    out = tmp_path / "exported.png"
    done = vitte("personas", "export", "seraphina", "-o", str(out))
    assert done.exit_code == 0 and read_card_file(out).name == "Seraphina"

    forced = vitte("personas", "remove", "seraphina", "--force", "--json")
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout) == {
        "id": "seraphina",
        "removed": True,
        "ended_dialogs": [PLAYER],
        "not_notified": [PLAYER],  # no bot token here: the operator is told who was not reached
        "unreachable": [],
    }
    assert vitte("personas", "show", "seraphina").exit_code == 1
