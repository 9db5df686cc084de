"""`vitte bench`: the hot path measured through the real Dispatcher (see vitte/bench.py), and
`vitte bench memory`: recall and its cost (see vitte/bench_memory.py), and `vitte bench nudges`: the
persona writing first at scale (see vitte/bench_nudges.py).

Registered in cli/main.py as ``app.add_typer(bench_app, name="bench")``: `bench` is the group's
callback (today's flags and output, run when no subcommand is given), `memory` its subcommand.
"""

from __future__ import annotations

from typing import Any

import typer

from cli.common import fail, print_json, run_async, settings_or_exit, shown


def _measure(config: Any, runner: Any, settings: Any, as_json: bool, refuse: str | None = None) -> Any:
    """The common steps of every bench command: the configuration checked (exit 2; then
    `refuse`, a reason this store cannot be measured, exit 2), progress lines on stderr unless
    --json, the run (a RuntimeError: one line, exit 1); the result."""
    try:
        config.check()
    except ValueError as exc:
        fail(str(exc), 2)
    if refuse:
        fail(refuse, 2)

    def progress(message: str) -> None:
        if not as_json:
            typer.echo(message, err=True)

    async def go() -> Any:
        try:
            return await runner(settings, config, progress)
        except RuntimeError as exc:
            fail(str(exc), 1)

    return run_async(go)


def bench(
    ctx: typer.Context,
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
    if ctx.invoked_subcommand is not None:
        return  # `vitte bench memory …`
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
    result = _measure(config, run_bench, settings, as_json)
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


def bench_memory(
    turns: int = typer.Option(2000, "--turns", help="Exchanges in each synthetic dialog (two messages each)."),
    facts: int = typer.Option(50, "--facts", help="Facts planted at random points (at most 50)."),
    no_facts: bool = typer.Option(
        False, "--no-facts", help="Memory without fact extraction: recall of messages alone."
    ),
    seed: int = typer.Option(16, "--seed", help="Where the facts go and the order of the questions."),
    keep: bool = typer.Option(False, "--keep", help="Keep the bench players and their dialogs afterwards."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (stable keys)."),
) -> None:
    """Recall of facts said long ago, in Russian and English: memory on vs summary only.

    On the configured store and cache, per language: a synthetic dialog of --turns exchanges with
    --facts planted facts (extracted as facts along the way, as in production, unless
    --no-facts), then a question per fact in other words and word forms, each a real reply
    through the engine (instant in-process LLM). Reports recall %, prompt tokens, the reused
    prompt prefix (in tokens), reply time p50/p99, SQL round trips per reply and what the facts
    cost, side by side.
    Players with ids beyond any Telegram id; deleted at the end unless --keep. Exit code 0
    whatever the numbers; see "targets".
    """
    from vitte.bench_memory import MemoryBenchConfig, run_memory_bench

    settings = settings_or_exit()
    config = MemoryBenchConfig(turns=turns, facts=facts, seed=seed, keep=keep, facts_on=not no_facts)
    result = _measure(config, run_memory_bench, settings, as_json)
    if as_json:
        print_json(result)
        return
    render_memory(result)


def render_memory(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = [
        ("recall % (message or fact)", "recall_percent"),
        ("recall % (the message)", "recall_messages_percent"),
        ("recall % (the fact)", "recall_facts_percent"),
        ("prompt tokens (mean)", "prompt_tokens_mean"),
        ("prompt tokens (max)", "prompt_tokens_max"),
        ("reused prefix % of tokens (mean)", "reused_prefix_tokens_percent"),
        ("reused prefix % of tokens (p10)", "reused_prefix_tokens_percent_p10"),
        ("reused prefix % of characters (mean)", "reused_prefix_percent"),
        ("reply ms p50", "reply_ms_p50"),
        ("reply ms p99", "reply_ms_p99"),
        ("memory step ms p50", "recall_ms_p50"),
        ("memory step ms p99", "recall_ms_p99"),
        ("SQL round trips / reply", "sql_round_trips_per_reply"),
        ("facts stored", "facts_stored"),
        ("facts' prompt tokens (mean)", "facts_prompt_tokens_mean"),
        ("facts step ms p99", "facts_ms_p99"),
        ("facts reloads (SQL on the reply)", "facts_reloads"),
        ("extractions (background)", "facts_extractions"),
        ("extraction SQL round trips / reply", "facts_extraction_sql_round_trips_per_reply"),
    ]
    table = Table(
        title=(
            f"vitte bench memory · {result['store']} + {result['cache']} cache · {result['turns']} turns "
            f"({result['messages_per_dialog']} messages) · {result['facts']} facts · "
            f"context {result['context_tokens']} tokens · facts "
            f"{'every ' + str(result['facts_every']) + ' player messages' if result['facts_on'] else 'off'}"
        )
    )
    table.add_column("metric")
    for lang in result["languages"]:
        table.add_column(f"{lang} memory", justify="right")
        table.add_column(f"{lang} summary only", justify="right")
    for label, key in rows:
        cells = []
        for modes in result["languages"].values():
            cells += [str(modes["memory"][key]), str(modes["summary_only"][key])]
        table.add_row(label, *cells)
    console.print(table)
    for lang, modes in result["languages"].items():
        console.print(
            f"  {lang}: added handler time (the memory step) p50 {modes['added_ms_p50']} ms, "
            f"p99 {modes['added_ms_p99']} ms (whole reply p99 difference {modes['reply_ms_p99_difference']} ms); "
            f"extra SQL round trips per reply {modes['extra_sql_round_trips_per_reply']}"
        )
    for name, check in result["targets"].items():
        mark = "[green]ok[/green]" if check["ok"] else "[red]MISSED[/red]"
        op = "≤" if check["kind"] == "max" else "≥"
        console.print(f"  {mark}  {name}: {check['value']} (target {op} {check['target']})")


def bench_nudges(
    players: int = typer.Option(100_000, "--players", help="Bench players whose nudge falls due at once."),
    two_players: int = typer.Option(
        10_000, "--two-players", help="Players two schedulers then share at once (0: skip that phase)."
    ),
    batch: int = typer.Option(500, "--batch", help="Schedule rows claimed at a time."),
    keep: bool = typer.Option(False, "--keep", help="Keep the bench players and their dialogs afterwards."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (stable keys)."),
) -> None:
    """The persona writes first, at scale, on PostgreSQL (issue 18): --players nudges due at
    once, claimed and sent by one scheduler (instant in-process LLM, the local Bot API session,
    pacing off): claims/s, sends/s, database time per claimed batch, duplicates, lost; then two
    schedulers on one schedule (never a duplicate). Players with ids beyond any Telegram id,
    deleted at the end unless --keep. Exit code 0 whatever the numbers; see "targets"."""
    from vitte.bench_nudges import NudgeBenchConfig, run_nudge_bench

    settings = settings_or_exit()
    config = NudgeBenchConfig(players=players, two_players=two_players, batch=batch, keep=keep)
    sqlite = "vitte bench nudges measures PostgreSQL: set VITTE_DATABASE_URL=postgresql+psycopg://…"
    result = _measure(config, run_nudge_bench, settings, as_json, refuse=sqlite if settings.is_sqlite else None)
    if as_json:
        print_json(result)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"vitte bench nudges · postgresql + {result['cache']} cache · batches of {result['batch']}")
    table.add_column("metric")
    phases = [("one scheduler", result["one"])] + ([("two schedulers", result["two"])] if result["two"] else [])
    for name, _ in phases:
        table.add_column(name, justify="right")
    for label, key in (
        ("players due", "players"), ("nudges sent", "sent"), ("seconds", "seconds"),
        ("claims / s", "claims_per_second"), ("sends / s", "sends_per_second"),
        ("claimed batches", "claim_batches"), ("DB ms per batch p50", "batch_db_ms_p50"),
        ("DB ms per batch p99", "batch_db_ms_p99"), ("duplicates", "duplicates"), ("lost", "lost"),
        ("failed", "failed"),
    ):  # fmt: skip
        table.add_row(label, *(str(phase[key]) for _, phase in phases))
    console.print(table)
    for name, check in result["targets"].items():
        mark = "[green]ok[/green]" if check["ok"] else "[red]MISSED[/red]"
        console.print(f"  {mark}  {name}: {check['value']} (target ≤ {check['target']})")


bench_app = typer.Typer(
    help="Measure the reply hot path through the real dispatcher (prints figures); "
    "`vitte bench memory` measures recall.",
    add_completion=False,
)
bench_app.callback(invoke_without_command=True)(bench)
bench_app.command("memory")(bench_memory)
bench_app.command("nudges")(bench_nudges)
