"""The operator's safety preamble: placed first in every reply's system prompt, and its brief
reminder: the last message of every reply's prompt (after the history and after the card's
post-history instructions).

`vitte.prompt.build_messages` puts the preamble before the card's own system prompt, so no card
text ("ignore all rules") can remove it, and never expands card or player text into it: a
`{{char}}`/`{{user}}` in it becomes a quoted, sanitised name, nothing more (the shipped files use
neither). Shipped defaults: preamble.ru.txt and preamble.en.txt; VITTE_SAFETY_PREAMBLE_FILE
replaces them (a path, optionally with `{lang}` in it). The preamble cannot be switched off: an
empty or missing file is a configuration error.

The reminder: preamble_reminder.<lang>.txt beside the preamble in use (in this package, or in
the directory of VITTE_SAFETY_PREAMBLE_FILE — where a language without one keeps the shipped
reminder, which only points back to "the operator's rules at the start" and so fits any
preamble). An empty reminder file is a configuration error too.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from vitte.config import Settings
from vitte.safety._files import read_texts

DEFAULT_NAME = "preamble.{lang}.txt"
REMINDER_NAME = "preamble_reminder.{lang}.txt"
VARIABLE = "VITTE_SAFETY_PREAMBLE_FILE"


def _pick(texts: dict[str, str], language: str) -> str:
    return texts.get(language) or texts.get("ru") or next(iter(texts.values()))


class SafetyPreamble:
    """`preamble(language) -> str`: the callable the dialogs engine takes;
    `preamble.reminder(language) -> str`: its restatement after the history."""

    __slots__ = ("reminders", "texts")

    def __init__(self, texts: dict[str, str], reminders: dict[str, str] | None = None) -> None:
        self.texts = dict(texts)
        self.reminders = dict(reminders) if reminders else _shipped_reminders()

    def __call__(self, language: str) -> str:
        return _pick(self.texts, language)

    def reminder(self, language: str) -> str:
        return _pick(self.reminders, language)


@lru_cache(maxsize=1)
def _shipped_reminders() -> dict[str, str]:
    return read_texts(None, REMINDER_NAME, VARIABLE)


def _reminders(configured: str | None) -> dict[str, str]:
    """The shipped reminders, each replaced by the operator's beside a configured preamble."""
    texts = dict(_shipped_reminders())
    if configured is None:
        return texts
    folder = Path(configured).expanduser().parent
    for lang in texts:
        path = folder / REMINDER_NAME.format(lang=lang)
        if path.is_file():  # one file for every language: read_texts' checks (not empty, UTF-8)
            texts[lang] = read_texts(str(path), REMINDER_NAME, VARIABLE)[lang]
    return texts


@lru_cache(maxsize=8)
def _load(configured: str | None) -> SafetyPreamble:
    return SafetyPreamble(read_texts(configured, DEFAULT_NAME, VARIABLE), _reminders(configured))


def load_preamble(settings: Settings | None = None) -> SafetyPreamble:
    """The preamble per language (files read once per path). Raises ConfigError."""
    return _load(settings.safety_preamble_file if settings is not None else None)
