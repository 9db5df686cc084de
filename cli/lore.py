"""`vitte lore show PERSONA` and `vitte lore test PERSONA "text"`: a persona's lorebook and what a
text would activate (vitte.catalog.lore_view). Exit 1 for an unknown persona."""

from __future__ import annotations

from typing import Any

import typer

from cli.common import JSON_OPTION, fail, opened_core, print_json, run_async, settings_or_exit, shown

lore_app = typer.Typer(help="A persona's lorebook (World Info): its entries, and what a text activates.")

PERSONA_ARG = typer.Argument(..., help="Persona id (see `vitte personas list`).")


def _book(persona_id: str) -> tuple[Any, Any]:
    """(settings, the persona's card) or exit 1 for an unknown persona."""
    settings = settings_or_exit()

    async def go() -> Any:
        async with opened_core(settings) as core:
            return (await core.catalog.persona(persona_id)).card

    return settings, run_async(go)


@lore_app.command("show")
def lore_show(persona: str = PERSONA_ARG, as_json: bool = JSON_OPTION) -> None:
    """The lorebook's entries: keys, flags, placement, decorators."""
    from vitte.catalog.lore_view import book_summary

    _settings, card = _book(persona)
    data = book_summary(card.id, card.lorebook)
    if as_json:
        print_json(data)
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if data["lorebook"] is None:
        console.print(shown(f"{card.id}: no lorebook"))
        return
    book = data["lorebook"]
    console.print(
        shown(
            f"{card.id}: lorebook {book['name'] or '(unnamed)'} — scan depth {book['scan_depth']}, "
            f"token budget {book['token_budget'] or '-'}, recursive {'yes' if book['recursive_scanning'] else 'no'}"
        )
    )
    table = Table(show_lines=False)
    for column in ("#", "name", "keys", "secondary", "flags", "order", "position", "tokens"):
        table.add_column(column)
    for e in data["entries"]:
        flags = [
            name
            for name, on in (
                ("constant", e["constant"]),
                ("disabled", not e["enabled"]),
                ("selective " + e["logic"], e["selective"]),
                ("case", e["case_sensitive"]),
                ("words", e["whole_words"]),
                ("regex", e["use_regex"]),
                ("dont_activate", e["dont_activate"]),
            )
            if on
        ]
        if e["activate_only_after"] is not None:
            flags.append(f"after {e['activate_only_after']}")
        if e["activate_only_every"] is not None:
            flags.append(f"every {e['activate_only_every']}")
        flags += [f"ignored @@{d}" for d in e["ignored_decorators"]]
        flags += [f"problem {p}" for p in e["problems"]]
        where = e["position"] if e["position"] != "depth" else f"depth {e['depth']} ({e['role']})"
        table.add_row(
            str(e["index"]),
            shown(e["name"]),
            shown(", ".join(e["keys"])),
            shown(", ".join(e["secondary_keys"])),
            shown("; ".join(flags)),
            str(e["insertion_order"]),
            shown(where),
            str(e["tokens"]),
        )
    console.print(table)


@lore_app.command("test")
def lore_test(
    persona: str = PERSONA_ARG,
    text: str = typer.Argument(..., help="A player's message to scan."),
    turns: int = typer.Option(0, "--turns", min=0, help="The persona's replies so far (for @@activate_only_*)."),
    as_json: bool = JSON_OPTION,
) -> None:
    """What `text` would activate, why, and where it would go in the prompt."""
    from vitte.catalog.lore_view import trial_scan

    settings, card = _book(persona)
    if len(text) > settings.max_message_chars:
        fail(f"text too long ({len(text)} > {settings.max_message_chars} characters)", 2)
    data = trial_scan(card.id, card.lorebook, text, prompt_budget=settings.llm_context_tokens, assistant_turns=turns)
    if as_json:
        print_json(data)
        return
    from rich.console import Console

    console = Console()
    if card.lorebook is None:
        console.print(shown(f"{card.id}: no lorebook"))
        return
    if not data["activated"]:
        console.print(shown("nothing activated"))
        return
    for hit in data["activated"]:
        where = hit["position"] if hit["position"] != "depth" else f"depth {hit['depth']} ({hit['role']})"
        console.print(
            shown(f"#{hit['index']} {hit['name']}: {hit['reason']} → {where}, {hit['tokens']} tokens")
        )
