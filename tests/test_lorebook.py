"""Lorebooks (vitte.catalog.lorebook): parsing V2/V3/SillyTavern books once, and the per-reply scan."""

from __future__ import annotations

from typing import Any

import pytest

from vitte.catalog.lorebook import AFTER, BEFORE, DEPTH, Lorebook, book_of_card, merge_books, parse_book
from vitte.prompt import estimate_tokens


def entry(keys: list[str], content: str = "", **kw: Any) -> dict[str, Any]:
    return {"keys": keys, "content": content or f"about {keys[0] if keys else 'x'}", "enabled": True,
            "insertion_order": 100, "extensions": {}, **kw}  # fmt: skip


def book(*entries: dict[str, Any], **kw: Any) -> Lorebook:
    parsed = parse_book({"name": "t", "entries": list(entries), "extensions": {}, **kw})
    assert parsed is not None
    return parsed


def names(b: Lorebook, *messages: str, turns: int = 0, budget: int = 10_000, stable: bool = True) -> list[str]:
    hits = b.scan(list(messages), assistant_turns=turns, budget=budget, tokens=estimate_tokens, include_stable=stable)
    return [h.entry.name for h in hits]


def test_keys_in_the_last_scan_depth_messages_only() -> None:
    b = book(entry(["eldoria"], name="e"), scan_depth=2)
    assert names(b, "We reach Eldoria.", "ok", "hi") == []  # three messages ago: outside the depth
    assert names(b, "hi", "We reach Eldoria.", "ok") == ["e"]
    assert names(book(entry(["eldoria"], name="e"), scan_depth=3), "We reach Eldoria.", "ok", "hi") == ["e"]


def test_case_sensitivity_and_whole_words() -> None:
    loose = book(entry(["Wood"], name="w"))
    assert names(loose, "the woods are dark") == ["w"]  # case-insensitive substring by default
    strict = book(entry(["Wood"], name="w", case_sensitive=True))
    assert names(strict, "the wood") == [] and names(strict, "Mr Wood") == ["w"]
    words = book(entry(["wood"], name="w", extensions={"match_whole_words": True}))
    assert names(words, "the woods") == [] and names(words, "the wood, at last") == ["w"]


@pytest.mark.parametrize(
    ("logic", "text", "on"),
    [
        (0, "sword and fire", True), (0, "sword alone", False),  # AND ANY
        (1, "sword fire ice", False), (1, "sword fire", True),  # NOT ALL
        (2, "sword fire", False), (2, "sword alone", True),  # NOT ANY
        (3, "sword fire ice", True), (3, "sword fire", False),  # AND ALL
    ],
)  # fmt: skip
def test_selective_logic(logic: int, text: str, on: bool) -> None:
    b = book(entry(["sword"], name="s", selective=True, secondary_keys=["fire", "ice"], extensions={"selectiveLogic": logic}))
    assert names(b, text) == (["s"] if on else [])


def test_not_selective_ignores_secondary_keys() -> None:
    b = book(entry(["sword"], name="s", selective=False, secondary_keys=["fire"]))
    assert names(b, "sword") == ["s"]


def test_constant_and_disabled() -> None:
    b = book(entry(["x"], name="always", constant=True), entry(["sword"], name="off", enabled=False))
    assert names(b, "sword") == ["always"]
    assert names(b, "sword", stable=False) == []  # the constant one lives in the prompt's cached part


def test_regex_keys() -> None:
    b = book(
        entry(["/drag(on|ons)\\b/i"], name="slash"),  # SillyTavern's /pattern/flags
        entry(["^[Hh]ello"], name="v3", use_regex=True),  # V3: with use_regex every key is a pattern
        entry(["a(b"], name="broken", use_regex=True),
    )
    assert names(b, "DRAGONS!") == ["slash"] and names(b, "Hello there") == ["v3"]
    assert names(b, "a(b") == []
    broken = next(e for e in b.entries if e.name == "broken")
    assert broken.problems and "bad pattern" in broken.problems[0]


def test_sillytavern_entries_read_use_regex_as_sillytavern_does() -> None:
    # SillyTavern writes use_regex: true on every entry; only /…/ keys are patterns there
    b = book(entry(["C++", "Mr. Smith"], name="st", use_regex=True, extensions={"selectiveLogic": 0, "display_index": 0}))
    assert names(b, "I code in C++") == ["st"] and names(b, "Mrs Smith") == []


def test_catastrophic_pattern_is_disabled_not_hanging() -> None:
    b = book(entry(["(a|aa)+$"], name="evil", use_regex=True), entry(["ok"], name="fine"))
    assert names(b, "a" * 5000 + "b ok") == ["fine"]
    evil = next(e for e in b.entries if e.name == "evil")
    assert any("disabled" in p for p in evil.problems)
    assert names(b, "a" * 5000 + "b ok") == ["fine"]  # not run again


def test_overlong_pattern_is_refused() -> None:
    b = book(entry(["x" * 1000], name="long", use_regex=True))
    assert "longer than" in b.entries[0].problems[0]


def test_insertion_order_positions_and_depth() -> None:
    b = book(
        entry(["k"], name="late", insertion_order=300, position="after_char"),
        entry(["k"], name="early", insertion_order=10),
        entry(["k"], name="deep", extensions={"position": 4, "depth": 2, "role": 1}),
    )
    hits = b.scan(["k"], assistant_turns=0, budget=10_000, tokens=estimate_tokens)
    assert [h.entry.name for h in hits] == ["early", "deep", "late"]
    where = {h.entry.name: (h.position, h.entry.depth, h.entry.role) for h in hits}
    assert where["early"][0] == BEFORE and where["late"][0] == AFTER
    assert where["deep"] == (DEPTH, 2, "user")


def test_token_budget_keeps_the_highest_priority() -> None:
    big = "word " * 300  # about 500 tokens
    b = book(
        entry(["k"], big, name="low", insertion_order=1),
        entry(["k"], big, name="high", insertion_order=50),
        entry(["k"], "short", name="small", insertion_order=2),
        token_budget=600,
    )
    assert names(b, "k") == ["small", "high"]  # "low" did not fit; placed by insertion order
    assert names(b, "k", budget=100) == ["small"]  # the prompt's share is a limit too


def test_recursion_is_optional_and_bounded() -> None:
    chain = [entry(["start"], "go to stop1", name="e0")] + [
        entry([f"stop{i}"], f"go to stop{i + 1}", name=f"e{i}") for i in range(1, 8)
    ]
    assert names(book(*chain), "start") == ["e0"]
    recursive = names(book(*chain, recursive_scanning=True), "start")
    assert recursive[:4] == ["e0", "e1", "e2", "e3"] and len(recursive) == 4  # three rounds at most
    blocked = book(entry(["start"], "mentions stop1", name="e0", extensions={"prevent_recursion": True}),
                   entry(["stop1"], "x", name="e1"), recursive_scanning=True)  # fmt: skip
    assert names(blocked, "start") == ["e0"]
    excluded = book(entry(["start"], "mentions stop1", name="e0"),
                    entry(["stop1"], "mentions stop2", name="e1", extensions={"exclude_recursion": True}),
                    entry(["stop2"], "x", name="e2"), recursive_scanning=True)  # fmt: skip
    assert names(excluded, "start") == ["e0"]  # e1 is not activated by e0's content (nor e2 through it)
    assert names(excluded, "start and stop1") == ["e0", "e1", "e2"]  # by the messages it is; its content recurses


def test_v3_decorators() -> None:
    b = book(
        entry(["k"], "@@depth 3\n@@role assistant\nat depth", name="d"),
        entry(["k"], "@@activate_only_after 2\nlater", name="after"),
        entry(["k"], "@@activate_only_every 3\nevery third", name="every"),
        entry(["k"], "@@dont_activate\nnever", name="never"),
        entry(["k"], "@@exclude_keys foe, enemy\nfriendly", name="friendly"),
        entry(["zzz"], "@@activate\nforced", name="forced"),
        entry(["k"], "@@risu_only 4\n@@@activate_only_after 9\nfallback", name="fallback"),
        entry(["k"], "@@unknown_thing 1\n@@@also_unknown\nkept", name="ignored"),
    )
    hits = b.scan(["k"], assistant_turns=3, budget=10_000, tokens=estimate_tokens, include_stable=True)
    at = {h.entry.name: h for h in hits}
    assert set(at) == {"d", "after", "every", "friendly", "forced", "ignored"}
    assert (at["d"].position, at["d"].entry.depth, at["d"].entry.role) == (DEPTH, 3, "assistant")
    assert at["d"].entry.content == "at depth"  # decorators trimmed from the content
    assert at["ignored"].entry.content == "kept" and at["ignored"].entry.ignored == ("unknown_thing", "also_unknown")
    assert names(b, "k", turns=1).count("after") == 0 and "every" not in names(b, "k", turns=4)
    assert "friendly" not in names(b, "k and a foe")
    assert "fallback" in names(b, "k", turns=9) and "fallback" not in names(b, "k", turns=8)


def test_the_character_book_takes_precedence_over_world_books() -> None:
    big = "word " * 300
    own = book(entry(["k"], big, name="own", insertion_order=1))
    world = book(entry(["k"], big, name="world", insertion_order=99, priority=1000))
    merged = merge_books([own, world])
    assert merged is not None and [e.book for e in merged.entries] == [0, 1]
    assert names(merged, "k", budget=600) == ["own"]  # only one fits: the card's own
    assert names(merged, "k") == ["own", "world"]


def test_books_of_cards_and_standalone_files() -> None:
    card = {"spec": "chara_card_v2", "data": {"name": "x", "character_book": {"entries": [entry(["a"])]}}}
    assert book_of_card(card) is not None and book_of_card({"spec": "chara_card_v2", "data": {"name": "x"}}) is None
    v3 = {"spec": "lorebook_v3", "data": {"name": "World", "entries": [entry(["a"])]}}
    standalone = parse_book(v3)
    assert standalone is not None and standalone.name == "World"
    st_world = {"entries": {"0": {"key": ["a"], "keys": ["a"], "content": "c"}}}  # SillyTavern's world file
    assert parse_book(st_world) is not None


@pytest.mark.parametrize(
    "junk",
    [None, [], "x", {"entries": "x"}, {"entries": [1, "x", None]}, {"entries": []},
     {"entries": [{"keys": 5, "content": 7, "insertion_order": "x", "extensions": []}]}],
)  # fmt: skip
def test_malformed_books_never_raise(junk: object) -> None:
    b = parse_book(junk)
    if b is not None:
        assert names(b, "anything") == []
