"""`vitte seed` and `vitte personas …`: loading character cards, the persona catalog.

Registered in cli/main.py: ``app.command("seed")(seed)``, ``app.add_typer(personas_app, name="personas")``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

from cli.common import JSON_OPTION, fail, opened_core, plain, print_json, run_async, settings_or_exit, shown

personas_app = typer.Typer(help="The persona catalog.", no_args_is_help=True)


def seed(
    path: Path | None = typer.Argument(
        None,
        help="A card file (JSON V1/V2/V3, PNG or CHARX) or a folder of them. Default: the shipped personas.",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="All or nothing: one bad card refuses the whole folder."
    ),
    replace: str | None = typer.Option(
        None, "--replace", metavar="ID", help="Put this card in the place of persona ID (one card file)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Load personas and stories into the database (idempotent). Every file is reported.

    Exit code 1 when a broken card was left out (the others are imported), 2 when nothing could be.
    """
    settings = settings_or_exit()
    from vitte.catalog.cards import CardError, default_fixtures_dir, read_folder

    source = path or default_fixtures_dir()
    if not source.exists():
        fail(f"{source}: no such file or folder", 2)
    if replace is not None and source.is_dir():
        fail(f"{source}: --replace takes one card file, not a folder", 2)
    try:
        results = read_folder(source)
    except CardError as exc:
        fail(str(exc), 2)
    if strict:  # all or nothing: the first broken card refuses the whole import
        broken = next((r for r in results if r.refused), None)
        if broken is not None:
            fail(broken.skipped or broken.file, 2)
    cards = [r.card for r in results if r.card is not None]
    # standalone lorebooks go into their own table (vitte.catalog.worlds); cards name them
    books = [(r.file, r.lorebook) for r in results if r.lorebook is not None]
    if not cards and not books:
        reasons = [r.skipped for r in results if r.skipped]
        fail(reasons[0] if len(results) == 1 and reasons else f"{source}: no character cards found", 2)

    async def go() -> Any:
        from vitte.catalog.seed import seed_cards
        from vitte.db import Database

        db = Database(settings)
        try:
            from vitte.catalog.seed import SeedReport
            from vitte.catalog.worlds import seed_lorebooks

            done = await seed_cards(db, cards, strict=strict or replace is not None, replace=replace) if cards else SeedReport()
            return done, await seed_lorebooks(db, books)
        except CardError as exc:
            fail(str(exc), 1 if replace is not None else 2)
        finally:
            await db.dispose()

    report, book_outcomes = run_async(go)
    from vitte.catalog.seed import FileOutcome

    skipped = [FileOutcome(r.file, "skipped", reason=r.skipped) for r in results if r.skipped is not None]
    skipped += [FileOutcome(b.file, b.status, id=f"lorebook:{b.id}" if b.id else None, reason=b.reason) for b in book_outcomes]
    outcomes = sorted([*report.files, *skipped], key=lambda f: f.file)
    # a broken card was left out (the others went in): exit code 1, after the report
    refused = any(r.refused for r in results) or bool(report.skipped)
    if as_json:
        print_json(
            {
                "added": report.added,
                "updated": report.updated,
                "unchanged": report.unchanged,
                # standalone lorebooks exported cards carried, stored now (a stored one is kept)
                "lorebooks_added": report.lorebooks_added,
                "skipped": [{"file": f.file, "reason": f.reason} for f in outcomes if f.status == "skipped"],
                "files": [
                    {"file": f.file, "status": f.status, "id": f.id, "reason": f.reason} for f in outcomes
                ],
            }
        )
        if refused:
            raise typer.Exit(1)
        return
    for f in outcomes:
        reason = (f.reason or "").removeprefix(f"{f.file}: ")
        detail = plain(reason) if f.status == "skipped" else plain(f.id)
        typer.echo(f"{f.status:<9} {plain(f.file)}: {detail}")
    for bid in report.lorebooks_added:
        typer.echo(f"{'added':<9} lorebook:{plain(bid)} (carried by a card)")
    n_skipped = sum(1 for f in outcomes if f.status == "skipped")
    typer.echo(
        f"seeded from {plain(source)}: {len(report.added)} added, {len(report.updated)} updated, "
        f"{len(report.unchanged)} unchanged, {n_skipped} skipped"
    )
    if refused:
        raise typer.Exit(1)


@personas_app.command("list")
def personas_list(as_json: bool = JSON_OPTION) -> None:
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
                    "portrait": p.portrait,  # the stored picture's digest; null: drawn initials
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
    table.add_column("portrait", justify="center")
    for p in personas:
        table.add_row(
            shown(p.id),
            shown(p.name),
            shown(p.tagline),
            str(len(p.stories)),
            shown(", ".join(p.tags)),
            "yes" if p.portrait else "-",
        )
    console = Console()
    if not personas:
        console.print("No personas yet: run `vitte seed`.")
        return
    console.print(table)


@personas_app.command("show")
def personas_show(
    persona_id: str = typer.Argument(..., help="The persona's id."), as_json: bool = JSON_OPTION
) -> None:
    """What is stored about one persona: card, stories, lorebook, portrait, dialogs."""
    settings = settings_or_exit()

    async def go() -> dict[str, Any]:
        from vitte.catalog.manage import persona_details
        from vitte.db import Database

        db = Database(settings)
        try:
            return await persona_details(db, persona_id)
        finally:
            await db.dispose()

    data = run_async(go)
    if as_json:
        print_json(data)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(show_header=False, box=None)
    table.add_column(style="cyan", no_wrap=True)
    table.add_column()
    portrait = data["portrait"]
    rows = [
        ("id", data["id"]),
        ("name", data["name"]),
        ("tagline", data["tagline"]),
        ("creator", data["creator"]),
        ("tags", ", ".join(data["tags"])),
        ("card", f"{data['spec']} {data['character_version']}".strip()),
        (
            "portrait",
            f"{portrait['digest'][:16]}… ({', '.join(map(str, portrait['sizes']))} px)"
            if portrait
            else "initials",
        ),
        ("lorebook", f"{data['lorebook_entries']} entries"),
        ("dialogs", f"{data['dialogs']['active']} active, {data['dialogs']['total']} in all"),
        ("updated", data["updated_at"] or ""),
    ]
    for key, value in rows:
        table.add_row(key, shown(value))
    for story in data["stories"]:
        table.add_row("story", shown(f"{story['id']}: {story['title']}"))
    Console().print(table)


@personas_app.command("remove")
def personas_remove(
    persona_id: str = typer.Argument(..., help="The persona's id."),
    force: bool = typer.Option(
        False, "--force", help="End the players' active dialogs with it (each player gets a notice)."
    ),
    as_json: bool = JSON_OPTION,
) -> None:
    """Remove a persona (its stories, portrait and dialogs go with it). Refused while players
    have an active dialog with it, unless --force."""
    settings = settings_or_exit()

    async def go() -> tuple[Any, list[int]]:
        from vitte.catalog.manage import remove_persona
        from vitte.telegram.persona_notice import notify_removed

        async with opened_core(settings) as core:
            removed = await remove_persona(core, persona_id, force=force)
            return removed, await notify_removed(settings, core.db, removed)

    removed, unreached = run_async(go)
    blocked = [uid for uid in unreached if uid in removed.unreachable]
    if as_json:
        print_json(
            {
                "id": removed.id,
                "removed": True,
                "ended_dialogs": [uid for uid, _ in removed.ended],
                "not_notified": unreached,
                "unreachable": blocked,
            }
        )
        return
    typer.echo(
        f"removed persona {plain(removed.id)} ({plain(removed.name)}); {len(removed.ended)} active dialog(s) ended"
    )
    refused = [uid for uid in unreached if uid not in removed.unreachable]
    if refused:
        typer.echo(f"not notified (no bot token, or Telegram refused): {', '.join(map(str, refused))}")
    if blocked:
        typer.echo(f"not notified (they blocked the bot): {', '.join(map(str, blocked))}")


@personas_app.command("export")
def personas_export(
    persona_id: str = typer.Argument(..., help="The persona's id."),
    fmt: str = typer.Option(
        "png", "--format", help="png (with V3 ccv3 and V2 chara chunks), json (V3) or charx."
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="The file to write (default: <id>.<format>)."
    ),
) -> None:
    """Export a persona as a Character Card V3 (SillyTavern and RisuAI import it)."""
    from vitte.catalog.export import FORMATS

    if fmt not in FORMATS:
        fail(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}", 2)
    target = output or Path(f"{persona_id}.{fmt}")
    if target.is_dir():
        target = target / f"{persona_id}.{fmt}"
    settings = settings_or_exit()

    async def go() -> bytes:
        from vitte.catalog.manage import export_persona
        from vitte.db import Database

        db = Database(settings)
        try:
            return await export_persona(db, persona_id, fmt)
        finally:
            await db.dispose()

    blob = run_async(go)
    try:
        target.write_bytes(blob)
    except OSError as exc:
        fail(f"{target}: {exc.strerror or type(exc).__name__}", 1)
    typer.echo(f"exported {plain(persona_id)} to {plain(target)} ({len(blob)} bytes)")
