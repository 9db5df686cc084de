"""What every `vitte` command shares: error exits, settings, running a coroutine, the core for
one command, JSON output. The command modules import this; cli/main.py only assembles them.

Heavy modules are imported inside the functions so `vitte --help` stays instant.
Exit codes: 0 ok, 1 not found / refused, 2 bad usage or configuration.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from rich.text import Text

    from vitte.config import Settings
    from vitte.core import Core

T = TypeVar("T")

# the arguments many commands take, written once
USER_ARG = typer.Argument(..., help="Telegram user id or @username.")
JSON_OPTION = typer.Option(False, "--json", help="Machine-readable output.")
# listing filters, as Annotated aliases: the default stays in the signature (`limit: LIMIT_OPTION = 100`)
USER_OPTION = Annotated[str | None, typer.Option("--user", help="Only this player (Telegram id or @username).")]
LIMIT_OPTION = Annotated[int, typer.Option("--limit", min=1, max=10_000, help="At most this many rows.")]


def fail(message: str, code: int = 1) -> NoReturn:
    from vitte.text import inert

    typer.echo(f"error: {inert(message, one_line=True)}", err=True)
    raise typer.Exit(code)


def shown(value: Any, *, one_line: bool = True, style: str = "") -> Text:
    """Stored data (a name, memory, a message, card text) as Rich renders it inertly: a `Text`,
    never parsed as markup, without escape sequences or control characters (vitte.text.inert).
    Every table cell and printed line of data goes through this (or `plain` for typer.echo);
    `--json` prints the raw values."""
    from rich.text import Text

    return Text(plain(value, one_line=one_line), style=style)


def plain(value: Any, *, one_line: bool = True) -> str:
    """Stored data on a plain (typer.echo) line: no escape sequences or controls ("" for None)."""
    from vitte.text import inert

    return "" if value is None else inert(value, one_line=one_line)


def settings_or_exit(**overrides: Any) -> Settings:
    from vitte.config import ConfigError, load_settings

    try:
        return load_settings(**overrides)
    except ConfigError as exc:
        fail(str(exc), 2)


def settings_with_token(**overrides: Any) -> Settings:
    """The settings of a command that talks to Telegram: exit code 2 without a usable token."""
    from vitte.config import ConfigError

    settings = settings_or_exit(**overrides)
    try:
        settings.require_bot_token()
    except ConfigError as exc:
        fail(str(exc), 2)
    return settings


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
        telegram = sys.modules.get("aiogram.exceptions")  # loaded only by commands that talk to Telegram
        if telegram is not None and isinstance(exc, telegram.TelegramAPIError):
            fail(f"Telegram: {exc.message}", 1)  # one line; never a reply's body (vitte.telegram.bot)
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
