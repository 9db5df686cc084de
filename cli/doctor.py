"""`vitte doctor`: what is wrong with this deployment, before the players notice.

Registered in cli/main.py as ``app.command("doctor")(doctor)``. The checks live in vitte/doctor.py;
this module renders them (a Rich table, or `--json`) and sets the exit code: 0 all is well (warnings
allowed, unless `--strict`), 1 a check failed, 2 bad usage or configuration that cannot be loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

from cli.common import JSON_OPTION, print_json, run_async, settings_or_exit

if TYPE_CHECKING:
    from vitte.doctor import Report

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red", "skipped": "dim"}


def doctor(
    as_json: bool = JSON_OPTION,
    deep: bool = typer.Option(False, "--deep", help="Also ask the LLM for a one-token completion."),
    timeout: float = typer.Option(5.0, "--timeout", min=0.1, help="Seconds each check may take."),
    min_free_mb: float = typer.Option(
        500.0, "--min-free-mb", min=0, help="Free disk (MB) the working directory needs (the spool's)."
    ),
    max_clock_offset: float = typer.Option(
        3.0, "--max-clock-offset", min=0, help="Clock offset (s) against a server's Date header that warns."
    ),
    strict: bool = typer.Option(False, "--strict", help="Exit 1 on warnings too."),
) -> None:
    """Check the configuration, database, Redis, LLM API, bot token, webhook, Web App, disk and clock."""
    settings = settings_or_exit()
    from vitte.doctor import Options, run_doctor

    options = Options(timeout=timeout, deep=deep, min_free_mb=min_free_mb, max_clock_offset=max_clock_offset)
    report = run_async(lambda: run_doctor(settings, options))
    if as_json:
        print_json(report.as_dict(strict=strict))
    else:
        _print_table(report, strict=strict)
    raise typer.Exit(report.exit_code(strict=strict))


def _print_table(report: Report, *, strict: bool) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title="vitte doctor", show_lines=False)
    table.add_column("check", style="bold", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("detail / fix", overflow="fold")
    for check in report.checks:
        detail = Text(check.detail)
        if check.fix:
            detail.append("\nfix: " + check.fix, style="cyan")
        table.add_row(check.title, Text(check.status, style=_STYLE.get(check.status, "")), detail)
    console = Console()
    console.print(table)
    fails, warns = report.count("fail"), report.count("warn")
    if fails or (strict and warns):
        console.print(
            Text(
                f"{fails} failed, {warns} warned: apply the fixes and run `vitte doctor` again.", style="red"
            )
        )
    elif warns:
        console.print(Text(f"All checks passed; {warns} warned.", style="yellow"))
    else:
        console.print(Text("All checks passed.", style="green"))
