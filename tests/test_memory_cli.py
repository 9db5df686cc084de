"""`vitte memory show USER [--json]` (issue 16, item 5), on SQLite and PostgreSQL: facts (the
superseded ones marked), summary, counts; unknown users exit 1 with one line; hostile fact
text is inert on the terminal and exact in --json. And the player's data: /mydata's export
holds the facts, "delete my data" erases them, `vitte dialog reset` clears them."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.support.players import adult
from vitte.config import Settings
from vitte.core import Core
from vitte.dialogs.facts import Extracted, Plan, clean_text

runner = CliRunner()
HOSTILE = "[/oops] [bold red]x[/] \x1b]0;pwned\x07\x1b[31mred\x1b[0m \u202e"
CONTROL = {chr(c) for c in range(32) if chr(c) != "\n"} | {chr(c) for c in range(0x7F, 0xA0)} | {"\u202e"}


def invoke(url: str, *args: str):
    return runner.invoke(app, list(args), env={"VITTE_DATABASE_URL": url, "COLUMNS": "300"})


async def play(settings: Settings, user_id: int) -> tuple[int, list[int]]:
    """A player with a dialog, a fact they told, two extracted facts, one superseding."""
    core = await Core.open(settings, seed_if_empty=True)
    try:
        await adult(core, user_id, first_name="Аня", username=f"anya{user_id}")
        p = (await core.catalog.personas())[0]
        dialog_id = (await core.dialogs.choose(user_id, p.id, p.stories[0].id)).dialog.id
        await core.dialogs.reply(user_id, "запомни: я люблю " + HOSTILE)
        store = core.dialogs.facts.store
        unread = await store.unread(dialog_id, 10)
        assert unread is not None
        await store.apply(unread.dialog, Plan(add=[(Extracted("Работает медсестрой", importance=4), [])]), 1)
        unread = await store.unread(dialog_id, 10)
        assert unread is not None
        nurse = unread.facts[-1].id
        await store.apply(
            unread.dialog, Plan(add=[(Extracted("Работает учителем", importance=4), [nurse])]), 2
        )
        return dialog_id, [f.id for f in (await store.unread(dialog_id, 10) or unread).facts]
    finally:
        await core.close()


def test_memory_show_json_human_and_unknown(backend_settings: Settings, redis_cleanup_if_any: None) -> None:
    url = backend_settings.database_url
    dialog_id, _live = asyncio.run(play(backend_settings, 881))
    res = invoke(url, "memory", "show", "881", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert set(data) == {"user_id", "dialog_id", "status", "summary", "counts", "facts"}
    assert (data["user_id"], data["dialog_id"], data["status"]) == (881, dialog_id, "active")
    assert data["counts"] == {"facts": 2, "superseded": 1, "extracted": 1, "player": 1}
    assert set(data["facts"][0]) == {
        "id", "kind", "text", "importance", "origin", "superseded_by", "created_at", "updated_at"
    }  # fmt: skip
    told = data["facts"][0]["text"]  # a fact is plain text: no control characters are stored
    assert told == clean_text("я люблю " + HOSTILE) and "[bold red]x[/]" in told and not set(told) & CONTROL
    nurse, teacher = data["facts"][1], data["facts"][2]
    assert nurse["superseded_by"] == teacher["id"] and teacher["superseded_by"] is None
    by_name = json.loads(invoke(url, "memory", "show", "@anya881", "--json").stdout)
    assert by_name["dialog_id"] == dialog_id

    human = invoke(url, "memory", "show", "881")
    assert human.exit_code == 0 and "Работает учителем" in human.stdout and "1 superseded" in human.stdout
    assert "[/oops] [bold red]x[/]" in human.stdout and not set(human.stdout) & CONTROL

    for args in (["memory", "show", "424242"], ["memory", "show", "@nobody"]):
        res = invoke(url, *args)
        assert res.exit_code == 1 and "unknown user" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert invoke(url, "memory", "show").exit_code == 2  # bad usage

    # `vitte dialog reset` clears the dialog's memory: its facts too
    assert invoke(url, "dialog", "reset", "881", "--yes").exit_code == 0
    after = json.loads(invoke(url, "memory", "show", "881", "--json").stdout)
    assert after["status"] == "ended" and after["facts"] == [] and after["counts"]["facts"] == 0


def test_export_holds_the_facts_and_delete_erases_them(
    backend_settings: Settings, redis_cleanup_if_any: None
) -> None:
    dialog_id, live = asyncio.run(play(backend_settings, 882))
    asyncio.run(play(backend_settings, 883))  # another player's facts stay

    async def check() -> None:
        core = await Core.open(backend_settings)
        try:
            exported = await core.players.export(882)
            (dialog,) = exported["dialogs"]
            assert dialog["id"] == dialog_id
            facts = dialog["facts"]
            assert {f["id"] for f in facts} >= set(live) and len(facts) == 3
            assert set(facts[0]) == {
                "id", "kind", "text", "importance", "origin", "sources", "superseded_by", "created_at", "updated_at"
            }  # fmt: skip
            json.dumps(exported)  # JSON-serializable
            await core.players.delete_data(882)
            assert await core.dialogs.facts.store.of_player(882) == []
            assert len(await core.dialogs.facts.store.of_player(883)) == 3
        finally:
            await core.close()

    asyncio.run(check())


@pytest.mark.parametrize("language", ["ru", "en"])
def test_nothing_to_show_is_a_plain_line(
    backend_settings: Settings, redis_cleanup_if_any: None, language: str
) -> None:
    async def seen() -> None:
        core = await Core.open(backend_settings, seed_if_empty=True)
        try:
            await adult(core, 884, language_code=language)
        finally:
            await core.close()

    asyncio.run(seen())
    res = invoke(backend_settings.database_url, "memory", "show", "884")
    assert res.exit_code == 0 and "has no dialog" in res.stdout
    data = json.loads(invoke(backend_settings.database_url, "memory", "show", "884", "--json").stdout)
    assert data["dialog_id"] is None and data["facts"] == [] and data["counts"]["facts"] == 0
