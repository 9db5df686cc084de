"""`vitte memory search` and `vitte memory reindex`: recall of past messages (issue 16, item 5).

`search USER QUERY [--json]`: what recall would put in the prompt if the player wrote QUERY now,
with the scores. `reindex [--embeddings] [--fresh] [--json]`: the recall indexes rebuilt
(resumable, with a progress bar). Registered on the `memory` group in cli/main.py:
``memory_recall.register(memory_app)``.
"""

from __future__ import annotations

from typing import Any

import typer

from cli.common import (
    JSON_OPTION,
    USER_ARG,
    fail,
    iso,
    opened_core,
    print_json,
    run_async,
    settings_or_exit,
    shown,
)


def search(
    user: str = USER_ARG,
    query: str = typer.Argument(..., help="The text the player would write."),
    as_json: bool = JSON_OPTION,
) -> None:
    """What recall would put in the prompt for this text (the player's active or latest dialog), with scores."""
    settings = settings_or_exit()
    if not query.strip():
        fail("the query is empty", 2)

    async def go() -> dict[str, Any] | None:
        async with opened_core(settings) as core:
            user_id = await core.players.resolve(user)
            recall = core.dialogs.replies.recall
            found = await recall.preview(core.dialogs.store, user_id, query, core.catalog)
            if found is None:
                return {"user_id": user_id, "dialog_id": None}
            return {
                "user_id": user_id,
                "dialog_id": found.dialog_id,
                "status": found.status,
                "language": found.language,
                "recall": settings.memory_recall,
                "embeddings": settings.embeddings_model,
                "words": found.words,
                "searched": found.parts.searched,
                "recalled": [
                    {
                        "id": r.id,
                        "role": r.role,
                        "text": r.text,
                        "created_at": iso(r.created_at),
                        "score": round(r.score, 6),
                        "rank": round(r.rank, 6),
                        "lexical_rank": r.lexical,
                        "semantic_rank": r.semantic,
                    }
                    for r in found.parts.recalled
                ],
                "block": found.parts.block,
            }

    data = run_async(go)
    if data is None or data["dialog_id"] is None:
        if as_json:
            print_json(data)
        fail(f"user {data['user_id'] if data else user} has no dialog", 1)
    if as_json:
        print_json(data)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    console.print(
        shown(
            f"user {data['user_id']} · dialog {data['dialog_id']} ({data['status']}) · {data['language']} · "
            f"words: {', '.join(data['words']) or '—'}"
        )
    )
    if not data["searched"]:
        console.print(
            Text(
                "Nothing to search: the whole dialog fits in the prompt's window (or recall is off).",
                style="dim",
            )
        )
        return
    table = Table(title="Recalled (best first)")
    for col in ("id", "said", "who", "score", "lexical", "semantic", "text"):
        table.add_column(col)
    for r in data["recalled"]:
        table.add_row(
            str(r["id"]),
            (r["created_at"] or "")[:19],
            shown(r["role"]),
            f"{r['score']:.4f}",
            str(r["lexical_rank"] or "—"),
            str(r["semantic_rank"] or "—"),
            shown(r["text"]),
        )
    console.print(table if data["recalled"] else Text("Nothing recalled.", style="dim"))


def reindex(
    embeddings: bool = typer.Option(False, "--embeddings", help="Also embed every message without a vector."),
    fresh: bool = typer.Option(
        False, "--fresh", help="SQLite: empty the index first (else go on where it stopped)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Rebuild the recall indexes (resumable; a progress bar unless --json)."""
    settings = settings_or_exit()
    if embeddings and not settings.embeddings_model:
        fail("--embeddings needs VITTE_EMBEDDINGS_MODEL (and VITTE_LLM_BASE_URL)", 2)

    async def go() -> dict[str, Any]:
        from rich.progress import Progress

        from vitte.dialogs.reindex import reindex as rebuild

        async with opened_core(settings) as core:
            recall = core.dialogs.replies.recall
            with Progress(disable=as_json, transient=False) as bar:
                tasks: dict[str, Any] = {}

                def tell(what: str, done: int, total: int) -> None:
                    if what not in tasks:
                        tasks[what] = bar.add_task(what, total=total or None)
                    bar.update(tasks[what], completed=done, total=total or None)

                done = await rebuild(
                    recall.store,
                    fresh=fresh,
                    embeddings=recall.embeddings if embeddings else None,
                    progress=tell,
                )
            return {
                "store": done.store,
                "dialogs": done.dialogs,
                "indexed": done.indexed,
                "embedded": done.embedded,
            }

    data = run_async(go)
    if as_json:
        print_json(data)
        return
    typer.echo(
        f"{data['store']}: {data['dialogs']} dialogs, {data['indexed']} "
        f"{'indexes rebuilt' if data['store'] == 'postgresql' else 'messages indexed'}"
        + (f", {data['embedded']} messages embedded" if embeddings else "")
    )


def register(app: typer.Typer) -> None:
    """`search` and `reindex` on the `memory` group."""
    app.command("search")(search)
    app.command("reindex")(reindex)
