"""Crisis care: notice a player's message that signals suicide or self-harm, and say where help is.

`detect(text, language)` matches a maintained phrase list (crisis.ru.txt, crisis.en.txt, or
VITTE_CRISIS_PHRASES_FILE) precisely: the text is normalised (case, ё→е, apostrophes and
punctuation dropped, spaces collapsed) and entries match whole words only, so ordinary
sadness and idioms ("мне грустно", "умираю от смеха", "убить время", "this movie killed me",
"I'm dying to see you") are not signals. Exclusion entries remove known idioms first.

`crisis_resources(language)` is the plain help message the faces send after the persona's
reply (resources.ru.txt, resources.en.txt, or VITTE_CRISIS_RESOURCES_FILE).

Nothing here stores or logs the player's text; the engine counts the event (kind "crisis",
language) in safety_events.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from vitte.config import ConfigError, Settings
from vitte.safety._files import LANGUAGES, read_texts

PHRASES_NAME = "crisis.{lang}.txt"
PHRASES_VARIABLE = "VITTE_CRISIS_PHRASES_FILE"
RESOURCES_NAME = "resources.{lang}.txt"
RESOURCES_VARIABLE = "VITTE_CRISIS_RESOURCES_FILE"

# added to the reply's preamble when the player's message is a crisis signal
CARE_NOTE = {
    "ru": (
        "Сейчас {{user}}, возможно, в кризисе или думает о том, чтобы причинить себе вред. "
        "Выйди из флирта и игры: ответь тепло, спокойно и бережно, отнесись к этому всерьёз, "
        "не давай никаких способов и подробностей и мягко предложи {{user}} прямо сейчас "
        "обратиться к близкому человеку или на линию помощи (номера приложение покажет отдельно)."
    ),
    "en": (
        "{{user}} may be in crisis or thinking about harming themselves right now. Step out of "
        "the flirtation and the game: answer with warmth, calm and care, take it seriously, give "
        "no methods or details, and gently encourage {{user}} to reach out right now to someone "
        "they trust or to a helpline (the app shows the numbers separately)."
    ),
}

_APOSTROPHES = re.compile(r"['’‘`ʼ´]")
_NON_WORD = re.compile(r"[\W_]+")


def normalize(text: str) -> str:
    """Lower case, ё→е, apostrophes dropped ("don't" → "dont"), other punctuation and
    symbols → one space, spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")
    text = _APOSTROPHES.sub("", text)
    return " ".join(_NON_WORD.sub(" ", text).split())


def _bounded(pattern: str) -> str:
    return rf"(?<!\w)(?:{pattern})(?!\w)"


@dataclass(frozen=True, slots=True)
class PhraseMatcher:
    """Signals and exclusions of one language, each compiled into one alternation."""

    signals: re.Pattern[str]
    exclusions: re.Pattern[str] | None

    @classmethod
    def parse(cls, text: str, source: str = "phrases") -> PhraseMatcher:
        signals: list[str] = []
        exclusions: list[str] = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            target = signals
            if line.startswith("!"):
                target, line = exclusions, line[1:].strip()
            if line.startswith("re:"):
                pattern = line[3:].strip()
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ConfigError(f"{source}, line {number}: bad regular expression: {exc}") from None
            else:
                words = normalize(line)
                pattern = re.escape(words).replace(r"\ ", " ") if words else ""
            if not pattern:
                raise ConfigError(f"{source}, line {number}: empty entry")
            target.append(_bounded(pattern))
        if not signals:
            raise ConfigError(f"{source}: no phrases")
        return cls(
            re.compile("|".join(signals)),
            re.compile("|".join(exclusions)) if exclusions else None,
        )

    def matches(self, normalized: str) -> bool:
        if self.exclusions is not None:
            normalized = self.exclusions.sub(" ", normalized)
        return self.signals.search(normalized) is not None


class CrisisCare:
    """Phrase lists and help resources per language."""

    __slots__ = ("matchers", "resources_texts")

    def __init__(self, matchers: dict[str, PhraseMatcher], resources: dict[str, str]) -> None:
        self.matchers = dict(matchers)
        self.resources_texts = dict(resources)

    def _languages(self, language: str | None) -> Iterable[str]:
        # the player's language first, then the others: players mix languages, and a missed
        # signal costs more than a help message
        if language in self.matchers:
            yield language
        yield from (lang for lang in self.matchers if lang != language)

    def detect(self, text: str, language: str | None = None) -> bool:
        if not text:
            return False
        normalized = normalize(text)
        return any(self.matchers[lang].matches(normalized) for lang in self._languages(language))

    def resources(self, language: str) -> str:
        return self.resources_texts.get(language) or self.resources_texts["ru"]

    def care_note(self, language: str) -> str:
        return CARE_NOTE.get(language, CARE_NOTE["ru"])


@lru_cache(maxsize=8)
def _load(phrases_file: str | None, resources_file: str | None) -> CrisisCare:
    phrase_texts = read_texts(phrases_file, PHRASES_NAME, PHRASES_VARIABLE)
    matchers = {
        lang: PhraseMatcher.parse(phrase_texts[lang], f"{PHRASES_VARIABLE} ({lang})") for lang in LANGUAGES
    }
    return CrisisCare(matchers, read_texts(resources_file, RESOURCES_NAME, RESOURCES_VARIABLE))


def load_crisis_care(settings: Settings | None = None) -> CrisisCare:
    """The configured (or shipped) lists and resources, read once per path. Raises ConfigError."""
    if settings is None:
        return _load(None, None)
    return _load(settings.crisis_phrases_file, settings.crisis_resources_file)


def detect(text: str, language: str | None = None, settings: Settings | None = None) -> bool:
    """True when `text` signals suicide or self-harm (the player's language is checked first,
    then the others). Pass the core's settings to use the operator's configured list."""
    return load_crisis_care(settings).detect(text, language)


def crisis_resources(language: str, settings: Settings | None = None) -> str:
    """The plain help message for a player in crisis, in their language (ru, en)."""
    return load_crisis_care(settings).resources(language)
