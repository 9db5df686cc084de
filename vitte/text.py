"""Text from players, cards and the LLM made inert for an operator's terminal.

One implementation for every face that shows stored data to an operator (the CLI's tables
and lines, the console's chat view and operator panel): terminal escape sequences (CSI
colours, OSC window titles and OSC-8 links, DCS/APC/PM strings, C1 forms) are removed whole,
and the remaining control characters (C0 but newline and tab, DEL, C1) and bidirectional
overrides are dropped. Rich markup is a separate matter: the CLI and the console hand the
result to Rich as a `Text` (never parsed as markup) — see `cli.common.shown`.

`--json` output never goes through this: it stays the exact stored value.
"""

from __future__ import annotations

import hmac
import re

__all__ = ["dropped", "inert", "same_secret"]

_SEQUENCES = re.compile(
    r"""
      (?:\x1b\]|\x9d) [^\x07\x1b\x9c]* (?:\x07|\x1b\\|\x9c)?           # OSC … BEL/ST (titles, OSC-8 links)
    | (?:\x1b[P^_X]|[\x90\x98\x9e\x9f]) [^\x1b\x9c]* (?:\x1b\\|\x9c)?  # DCS, SOS, PM, APC … ST
    | (?:\x1b\[|\x9b) [0-?]* [ -/]* [@-~]?                            # CSI (colours, cursor moves)
    | \x1b [ -/]* [0-~]?                                              # any other escape
    | [\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]  # C0 but tab and newline, DEL, C1; bidi controls
    """,
    re.VERBOSE,
)
_BREAKS = re.compile(r"[\t\n]+")


def inert(value: object, *, one_line: bool = False) -> str:
    """`value` as text safe to print to a terminal: no escape sequences, no control characters.

    With `one_line` (a name in a table cell, a field on a line of its own) newlines and tabs
    become single spaces too.
    """
    text = value if isinstance(value, str) else str(value)
    if text.isprintable() and not one_line:
        return text
    text = _SEQUENCES.sub("", text)
    return _BREAKS.sub(" ", text) if one_line else text


def dropped(text: str) -> list[tuple[int, int]]:
    """The (start, end) ranges of `text` that `inert` removes (for moving styles' offsets)."""
    return [m.span() for m in _SEQUENCES.finditer(text)]


def same_secret(given: str | None, expected: str) -> bool:
    """Whether a header's value is the expected secret, in constant time; never raises.

    aiohttp hands a header's bytes that aren't UTF-8 over as lone surrogates (surrogateescape):
    "surrogatepass" encodes them to bytes no valid UTF-8 secret contains, so they never match
    and never raise (a plain `.encode()` did: a 500 and a traceback for any stranger).
    """
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))
