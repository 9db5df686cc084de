"""`vitte db …`: the database schema (upgrade, downgrade, current revision).

Registered in cli/main.py as ``app.add_typer(db_app, name="db")``.
"""

from __future__ import annotations

import sys
from typing import Any

import typer

from cli.common import JSON_OPTION, fail, print_json, run_async, settings_or_exit

db_app = typer.Typer(help="Database schema: upgrade, downgrade, current revision.", no_args_is_help=True)


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


def _history() -> Any:
    from alembic.script import ScriptDirectory

    from vitte.db import alembic_config

    return ScriptDirectory.from_config(alembic_config())


def _undone(script: Any, current: str, target: str | None) -> list[Any] | None:
    """The migrations a downgrade from `current` to `target` undoes, newest first; None when
    `target` is not below `current` (the history is one line: each has one parent)."""
    undone = []
    rev = script.get_revision(current)
    while rev is not None and rev.revision != target:
        undone.append(rev)
        parent = rev.down_revision
        if isinstance(parent, tuple | list):
            fail(f"revision {rev.revision} merges branches: downgrade it with alembic", 1)
        rev = script.get_revision(parent) if parent else None
    if target is not None and rev is None:
        return None
    return undone


@db_app.command("downgrade")
def db_downgrade(
    revision: str = typer.Argument(..., help="Target revision: an id from `vitte db current`/the history, or base."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Undo migrations down to REVISION (their columns and tables are dropped, with their data).

    Exit codes: 0 done (or nothing to undo), 1 refused, 2 unknown revision.
    """
    settings = settings_or_exit()
    script = _history()
    target: str | None = None
    if revision != "base":
        try:
            found = script.get_revision(revision)
        except Exception:
            found = None
        if found is None or isinstance(found, tuple):
            known = ", ".join(r.revision for r in reversed(list(script.walk_revisions())))
            fail(f"unknown revision {revision!r} (the history: {known}, or base)", 2)
        target = found.revision

    async def current_revision() -> str | None:
        from vitte.db import Database

        db = Database(settings)
        try:
            return await db.current_revision()
        finally:
            await db.dispose()

    current = run_async(current_revision)
    if current is None:
        fail("the database has no schema: nothing to downgrade", 1)
    try:
        script.get_revision(current)
    except Exception:
        fail(
            f"the database is at revision {current}, which this version of vitte does not know: "
            "downgrade with the release that added it",
            1,
        )
    undone = _undone(script, current, target)
    if undone is None:
        fail(f"revision {target} is not below the database's revision {current}: use `vitte db upgrade {target}`", 1)
    steps = [{"revision": r.revision, "description": r.doc} for r in undone]
    if not undone:
        if as_json:
            print_json({"from": current, "to": current, "undone": [], "head": script.get_current_head()})
        else:
            typer.echo(f"database already at revision {current}: nothing to undo")
        return
    what = "; ".join(f"{s['revision']} ({s['description']})" for s in steps)
    if not yes:
        if not sys.stdin.isatty():
            fail(f"refusing to downgrade without confirmation: pass --yes (it undoes {what}, dropping data)", 1)
        if not typer.confirm(f"Undo {what}? What they added is dropped, with its data", default=False):
            fail("not downgraded", 1)

    async def go() -> str | None:
        from vitte.db import Database

        db = Database(settings)
        try:
            await db.downgrade(target or "base")
            return await db.current_revision()
        finally:
            await db.dispose()

    try:
        now = run_async(go)
    except RuntimeError as exc:  # the SQLite foreign-key guard (vitte.db.Database.downgrade)
        fail(str(exc), 1)
    if as_json:
        print_json({"from": current, "to": now, "undone": steps, "head": script.get_current_head()})
    else:
        typer.echo(f"database downgraded from {current} to {now or '(empty)'}: undid {what}")
