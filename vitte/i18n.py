"""Every text a player, an operator or the Web App page reads: one set of gettext catalogues.

Layout (Babel's, and aiogram.utils.i18n's: ``<locales>/<lang>/LC_MESSAGES/<domain>.mo``)::

    vitte/locales/<lang>/LC_MESSAGES/vitte.po   the catalogue: edit it (by hand or in a PO editor)
    vitte/locales/<lang>/LC_MESSAGES/vitte.mo   compiled from it: `pybabel compile -d vitte/locales -D vitte`

The languages are the folders that hold a compiled catalogue (``LANGUAGES``, the default first):
adding a language is adding its catalogue (see README, "Translations"); no code names them.

Message ids are symbolic keys, not source text: msgid = the key the code asks for (``stale``,
``btn_continue``), msgctxt = the part of the product that says it:

    common    shared: language_name, date_format, long_date_format, the plurals replies, stories,
              photos_count, voice_count
    bot       the bot's messages and buttons           vitte.bot.texts.t(lang, key)
    paywall   the bot's /premium, buying, thanks       vitte.bot.paywall.pt(lang, key)
    billing   /paysupport, /terms, quota, plans        vitte.billing_texts, vitte.billing
    telegram  what any face sends (the data file)      vitte.telegram.messages
    api       the Web App API's error messages         vitte.webapp.api.message(code, lang)
    page      the Web App page (sent to it as JSON)    vitte.webapp.texts
    console   the console's own chrome                 tui.strings.tr(lang, key)
    cli       the demo player's lines (`vitte demo`)   cli.dialogs

``vitte/locales/vitte.pot`` is the template a new catalogue starts from (``pybabel init``): the
reference's keys with empty texts and the English as a comment; ``python -m vitte.i18n template``
writes it again after the reference changed (a test says when it is out of date).

The ``en`` catalogue is the reference: its keys are the keys, and a key missing from another
catalogue reads the English text (a test keeps every shipped catalogue complete). Texts are
``str.format`` templates (``{persona}``); a plural entry (msgid_plural = msgid) is chosen by the
catalogue's Plural-Forms through ``npgettext`` and gets its number as ``{n}``. Besides its
catalogue's keys, every table answers ``lang_<code>`` for each language: that language's name in
its own catalogue (its ``language_name``), so a new catalogue adds its button everywhere.

Why the compiled ``.mo`` files are shipped (not compiled when loaded): reading a ``.mo`` is a
hash-table read (under a millisecond), parsing the ``.po`` with Babel costs every process (bot,
Web App, each CLI command) some 10 ms per language at start; the ``.mo`` is what gettext tools and aiogram's
I18n read as is. tests/test_i18n.py fails when a ``.mo`` says something its ``.po`` does not.

Why not ``aiogram.utils.i18n`` at run time: its ``gettext`` reads the language from a context
variable that ``I18nMiddleware`` sets for every update, a cost on the hot path for something
every handler already knows (the player's language is in the stored player row), and the core
(billing, the Web App) must not import aiogram for its texts. The catalogues are in aiogram's
layout, so ``I18n(path=LOCALES_DIR, domain=DOMAIN)`` reads the very same files (a test checks it).

Speed: each language's ``.mo`` is read once, by the standard library's ``gettext`` (Babel, for
its CLDR data, is imported only by the few functions that need it); a part's texts in a language
are then one plain dict (``Texts.table``), so ``Texts.t`` is a dict lookup and a ``str.format``.
"""

from __future__ import annotations

import gettext
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, NoReturn

__all__ = [
    "COMMON",
    "DEFAULT_LANGUAGE",
    "DOMAIN",
    "LANGUAGES",
    "LOCALES_DIR",
    "REFERENCE_LANGUAGE",
    "Texts",
    "format_date",
    "format_day",
    "language_name",
    "mo_path",
    "normalize_language",
    "plural_categories",
    "po_path",
    "translations",
]

DOMAIN = "vitte"
LOCALES_DIR = Path(__file__).resolve().parent / "locales"
DEFAULT_LANGUAGE = "ru"  # who Telegram does not tell us about, or speaks a language we lack
REFERENCE_LANGUAGE = "en"  # the catalogue whose keys are the keys


def mo_path(lang: str) -> Path:
    return LOCALES_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.mo"


def po_path(lang: str) -> Path:
    return LOCALES_DIR / lang / "LC_MESSAGES" / f"{DOMAIN}.po"


def _discover() -> tuple[str, ...]:
    found = sorted(p.parents[1].name for p in LOCALES_DIR.glob(f"*/LC_MESSAGES/{DOMAIN}.mo"))
    return tuple(sorted(found, key=lambda code: code != DEFAULT_LANGUAGE))


LANGUAGES: tuple[str, ...] = _discover()
_KNOWN = frozenset(LANGUAGES)


def normalize_language(code: str | None) -> str:
    """The catalogue for a language code (a stored one, Telegram's ``language_code``, a page's
    ``?lang=``): "en", "en-US", "EN_gb" → "en"; unknown or none → DEFAULT_LANGUAGE."""
    if code in _KNOWN:
        return code
    if code:
        primary = code.strip().lower().replace("_", "-").split("-", 1)[0]
        if primary in _KNOWN:
            return primary
    return DEFAULT_LANGUAGE


# --------------------------------------------------------------------------- loading
class _Missing(gettext.NullTranslations):
    """The end of every fallback chain: a key no catalogue has is a bug, not a text."""

    def pgettext(self, context: str, message: str) -> NoReturn:
        raise KeyError(f"{context}:{message}")

    def npgettext(self, context: str, msgid1: str, msgid2: str, n: int) -> NoReturn:
        raise KeyError(f"{context}:{msgid1}")


_TRANSLATIONS: dict[str, gettext.GNUTranslations] = {}


def translations(lang: str | None) -> gettext.GNUTranslations:
    """The language's gettext catalogue (read once), falling back to the reference catalogue."""
    lang = normalize_language(lang)
    found = _TRANSLATIONS.get(lang)
    if found is None:
        with mo_path(lang).open("rb") as fp:
            found = gettext.GNUTranslations(fp)
        found.add_fallback(_Missing() if lang == REFERENCE_LANGUAGE else translations(REFERENCE_LANGUAGE))
        _TRANSLATIONS[lang] = found
    return found


_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def _keys(context: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The reference catalogue's (singular keys, plural keys) in `context`."""
    if not _KEYS:
        from babel.messages.mofile import read_mo

        found: dict[str, tuple[list[str], list[str]]] = {}
        with mo_path(REFERENCE_LANGUAGE).open("rb") as fp:
            for message in read_mo(fp):
                if not message.id:
                    continue  # the header
                ctx = message.context or ""
                if isinstance(ctx, bytes):  # Babel < 2.19 reads a .mo's contexts undecoded
                    ctx = ctx.decode("utf-8")
                singular, plural = found.setdefault(ctx, ([], []))
                if isinstance(message.id, str):
                    singular.append(message.id)
                else:
                    plural.append(message.id[0])
        _KEYS.update({ctx: (tuple(s), tuple(p)) for ctx, (s, p) in found.items()})
    return _KEYS.get(context, ((), ()))


# --------------------------------------------------------------------------- texts
class Texts:
    """The texts of one part of the product (one msgctxt) in every language."""

    __slots__ = ("_tables", "context")

    def __init__(self, context: str) -> None:
        self.context = context
        self._tables: dict[str, dict[str, str]] = {}

    def table(self, lang: str | None) -> Mapping[str, str]:
        """Every singular text of this part in `lang` (unknown: the default language), by key."""
        table = self._tables.get(lang)  # type: ignore[arg-type]
        if table is None:
            table = self._build(normalize_language(lang))
        return table

    def _build(self, lang: str) -> dict[str, str]:
        table = self._tables.get(lang)
        if table is None:
            tr = translations(lang)
            table = {key: tr.pgettext(self.context, key) for key in _keys(self.context)[0]}
            for code in LANGUAGES:
                table.setdefault(f"lang_{code}", language_name(code))
            self._tables[lang] = table
        return table

    def keys(self) -> tuple[str, ...]:
        return _keys(self.context)[0]

    def plural_keys(self) -> tuple[str, ...]:
        return _keys(self.context)[1]

    def t(self, lang: str | None, key: str, /, **kw: Any) -> str:
        """The text `key` in `lang`, formatted with `kw` (KeyError for a key no catalogue has)."""
        text = self.table(lang)[key]
        return text.format(**kw) if kw else text

    def get(self, lang: str | None, key: str, default: str | None = None) -> str | None:
        """The unformatted text, or `default` when there is no such key."""
        return self.table(lang).get(key, default)

    def nt(self, lang: str | None, key: str, n: int, /, **kw: Any) -> str:
        """The plural entry `key` for the number `n` (as `{n}`), by the catalogue's Plural-Forms."""
        return translations(lang).npgettext(self.context, key, key, n).format(n=n, **kw)


COMMON = Texts("common")


def language_name(lang: str) -> str:
    """The language's own name for itself ("Русский", "English")."""
    return translations(lang).pgettext(COMMON.context, "language_name")


def format_date(value: datetime | None, lang: str | None) -> str:
    """A moment as the bot writes it ("31.01.2026 09:30 UTC"); "—" for none."""
    if value is None:
        return "—"
    return value.strftime(COMMON.t(lang, "date_format"))


def format_day(value: date | datetime, lang: str | None) -> str:
    """A day in words ("1 января 2026", "1 January 2026"): Babel, with the catalogue's pattern."""
    from babel.dates import format_date as babel_format_date

    lang = normalize_language(lang)
    return babel_format_date(value, COMMON.t(lang, "long_date_format"), locale=lang)


def plural_categories(texts: Texts, lang: str | None, key: str) -> dict[str, str]:
    """A plural entry by CLDR category (one, few, many, other) for a client that has
    Intl.PluralRules but no gettext (the Web App page): each category gets the catalogue's form
    for the whole numbers of that category (the language's CLDR rule, from Babel); "other", which
    only fractions reach in some languages (ru), is then the "many" form."""
    from babel import Locale

    lang = normalize_language(lang)
    rule = Locale.parse(lang).plural_form
    tr = translations(lang)
    out: dict[str, str] = {}
    for n in range(200):
        out.setdefault(rule(n), tr.npgettext(texts.context, key, key, n))
    out.setdefault("other", out.get("many") or next(iter(out.values())))
    return out


# --------------------------------------------------------------------------- the template
TEMPLATE_PATH = LOCALES_DIR / f"{DOMAIN}.pot"


def template() -> Any:
    """The template (a Babel Catalog) for `pybabel init` / `pybabel update`: every key of the
    reference catalogue, in its order, with an empty text and the English as a comment."""
    from babel.messages.catalog import Catalog
    from babel.messages.pofile import read_po

    with po_path(REFERENCE_LANGUAGE).open("rb") as fp:
        reference = read_po(fp)
    pot = Catalog(
        header_comment=(
            "# Vitte's texts: the template a catalogue starts from (see vitte/i18n.py).\n"
            "# Written by `python -m vitte.i18n template` from the reference (en) catalogue."
        ),
        project=reference.project,
        version=reference.version,
        creation_date=reference.creation_date,
        revision_date=reference.creation_date,
        msgid_bugs_address="",
        last_translator="",
        language_team="",
        fuzzy=False,
    )
    for message in reference:
        if not message.id:
            continue
        forms = [message.string] if isinstance(message.string, str) else list(message.string or ())
        comments = [f"en: {line}" for form in forms for line in form.split("\n")]
        empty: Any = "" if isinstance(message.id, str) else ("", "")
        pot.add(message.id, empty, context=message.context, auto_comments=comments)
    return pot


def write_template(path: Path = TEMPLATE_PATH) -> None:
    from babel.messages.pofile import write_po

    with path.open("wb") as fp:
        write_po(fp, template(), width=100, no_location=True, omit_header=False)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["template"]:
        sys.exit("usage: python -m vitte.i18n template   (writes vitte/locales/vitte.pot)")
    write_template()
    print(f"wrote {TEMPLATE_PATH}")
