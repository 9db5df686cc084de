"""`vitte lore show` / `vitte lore test`: a persona's lorebook and what a text activates, with
stable --json keys, inert text, exit 1 for an unknown persona; SQLite and PostgreSQL."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from vitte.config import Settings

runner = CliRunner()

CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Seraphina",
        "description": "A guardian.",
        "first_mes": "You wake up.",
        "character_book": {
            "name": "Eldoria\x1b[31m",
            "scan_depth": 3,
            "entries": [
                {"keys": ["forest", "wood"], "content": "Eldoria is a forest.", "enabled": True,
                 "insertion_order": 1, "comment": "eldoria"},
                {"keys": ["shadowfang"], "secondary_keys": ["night"], "selective": True, "content": "Wolves.",
                 "enabled": True, "insertion_order": 2, "comment": "shadowfang\x1b]0;pwned\x07",
                 "extensions": {"selectiveLogic": 3, "position": 4, "depth": 2, "role": 2}},
                {"keys": ["x"], "content": "@@dont_activate\n@@is_greeting 1\nNever.", "enabled": True,
                 "insertion_order": 3, "comment": "never"},
                {"keys": ["x"], "content": "The sky is green.", "constant": True, "enabled": True,
                 "insertion_order": 0, "comment": "sky"},
                {"keys": ["(a"], "use_regex": True, "content": "Broken.", "enabled": True, "comment": "broken"},
            ],
        },
    },
}  # fmt: skip


@pytest.fixture
def env(backend_settings: Settings, redis_cleanup_if_any: None, tmp_path: Path) -> dict[str, str]:
    environment = {"VITTE_DATABASE_URL": backend_settings.database_url, "COLUMNS": "300"}
    path = tmp_path / "seraphina.json"
    path.write_text(json.dumps(CARD), encoding="utf-8")
    seeded = runner.invoke(app, ["seed", str(path)], env=environment)
    assert seeded.exit_code == 0, seeded.output
    return environment


def test_lore_show(env: dict[str, str]) -> None:
    res = runner.invoke(app, ["lore", "show", "seraphina", "--json"], env=env)
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["persona"] == "seraphina" and data["lorebook"]["scan_depth"] == 3
    by_name = {e["name"].split("\x1b")[0]: e for e in data["entries"]}
    assert by_name["eldoria"]["keys"] == ["forest", "wood"] and by_name["eldoria"]["position"] == "before_char"
    wolves = by_name["shadowfang"]
    assert (wolves["logic"], wolves["position"], wolves["depth"], wolves["role"]) == ("and_all", "depth", 2, "assistant")
    assert by_name["never"]["dont_activate"] and by_name["never"]["ignored_decorators"] == ["is_greeting"]
    assert by_name["never"]["content"] == "Never."
    assert by_name["broken"]["problems"]

    human = runner.invoke(app, ["lore", "show", "seraphina"], env=env)
    assert human.exit_code == 0 and "eldoria" in human.stdout and "dont_activate" in human.stdout
    assert "\x1b" not in human.stdout and "\x07" not in human.stdout  # card text is inert


def test_lore_test(env: dict[str, str]) -> None:
    res = runner.invoke(app, ["lore", "test", "seraphina", "A shadowfang in the wood at night!", "--json"], env=env)
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)["activated"]
    assert [h["name"].split("\x1b")[0] for h in hits] == ["sky", "eldoria", "shadowfang"]  # by insertion order
    assert hits[0]["reason"] == "constant" and hits[0]["stable"] is True
    assert hits[1]["reason"] == "key 'wood'" and hits[1]["position"] == "before_char"
    assert (hits[2]["position"], hits[2]["depth"], hits[2]["role"]) == ("depth", 2, "assistant")

    lone = json.loads(runner.invoke(app, ["lore", "test", "seraphina", "A shadowfang!", "--json"], env=env).stdout)
    assert [h["name"] for h in lone["activated"]] == ["sky"]  # AND ALL: "night" missing

    human = runner.invoke(app, ["lore", "test", "seraphina", "the forest"], env=env)
    assert human.exit_code == 0 and "eldoria: key 'forest' → before_char" in human.stdout


def test_unknown_persona_and_bad_usage(env: dict[str, str]) -> None:
    for args in (["lore", "show", "nobody"], ["lore", "test", "nobody", "hi"]):
        res = runner.invoke(app, args, env=env)
        assert res.exit_code == 1 and "nobody" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["lore", "test", "seraphina", "x" * 100_001], env=env)
    assert res.exit_code == 2 and "too long" in res.output
    assert runner.invoke(app, ["lore", "test", "seraphina"], env=env).exit_code == 2


def test_a_persona_without_a_book(env: dict[str, str]) -> None:
    shipped = runner.invoke(app, ["seed"], env=env)
    assert shipped.exit_code == 0, shipped.output
    persona = json.loads(runner.invoke(app, ["personas", "list", "--json"], env=env).stdout)
    other = next(p["id"] for p in persona if p["id"] != "seraphina")
    data = json.loads(runner.invoke(app, ["lore", "show", other, "--json"], env=env).stdout)
    assert data == {"persona": other, "lorebook": None, "entries": []}
    data = json.loads(runner.invoke(app, ["lore", "test", other, "forest", "--json"], env=env).stdout)
    assert data["activated"] == []
