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
