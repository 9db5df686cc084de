"""A card's macros, lorebook, nickname and depth prompt in the prompt (vitte.prompt with
vitte.catalog.play): where each goes, fenced, within budgets; creator notes never sent."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from vitte.cache.base import CachedMessage
from vitte.catalog.play import card_play
from vitte.prompt import PersonaCard, PromptInput, build_messages


def v2(**data: Any) -> dict[str, Any]:
    base = {"name": "Seraphina", "description": "{{char}} guards the forest for {{user}}.", "first_mes": "Hi"}
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": {**base, **data}}


def persona(card: dict[str, Any]) -> PersonaCard:
    play = card_play(card)
    d = card["data"]
    return PersonaCard(
        id="p", name=d["name"], description=d.get("description", ""), personality=d.get("personality", ""),
        scenario=d.get("scenario", ""), mes_example=d.get("mes_example", ""), system_prompt=d.get("system_prompt", ""),
        nickname=play.nickname, lorebook=play.lorebook, depth_prompt=play.depth_prompt,
        depth_prompt_depth=play.depth_prompt_depth, depth_prompt_role=play.depth_prompt_role,
    )  # fmt: skip


def history(*texts: str) -> list[CachedMessage]:
    return [CachedMessage(i + 1, "user" if i % 2 == 0 else "assistant", t) for i, t in enumerate(texts)]


def build(card: PersonaCard, msgs: list[CachedMessage], **kw: Any) -> list[dict[str, str]]:
    return build_messages(
        PromptInput(card=card, char_name=card.name, user_name="Ann", language="en", style="normal",
                    premise="", memory="", history=msgs, budget=kw.pop("budget", 4000), **kw)
    )  # fmt: skip


BOOK = {
    "name": "Eldoria",
    "entries": [
        {"keys": ["x"], "content": "The forest is old.", "constant": True, "insertion_order": 1, "enabled": True},
        {"keys": ["x"], "content": "Rivers run east.", "constant": True, "position": "after_char",
         "insertion_order": 2, "enabled": True},
        {"keys": ["shadowfang"], "content": "Shadowfangs are <wolves> & worse; {{user}} fears them.",
         "insertion_order": 5, "enabled": True},
        {"keys": ["glade"], "content": "The glade heals.", "insertion_order": 6, "enabled": True,
         "extensions": {"position": 4, "depth": 1, "role": 0}},
    ],
}  # fmt: skip


def test_no_book_no_lore() -> None:
    msgs = build(persona(v2()), history("Tell me about the shadowfang"))
    assert not any("card_lore" in m["content"] for m in msgs)


def test_constant_lore_sits_around_the_card_in_the_stable_part() -> None:
    card = persona(v2(character_book=BOOK, scenario="A glade."))
    system = build(card, history("hello"))[0]["content"]
    before, desc, scen, after = (system.index(s) for s in ("The forest is old.", "<card_description", "<card_scenario>", "Rivers run east."))
    assert before < desc < scen < after
    # the same stable part whatever the player writes (providers' prefix caches)
    other = build(card, history("shadowfang!"))[0]["content"]
    assert other.startswith(system[: system.index("Rivers run east.") + 20])


def test_activated_lore_is_fenced_escaped_and_macro_expanded() -> None:
    msgs = build(persona(v2(character_book=BOOK)), history("Are there shadowfangs here?"))
    system = msgs[0]["content"]
    blocks = re.findall(r"<card_lore>\n(.*?)\n</card_lore>", system, re.DOTALL)
    assert "Shadowfangs are &lt;wolves&gt; &amp; worse; Ann fears them." in blocks[-1]
    assert system.index("Shadowfangs are") > system.index("<card_description")  # the changing part: after


def test_depth_lore_and_depth_prompt_go_into_the_history() -> None:
    card = persona(v2(character_book=BOOK, extensions={"depth_prompt": {"prompt": "{{char}} speaks softly.", "depth": 0, "role": "system"}}))
    msgs = build(card, history("hi", "hello", "the glade?"))
    contents = [m["content"] for m in msgs]
    lore = next(i for i, c in enumerate(contents) if "The glade heals." in c)
    assert contents[lore + 1] == "the glade?" and msgs[lore]["role"] == "system"  # depth 1: before the newest
    note = next(i for i, c in enumerate(contents) if "<card_depth_prompt>" in c)
    assert contents[note - 1] == "the glade?"  # depth 0: after the newest message
    assert "Seraphina speaks softly." in contents[note]


def test_lore_counts_against_the_prompt_budget() -> None:
    big = {"entries": [{"keys": ["k"], "content": "lore " * 2000, "enabled": True, "insertion_order": 1}]}
    msgs = build(persona(v2(character_book=big)), history("k"), budget=2000)
    assert "lore lore" not in msgs[0]["content"]  # over a quarter of the budget: left out


def test_nickname_is_char_in_the_prompt() -> None:
    card = persona({"spec": "chara_card_v3", "spec_version": "3.0",
                    "data": {"name": "Nova", "nickname": "Captain Nova", "description": "{{char}} commands.", "first_mes": "x"}})  # fmt: skip
    assert "Captain Nova commands." in build(card, history("hi"))[0]["content"]


def test_pick_is_stable_per_dialog_and_time_is_current() -> None:
    card = persona(v2(description="Mood: {{pick::calm::stormy::sleepy::merry::grim::shy}}. Today is {{weekday}}."))
    one = build(card, history("hi"), seed=11, now=datetime(2026, 12, 3, tzinfo=UTC))[0]["content"]
    again = build(card, history("hi", "yo", "hm"), seed=11, now=datetime(2026, 12, 4, tzinfo=UTC))[0]["content"]
    mood = re.search(r"Mood: (\w+)", one)
    assert mood is not None and f"Mood: {mood.group(1)}." in again
    assert "Today is Thursday." in one and "Today is Friday." in again
    moods = {re.search(r"Mood: (\w+)", build(card, history("hi"), seed=s)[0]["content"]).group(1) for s in range(30)}  # type: ignore[union-attr]
    assert len(moods) > 2


def test_creator_notes_never_reach_the_llm() -> None:
    raw = v2(creator_notes="SECRET-NOTE for humans", character_book=BOOK)
    card = persona(raw)
    msgs = build(card, history("shadowfang glade"))
    assert not any("SECRET-NOTE" in m["content"] for m in msgs)
    assert "SECRET-NOTE" not in repr(card.hints())


def test_changing_macros_in_the_lore_are_expanded_per_reply() -> None:
    # the card's own fields hold no changing macro: only its lorebook does (stable and activated)
    book = {"entries": [
        {"keys": ["x"], "content": "Outside it is {{weekday}}.", "constant": True, "insertion_order": 1, "enabled": True},
        {"keys": ["moon"], "content": "The moon rose on {{weekday}}.", "insertion_order": 2, "enabled": True},
    ]}  # fmt: skip
    card = persona(v2(character_book=book))
    one = build(card, history("the moon?"), now=datetime(2026, 12, 3, tzinfo=UTC))[0]["content"]
    two = build(card, history("the moon?", "yes", "the moon!"), now=datetime(2026, 12, 4, tzinfo=UTC))[0]["content"]
    assert "Outside it is Thursday." in one and "The moon rose on Thursday." in one
    assert "Outside it is Friday." in two and "The moon rose on Friday." in two
    # a depth entry too (placed in the history)
    deep = {"entries": [{"keys": ["moon"], "content": "Now: {{weekday}}.", "enabled": True,
                         "extensions": {"position": 4, "depth": 0, "role": 0}}]}  # fmt: skip
    card = persona(v2(character_book=deep))
    for day, name in ((3, "Thursday"), (4, "Friday")):
        msgs = build(card, history("moon"), now=datetime(2026, 12, day, tzinfo=UTC))
        assert any(f"Now: {name}." in m["content"] for m in msgs[1:])


def test_static_lore_keeps_the_cached_prompt() -> None:
    card = persona(v2(character_book=BOOK))
    one = build(card, history("hi"), now=datetime(2026, 12, 3, tzinfo=UTC))
    two = build(card, history("hi", "yo", "hm"), now=datetime(2026, 12, 4, tzinfo=UTC))
    assert one[0]["content"] is two[0]["content"]  # the same cached system text, not rebuilt
