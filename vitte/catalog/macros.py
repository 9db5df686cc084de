"""Card macros: the one implementation of the curly-braced syntax (SillyTavern, Character Card
V2/V3 "CBS") for every place a card's text goes — the prompt, the story opening, the Web App,
the console and exports.

Supported (names are case-insensitive, spaces around them ignored):

- ``{{char}}`` (the V3 ``nickname`` when the caller passes it), ``{{user}}``, ``{{charIfNotGroup}}``,
  ``<BOT>``, ``<CHAR>``, ``<USER>`` (any case);
- ``{{original}}`` (what the card's system prompt replaces);
- ``{{random:a,b,c}}`` / ``{{random::a::b}}`` (``\\,`` is a literal comma), rolled per expansion;
- ``{{pick:a,b}}`` / ``{{pick::a::b}}``: the same choice every time for the same ``seed`` (a dialog);
- ``{{roll:d6}}``, ``{{roll:6}}``, ``{{roll:2d6}}``, ``{{roll:2d6+1}}`` (at most 100 dice of 10^6 sides);
- ``{{// note}}``, ``{{comment: note}}``, ``{{hidden_key: k}}``, ``{{noop}}``: removed;
  ``{{newline}}``: a line break; ``{{reverse:abc}}``: ``cba``;
- ``{{time}}``, ``{{date}}``, ``{{weekday}}``, ``{{isotime}}``, ``{{isodate}}`` (in the player's
  time zone when the caller passes it, else UTC), ``{{idle_duration}}`` (in the player's
  language, through Babel).

Unknown macros stay as written. Nested macros expand innermost first (``{{random:{{user}},x}}``);
expansion stops after `MAX_PASSES` passes and when it has added `MAX_OUTPUT` characters. Names put in by
``{{char}}``/``{{user}}`` are never expanded again (a player called ``{{roll:d6}}`` stays that).
"""

from __future__ import annotations

import functools
import hashlib
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from babel.dates import format_date, format_time, format_timedelta

__all__ = ["MAX_OUTPUT", "MAX_PASSES", "Macros", "expand", "has_macros", "is_volatile"]

MAX_PASSES = 8  # nesting deeper than this stays as written
MAX_OUTPUT = 200_000  # characters an expansion may add; macros past that stay as written
MAX_DICE = 100
MAX_SIDES = 1_000_000

# sentinels: braces of a protected value (a name, an unknown macro) until the end of expansion
_OPEN, _CLOSE, _LB, _RB = "\x00", "\x01", "\x02", "\x03"
_RESTORE = ((_OPEN, "{{"), (_CLOSE, "}}"), (_LB, "{"), (_RB, "}"))


def _without_sentinels(text: str) -> str:
    # str.replace, not str.translate: a translate table costs a dict lookup per character,
    # milliseconds for a card's description in Cyrillic
    for s, _ in _RESTORE:
        if s in text:
            text = text.replace(s, "")
    return text


def _restored(text: str) -> str:
    for s, braces in _RESTORE:
        if s in text:
            text = text.replace(s, braces)
    return text

_INNERMOST = re.compile(r"\{\{((?:(?!\{\{|\}\}).)*?)\}\}", re.DOTALL)
_ANGLE = re.compile(r"<(bot|char|user)>", re.IGNORECASE)
_ROLL = re.compile(r"^(\d*)d(\d+)\s*([+-]\s*\d+)?$|^(\d+)$", re.IGNORECASE)
_NAME_ARG = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s*(::?)(.*)$", re.DOTALL)
_SPLIT_COMMA = re.compile(r"(?<!\\),")
_VOLATILE = re.compile(
    r"\{\{\s*(?:random|roll|time|date|weekday|isotime|isodate|idle_duration)\b", re.IGNORECASE
)


@dataclass(frozen=True, slots=True)
class Macros:
    """What the macros stand for in one expansion."""

    char: str  # the persona's name (or nickname), already made safe by the caller if needed
    user: str  # the player's name
    original: str = ""  # {{original}}: the default main prompt
    seed: int = 0  # {{pick}}: the same seed gives the same choice (a dialog id)
    language: str = "ru"  # dates, times and durations
    now: datetime | None = None  # None: the current time
    zone: tzinfo | None = None  # the player's time zone for {{time}}, {{date}} … (None: UTC)
    idle: timedelta | None = None  # {{idle_duration}}: time since the player last wrote
    rng: random.Random | None = None  # {{random}} / {{roll}} (None: a fresh generator)


def has_macros(text: str) -> bool:
    """Could `text` hold a macro at all (a cheap test before `expand`)?"""
    return "{{" in text or "<" in text


@functools.lru_cache(maxsize=4096)
def is_volatile(text: str) -> bool:
    """Does `text` hold a macro whose value changes between expansions (random, roll, time …)?"""
    return bool(_VOLATILE.search(text))


def _inert(value: str) -> str:
    """A value that must not be expanded again: its braces become sentinels."""
    return _without_sentinels(value).replace("{", _LB).replace("}", _RB)


def _choices(arg: str, double_colon: bool) -> list[str]:
    if double_colon:
        return arg.split("::")
    return [part.replace("\\,", ",") for part in _SPLIT_COMMA.split(arg)]


def _roll(spec: str, rng: random.Random) -> str | None:
    m = _ROLL.match(spec.strip())
    if m is None:
        return None
    if m.group(4) is not None:
        count, sides, bonus = 1, int(m.group(4)), 0
    else:
        count = int(m.group(1) or 1)
        sides = int(m.group(2))
        bonus = int(m.group(3).replace(" ", "")) if m.group(3) else 0
    if not (1 <= count <= MAX_DICE and 1 <= sides <= MAX_SIDES and abs(bonus) <= MAX_SIDES):
        return None
    return str(sum(rng.randint(1, sides) for _ in range(count)) + bonus)


def _locale(language: str) -> str:
    return language if language in ("ru", "en") else "en"


class _Expansion:
    """One call of `expand`: the values, the random generator, the {{pick}} counter."""

    def __init__(self, m: Macros) -> None:
        self.m = m
        self._rng = m.rng
        self.picks = 0
        self.budget = MAX_OUTPUT  # characters the expansion may still add
        self.names = {"char": _inert(m.char), "user": _inert(m.user), "bot": _inert(m.char)}

    @property
    def rng(self) -> random.Random:
        """{{random}} / {{roll}}: the caller's generator, else a fresh one made on first use."""
        if self._rng is None:
            self._rng = random.Random()
        return self._rng

    def now(self) -> datetime:
        now = self.m.now or datetime.now(UTC)
        if now.tzinfo is None:  # a naive time is UTC (as the database's)
            now = now.replace(tzinfo=UTC)
        return now.astimezone(self.m.zone or UTC)

    def simple(self, name: str) -> str | None:
        loc = _locale(self.m.language)
        table: dict[str, Callable[[], str]] = {
            "char": lambda: self.names["char"],
            "charifnotgroup": lambda: self.names["char"],
            "user": lambda: self.names["user"],
            "original": lambda: self.m.original,
            "newline": lambda: "\n",
            "noop": lambda: "",
            "time": lambda: format_time(self.now(), "short", locale=loc),
            "date": lambda: format_date(self.now(), "long", locale=loc),
            "weekday": lambda: format_date(self.now(), "EEEE", locale=loc),
            "isotime": lambda: self.now().strftime("%H:%M"),
            "isodate": lambda: self.now().strftime("%Y-%m-%d"),
            "idle_duration": lambda: format_timedelta(
                self.m.idle if self.m.idle is not None else timedelta(0), locale=loc
            ),
        }
        fn = table.get(name)
        return fn() if fn is not None else None

    def macro(self, match: re.Match[str]) -> str:
        value = self.value(match.group(1))
        self.budget -= max(len(value) - len(match.group(0)), 0)
        if self.budget < 0:
            return _OPEN + match.group(1) + _CLOSE  # too much: the rest stays as written
        return value

    def value(self, body: str) -> str:
        stripped = body.strip()
        if stripped.startswith("//"):
            return ""
        value = self.simple(stripped.lower())
        if value is not None:
            return value
        found = _NAME_ARG.match(stripped)
        if found is not None:
            name, sep, arg = found.group(1).lower(), found.group(2), found.group(3)
            value = self.with_argument(name, sep == "::", arg)
            if value is not None:
                return value
        return _OPEN + body + _CLOSE  # unknown: kept as written, never matched again

    def with_argument(self, name: str, double: bool, arg: str) -> str | None:
        if name in ("comment", "hidden_key"):
            return ""
        if name == "reverse":
            return arg[::-1]
        if name == "random":
            return self.rng.choice(_choices(arg, double))
        if name == "pick":
            self.picks += 1
            key = f"{self.m.seed}\x1f{self.picks}\x1f{arg}".encode()
            options = _choices(arg, double)
            return options[int.from_bytes(hashlib.sha256(key).digest()[:8], "big") % len(options)]
        if name == "roll":
            return _roll(arg, self.rng)
        return None


def expand(text: str, m: Macros) -> str:
    """`text` with its macros expanded (see the module docstring)."""
    if not text or not has_macros(text):
        return text
    x = _Expansion(m)
    out = _without_sentinels(text)
    out = _ANGLE.sub(lambda a: x.names[a.group(1).lower()], out)
    for _ in range(MAX_PASSES):
        if "{{" not in out:
            break
        new = _INNERMOST.sub(x.macro, out)
        if new == out:
            break
        out = new
    return _restored(out)
