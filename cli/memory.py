"""`vitte memory …`: what the persona remembers of a player (issue 16, item 5).

`show USER [--json]`: the facts of the player's dialog (the active one, else the latest), the
summary and the counts. Registered in cli/main.py: ``app.add_typer(memory_app, name="memory")``.
"""

from __future__ import annotations

from typing import Any

import typer

from cli.common import JSON_OPTION, USER_ARG, iso, opened_core, print_json, run_async, settings_or_exit, shown

memory_app = typer.Typer(help="What the persona remembers of a player: facts, summary.", no_args_is_help=True)


@memory_app.command("show")
def memory_show(user: str = USER_ARG, as_json: bool = JSON_OPTION) -> None:
    """Show a player's memory: facts (superseded ones marked), the summary and counts."""
    settings = settings_or_exit()

    async def go() -> dict[str, Any]:
        from vitte.dialogs.factbook import counts

        async with opened_core(settings) as core:
            user_id = await core.players.resolve(user)
            view = await core.dialogs.latest(user_id)
            facts = await core.dialogs.facts.of_dialog(view.id) if view else []
            return {
                "user_id": user_id,
                "dialog_id": view.id if view else None,
                "status": view.status if view else None,
                "summary": view.summary if view else "",
                "counts": counts(facts),
                "facts": [
                    {
                        "id": f.id,
                        "kind": f.kind,
                        "text": f.text,
                        "importance": f.importance,
                        "origin": f.origin,
                        "superseded_by": f.superseded_by,
                        "created_at": iso(f.created_at),
                        "updated_at": iso(f.updated_at),
                    }
                    for f in facts
                ],
            }

    data = run_async(go)
    if as_json:
        print_json(data)
        return
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console()
    if data["dialog_id"] is None:
        console.print(f"user {data['user_id']} has no dialog")
        return
    c = data["counts"]
    console.print(
        f"user {data['user_id']} · dialog {data['dialog_id']} ({data['status']}) · {c['facts']} facts "
        f"({c['extracted']} extracted, {c['player']} told by the player), {c['superseded']} superseded"
    )
    table = Table(title="Facts")
    for col in ("id", "kind", "importance", "origin", "fact", "updated"):
        table.add_column(col)
    for f in data["facts"]:
        old = f["superseded_by"] is not None
        text = shown(f["text"], style="dim strike" if old else "")
        if old:
            text.append(f" → #{f['superseded_by']}", style="dim")
        table.add_row(
            str(f["id"]),
            shown(f["kind"]),
            str(f["importance"]),
            shown(f["origin"]),
            text,
            (f["updated_at"] or "")[:19],
        )
    console.print(table if data["facts"] else Text("No facts.", style="dim"))
    summary = shown(data["summary"], one_line=False) if data["summary"] else Text("(empty)", style="dim")
    console.print(Panel(summary, title="summary", expand=False))
