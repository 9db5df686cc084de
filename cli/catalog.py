"""`vitte seed` and `vitte personas …`: loading character cards, the persona catalog.

Registered in cli/main.py: ``app.command("seed")(seed)``, ``app.add_typer(personas_app, name="personas")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cli.common import JSON_OPTION, fail, opened_core, plain, print_json, run_async, settings_or_exit, shown

personas_app = typer.Typer(help="The persona catalog.", no_args_is_help=True)


def seed(
    path: Path | None = typer.Argument(
        None, help="A card file (JSON V1/V2/V3 or PNG) or a folder of them. Default: the shipped personas."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Load personas and stories into the database (idempotent)."""
    settings = settings_or_exit()
    from vitte.catalog.cards import CardError, default_fixtures_dir, read_cards

    source = path or default_fixtures_dir()
    if not source.exists():
        fail(f"{source}: no such file or folder", 2)
    try:
        cards = read_cards(source)
    except CardError as exc:
        fail(str(exc), 2)
    if not cards:
        fail(f"{source}: no character cards found", 2)

    async def go() -> Any:
        from vitte.catalog.seed import seed_cards
        from vitte.db import Database

        db = Database(settings)
        try:
            return await seed_cards(db, cards)
        finally:
            await db.dispose()

    report = run_async(go)
    if as_json:
        print_json({"added": report.added, "updated": report.updated, "unchanged": report.unchanged})
    else:
        typer.echo(
            f"seeded from {plain(source)}: {len(report.added)} added, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged"
        )


@personas_app.command("list")
def personas_list(as_json: bool = JSON_OPTION) -> None:
    """List the personas with their stories."""
    settings = settings_or_exit()

    async def go() -> list[Any]:
        async with opened_core(settings) as core:
            return await core.catalog.personas()

    personas = run_async(go)
    if as_json:
        print_json(
            [
                {
                    "id": p.id,
                    "name": p.name,
                    "tagline": p.tagline,
                    "tags": list(p.tags),
                    "stories": [{"id": s.id, "title": s.title} for s in p.stories],
                }
                for p in personas
            ]
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Personas", show_lines=False)
    table.add_column("id", style="cyan", no_wrap=True)
    table.add_column("name", style="bold")
    table.add_column("tagline")
    table.add_column("stories", justify="right")
    table.add_column("tags", style="dim")
    for p in personas:
        table.add_row(shown(p.id), shown(p.name), shown(p.tagline), str(len(p.stories)), shown(", ".join(p.tags)))
    console = Console()
    if not personas:
        console.print("No personas yet: run `vitte seed`.")
        return
    console.print(table)
