"""`vitte bench`: the hot path measured through the real Dispatcher (see vitte/bench.py).

Registered in cli/main.py as ``app.command("bench")(bench)``.
"""

from __future__ import annotations

from typing import Any

import typer

from cli.common import fail, print_json, run_async, settings_or_exit, shown


def bench(
    players: int = typer.Option(1000, "--players", min=1, help="Simulated players."),
    messages: int = typer.Option(3, "--messages", min=0, help="Messages per player in the throughput phase."),
    concurrency: int = typer.Option(50, "--concurrency", min=1, help="Players sending at once (throughput)."),
    overhead_messages: int = typer.Option(
        500, "--overhead-messages", min=0, help="Messages sent one at a time to measure the handler overhead."
    ),
    ttft: float = typer.Option(1.0, "--ttft", min=0.0, help="LLM seconds to the first token (in-flight phase)."),
    tps: float = typer.Option(40.0, "--tps", min=0.0, help="LLM tokens per second (in-flight phase; 0 = instant)."),
    reply_tokens: int = typer.Option(40, "--reply-tokens", min=1, help="Words in each simulated reply."),
    in_flight: bool = typer.Option(
        True, "--in-flight/--no-in-flight", help="Run the phase with every player's reply in flight at once."
    ),
    keep: bool = typer.Option(False, "--keep", help="Keep the bench players and their dialogs afterwards."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (stable keys)."),
) -> None:
    """Benchmark the reply hot path through the real dispatcher, on the configured store and cache.

    Writes players with ids from 2**52 up (beyond any Telegram id) to the configured database and
    deletes them, their dialogs and their Redis keys at the end (unless --keep). The LLM is a
    loopback OpenAI-compatible server started as a child process. Exit code 0 whatever the
    numbers; see "targets" in the output.
    """
    from vitte.bench import BenchConfig, run_bench

    settings = settings_or_exit()
    config = BenchConfig(
        players=players,
        messages=messages,
        concurrency=concurrency,
        overhead_messages=overhead_messages,
        ttft=ttft,
        tps=tps,
        reply_tokens=reply_tokens,
        in_flight=in_flight,
        keep=keep,
    )
    try:
        config.check()
    except ValueError as exc:
        fail(str(exc), 2)

    def progress(message: str) -> None:
        if not as_json:
            typer.echo(message, err=True)

    async def go() -> Any:
        try:
            return await run_bench(settings, config, progress)
        except RuntimeError as exc:
            fail(str(exc), 1)

    result = run_async(go)
    if as_json:
        print_json(result.to_json())
        return
    render(result)


def render(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    phases = [("overhead (1 at a time)", result.overhead), ("throughput", result.throughput)]
    if result.in_flight is not None:
        phases.append(("all in flight", result.in_flight))
    title = (
        f"vitte bench · {result.store} + {result.cache} cache · {result.players} players · "
        f"{result.messages_per_player} msg/player · concurrency {result.concurrency}"
    )
    table = Table(title=title)
    table.add_column("metric")
    for name, _ in phases:
        table.add_column(name, justify="right")

    def row(label: str, getter: Any, fmt: str = "{:.2f}") -> None:
        cells = []
        for _, phase in phases:
            value = getter(phase)
            cells.append("—" if value is None else fmt.format(value))
        table.add_row(label, *cells)

    def only_in_flight(label: str, text: str) -> None:
        table.add_row(label, *(["—"] * (len(phases) - 1)), text)

    row("messages", lambda p: p.messages, "{:d}")
    row("seconds", lambda p: p.seconds)
    row("messages / s", lambda p: p.messages_per_second, "{:.1f}")
    row("CPU ms / message", lambda p: p.cpu_ms_per_message)
    row("overhead p50 ms (LLM excluded)", lambda p: p.overhead_p50_ms)
    row("overhead p95 ms", lambda p: p.overhead_p95_ms)
    row("overhead p99 ms", lambda p: p.overhead_p99_ms)
    row("LLM ms / message (mean)", lambda p: p.llm_ms_mean, "{:.1f}")
    row("SQL statements / message", lambda p: p.sql_statements_per_message)
    row("SQL round trips / message", lambda p: p.sql_round_trips_per_message)
    row("Redis round trips / message", lambda p: p.redis_round_trips_per_message)
    row("errors", lambda p: p.errors, "{:d}")
    if result.in_flight is not None:
        extra = result.in_flight.extra
        only_in_flight("ideal seconds (ttft + tokens/tps)", f"{extra['ideal_seconds']:.2f}")
        only_in_flight("LLM streams at once (max)", str(extra["max_llm_streams_in_flight"]))
        only_in_flight("RSS MB before → peak", f"{extra['rss_before_mb']:.0f} → {extra['peak_rss_mb']:.0f}")
    console.print(table)
    for name, check in result.targets.items():
        mark = "[green]ok[/green]" if check["ok"] else "[red]MISSED[/red]"
        op = "≤" if check["kind"] == "max" else "≥"
        console.print(f"  {mark}  {name}: {check['value']} (target {op} {check['target']})")
    load = " / ".join(f"{x:.1f}" for x in result.load_average)
    console.print(
        f"  process peak RSS: {result.peak_rss_mb:.0f} MB · setup {result.setup_seconds:.1f} s · "
        f"{result.cpus} CPUs, load {load}"
    )
    for sample in result.error_samples:
        console.print(Text.assemble("  ", Text("error:", style="yellow"), " ", shown(sample)))
