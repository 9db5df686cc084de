"""Operator commands for trust and safety: block / unblock a player, export / delete their data.

Plain functions registered on a given Typer app, so the `vitte user` group (cli/users.py) can
carry them next to `vitte user show`::

    from cli import safety
    safety.register(user_app)   # vitte user block | unblock | export | delete

`safety_user_app` is a stand-alone group with the same commands (tests, or until merged).
Exit codes as everywhere: 0 ok, 1 not found / refused, 2 bad usage or configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer

from cli.common import USER_ARG, fail, opened_core, plain, run_async, settings_or_exit


def block(
    user: str = USER_ARG,
    reason: str | None = typer.Option(None, "--reason", help="Why (kept for operators, max 500 characters)."),
) -> None:
    """Block a player: the bot refuses their messages (no LLM call, nothing stored)."""
    settings = settings_or_exit()

    async def go() -> Any:
        async with opened_core(settings) as core:
            return await core.players.block(await core.players.resolve(user), reason)

    player = run_async(go)
    note = f" ({plain(player.blocked_reason)})" if player.blocked_reason else ""
    typer.echo(f"blocked user {player.id}{note}")


def unblock(user: str = USER_ARG) -> None:
    """Lift a player's block."""
    settings = settings_or_exit()

    async def go() -> Any:
        async with opened_core(settings) as core:
            return await core.players.unblock(await core.players.resolve(user, held=True))

    player = run_async(go)
    typer.echo(f"unblocked user {player.id}")


def export(
    user: str = USER_ARG,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write the JSON to this file (default: standard output)."
    ),
) -> None:
    """Export everything stored about a player as JSON (profile, settings, dialogs, payments)."""
    settings = settings_or_exit()

    async def go() -> dict[str, Any]:
        async with opened_core(settings) as core:
            return await core.players.export(await core.players.resolve(user))

    data = run_async(go)
    text = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"{output}: {exc.strerror or exc}", 1)
    typer.echo(f"exported user {data['profile']['id']} to {plain(output)}", err=True)


def delete(
    user: str = USER_ARG,
    yes: bool = typer.Option(False, "--yes", "-y", help="Confirm: the data cannot be restored."),
) -> None:
    """Delete a player's data: profile, dialogs, messages, usage, cache (payments kept, anonymised)."""
    if not yes:
        fail("refusing to delete a player's data without --yes (it cannot be restored)", 1)
    settings = settings_or_exit()

    async def go() -> tuple[int, Any]:
        async with opened_core(settings) as core:
            user_id = await core.players.resolve(user)
            return user_id, await core.players.delete_data(user_id)

    user_id, report = run_async(go)
    typer.echo(
        f"deleted user {user_id}: {report.dialogs} dialogs, {report.messages} messages; "
        f"{report.payments_anonymised} payments kept, anonymised"
    )


COMMANDS = {"block": block, "unblock": unblock, "export": export, "delete": delete}


def register(user_app: typer.Typer) -> typer.Typer:
    """Add `block`, `unblock`, `export`, `delete` to the given Typer group (`vitte user`)."""
    for name, fn in COMMANDS.items():
        user_app.command(name)(fn)
    return user_app


safety_user_app = register(
    typer.Typer(help="Players: block, unblock, export or delete their data.", no_args_is_help=True)
)
