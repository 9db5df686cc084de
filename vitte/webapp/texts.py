"""The Web App page's texts, from the catalogues (the `page` part, vitte/locales; see vitte.i18n).

The page has no copy of its own: the server embeds every language's texts in the page it
serves (`page_texts_json`, in a ``<script type="application/json" id="vitte-texts">``, so the
page needs no extra request and can still say "no connection" when the API is down), and
serves one language as ``GET api/texts/<lang>.json`` (`language_texts`).

One language's JSON::

    {"language": "ru", "texts": {key: text, …, "lang_ru": "Русский", "lang_en": "English"},
     "plurals": {"stories": {"one": "{n} история", "few": …, "many": …, "other": …}}}

``texts`` are the catalogue's `page` entries (with ``{name}`` placeholders the page fills in);
``plurals`` are plural entries by CLDR category, for the page's ``Intl.PluralRules``. The whole
page's JSON: ``{"default": "ru", "languages": ["ru", "en"], "catalogues": {lang: …}}``.
"""

from __future__ import annotations

import html
import json
from functools import cache
from typing import Any

from vitte.i18n import (
    COMMON,
    DEFAULT_LANGUAGE,
    LANGUAGES,
    REFERENCE_LANGUAGE,
    Texts,
    normalize_language,
    plural_categories,
)

__all__ = ["PAGE", "PAGE_PLURALS", "language_texts", "noscript_html", "page_texts", "page_texts_json"]

PAGE = Texts("page")
PAGE_PLURALS = ("stories", "photos_count", "voice_count")  # the `common` plurals the page uses


@cache
def language_texts(lang: str) -> dict[str, Any]:
    """The page's texts in one language (unknown: the default language)."""
    lang = normalize_language(lang)
    return {
        "language": lang,
        "texts": dict(PAGE.table(lang)),
        "plurals": {key: plural_categories(COMMON, lang, key) for key in PAGE_PLURALS},
    }


def page_texts() -> dict[str, Any]:
    return {
        "default": DEFAULT_LANGUAGE,
        "languages": list(LANGUAGES),
        "catalogues": {lang: language_texts(lang) for lang in LANGUAGES},
    }


def page_texts_json() -> str:
    """`page_texts` as JSON that is safe inside an HTML <script> element."""
    raw = json.dumps(page_texts(), ensure_ascii=False, separators=(",", ":"))
    return raw.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def noscript_html() -> str:
    """The line a browser without JavaScript shows (index.html's ``<noscript>``), as HTML. The
    page cannot tell the player's language then: every catalogue's ``noscript``, the reference
    first ("Vitte needs JavaScript. / Для Vitte нужен JavaScript.")."""
    order = [REFERENCE_LANGUAGE, *(lang for lang in LANGUAGES if lang != REFERENCE_LANGUAGE)]
    return " / ".join(html.escape(PAGE.t(lang, "noscript"), quote=False) for lang in order)
