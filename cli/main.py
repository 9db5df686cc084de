"""`vitte`: the operator's command line. Thin: parse, call the core, render.

Heavy modules are imported inside commands so `vitte --help` stays instant.
Exit codes: 0 ok, 1 not found / refused, 2 bad usage or configuration.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from vitte.config import Settings
    from vitte.core import Core

T = TypeVar("T")

DEMO_NOTE = (
    "Without VITTE_LLM_BASE_URL replies come from the built-in offline demo writer "
    "(a labelled demo, not an LLM)."
)

app = typer.Typer(
    name="vitte",
    help="Vitte: a romantic AI companion for Telegram — operator tools.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database schema: upgrade, current revision.", no_args_is_help=True)
personas_app = typer.Typer(help="The persona catalog.", no_args_is_help=True)
dialog_app = typer.Typer(help="Players' dialogs: list, show, reset.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(personas_app, name="personas")
app.add_typer(dialog_app, name="dialog")


# --------------------------------------------------------------------------- plumbing
def fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def settings_or_exit(**overrides: Any) -> Settings:
    from vitte.config import ConfigError, load_settings

    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        fail(str(exc), 2)


def run_async(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; turn the core's errors into one line and an exit code."""
    from vitte.config import ConfigError
    from vitte.db import is_unavailable
    from vitte.errors import NotFound, VitteError

    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except ConfigError as exc:
        fail(str(exc), 2)
    except NotFound as exc:
        fail(str(exc), 1)
    except VitteError as exc:
        fail(str(exc), 1)
    except Exception as exc:
        if is_unavailable(exc):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            fail(f"database unavailable: {first}", 1)
        raise


@asynccontextmanager
async def opened_core(settings: Settings, *, seed_if_empty: bool = False) -> AsyncIterator[Core]:
    """The core for one command, closed when the command is done."""
    from vitte.core import Core

    core = await Core.open(settings, seed_if_empty=seed_if_empty)
    try:
        yield core
    finally:
        await core.close()


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str))


def iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def version_callback(value: bool) -> None:
    if value:
        from vitte import __version__

        typer.echo(f"vitte {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Vitte: a romantic AI companion for Telegram — operator tools."""


# --------------------------------------------------------------------------- db
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
def db_current(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
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


# --------------------------------------------------------------------------- seed / personas
@app.command("seed")
def seed(
    path: Path | None = typer.Argument(
        None, help="A card file (JSON V1/V2/V3 or PNG) or a folder of them. Default: the shipped personas."
    ),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
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
            f"seeded from {source}: {len(report.added)} added, {len(report.updated)} updated, "
            f"{len(report.unchanged)} unchanged"
        )


@personas_app.command("list")
def personas_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
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
        table.add_row(p.id, p.name, p.tagline, str(len(p.stories)), ", ".join(p.tags))
    console = Console()
    if not personas:
        console.print("No personas yet: run `vitte seed`.")
        return
    console.print(table)


# --------------------------------------------------------------------------- dialogs
@dialog_app.command("list")
def dialog_list(
    include_ended: bool = typer.Option(False, "--all", help="Include ended dialogs."),
    limit: int = typer.Option(50, "--limit", min=1, max=10_000, help="At most this many rows."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
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
            r["persona"],
            r["story"] or "",
            r["status"],
            str(r["messages"]),
            (r["created_at"] or "")[:19],
        )
    Console().print(table if rows else "No dialogs.")


@dialog_app.command("show")
def dialog_show(
    user: str = typer.Argument(..., help="Telegram user id or @username."),
    limit: int = typer.Option(20, "--limit", min=1, max=10_000, help="Last messages to show."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
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
    head.append(f"{data['persona']}", style="bold magenta")
    head.append(f" · {data['story']} · dialog {data['dialog_id']} · {data['status']}")
    console.print(head)
    console.print(Panel(data["memory"] or "(empty)", title="memory", expand=False))
    for m in data["messages"]:
        who = "player" if m["role"] == "user" else data["persona"] if m["role"] == "assistant" else m["role"]
        style = "cyan" if m["role"] == "user" else "magenta"
        mark = f" [{m['status']}]" if m.get("status") else ""
        console.print(Text(f"{(m['created_at'] or '')[:19]} {who}{mark}: ", style=style) + Text(m["text"]))


@dialog_app.command("reset")
def dialog_reset(
    user: str = typer.Argument(..., help="Telegram user id or @username."),
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
        typer.echo(f"reset: dialog {ended.id} with {ended.persona_name} ended, memory cleared")


# --------------------------------------------------------------------------- demo
@app.command("demo", help="A short offline chat through the engine on embedded defaults. " + DEMO_NOTE)
def demo(
    persona: str | None = typer.Option(None, "--persona", help="Persona id (default: the first)."),
    message: list[str] = typer.Option(
        None, "--message", "-m", help="What the player says (repeatable)."
    ),
    user_id: int = typer.Option(1, "--user", help="Simulated player's id."),
) -> None:
    settings = settings_or_exit()
    from rich.console import Console

    console = Console()
    lines = message or ["Привет! Как проходит твой день?", "Расскажи о себе что-нибудь, чего никто не знает."]

    async def go() -> None:
        async with opened_core(settings, seed_if_empty=True) as core:
            personas = await core.catalog.personas()
            console.print("[bold]Personas[/bold]")
            for p in personas:
                console.print(f"  [cyan]{p.id}[/cyan]  {p.name} — {p.tagline}")
            chosen = await core.catalog.persona(persona) if persona else personas[0]
            story = chosen.stories[0]
            await core.players.seen(user_id, first_name="Гость")
            await core.players.confirm_adult(user_id)  # the operator plays the demo player
            await core.players.confirm_adult(user_id)  # the operator's simulated player passes the 18+ gate
            opening = await core.dialogs.choose(user_id, chosen.id, story.id)
            console.print(f"\n[bold magenta]{chosen.name}[/bold magenta] · {story.title}")
            if core.llm.is_demo:
                console.print(f"[dim]({core.llm.label})[/dim]")
            console.print(f"[magenta]{chosen.name}:[/magenta] {opening.text}")
            for line in lines:
                console.print(f"[cyan]you:[/cyan] {line}")
                out = await core.dialogs.reply(user_id, line)
                console.print(f"[magenta]{chosen.name}:[/magenta] {out.text}")

    run_async(go)


# --------------------------------------------------------------------------- faces
@app.command("run-bot")
def run_bot() -> None:
    """Run the Telegram bot (long polling; webhook when VITTE_WEBHOOK_URL is set)."""
    settings = settings_or_exit()
    from vitte.config import ConfigError

    try:
        settings.require_bot_token()
    except ConfigError as exc:
        fail(str(exc), 2)
    from vitte.serve import run_bot as _run

    run_async(lambda: _run(settings))


@app.command("serve-webapp")
def serve_webapp() -> None:
    """Serve the Telegram Web App (pages + JSON API) on VITTE_WEBAPP_HOST:VITTE_WEBAPP_PORT."""
    settings = settings_or_exit()
    from vitte.config import ConfigError

    try:
        settings.require_bot_token()
    except ConfigError as exc:
        fail(str(exc), 2)
    from vitte.webapp.app import serve_webapp as _serve

    run_async(lambda: _serve(settings))


# --------------------------------------------------------------------------- more groups
# registered last: these modules import the helpers above from this module
from cli import safety as _safety  # noqa: E402
from cli.bench import bench as _bench  # noqa: E402
from cli.console import console as _console  # noqa: E402
from cli.payments import payments_app  # noqa: E402
from cli.users import user_app  # noqa: E402

_safety.register(user_app)
app.add_typer(user_app, name="user")
app.add_typer(payments_app, name="payments")
app.command(
    "console",
    help="A local Telegram in the terminal: the real bot, its Web App and an operator panel, "
    "on the configured store (SQLite by default; no token, no servers). " + DEMO_NOTE,
)(_console)
app.command("bench", help="Measure the reply hot path through the real dispatcher (prints figures).")(_bench)


def run() -> None:
    app()

