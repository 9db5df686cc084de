"""Everything the bot says: the `bot` part of the catalogues (vitte/locales, see vitte.i18n).

``t(lang, key, **kw)``: msgid = `key`, msgctxt "bot"; the `en` catalogue is the reference.
The language is the stored player's (handlers know it), so there is no per-update context
variable and no middleware: `t` is a dict lookup and a ``str.format``. ``lang_<code>`` is each
language's own name ("Русский", "English").

The Russian button and message texts quoted in seed/chat-architecture.ru.md are the
product's interface and are kept exactly: "💕 Начать общение", "Продолжить с …?",
"Продолжить общение", "Начать заново", "Выбрать персонажа".
"""

from __future__ import annotations

from typing import Any

from vitte.i18n import LANGUAGES, Texts

BOT = Texts("bot")
_table = BOT.table


def t(lang: str | None, key: str, /, **kw: Any) -> str:
    """The text `key` in `lang` (the default language when it is unknown), formatted with `kw`."""
    text = _table(lang)[key]
    return text.format(**kw) if kw else text


def all_langs(key: str) -> set[str]:
    """The text in every language (to match a reply-keyboard press, for instance)."""
    return {_table(lang)[key] for lang in LANGUAGES}
