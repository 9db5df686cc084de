"""The console's own words, in the simulated player's language (what their Telegram would say).

Only the chrome lives here (status line, placeholders, the Web App's labels as its page shows
them); everything the bot or the Web App says comes from them, verbatim.

The texts are the catalogues' (vitte/locales, see vitte.i18n): the `console` part, and for the
Web App screen's labels that the page has too, the page's own entries (WEB_APP_LABELS), so the
console says what the page says.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

from vitte.i18n import COMMON, Texts
from vitte.text import dropped, inert

CONSOLE = Texts("console")
PAGE = Texts("page")

# the console's key -> the Web App page's key, for the labels the page shows the same way
WEB_APP_LABELS: dict[str, str] = {
    "wa_list_title": "listTitle",
    "wa_list_lead": "listLead",
    "wa_now": "nowTalking",
    "wa_current": "current",
    "wa_about": "about",
    "wa_stories": "storiesTitle",
    "wa_start": "start",
    "wa_refresh": "refresh",
    "wa_current_story": "currentStory",
    "wa_confirm_restart": "confirmRestart",
    "wa_confirm_switch": "confirmSwitch",
    "wa_sent": "sent",
    "wa_settings": "settings",
    "wa_language": "language",
    "wa_style": "style",
    "wa_style_short": "style_short",
    "wa_style_short_hint": "style_short_hint",
    "wa_style_normal": "style_normal",
    "wa_style_normal_hint": "style_normal_hint",
    "wa_style_long": "style_long",
    "wa_style_long_hint": "style_long_hint",
    "wa_data": "data",
    "wa_export": "exportData",
    "wa_export_hint": "exportHint",
    "wa_export_sent": "exportSent",
    "wa_delete": "deleteData",
    "wa_delete_hint": "deleteHint",
    "wa_confirm_delete": "confirmDelete",
    "wa_deleted": "deleted",
    "wa_saved": "saved",
    "wa_premium": "premium",
    "wa_premium_title": "premiumTitle",
    "wa_your_plan": "yourPlan",
    "wa_active_until": "activeUntil",
    "wa_free": "free",
    "wa_price": "price",
    "wa_buy": "buy",
    "wa_you_have": "youHave",
    "wa_paid": "paid",
    "wa_back": "back",
}


def tr(lang: str | None, key: str, **kw: Any) -> str:
    """The console's text `key` in `lang` (the key itself if no catalogue has it)."""
    page_key = WEB_APP_LABELS.get(key)
    text = PAGE.get(lang, page_key) if page_key else CONSOLE.get(lang, key)
    if text is None:
        return key
    return text.format(**kw) if kw else text


def stories_label(lang: str | None, n: int) -> str:
    """ "3 истории", "1 story": the catalogues' plural."""
    return COMMON.nt(lang, "stories", n)


def inert_text(text: Text | str, style: str = "") -> Text:
    """Stored or received text (a message, a name, memory, card text) as the console shows it:
    a rich `Text` (never parsed as markup) without escape sequences or control characters
    (vitte.text.inert, the CLI's too), its styles kept on what remains."""
    if isinstance(text, str):
        return Text(inert(text), style=style)
    plain = text.plain
    gaps = dropped(plain)
    if not gaps:
        return text
    moved: list[int] = []  # moved[i]: where old offset i lands once the dropped ranges are gone
    pos = kept = 0
    for start, end in [*gaps, (len(plain), len(plain))]:
        moved.extend(range(kept, kept + start - pos))  # kept characters move left
        kept += start - pos
        moved.extend([kept] * (end - start))  # a dropped one lands where the next kept one does
        pos = end
    moved.append(kept)
    out = text.blank_copy(inert(plain))
    for span in text.spans:
        if moved[span.end] > moved[span.start]:
            out.stylize(span.style, moved[span.start], moved[span.end])
    return out
