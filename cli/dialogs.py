"""`vitte dialog …` (players' dialogs: list, show, reset) and `vitte demo` (a short offline chat
through the engine).

Registered in cli/main.py: ``app.add_typer(dialog_app, name="dialog")``, ``app.command("demo")(demo)``.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from cli.common import (
    JSON_OPTION,
    LIMIT_OPTION,
    USER_ARG,
    fail,
    iso,
    opened_core,
    plain,
    print_json,
    run_async,
    settings_or_exit,
    shown,
)

dialog_app = typer.Typer(help="Players' dialogs: list, show, reset.", no_args_is_help=True)


@dialog_app.command("list")
def dialog_list(
    include_ended: bool = typer.Option(False, "--all", help="Include ended dialogs."),
    limit: LIMIT_OPTION = 50,
    as_json: bool = JSON_OPTION,
) -> None:
    """List dialogs, newest first (active ones unless --all)."""
    settings = settings_or_exit()

    async def go() -> list[dict[str, Any]]:
        from vitte.stats import list_dialogs

        async with opened_core(settings) as core:
            return await list_dialogs(core, include_ended=include_ended, limit=limit)

    rows = run_async(go)
    if as_json:
        print_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Dialogs")
    for col in ("dialog", "user", "persona", "story", "status", "messages", "started"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["dialog_id"]),
            str(r["user_id"]),
            shown(r["persona"]),
            shown(r["story"]),
            shown(r["status"]),
            str(r["messages"]),
            (r["created_at"] or "")[:19],
        )
    Console().print(table if rows else "No dialogs.")


@dialog_app.command("show")
def dialog_show(
    user: str = USER_ARG,
    limit: int = typer.Option(20, "--limit", min=1, max=10_000, help="Last messages to show."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Show a player's dialog: persona, story, status, memory and the last messages."""
    settings = settings_or_exit()

    async def go() -> dict[str, Any]:
        async with opened_core(settings) as core:
            user_id = await core.players.resolve(user)
            view = await core.dialogs.latest(user_id)
            messages = await core.dialogs.messages(view.id, limit) if view else []
            return {
                "user_id": user_id,
                "dialog_id": view.id if view else None,
                "persona": view.persona_name if view else None,
                "story": view.story_title if view else None,
                "status": view.status if view else None,
                "memory": view.summary if view else "",
                "messages": [
                    {"role": m.role, "text": m.text, "created_at": iso(m.created_at)}
                    | ({"status": m.status} if m.status != "ok" else {})
                    for m in messages
                ],
            }

    data = run_async(go)
    if as_json:
        print_json(data)
        return
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    console = Console()
    if data["dialog_id"] is None:
        console.print(f"user {data['user_id']} has no dialog")
        return
    head = Text()
    head.append(shown(data["persona"], style="bold magenta"))
    head.append(shown(f" · {data['story']} · dialog {data['dialog_id']} · {data['status']}"))
    console.print(head)
    memory = shown(data["memory"], one_line=False) if data["memory"] else Text("(empty)", style="dim")
    console.print(Panel(memory, title="memory", expand=False))
    for m in data["messages"]:
        who = "player" if m["role"] == "user" else data["persona"] if m["role"] == "assistant" else m["role"]
        style = "cyan" if m["role"] == "user" else "magenta"
        mark = f" [{m['status']}]" if m.get("status") else ""
        console.print(shown(f"{(m['created_at'] or '')[:19]} {who}{mark}: ", style=style) + shown(m["text"], one_line=False))


@dialog_app.command("reset")
def dialog_reset(
    user: str = USER_ARG,
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
) -> None:
    """End a player's active dialog and clear their persona and memory."""
    settings = settings_or_exit()

    async def resolve() -> int:
        async with opened_core(settings) as core:
            return await core.players.resolve(user)

    user_id = run_async(resolve)
    if not yes:
        if not sys.stdin.isatty():
            fail("refusing to reset without confirmation: pass --yes", 1)
        if not typer.confirm(f"Reset the dialog of user {user_id}? Memory will be cleared", default=False):
            fail("not reset", 1)

    async def go() -> Any:
        async with opened_core(settings) as core:
            return await core.dialogs.reset(user_id)

    ended = run_async(go)
    if ended is None:
        typer.echo(f"user {user_id} had no active dialog; active persona cleared")
    else:
        typer.echo(f"reset: dialog {ended.id} with {plain(ended.persona_name)} ended, memory cleared")


def demo(
    persona: str | None = typer.Option(None, "--persona", help="Persona id (default: the first)."),
    message: list[str] = typer.Option(
        None, "--message", "-m", help="What the player says (repeatable)."
    ),
    user_id: int = typer.Option(1, "--user", help="Simulated player's id."),
) -> None:
    settings = settings_or_exit()
    from rich.console import Console
    from rich.text import Text

    from vitte.i18n import DEFAULT_LANGUAGE, Texts

    console = Console()
    lang = DEFAULT_LANGUAGE  # the demo player's: Telegram told us no language
    cli_texts = Texts("cli")
    lines = message or [cli_texts.t(lang, "demo_message_1"), cli_texts.t(lang, "demo_message_2")]
    guest = Texts("console").t(lang, "guest_name")  # the name the console's player has too

    async def go() -> None:
        async with opened_core(settings, seed_if_empty=True) as core:
            personas = await core.catalog.personas()
            console.print("[bold]Personas[/bold]")
            for p in personas:
                console.print(Text.assemble("  ", shown(p.id, style="cyan"), "  ", shown(f"{p.name} — {p.tagline}")))
            chosen = await core.catalog.persona(persona) if persona else personas[0]
            story = chosen.stories[0]
            await core.players.seen(user_id, first_name=guest)
            await core.players.confirm_adult(user_id)  # the operator plays the demo player
            await core.players.confirm_adult(user_id)  # the operator's simulated player passes the 18+ gate
            opening = await core.dialogs.choose(user_id, chosen.id, story.id)
            name = shown(f"{chosen.name}:", style="magenta")
            console.print(Text.assemble("\n", shown(chosen.name, style="bold magenta"), " · ", shown(story.title)))
            if core.llm.is_demo:
                console.print(shown(f"({core.llm.label})", style="dim"))
            console.print(Text.assemble(name, " ", shown(opening.text, one_line=False)))
            for line in lines:
                console.print(Text.assemble(Text("you:", style="cyan"), " ", shown(line, one_line=False)))
                out = await core.dialogs.reply(user_id, line)
                console.print(Text.assemble(name, " ", shown(out.text, one_line=False)))

    run_async(go)
