"""`vitte console`: a local Telegram in the terminal over the real bot (Textual).

The lead registers it: `app.command("console")(console)` in cli/main.py.
"""

from __future__ import annotations

import typer

from cli.common import fail, settings_or_exit


def console(
    user: int = typer.Option(
        1001,
        "--user",
        min=1,
        help="Telegram id of the simulated player (an existing player keeps their name and language).",
    ),
    name: str | None = typer.Option(None, "--name", help="First name of the simulated player."),
    lang: str | None = typer.Option(None, "--lang", help="Telegram language of the player: ru or en."),
    theme: str = typer.Option("dark", "--theme", help="dark or light (Ctrl+T toggles)."),
    log: bool = typer.Option(False, "--log", help="Show the Bot API call log from the start (F3 toggles)."),
    operator: bool = typer.Option(False, "--operator", help="Show the operator panel from the start (F2)."),
) -> None:
    """A local Telegram chat with the real bot, its Web App and an operator panel.

    Updates go through the same aiogram Dispatcher `vitte run-bot` runs, against the configured
    database (SQLite by default; PostgreSQL + Redis when VITTE_DATABASE_URL / VITTE_REDIS_URL
    are set), with an in-process Bot API. No Telegram token or network is needed.
    """
    from vitte.i18n import LANGUAGES

    if lang is not None and lang not in LANGUAGES:
        fail(f"--lang must be {' or '.join(LANGUAGES)}", 2)
    if theme not in ("dark", "light"):
        fail("--theme must be dark or light", 2)
    settings = settings_or_exit()
    from tui import photo_view
    from tui.app import VitteConsole

    app = VitteConsole(
        settings,
        user_id=user,
        first_name=name,
        language=lang,
        theme=theme,
        show_log=log,
        show_operator=operator,
    )
    photo_view.detect()  # textual-image asks the terminal before Textual takes it
    app.run()
    if app.return_code:
        raise typer.Exit(app.return_code)
