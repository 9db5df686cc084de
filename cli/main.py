"""`vitte`: the operator's command line. Thin: parse, call the core, render.

This module only assembles the commands; each lives in its own module (cli/db.py, cli/catalog.py,
cli/dialogs.py, cli/faces.py, cli/users.py with cli/safety.py, cli/payments.py, cli/console.py,
cli/bench.py, cli/doctor.py, cli/lore.py, cli/memory.py, cli/nudges.py), and what they share in cli/common.py.
Heavy modules are imported inside commands so `vitte --help` stays instant.
Exit codes: 0 ok, 1 not found / refused, 2 bad usage or configuration.
"""

from __future__ import annotations

import typer

from cli import memory_recall, safety
from cli.bench import bench_app
from cli.catalog import personas_app, seed
from cli.console import console
from cli.db import db_app
from cli.dialogs import demo, dialog_app
from cli.doctor import doctor
from cli.faces import run_bot, serve_webapp
from cli.lore import lore_app
from cli.memory import memory_app
from cli.nudges import nudge_app, run_scheduler
from cli.payments import payments_app
from cli.users import user_app

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


app.add_typer(db_app, name="db")
app.add_typer(personas_app, name="personas")
app.add_typer(dialog_app, name="dialog")
app.add_typer(lore_app, name="lore")
memory_recall.register(memory_app)  # search, reindex (recall)
app.add_typer(memory_app, name="memory")
app.command("seed")(seed)
app.command("demo", help="A short offline chat through the engine on embedded defaults. " + DEMO_NOTE)(demo)
app.command("run-bot")(run_bot)
app.command("serve-webapp")(serve_webapp)
app.command("run-scheduler")(run_scheduler)
app.add_typer(nudge_app, name="nudge")
safety.register(user_app)
app.add_typer(user_app, name="user")
app.add_typer(payments_app, name="payments")
app.command(
    "console",
    help="A local Telegram in the terminal: the real bot, its Web App and an operator panel, "
    "on the configured store (SQLite by default; no token, no servers). " + DEMO_NOTE,
)(console)
app.command("doctor")(doctor)
app.add_typer(bench_app, name="bench")  # the hot path; `vitte bench memory`: recall


def run() -> None:
    app()
