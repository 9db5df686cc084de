"""What operators see of a persona's lorebook (`vitte lore show` / `vitte lore test`): its entries
with their keys and flags, and a trial scan of a text — which entries it would activate and where
they would go in the prompt. Plain data with stable keys; the CLI renders it."""

from __future__ import annotations

from typing import Any

from vitte.catalog.lorebook import Lorebook, LoreEntry
from vitte.prompt import LORE_SHARE, estimate_tokens

__all__ = ["book_summary", "trial_scan"]


def _entry(e: LoreEntry) -> dict[str, Any]:
    return {
        "index": e.index,
        "name": e.name,
        "keys": list(e.keys),
        "secondary_keys": list(e.secondary_keys),
        "selective": e.selective,
        "logic": e.logic,
        "constant": e.constant,
        "enabled": e.enabled,
        "case_sensitive": e.case_sensitive,
        "whole_words": e.whole_words,
        "use_regex": e.use_regex,
        "insertion_order": e.insertion_order,
        "priority": e.priority,
        "position": e.position,
        "depth": e.depth,
        "role": e.role,
        "scan_depth": e.scan_depth,
        "activate_only_after": e.activate_only_after,
        "activate_only_every": e.activate_only_every,
        "dont_activate": e.dont_activate,
        "exclude_keys": list(e.exclude_keys),
        "additional_keys": list(e.additional_keys),
        "ignored_decorators": list(e.ignored),
        "problems": e.problems,
        "tokens": estimate_tokens(e.content),
        "content": e.content,
    }


def book_summary(persona_id: str, book: Lorebook | None) -> dict[str, Any]:
    """The book's settings and every entry (`book` None: the persona has no lorebook)."""
    if book is None:
        return {"persona": persona_id, "lorebook": None, "entries": []}
    return {
        "persona": persona_id,
        "lorebook": {
            "name": book.name,
            "scan_depth": book.scan_depth,
            "token_budget": book.token_budget,
            "recursive_scanning": book.recursive,
        },
        "entries": [_entry(e) for e in book.entries],
    }


def trial_scan(
    persona_id: str, book: Lorebook | None, text: str, *, prompt_budget: int, assistant_turns: int = 0
) -> dict[str, Any]:
    """The entries `text` (as the player's new message) would activate, in prompt order, with
    why and where; always-on entries included (they sit in the prompt's stable part)."""
    budget = int(prompt_budget * LORE_SHARE)
    hits = (
        book.scan(
            [text], assistant_turns=assistant_turns, budget=budget, tokens=estimate_tokens, include_stable=True
        )
        if book is not None
        else []
    )
    return {
        "persona": persona_id,
        "text": text,
        "budget": budget if book is None or book.token_budget is None else min(budget, book.token_budget),
        "activated": [
            {
                "index": h.entry.index,
                "name": h.entry.name,
                "reason": h.reason,
                "position": h.position,
                "depth": h.entry.depth if h.position == "depth" else None,
                "role": h.entry.role if h.position == "depth" else None,
                "stable": h.entry.stable,
                "tokens": h.tokens,
            }
            for h in hits
        ],
    }
