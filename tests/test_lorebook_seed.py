"""Standalone lorebooks imported with `vitte seed` (vitte.catalog.worlds): stored, updated,
reported per file, and used by the personas whose cards name them; SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import app
from vitte.cache.base import CachedMessage
from vitte.catalog.cards import read_card_file
from vitte.config import Settings
from vitte.core import Core
from vitte.prompt import PromptInput, build_messages

runner = CliRunner()


def card(name: str, **extensions: Any) -> dict[str, Any]:
    return {"spec": "chara_card_v2", "spec_version": "2.0",
            "data": {"name": name, "description": "A guardian.", "first_mes": "Hello.", "extensions": extensions}}  # fmt: skip


def world(name: str, content: str, spec: bool = True) -> dict[str, Any]:
    body = {"name": name, "entries": [{"keys": ["dragon"], "content": content, "enabled": True, "insertion_order": 1}]}
    return {"spec": "lorebook_v3", "data": body} if spec else body


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "cards"
    d.mkdir()
    (d / "seraphina.json").write_text(json.dumps(card("Seraphina", world="Eldoria")))
    (d / "nova.json").write_text(json.dumps(card("Nova", vitte={"lorebooks": ["space-lore"]})))
    (d / "plain.json").write_text(json.dumps(card("Plain")))
    (d / "eldoria.json").write_text(json.dumps(world("Eldoria", "Dragons sleep under the lake.")))
    (d / "space-lore.json").write_text(json.dumps(world("", "Space dragons eat stars.", spec=False)))
    (d / "empty.json").write_text(json.dumps({"spec": "lorebook_v3", "data": {"name": "E", "entries": []}}))
    return d


@pytest.fixture
def env(backend_settings: Settings, redis_cleanup_if_any: None) -> dict[str, str]:
    return {"VITTE_DATABASE_URL": backend_settings.database_url}


def files(res: Any) -> dict[str, tuple[str, str | None]]:
    assert res.stdout, res.output
    return {f["file"]: (f["status"], f["id"] or f["reason"]) for f in json.loads(res.stdout)["files"]}


def test_standalone_books_are_stored_updated_and_used(folder: Path, env: dict[str, str], backend_settings: Settings) -> None:
    first = files(runner.invoke(app, ["seed", str(folder), "--json"], env=env))
    assert first["eldoria.json"] == ("added", "lorebook:eldoria")
    assert first["space-lore.json"] == ("added", "lorebook:space-lore")  # no name: the file's
    assert first["empty.json"][0] == "skipped" and "no lorebook entry" in str(first["empty.json"][1])
    assert first["seraphina.json"] == ("added", "seraphina")

    again = files(runner.invoke(app, ["seed", str(folder), "--json"], env=env))
    assert again["eldoria.json"] == ("unchanged", "lorebook:eldoria")

    def activated(persona: str) -> list[str]:
        res = runner.invoke(app, ["lore", "test", persona, "Is there a dragon?", "--json"], env=env)
        assert res.exit_code == 0, res.output
        return [h["name"] for h in json.loads(res.stdout)["activated"]]

    assert activated("seraphina") == ["dragon"] and activated("nova") == ["dragon"] and activated("plain") == []

    (folder / "eldoria.json").write_text(json.dumps(world("Eldoria", "Dragons left the lake.")))
    one = files(runner.invoke(app, ["seed", str(folder / "eldoria.json"), "--json"], env=env))
    assert one == {"eldoria.json": ("updated", "lorebook:eldoria")}

    async def prompt_of(persona_id: str) -> str:
        core = await Core.open(backend_settings)
        try:
            p = await core.catalog.persona(persona_id)
            msgs = build_messages(PromptInput(card=p.card, char_name=p.name, user_name="Ann", language="en",
                                              style="normal", premise="", memory="",
                                              history=[CachedMessage(1, "user", "a dragon!")], budget=3000))  # fmt: skip
            return msgs[0]["content"]
        finally:
            await core.close()

    system = asyncio.run(prompt_of("seraphina"))
    assert "Dragons left the lake." in system and "Dragons sleep" not in system


@pytest.mark.parametrize("fmt", ["json", "png", "charx"])
def test_export_carries_the_standalone_books_and_import_brings_them_back(
    tmp_path: Path, env: dict[str, str], fmt: str
) -> None:
    """`vitte personas export` carries the standalone books the persona names (their entries in
    the card's character_book for other applications, the books for Vitte's import): seeded into an
    empty catalogue the persona has the same lore, seeded again where it came from no entry doubles."""
    d = tmp_path / "cards"
    d.mkdir()
    own = {"name": "Mira's own", "scan_depth": 4,
           "entries": [{"keys": ["mirror"], "content": "Mira's mirror shows the past.", "enabled": True,
                        "insertion_order": 5}]}  # fmt: skip
    mira = card("Mira", world="Eldoria", vitte={"lorebooks": ["space-lore"]})
    mira["data"]["character_book"] = own
    (d / "mira.json").write_text(json.dumps(mira))
    (d / "eldoria.json").write_text(json.dumps(world("Eldoria", "Dragons sleep under the lake.")))
    # SillyTavern's world file (entries by number), no name: stored under its file's name
    st_world = {"entries": {"0": {"keys": ["star"], "content": "Space dragons eat stars.", "comment": "stars",
                                  "constant": False, "order": 3}}}  # fmt: skip
    (d / "space-lore.json").write_text(json.dumps(st_world))
    fresh = {"VITTE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}"}

    def vitte(*args: str, where: dict[str, str] = env) -> Any:
        res = runner.invoke(app, list(args), env=where)
        assert res.exit_code == 0, res.output
        return res

    def lore(where: dict[str, str]) -> Any:
        return json.loads(vitte("lore", "show", "mira", "--json", where=where).stdout)

    def activated(text: str, where: dict[str, str]) -> list[str]:
        res = vitte("lore", "test", "mira", text, "--json", where=where)
        return [h["name"] for h in json.loads(res.stdout)["activated"]]

    vitte("seed", str(d), "--json")
    before = lore(env)
    assert [e["content"] for e in before["entries"]] == [
        "Mira's mirror shows the past.", "Dragons sleep under the lake.", "Space dragons eat stars."
    ]
    out = tmp_path / f"mira.{fmt}"
    vitte("personas", "export", "mira", "--format", fmt, "-o", str(out))
    if fmt == "json":  # other applications read the entries in the card's own book
        exported = json.loads(out.read_text())["data"]
        assert [e["content"] for e in exported["character_book"]["entries"]] == [e["content"] for e in before["entries"]]
        assert exported["character_book"]["name"] == "Mira's own"
        assert sorted(exported["extensions"]["vitte"]["lorebook_files"]) == ["eldoria", "space-lore"]

    moved = json.loads(vitte("seed", str(out), "--json", where=fresh).stdout)
    assert moved["added"] == ["mira"] and moved["lorebooks_added"] == ["eldoria", "space-lore"]
    assert lore(fresh) == before  # the same entries, settings and order
    assert activated("a star and a dragon", fresh) == activated("a star and a dragon", env) == ["dragon", "stars"]
    shown = json.loads(vitte("personas", "show", "mira", "--json", where=fresh).stdout)
    assert shown["lorebook_entries"] == 1  # the card keeps its own book; the others stay standalone

    home = json.loads(vitte("seed", str(out), "--json").stdout)  # back where it came from
    assert home["lorebooks_added"] == [] and lore(env) == before  # nothing doubled
    again = tmp_path / f"again.{fmt}"  # and exported again from the empty catalogue: the same card
    vitte("personas", "export", "mira", "--format", fmt, "-o", str(again), where=fresh)
    assert read_card_file(again).lorebooks == read_card_file(out).lorebooks != {}
    if fmt == "json":
        assert json.loads(again.read_text())["data"]["character_book"] == exported["character_book"]
