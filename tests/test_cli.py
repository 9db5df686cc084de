"""The operator CLI: commands, --json shapes, exit codes (0 ok, 1 not found/refused, 2 bad usage/config)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.support.players import adult
from vitte.config import load_settings
from vitte.core import Core

runner = CliRunner()


def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None):
    return runner.invoke(app, list(args), env=env, input=input)


def one_line(text: str) -> bool:
    return len([ln for ln in text.strip().splitlines() if ln.strip()]) == 1


def test_version_and_help_list_every_command() -> None:
    res = invoke("--version")
    assert res.exit_code == 0 and res.stdout.startswith("vitte ")
    res = invoke("--help")
    assert res.exit_code == 0
    for command in ("run-bot", "serve-webapp", "seed", "db", "personas", "dialog", "demo", "user", "payments", "bench"):
        assert command in res.stdout


def test_help_imports_no_heavy_modules() -> None:
    code = (
        "import sys; from cli.main import app; "
        "heavy = [m for m in ('sqlalchemy', 'aiogram', 'textual', 'httpx', 'redis', 'sqlmodel') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == ""


def test_seed_is_idempotent_and_personas_list(tmp_path: Path) -> None:
    first = invoke("seed", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert len(report["added"]) >= 4 and report["updated"] == [] and report["unchanged"] == []
    second = json.loads(invoke("seed", "--json").stdout)
    assert second["added"] == [] and second["updated"] == [] and sorted(second["unchanged"]) == sorted(report["added"])
    listed = invoke("personas", "list", "--json")
    assert listed.exit_code == 0
    personas = json.loads(listed.stdout)
    assert {p["id"] for p in personas} == set(report["added"])
    assert all(set(p) == {"id", "name", "tagline", "tags", "stories", "portrait"} and len(p["stories"]) >= 2 for p in personas)
    assert all(p["portrait"] is None for p in personas)  # the shipped personas draw their avatars
    table = invoke("personas", "list")
    assert table.exit_code == 0 and personas[0]["name"] in table.stdout


def test_broken_card_is_one_line_and_nothing_written(tmp_path: Path) -> None:
    folder = tmp_path / "cards"
    folder.mkdir()
    (folder / "a_good.json").write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {"name": "Good", "first_mes": "hi"}}))
    (folder / "b_broken.json").write_text(json.dumps({"spec": "chara_card_v2", "spec_version": "2.0", "data": {"description": "no name"}}))
    res = invoke("seed", str(folder), "--strict")  # all or nothing
    assert res.exit_code == 2
    assert one_line(res.stderr) and "b_broken.json" in res.stderr and "name" in res.stderr
    listed = json.loads(invoke("personas", "list", "--json").stdout)
    assert listed == []
    res = invoke("seed", str(folder))  # by default the good card goes in, the broken one is reported
    assert res.exit_code == 1
    assert "skipped   b_broken.json: data.name: missing" in res.stdout
    assert [p["id"] for p in json.loads(invoke("personas", "list", "--json").stdout)] == ["good"]


def test_missing_seed_path_is_bad_usage(tmp_path: Path) -> None:
    res = invoke("seed", str(tmp_path / "nope"))
    assert res.exit_code == 2 and one_line(res.stderr)


def test_bad_configuration_is_exit_2_one_line() -> None:
    res = invoke("personas", "list", env={"VITTE_DATABASE_URL": "mysql://nope"})
    assert res.exit_code == 2
    assert one_line(res.stderr) and "VITTE_DATABASE_URL" in res.stderr


def test_unknown_user_is_exit_1() -> None:
    for args in (["dialog", "show", "424242"], ["dialog", "show", "@nobody"], ["dialog", "reset", "424242", "--yes"]):
        res = invoke(*args)
        assert res.exit_code == 1, args
        assert one_line(res.stderr) and "unknown user" in res.stderr


def _play(user_id: int) -> None:
    async def go() -> None:
        core = await Core.open(load_settings(), seed_if_empty=True)
        try:
            await adult(core, user_id, first_name="Аня", username="anya")
            p = (await core.catalog.personas())[1]
            await core.dialogs.choose(user_id, p.id, p.stories[0].id)
            await core.dialogs.reply(user_id, "Привет, как дела?")
        finally:
            await core.close()

    asyncio.run(go())


def test_dialog_show_list_and_reset() -> None:
    _play(777)
    res = invoke("dialog", "show", "777", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) == {"user_id", "dialog_id", "persona", "story", "status", "memory", "messages"}
    assert data["user_id"] == 777 and data["status"] == "active"
    assert [m["role"] for m in data["messages"]] == ["assistant", "user", "assistant"]
    assert set(data["messages"][0]) == {"role", "text", "created_at"}
    by_name = json.loads(invoke("dialog", "show", "@anya", "--json").stdout)
    assert by_name["dialog_id"] == data["dialog_id"]
    human = invoke("dialog", "show", "777")
    assert human.exit_code == 0 and "Привет, как дела?" in human.stdout

    rows = json.loads(invoke("dialog", "list", "--json").stdout)
    assert [r["user_id"] for r in rows] == [777] and rows[0]["messages"] == 3

    refused = invoke("dialog", "reset", "777")  # no tty, no --yes
    assert refused.exit_code == 1 and "--yes" in refused.stderr
    assert json.loads(invoke("dialog", "show", "777", "--json").stdout)["status"] == "active"
    done = invoke("dialog", "reset", "777", "--yes")
    assert done.exit_code == 0, done.output
    after = json.loads(invoke("dialog", "show", "777", "--json").stdout)
    assert after["status"] == "ended" and after["memory"] == ""
    assert json.loads(invoke("dialog", "list", "--json").stdout) == []


def test_db_commands() -> None:
    up = invoke("db", "upgrade")
    assert up.exit_code == 0 and "revision" in up.stdout
    cur = json.loads(invoke("db", "current", "--json").stdout)
    assert cur["up_to_date"] is True and cur["current"] == cur["head"]


def test_demo_chats_offline() -> None:
    res = invoke("demo", "--message", "Привет!")
    assert res.exit_code == 0, res.output
    assert "offline demo writer" in res.stdout
    assert "you: Привет!" in res.stdout


def test_demo_without_messages_says_the_catalogues_lines_as_its_guest() -> None:
    res = invoke("demo")
    assert res.exit_code == 0, res.output
    assert "you: Привет! Как проходит твой день?" in res.stdout  # the cli part of the catalogue
    assert "you: Расскажи о себе что-нибудь, чего никто не знает." in res.stdout
    shown = invoke("user", "show", "1", "--json")
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["first_name"] == "Гость"  # the console's guest_name


@pytest.mark.parametrize("command", ["run-bot", "serve-webapp"])
def test_faces_need_a_token(command: str) -> None:
    res = invoke(command)
    assert res.exit_code == 2 and "VITTE_BOT_TOKEN" in res.stderr and one_line(res.stderr)
    res = invoke(command, env={"VITTE_BOT_TOKEN": "not-a-token"})
    assert res.exit_code == 2 and "malformed" in res.stderr


# hostile text as a card author or a player can write it: Rich markup, a window-title sequence
# (OSC 0), colours (CSI), an OSC-8 hyperlink, a bell, a backspace and a bidi override
HOSTILE = "[/oops] [bold red]x[/] \x1b]0;pwned\x07\x1b[31mred\x1b[0m \x1b]8;;https://evil.example/\x1b\\link\x1b]8;;\x1b\\\x08\u202e"
CONTROL_CHARS = {chr(c) for c in range(32) if chr(c) not in "\n"} | {chr(c) for c in range(0x7F, 0xA0)} | {"\u202e"}


def _inert(output: str) -> bool:
    return not (set(output) & CONTROL_CHARS)


def test_hostile_card_memory_and_messages_are_inert_in_every_listing(tmp_path: Path) -> None:
    card = {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "Eve " + HOSTILE,
            "description": "A card. " + HOSTILE,
            "first_mes": "hi " + HOSTILE,
            "tags": ["t " + HOSTILE],
            "extensions": {"vitte": {"id": "eve", "tagline": "line " + HOSTILE}},
            "character_book": {
                "name": "book " + HOSTILE,
                "entries": [
                    {"keys": ["player", "k " + HOSTILE], "content": "lore " + HOSTILE, "enabled": True,
                     "insertion_order": 1, "comment": "c " + HOSTILE},
                ],
            },
        },
    }
    (tmp_path / "eve.json").write_text(json.dumps(card))
    seeded = invoke("seed", str(tmp_path / "eve.json"))
    assert seeded.exit_code == 0, seeded.output
    memory = "she said [/b] and [link=https://evil.example]x[/link] " + HOSTILE

    async def play() -> None:
        core = await Core.open(load_settings())
        try:
            await adult(core, 4242, first_name="Mallory " + HOSTILE, username="mallory")
            p = await core.catalog.persona("eve")
            opening = await core.dialogs.choose(4242, p.id, p.stories[0].id)
            await core.dialogs.reply(4242, "player says " + HOSTILE)
            await core.dialogs.reply(4242, "запомни, что fact " + HOSTILE)
            view = await core.dialogs.latest(4242)
            assert view is not None
            assert await core.dialogs.store.save_summary(view.id, 0, memory, 0)
            await core.billing.record_payment(
                4242, telegram_payment_charge_id="ch-" + HOSTILE, total_amount=50, invoice_payload="x " + HOSTILE
            )
            assert opening
        finally:
            await core.close()

    asyncio.run(play())
    env = {"COLUMNS": "400"}
    for args in (
        ["personas", "list"],
        ["dialog", "list"],
        ["dialog", "list", "--all"],
        ["dialog", "show", "4242"],
        ["user", "show", "4242"],
        ["payments", "list"],
        ["payments", "list", "--user", "4242"],
        ["personas", "show", "eve"],
        ["lore", "show", "eve"],
        ["lore", "test", "eve", "player"],
        ["memory", "show", "4242"],
        ["memory", "search", "4242", "player"],
    ):
        res = invoke(*args, env=env)
        assert res.exit_code == 0 and res.exception is None, (args, res.output)
        assert "Traceback" not in res.output, args
        assert _inert(res.output), (args, res.output)
    shown = {tuple(a): invoke(*a, env=env).stdout for a in (["personas", "list"], ["dialog", "show", "4242"])}
    for out in shown.values():
        assert "Eve [/oops] [bold red]x[/] red link" in out  # the text stays visible, literally
    show = shown[("dialog", "show", "4242")]
    assert "she said [/b] and [link=https://evil.example]x[/link]" in show and "player says [/oops]" in show
    assert "Mallory [/oops]" in invoke("user", "show", "4242", env=env).stdout
    assert "fact [/oops]" in invoke("memory", "show", "4242", env=env).stdout
    assert "book [/oops]" in invoke("lore", "show", "eve", env=env).stdout
    # --json stays exact: the stored values, byte for byte
    listed = json.loads(invoke("personas", "list", "--json").stdout)
    assert [p["name"] for p in listed] == ["Eve " + HOSTILE] and listed[0]["tagline"] == "line " + HOSTILE
    data = json.loads(invoke("dialog", "show", "4242", "--json").stdout)
    assert data["memory"] == memory and data["persona"] == "Eve " + HOSTILE
    assert data["messages"][1]["text"] == "player says " + HOSTILE
    assert json.loads(invoke("user", "show", "4242", "--json").stdout)["first_name"] == "Mallory " + HOSTILE
    assert json.loads(invoke("payments", "list", "--json").stdout)[0]["charge_id"] == "ch-" + HOSTILE


def test_log_lines_are_inert_too() -> None:
    import logging

    from vitte.logs import TextFormatter

    record = logging.LogRecord("vitte.billing", logging.WARNING, __file__, 1, "payment %s from user %s", ("ch-" + HOSTILE, 1), None)
    record.update_id = record.player_id = "-"  # what vitte.logs' record factory adds
    line = TextFormatter().format(record)
    assert _inert(line) and "payment ch-[/oops] [bold red]x[/] red link from user 1" in line
