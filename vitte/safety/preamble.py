"""The operator's safety preamble: placed first in every reply's system prompt.

`vitte.prompt.build_messages` puts it before the card's own system prompt, so no card text
("ignore all rules") can remove it. Shipped defaults: preamble.ru.txt and preamble.en.txt;
VITTE_SAFETY_PREAMBLE_FILE replaces them (a path, optionally with `{lang}` in it). The
preamble cannot be switched off: an empty or missing file is a configuration error.
"""

from __future__ import annotations

from functools import lru_cache

from vitte.config import Settings
from vitte.safety._files import read_texts

DEFAULT_NAME = "preamble.{lang}.txt"
VARIABLE = "VITTE_SAFETY_PREAMBLE_FILE"


class SafetyPreamble:
    """`preamble(language) -> str`: the callable the dialogs engine takes."""

    __slots__ = ("texts",)

    def __init__(self, texts: dict[str, str]) -> None:
        self.texts = dict(texts)

    def __call__(self, language: str) -> str:
        return self.texts.get(language) or self.texts.get("ru") or next(iter(self.texts.values()))


@lru_cache(maxsize=8)
def _load(configured: str | None) -> SafetyPreamble:
    return SafetyPreamble(read_texts(configured, DEFAULT_NAME, VARIABLE))


def load_preamble(settings: Settings | None = None) -> SafetyPreamble:
    """The preamble per language (files read once per path). Raises ConfigError."""
    return _load(settings.safety_preamble_file if settings is not None else None)
