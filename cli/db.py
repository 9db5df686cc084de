"""`vitte db …`: the database schema (upgrade, current revision).

Registered in cli/main.py as ``app.add_typer(db_app, name="db")``.
"""

from __future__ import annotations

import typer

from cli.common import JSON_OPTION, print_json, run_async, settings_or_exit

db_app = typer.Typer(help="Database schema: upgrade, current revision.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Apply database migrations (PostgreSQL or SQLite)."""
    settings = settings_or_exit()

    async def go() -> str | None:
        from vitte.db import Database

        db = Database(settings)
        try:
            await db.upgrade(revision)
            return await db.current_revision()
        finally:
            await db.dispose()

    typer.echo(f"database at revision {run_async(go)}")


@db_app.command("current")
def db_current(as_json: bool = JSON_OPTION) -> None:
    """Show the database's migration revision and the newest one."""
    settings = settings_or_exit()

    async def go() -> tuple[str | None, str | None]:
        from vitte.db import Database

        db = Database(settings)
        try:
            return await db.current_revision(), db.head_revision()
        finally:
            await db.dispose()

    current, head = run_async(go)
    if as_json:
        print_json({"current": current, "head": head, "up_to_date": current == head})
    else:
        state = "up to date" if current == head else "behind: run `vitte db upgrade`"
        typer.echo(f"current: {current or '(empty)'}  head: {head}  ({state})")
