"""`vitte nudge …` and `vitte run-scheduler`: the persona writes first (issue 18, item 5).

`nudge list [--due] [--json]`: who is scheduled when, and what a run now would do for each
(send, waiting, or why not: quiet, unanswered, off, no_quota, unreachable, online, in_flight,
blocked, no_age, deleted). `nudge run [--now] [--user USER] [--json]`: send what is due now
(`--now`: every scheduled nudge counts as due, the wait skipped, every other rule kept;
`--user`: that player's only). `run-scheduler`: the scheduler alone, until stopped.
Registered in cli/main.py.
"""

from __future__ import annotations

from typing import Any

import typer

from cli.common import (
    JSON_OPTION,
    LIMIT_OPTION,
    USER_OPTION,
    fail,
    opened_core,
    plain,
    print_json,
    run_async,
    settings_or_exit,
    settings_with_token,
    shown,
)

nudge_app = typer.Typer(help="The persona writes first: the nudge schedule.", no_args_is_help=True)


@nudge_app.command("list")
def nudge_list(
    due: bool = typer.Option(False, "--due", help="Only the nudges due now."),
    user: USER_OPTION = None,
    limit: LIMIT_OPTION = 100,
    as_json: bool = JSON_OPTION,
) -> None:
    """Who is scheduled when, and why a nudge would not be sent now."""
    settings = settings_or_exit()

    async def go() -> list[dict[str, Any]]:
        from vitte.initiative.nudger import Nudger

        async with opened_core(settings) as core:
            user_id = await core.players.resolve(user) if user else None
            return await Nudger(core, _no_send).preview(due_only=due, user_id=user_id, limit=limit)

    rows = run_async(go)
    if as_json:
        print_json({"nudges": rows, "enabled": settings.nudge_after > 0})
        return
    if settings.nudge_after <= 0:
        typer.echo("nudges are off (VITTE_NUDGE_AFTER=0)")
    if not rows:
        typer.echo("no nudges due" if due else "no nudges scheduled")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="Nudges")
    for col in ("user", "dialog", "due at (UTC)", "unanswered", "last nudge", "now"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            str(row["user_id"]), str(row["dialog_id"]), shown(row["due_at"][:19]), str(row["unanswered"]),
            shown((row["last_nudge_at"] or "")[:19]), shown(row["state"]),
        )  # fmt: skip
    Console().print(table)


async def _no_send(user_id: int, text: str) -> int | None:  # listing never sends
    raise AssertionError("nudge list does not send")


@nudge_app.command("run")
def nudge_run(
    now: bool = typer.Option(False, "--now", help="Every scheduled nudge counts as due (the wait skipped)."),
    user: str | None = typer.Option(None, "--user", help="Only this player's nudge (Telegram id or @username)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """Send the nudges due now (or one player's at once) through Telegram, then exit."""
    settings = settings_with_token()
    if settings.nudge_after <= 0:
        fail("nudges are off (VITTE_NUDGE_AFTER=0)", 1)

    async def go() -> dict[str, Any]:
        from vitte.initiative.nudger import Nudger
        from vitte.telegram.bot import make_bot
        from vitte.telegram.nudges import mark_unreachable_in, nudge_sender

        async with opened_core(settings) as core:
            user_id = await core.players.resolve(user) if user else None
            bot = make_bot(settings)
            bot.session.middleware(mark_unreachable_in(core.db))  # 403: unreachable, counted
            try:
                nudger = Nudger(core, nudge_sender(bot))
                await nudger.backfill()
                if user_id is not None and not await nudger.preview(user_id=user_id, limit=1):
                    fail(f"player {user_id} has no active dialog to nudge", 1)
                report = await nudger.run_due(user_id=user_id, any_time=now or user_id is not None)
            finally:
                await bot.session.close()
            return report.to_json()

    data = run_async(go)
    if as_json:
        print_json(data)
        return
    reasons = ", ".join(f"{k} {v}" for k, v in data["reasons"].items() if k not in ("sent",)) or "none"
    typer.echo(
        f"nudges: {data['sent']} sent, {data['waiting']} waiting, {data['dropped']} dropped, "
        f"{data['unconfirmed']} unconfirmed, {data['failed']} failed (of {data['claimed']} claimed); "
        f"not sent: {plain(reasons)}"
    )


def run_scheduler() -> None:
    """Run the nudge scheduler alone (every `vitte run-bot` runs it too), until stopped."""
    settings = settings_with_token()
    from vitte.scheduler import run_scheduler as _run

    run_async(lambda: _run(settings))
