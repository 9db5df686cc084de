"""Language-aware search terms: words of a text, Snowball-stemmed for its language.

One implementation serves every place that matches texts by meaning of words rather than
by letters: the SQLite FTS5 index of messages (fed with ``stemmed(text, lang)``), the
recall query on both stores (``match_query``), and picking facts relevant to a new text
(``terms``). PostgreSQL stems on its own with ``regconfig(lang)`` (``russian``/``english``).

The stemmer is PyStemmer (libstemmer, the Snowball project's C stemmers); a language
without a Snowball stemmer gets lower-cased words, unstemmed.
"""

from __future__ import annotations

import re
from functools import lru_cache

import Stemmer

__all__ = ["STOPWORDS", "keywords", "match_query", "regconfig", "stemmed", "terms", "words"]

# a word: letters and digits (Unicode), inner apostrophes and hyphens kept out
_WORD = re.compile(r"[^\W_]+", re.UNICODE)

_SNOWBALL = {"ru": "russian", "en": "english"}
_REGCONFIG = {"ru": "russian", "en": "english"}

def _set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# short function words that carry no recall signal (PostgreSQL's configs drop them too)
STOPWORDS: dict[str, frozenset[str]] = {
    "ru": _set(
        "и в во не что он на я с со как а то все она так его но да ты к у же вы за бы по только "
        "ее её мне было вот от меня еще ещё нет о из ему теперь когда даже ну вдруг ли если уже или ни "
        "быть был него до вас нибудь опять уж вам ведь там потом себя ничего ей может они тут где "
        "есть надо ней для мы тебя их чем была сам чтоб без будто чего раз тоже себе под будет ж "
        "тогда кто этот того потому этого какой совсем ним здесь этом один почти мой тем чтобы нее "
        "сейчас были куда зачем всех никогда можно при наконец два об другой хоть после над больше "
        "тот через эти нас про всего них какая много разве три эту моя впрочем хорошо свою этой "
        "перед иногда лучше чуть том нельзя такой им более всегда конечно всю между это мои моё "
        "мое моего моей моих моему моим твой твоя твои твоего твоей твоих тебе меня мной"
    ),
    "en": _set(
        "a an the and or but if of at by for with about to from in on up out over under again "
        "then once here there when where why how all any both each few more most other some such "
        "no nor not only own same so than too very s t can will just don should now i me my myself "
        "we our ours you your yours he him his she her hers it its they them their what which who "
        "whom this that these those am is are was were be been being have has had having do does "
        "did doing would could into through during before after above below off further"
    ),
}


def regconfig(lang: str | None) -> str:
    """PostgreSQL's text search configuration for a language (``simple`` if it has none)."""
    return _REGCONFIG.get((lang or "")[:2].lower(), "simple")


@lru_cache(maxsize=8)
def _stemmer(lang: str) -> Stemmer.Stemmer | None:
    algorithm = _SNOWBALL.get(lang)
    return Stemmer.Stemmer(algorithm, 10000) if algorithm else None


def words(text: str) -> list[str]:
    """The text's words, lower-cased (``ё`` read as ``е``), in order."""
    return _WORD.findall(text.lower().replace("ё", "е"))


def _stem(tokens: list[str], lang: str | None) -> list[str]:
    stemmer = _stemmer((lang or "")[:2].lower())
    return stemmer.stemWords(tokens) if stemmer is not None else tokens


def stemmed(text: str, lang: str | None) -> str:
    """The whole text as stems separated by spaces: what the SQLite FTS5 index holds."""
    return " ".join(_stem(words(text), lang))


def keywords(text: str, lang: str | None) -> list[str]:
    """Distinct content words of the text, unstemmed (stop words and 1-letter words left out), in
    order: what PostgreSQL's `to_tsquery` stems itself."""
    stop = STOPWORDS.get((lang or "")[:2].lower(), frozenset())
    return list(dict.fromkeys(w for w in words(text) if len(w) > 1 and w not in stop))


def terms(text: str, lang: str | None) -> list[str]:
    """Distinct stems of the text's content words (stop words and 1-letter words left out), in order."""
    return list(dict.fromkeys(_stem(keywords(text, lang), lang)))


def match_query(text: str, lang: str | None, *, limit: int = 16) -> str:
    """An FTS5 MATCH expression (any of the text's terms, each quoted), '' if it has none."""
    return " OR ".join(f'"{t}"' for t in terms(text, lang)[:limit])
