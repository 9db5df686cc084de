"""Lorebooks (World Info): a card's ``character_book`` (V2) / ``lorebook`` (V3) compiled once per
persona, and the scan that decides, per reply, which entries take part in the prompt.

Behaviour (SillyTavern's and the V3 spec's; the README's "Character cards" section says the same):

- an entry is activated when one of its ``keys`` occurs in the last ``scan_depth`` messages
  (the book's, an entry's ``extensions.scan_depth`` or ``@@scan_depth``; default 2, the player's
  new message included); ``constant`` entries always are; ``enabled: false`` never;
- keys: case-insensitive unless ``case_sensitive``; whole words when ``match_whole_words``
  (SillyTavern's extension) and the key is one word; a key written ``/pattern/flags`` is a regular
  expression, and with ``use_regex`` every key is one (except in entries SillyTavern wrote: it
  sets ``use_regex`` everywhere and means only the ``/…/`` keys; compiled once; a pattern over
  `MAX_PATTERN` characters, one that does not compile, or one that runs past `REGEX_TIMEOUT` on a
  scan is disabled: the entry never matches by it);
- ``selective`` entries also need their ``secondary_keys`` by SillyTavern's ``selectiveLogic``:
  0 AND ANY, 1 NOT ALL, 2 NOT ANY, 3 AND ALL;
- placement: ``position`` ``before_char`` / ``after_char`` (SillyTavern's ``extensions.position``:
  0 before, 1 after, 4 at ``extensions.depth`` in the history with ``extensions.role``; its author's
  note and example positions count as after);
- order and budget: the entries that fit the book's ``token_budget`` and the prompt's share, the
  highest ``priority`` (else ``insertion_order``) first, constant entries before keyed ones; then
  placed by ``insertion_order``, lowest first;
- ``recursive_scanning``: activated entries' content activates others, at most `MAX_RECURSION`
  rounds (``extensions.exclude_recursion`` / ``prevent_recursion`` honoured);
- V3 decorators at the top of ``content``: ``@@depth``, ``@@role``, ``@@scan_depth``,
  ``@@activate_only_after``, ``@@activate_only_every``, ``@@dont_activate``, ``@@activate``,
  ``@@exclude_keys``, ``@@additional_keys``, ``@@position`` (``before_desc``/``after_desc``);
  ``@@@`` fallbacks are read when the decorator before them is not one of these; any other
  decorator is dropped from the content and ignored (`LoreEntry.ignored` lists them).

Assistant messages for ``@@activate_only_after`` / ``@@activate_only_every`` are counted in the
messages the prompt is built from (those after the dialog's memory summary).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import regex

__all__ = [
    "AFTER",
    "BEFORE",
    "DEPTH",
    "LoreEntry",
    "LoreHit",
    "Lorebook",
    "book_of_card",
    "merge_books",
    "parse_book",
]

log = logging.getLogger("vitte.lorebook")

BEFORE, AFTER, DEPTH = "before_char", "after_char", "depth"
ROLES = ("system", "user", "assistant")
LOGICS = ("and_any", "not_all", "not_any", "and_all")  # SillyTavern's selectiveLogic 0..3

DEFAULT_SCAN_DEPTH = 2  # SillyTavern's default: the player's new message and the reply before it
MAX_SCAN_DEPTH = 100
MAX_DEPTH = 1000
MAX_ENTRIES = 1000
MAX_KEYS = 100  # per entry and kind
MAX_PATTERN = 300  # characters of one regex key
MAX_RECURSION = 3
REGEX_TIMEOUT = 0.02  # seconds for one regex key on one scan
SCAN_CHARS = 20_000  # the newest characters of the scanned messages

_SLASH_REGEX = re.compile(r"^/(.+)/([a-z]*)$", re.DOTALL)
_DECORATOR = re.compile(r"^(@@@?)([A-Za-z_][A-Za-z0-9_]*)(?:[ \t]+(.*))?$")
_WORD = re.compile(r"^\w+$")
_ST_POSITIONS = {0: BEFORE, 1: AFTER, 2: AFTER, 3: AFTER, 4: DEPTH, 5: AFTER, 6: AFTER}
_ST_MARKS = ("selectiveLogic", "display_index", "probability", "useProbability")
_SUPPORTED = frozenset(
    {
        "depth",
        "role",
        "scan_depth",
        "activate_only_after",
        "activate_only_every",
        "dont_activate",
        "activate",
        "exclude_keys",
        "additional_keys",
        "position",
    }
)


class _Key:
    """One compiled key: a literal (case, whole words) or a regular expression."""

    __slots__ = ("broken", "case_sensitive", "is_regex", "needle", "pattern", "text")

    def __init__(self, text: str, *, as_regex: bool, case_sensitive: bool, whole_words: bool) -> None:
        self.text = text
        self.broken = ""
        slash = _SLASH_REGEX.match(text)
        self.is_regex = bool(slash) or as_regex
        flags = 0 if case_sensitive else regex.IGNORECASE
        source = text
        if slash:
            source = slash.group(1)
            flags = (regex.IGNORECASE if "i" in slash.group(2) else 0) | (
                regex.DOTALL if "s" in slash.group(2) else 0
            ) | (regex.MULTILINE if "m" in slash.group(2) else 0)
        elif not self.is_regex:
            source = regex.escape(text.strip())
            if whole_words and _WORD.match(text.strip()):
                source = rf"(?<!\w){source}(?!\w)"
        self.pattern: Any = None
        self.case_sensitive = case_sensitive
        self.needle = ""  # a literal key without whole words: a substring test, no regex
        if not self.is_regex and not source.startswith("(?<!"):
            self.needle = text.strip() if case_sensitive else text.strip().lower()
            return
        if len(source) > MAX_PATTERN:
            self.broken = f"pattern longer than {MAX_PATTERN} characters"
            return
        try:
            self.pattern = regex.compile(source, flags | regex.V0)
        except (regex.error, ValueError, OverflowError) as exc:
            self.broken = f"bad pattern: {exc}"

    def search(self, text: _Haystack) -> bool:
        if self.needle:
            return self.needle in (text.raw if self.case_sensitive else text.lower)
        if self.pattern is None:
            return False
        try:
            return self.pattern.search(text.raw, timeout=REGEX_TIMEOUT) is not None
        except TimeoutError:
            self.pattern = None  # a catastrophic pattern: never run again in this process
            self.broken = f"took longer than {REGEX_TIMEOUT}s on a scan: disabled"
            log.warning("lorebook key %r disabled: %s", self.text[:80], self.broken)
            return False


class _Haystack(NamedTuple):
    """The scanned text, and lowered once for the case-insensitive literal keys."""

    raw: str
    lower: str

    @classmethod
    def of(cls, text: str) -> _Haystack:
        return cls(text, text.lower())


def _any(keys: Sequence[_Key], text: _Haystack) -> str | None:
    for key in keys:
        if key.search(text):
            return key.text
    return None


_EMPTY = _Haystack("", "")


@dataclass(frozen=True, slots=True, eq=False)
class LoreEntry:
    """One entry, compiled. `content` has its decorators stripped (macros still in it)."""

    index: int
    name: str
    keys: tuple[str, ...]
    secondary_keys: tuple[str, ...]
    content: str
    enabled: bool = True
    constant: bool = False
    selective: bool = False
    logic: str = "and_any"
    case_sensitive: bool = False
    whole_words: bool = False
    use_regex: bool = False
    insertion_order: int = 100
    priority: int | None = None
    position: str = BEFORE
    depth: int = 4
    role: str = "system"
    scan_depth: int | None = None
    activate_only_after: int | None = None
    activate_only_every: int | None = None
    dont_activate: bool = False
    force: bool = False  # @@activate
    exclude_keys: tuple[str, ...] = ()
    additional_keys: tuple[str, ...] = ()
    exclude_recursion: bool = False  # not activated by other entries' content
    prevent_recursion: bool = False  # its content activates nothing
    ignored: tuple[str, ...] = ()  # decorators Vitte does not support
    book: int = 0  # 0: the card's own book; 1, 2 …: the standalone books it names (they yield to it)
    _primary: tuple[_Key, ...] = field(default=(), repr=False)
    _secondary: tuple[_Key, ...] = field(default=(), repr=False)
    _additional: tuple[_Key, ...] = field(default=(), repr=False)
    _exclude: tuple[_Key, ...] = field(default=(), repr=False)

    @property
    def problems(self) -> list[str]:
        """Keys that can never match, and why."""
        return [f"{k.text!r}: {k.broken}" for k in (*self._primary, *self._secondary) if k.broken]

    @property
    def stable(self) -> bool:
        """Always on and placed outside the history: part of the prompt's stable prefix."""
        return (
            self.enabled
            and (self.constant or self.force)
            and not self.dont_activate
            and self.position != DEPTH
            and self.activate_only_after is None
            and self.activate_only_every is None
            and not self.exclude_keys
            and bool(self.content.strip())
        )

    def gate(self, assistant_turns: int) -> bool:
        """The decorators that do not look at the text."""
        if not self.enabled or not self.content.strip():
            return False
        if self.force:
            return True
        if self.dont_activate:
            return False
        if self.activate_only_after is not None and assistant_turns < self.activate_only_after:
            return False
        return not (self.activate_only_every and assistant_turns % self.activate_only_every)

    def match(self, text: _Haystack) -> str | None:
        """Why `text` activates this entry ("constant", the key found), or None."""
        if self.force:
            return "@@activate"
        if self.constant:
            found: str | None = "constant"
        else:
            found = _any(self._primary, text)
            if found is None:
                return None
            found = f"key {found!r}"
        if self.selective and self._secondary:
            hits = sum(1 for k in self._secondary if k.search(text))
            n = len(self._secondary)
            ok = {
                "and_any": hits > 0,
                "not_all": hits < n,
                "not_any": hits == 0,
                "and_all": hits == n,
            }[self.logic]
            if not ok:
                return None
        if self._additional and _any(self._additional, text) is None:
            return None
        if self._exclude and _any(self._exclude, text) is not None:
            return None
        return found


@dataclass(frozen=True, slots=True)
class LoreHit:
    """An activated entry: where it goes and why."""

    entry: LoreEntry
    reason: str
    tokens: int

    @property
    def position(self) -> str:
        return self.entry.position


@dataclass(frozen=True, eq=False)
class Lorebook:
    """A compiled lorebook (identity-hashed: one object per persona, kept by the catalog)."""

    name: str
    entries: tuple[LoreEntry, ...]
    scan_depth: int = DEFAULT_SCAN_DEPTH
    token_budget: int | None = None
    recursive: bool = False

    @property
    def stable(self) -> tuple[LoreEntry, ...]:
        """The always-on entries outside the history, by insertion order."""
        return tuple(sorted((e for e in self.entries if e.stable), key=lambda e: e.insertion_order))

    def scan(
        self,
        messages: Sequence[str],
        *,
        assistant_turns: int,
        budget: int,
        tokens: Callable[[str], int],
        include_stable: bool = False,
    ) -> list[LoreHit]:
        """The entries `messages` (oldest first, the new one last) activate, within `budget`
        tokens (and the book's own), ordered by insertion order. The stable entries (which the
        prompt keeps in its cached part) count against the budget and are returned only with
        `include_stable`."""
        texts: dict[int, _Haystack] = {}

        def window(depth: int) -> _Haystack:
            if depth not in texts:
                chosen = messages[-depth:] if depth > 0 else []
                texts[depth] = _Haystack.of("\n".join(chosen)[-SCAN_CHARS:])
            return texts[depth]

        found: dict[int, tuple[LoreEntry, str]] = {}
        for e in self.entries:
            if not e.gate(assistant_turns):
                continue
            depth = min(e.scan_depth if e.scan_depth is not None else self.scan_depth, MAX_SCAN_DEPTH)
            text = window(depth) if (depth or not e.constant) else _EMPTY
            reason = e.match(text)
            if reason is not None:
                found[e.index] = (e, reason)
        if self.recursive:
            sources = [e for e, _ in found.values() if not e.prevent_recursion]
            for _round in range(MAX_RECURSION):
                if not sources:
                    break
                text = _Haystack.of("\n".join(e.content for e in sources)[-SCAN_CHARS:])
                sources = []
                for e in self.entries:
                    if e.index in found or e.exclude_recursion or not e.gate(assistant_turns):
                        continue
                    reason = e.match(text)
                    if reason is not None and reason != "constant":
                        found[e.index] = (e, f"{reason} (recursion)")
                        if not e.prevent_recursion:
                            sources.append(e)
        limit = budget if self.token_budget is None else min(budget, self.token_budget)
        ranked = sorted(
            found.values(),
            key=lambda er: (
                not er[0].stable,
                not (er[0].constant or er[0].force),
                er[0].book,  # V2: the character book takes precedence over world books
                -(er[0].priority if er[0].priority is not None else er[0].insertion_order),
                er[0].index,
            ),
        )
        kept: list[LoreHit] = []
        used = 0
        for e, reason in ranked:
            cost = tokens(e.content)
            if used + cost > limit:
                continue
            used += cost
            if include_stable or not e.stable:
                kept.append(LoreHit(e, reason, cost))
        kept.sort(key=lambda h: (h.entry.insertion_order, h.entry.index))
        return kept


# --------------------------------------------------------------------------- parsing


def _int(value: object, default: int | None, low: int, high: int) -> int | None:
    if isinstance(value, bool) or value is None:
        return default
    if isinstance(value, int | float) and value == value and abs(value) != float("inf"):
        return max(low, min(high, int(value)))
    if isinstance(value, str) and value.strip().lstrip("-").isdigit() and len(value) < 12:
        return max(low, min(high, int(value.strip())))
    return default


def _strs(value: object) -> tuple[str, ...]:
    """A list of keys (a comma-separated string is read too); empty ones dropped."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return ()
    out: list[str] = []
    for item in value[:MAX_KEYS]:
        if isinstance(item, int | float) and not isinstance(item, bool):
            item = str(item)
        if isinstance(item, str) and item.strip():
            out.append(item.strip())
    return tuple(out)


def _decorators(content: str) -> tuple[dict[str, str], list[str], str]:
    """(supported decorators by name, ignored decorator names, the content without them)."""
    lines = content.split("\n")
    chosen: dict[str, str] = {}
    ignored: list[str] = []
    pending_fallback = False  # the decorator before was not supported: a @@@ fallback may stand in
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        m = _DECORATOR.match(line)
        if m is None:
            break
        at, name, value = m.group(1), m.group(2).lower(), (m.group(3) or "").strip()
        i += 1
        if at == "@@@" and not pending_fallback:
            continue  # a fallback of a decorator that was understood
        if name in _SUPPORTED:
            chosen.setdefault(name, value)  # the first of a name counts
            pending_fallback = False
        else:
            ignored.append(name)
            pending_fallback = True
    rest = "\n".join(lines[i:]).strip("\n")
    return chosen, ignored, rest


def _entry(index: int, raw: dict[str, Any]) -> LoreEntry:
    ext = raw.get("extensions") if isinstance(raw.get("extensions"), dict) else {}
    assert isinstance(ext, dict)
    content = raw.get("content") if isinstance(raw.get("content"), str) else ""
    assert isinstance(content, str)
    decorators, ignored, content = _decorators(content)

    case = raw.get("case_sensitive")
    if case is None:
        case = ext.get("case_sensitive")
    whole = ext.get("match_whole_words")
    # SillyTavern writes use_regex: true on every entry and reads only /pattern/flags keys as
    # regular expressions: an entry carrying its extensions is read the same way
    use_regex = raw.get("use_regex") is True and not any(k in ext for k in _ST_MARKS)
    keys = _strs(raw.get("keys"))
    secondary = _strs(raw.get("secondary_keys"))

    position = AFTER if raw.get("position") == AFTER else BEFORE
    st_position = _int(ext.get("position"), None, 0, 99)
    if st_position is not None:
        position = _ST_POSITIONS.get(st_position, AFTER)
    depth = _int(ext.get("depth"), 4, 0, MAX_DEPTH) or 0
    role_number = _int(ext.get("role"), 0, 0, 2) or 0
    role = ROLES[role_number]
    if "position" in decorators:
        place = decorators["position"].lower()
        position = {"before_desc": BEFORE, "after_desc": AFTER}.get(place, position)
    if "depth" in decorators:
        value = _int(decorators["depth"], None, 0, MAX_DEPTH)
        if value is not None:
            position, depth = DEPTH, value
    if decorators.get("role", "").lower() in ROLES:
        role = decorators["role"].lower()
    scan_depth = _int(ext.get("scan_depth"), None, 0, MAX_SCAN_DEPTH)
    if "scan_depth" in decorators:
        scan_depth = _int(decorators["scan_depth"], scan_depth, 0, MAX_SCAN_DEPTH)
    logic_number = _int(ext.get("selectiveLogic"), 0, 0, 3) or 0
    name = next(
        (v for v in (raw.get("comment"), raw.get("name")) if isinstance(v, str) and v.strip()), ""
    ) or (keys[0] if keys else f"#{index}")
    compiled = {"case_sensitive": case is True, "whole_words": whole is True}
    exclude = _strs(decorators.get("exclude_keys", ""))
    additional = _strs(decorators.get("additional_keys", ""))
    priority = _int(raw.get("priority"), None, -(10**9), 10**9)
    return LoreEntry(
        index=index,
        name=name.strip()[:200],
        keys=keys,
        secondary_keys=secondary,
        content=content,
        enabled=raw.get("enabled") is not False and ext.get("disable") is not True,
        constant=raw.get("constant") is True,
        selective=raw.get("selective") is True,
        logic=LOGICS[logic_number],
        case_sensitive=case is True,
        whole_words=whole is True,
        use_regex=use_regex,
        insertion_order=_int(raw.get("insertion_order"), 100, -(10**9), 10**9) or 0,
        priority=priority,
        position=position,
        depth=depth,
        role=role,
        scan_depth=scan_depth,
        activate_only_after=_int(decorators.get("activate_only_after"), None, 0, 10**9),
        activate_only_every=_int(decorators.get("activate_only_every"), None, 1, 10**9),
        dont_activate="dont_activate" in decorators,
        force="activate" in decorators,
        exclude_keys=exclude,
        additional_keys=additional,
        exclude_recursion=ext.get("exclude_recursion") is True,
        prevent_recursion=ext.get("prevent_recursion") is True,
        ignored=tuple(ignored),
        _primary=tuple(_Key(k, as_regex=use_regex, **compiled) for k in keys),
        _secondary=tuple(_Key(k, as_regex=use_regex, **compiled) for k in secondary),
        _additional=tuple(_Key(k, as_regex=use_regex, **compiled) for k in additional),
        _exclude=tuple(_Key(k, as_regex=False, **compiled) for k in exclude),
    )


def parse_book(data: object) -> Lorebook | None:
    """A compiled lorebook from a V2 ``character_book`` / V3 lorebook object, or from a
    standalone file's ``{"spec": "lorebook_v3", "data": {...}}``; None when there is no entry.
    Malformed parts are skipped, never raised: a card's book must not stop its persona."""
    if isinstance(data, dict) and data.get("spec") == "lorebook_v3" and isinstance(data.get("data"), dict):
        data = data["data"]
    if not isinstance(data, dict):
        return None
    raw_entries = data.get("entries")
    if isinstance(raw_entries, dict):  # SillyTavern's own world file: {"0": {...}, "1": {...}}
        raw_entries = list(raw_entries.values())
    if not isinstance(raw_entries, list):
        return None
    entries = tuple(
        _entry(i, item) for i, item in enumerate(raw_entries[:MAX_ENTRIES]) if isinstance(item, dict)
    )
    if not entries:
        return None
    name = data.get("name") if isinstance(data.get("name"), str) else ""
    assert isinstance(name, str)
    scan_depth = _int(data.get("scan_depth"), DEFAULT_SCAN_DEPTH, 0, MAX_SCAN_DEPTH)
    budget = _int(data.get("token_budget"), None, 1, 10**7)
    return Lorebook(
        name=name.strip()[:200],
        entries=entries,
        scan_depth=DEFAULT_SCAN_DEPTH if scan_depth is None else scan_depth,
        token_budget=budget,
        recursive=data.get("recursive_scanning") is True,
    )


def merge_books(books: Sequence[Lorebook]) -> Lorebook | None:
    """One book of several (the card's own first, then the standalone ones it names): their
    entries in that order, the first book's settings; within the budget the card's own entries
    come first (V2: the character book takes precedence); at most `MAX_ENTRIES` entries."""
    if not books:
        return None
    if len(books) == 1:
        return books[0]
    entries: list[LoreEntry] = []
    for number, b in enumerate(books):
        for e in b.entries:
            if len(entries) < MAX_ENTRIES:
                entries.append(replace(e, index=len(entries), book=number))
    first = books[0]
    return Lorebook(first.name, tuple(entries), first.scan_depth, first.token_budget, first.recursive)


def book_of_card(card: object) -> Lorebook | None:
    """The compiled lorebook of a stored card (its ``data.character_book``), or None."""
    if not isinstance(card, dict):
        return None
    fields = card.get("data") if isinstance(card.get("data"), dict) else card
    assert isinstance(fields, dict)
    return parse_book(fields.get("character_book"))
