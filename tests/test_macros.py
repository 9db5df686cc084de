"""Card macros (vitte.catalog.macros) against the examples of the Character Card V2/V3 specs and
SillyTavern's documented macros."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from vitte.catalog.macros import MAX_OUTPUT, Macros, expand, is_volatile

M = Macros("Seraphina", "Ann", original="You are {{char}}.", seed=7, language="en")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{char}} greets {{user}}.", "Seraphina greets Ann."),
        ("{{Char}} / {{CHAR}} / {{ user }} / {{USER}}", "Seraphina / Seraphina / Ann / Ann"),
        ("<BOT> and <USER>; <char>, <bot>, <user>", "Seraphina and Ann; Seraphina, Seraphina, Ann"),
        ("{{charIfNotGroup}}", "Seraphina"),
        # V1 spec's mes_example: <START> is not a macro
        ("<START>\n{{user}}: hi\n{{char}}: hello", "<START>\nAnn: hi\nSeraphina: hello"),
        # V2 spec: {{original}} in a card's system prompt stands for the default one
        ("{{original}} Stay in the forest.", "You are Seraphina. Stay in the forest."),
        ("a{{// a note for other authors }}b", "ab"),
        ("a{{comment: shown as a note}}b{{hidden_key: k}}c", "abc"),
        ("{{reverse:Hello}}", "olleH"),  # V3 spec's example
        ("one{{newline}}two{{noop}}", "one\ntwo"),
        ("{{unknown}} and {{getvar::x}} stay", "{{unknown}} and {{getvar::x}} stay"),
        ("{{char", "{{char"),
        ("", ""),
    ],
)
def test_spec_examples(text: str, expected: str) -> None:
    assert expand(text, M) == expected


def test_nickname_is_what_the_caller_passes_for_char() -> None:
    # V3: {{char}} is the nickname when the card has one (the callers pass it: vitte.prompt, shown)
    assert expand("{{char}}", Macros("Captain Nova", "Ann")) == "Captain Nova"


def test_random_chooses_among_the_options() -> None:
    # V3 spec's example: {{random:Hello,Hi,Hey}}; SillyTavern's {{random::a::b}}; "\," is a comma
    seen = {expand("{{random:Hello,Hi,Hey}}", Macros("c", "u", rng=random.Random(i))) for i in range(60)}
    assert seen == {"Hello", "Hi", "Hey"}
    seen = {expand("{{random::a, b::c}}", Macros("c", "u", rng=random.Random(i))) for i in range(40)}
    assert seen == {"a, b", "c"}
    assert expand("{{random:x\\,y}}", M) == "x,y"


def test_pick_is_stable_for_a_seed_and_varies_across_seeds() -> None:
    text = "{{pick::rain::sun::snow::fog::wind}} then {{pick:a,b,c,d}}"
    first = expand(text, Macros("c", "u", seed=1))
    assert all(expand(text, Macros("c", "u", seed=1)) == first for _ in range(5))
    assert len({expand(text, Macros("c", "u", seed=s)) for s in range(40)}) > 3


@pytest.mark.parametrize(("spec", "low", "high"), [("d6", 1, 6), ("6", 1, 6), ("D20", 1, 20), ("2d6", 2, 12), ("2d6+3", 5, 15)])
def test_roll(spec: str, low: int, high: int) -> None:
    values = {int(expand(f"{{{{roll:{spec}}}}}", Macros("c", "u", rng=random.Random(i)))) for i in range(200)}
    assert min(values) == low and max(values) == high


def test_roll_out_of_bounds_stays_as_written() -> None:
    assert expand("{{roll:1000d6}} {{roll:d0}} {{roll:x}}", M) == "{{roll:1000d6}} {{roll:d0}} {{roll:x}}"


def test_time_date_weekday_in_the_players_language() -> None:
    now = datetime(2026, 12, 3, 18, 5, tzinfo=UTC)  # a Thursday
    ru = Macros("c", "u", language="ru", now=now, idle=timedelta(minutes=5))
    en = Macros("c", "u", language="en", now=now, idle=timedelta(hours=3))
    assert expand("{{weekday}}", ru) == "четверг" and expand("{{weekday}}", en) == "Thursday"
    assert expand("{{date}}", ru).startswith("3 декабря 2026") and expand("{{date}}", en) == "December 3, 2026"
    assert expand("{{time}}", ru) == "18:05" and "6:05" in expand("{{time}}", en)
    assert expand("{{isodate}} {{isotime}}", en) == "2026-12-03 18:05"
    assert expand("{{idle_duration}}", ru) == "5 минут" and expand("{{idle_duration}}", en) == "3 hours"


def test_time_date_weekday_in_the_players_time_zone() -> None:
    now = datetime(2026, 12, 3, 22, 30, tzinfo=UTC)  # a Thursday in UTC, Friday 01:30 in Moscow
    moscow = Macros("c", "u", language="ru", now=now, zone=ZoneInfo("Europe/Moscow"))
    assert expand("{{weekday}}, {{time}}", moscow) == "пятница, 01:30"
    assert expand("{{isodate}} {{isotime}}", moscow) == "2026-12-04 01:30"
    assert expand("{{date}}", moscow).startswith("4 декабря 2026")
    assert expand("{{weekday}}, {{time}}", Macros("c", "u", language="ru", now=now)) == "четверг, 22:30"  # no zone: UTC
    naive = Macros("c", "u", language="en", now=now.replace(tzinfo=None), zone=ZoneInfo("Asia/Tokyo"))
    assert expand("{{isodate}} {{isotime}}", naive) == "2026-12-04 07:30"  # a naive time is UTC


def test_nesting_innermost_first() -> None:
    assert expand("{{random:{{user}},{{user}}}}", M) == "Ann"
    assert expand("{{reverse:{{char}}}}", M) == "anihpareS"
    assert expand("{{random:{{unknown}},{{unknown}}}}", M) == "{{unknown}}"


def test_names_are_never_expanded_again() -> None:
    # a player who calls themself "{{roll:d6}}" or "<BOT>" is called exactly that
    m = Macros("Vera", "{{roll:d6}} <BOT> {{char}}")
    assert expand("Hi {{user}}!", m) == "Hi {{roll:d6}} <BOT> {{char}}!"


def test_expansion_is_bounded() -> None:
    many = "{{original}}" * 5000
    out = expand(many, Macros("c", "u", original="x" * 1000))
    assert len(out) <= len(many) + MAX_OUTPUT + 1000
    assert "{{original}}" in out  # the rest stays as written
    deep = "{{" * 20_000 + "}}" * 20_000
    assert expand(deep, M) == deep


def test_volatile_macros_are_known() -> None:
    assert is_volatile("It is {{time}}") and is_volatile("{{random:a,b}}") and is_volatile("{{roll:d6}}")
    assert not is_volatile("{{char}} and {{pick:a,b}}")
