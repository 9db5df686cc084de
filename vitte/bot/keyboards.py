"""Inline keyboards, in the player's language."""

from __future__ import annotations

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup, WebAppInfo

from vitte.bot.callbacks import AgeCb, DialogCb, EntryCb, MemoryCb, RegenCb, RetryCb, SettingsCb
from vitte.bot.texts import t
from vitte.i18n import LANGUAGES
from vitte.prompt import STYLES
from vitte.telegram.messages import delete_confirm_kb as delete_confirm_kb  # the Web App sends it too

REGEN_LABEL = "🔄"


def _kb(*rows: list[InlineKeyboardButton]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup(inline_keyboard=[list(r) for r in rows])


def start_kb(lang: str) -> InlineKeyboardMarkup:
    return _kb([InlineKeyboardButton(text=t(lang, "btn_start"), callback_data=EntryCb().pack())])


def continue_kb(lang: str, dialog_id: int) -> InlineKeyboardMarkup:
    return _kb(
        [
            InlineKeyboardButton(
                text=t(lang, "btn_continue"),
                callback_data=DialogCb(action="cont", dialog_id=dialog_id).pack(),
            ),
            InlineKeyboardButton(
                text=t(lang, "btn_over"),
                callback_data=DialogCb(action="over", dialog_id=dialog_id).pack(),
            ),
        ]
    )


def webapp_url_for(base: str, fragment: str = "") -> str:
    return f"{base.rstrip('/')}/{fragment}" if fragment else base


def choose_kb(lang: str, webapp_url: str) -> InlineKeyboardMarkup:
    return _kb([InlineKeyboardButton(text=t(lang, "btn_choose"), web_app=WebAppInfo(url=webapp_url))])


def persona_kb(lang: str, webapp_url: str, persona_id: str, persona_name: str) -> InlineKeyboardMarkup:
    url = webapp_url_for(webapp_url, f"#/persona/{persona_id}")
    return _kb(
        [
            InlineKeyboardButton(
                text=t(lang, "btn_open_persona", persona=persona_name), web_app=WebAppInfo(url=url)
            )
        ]
    )


# [🔄] goes under every reply: copies of one validated button and markup with only the callback
# data changed (a third of the cost of validating three models; the markup is the same one,
# tests/test_bot_keyboards.py compares them)
_REGEN_BUTTON = InlineKeyboardButton(text=REGEN_LABEL, callback_data=RegenCb(dialog_id=0, message_id=0).pack())
_REGEN_MARKUP = _kb([_REGEN_BUTTON])
_REGEN_PREFIX = f"{RegenCb.__prefix__}{RegenCb.__separator__}"


def regen_kb(dialog_id: int, message_id: int) -> InlineKeyboardMarkup:
    # what RegenCb(dialog_id=..., message_id=...).pack() gives for two ints
    data = f"{_REGEN_PREFIX}{int(dialog_id)}{RegenCb.__separator__}{int(message_id)}"
    button = _REGEN_BUTTON.model_copy(update={"callback_data": data})
    return _REGEN_MARKUP.model_copy(update={"inline_keyboard": [[button]]})


def retry_kb(lang: str, dialog_id: int, message_id: int) -> InlineKeyboardMarkup:
    return _kb(
        [
            InlineKeyboardButton(
                text=t(lang, "btn_retry"),
                callback_data=RetryCb(dialog_id=dialog_id, message_id=message_id).pack(),
            )
        ]
    )


def settings_kb(lang: str, style: str) -> InlineKeyboardMarkup:
    def mark(on: bool, text: str) -> str:
        return f"✓ {text}" if on else text

    langs = [
        InlineKeyboardButton(
            text=mark(lang == code, t(code, f"lang_{code}")),
            callback_data=SettingsCb(action="lang", value=code).pack(),
        )
        for code in LANGUAGES
    ]
    styles = [
        InlineKeyboardButton(
            text=mark(style == s, t(lang, f"style_{s}")),
            callback_data=SettingsCb(action="style", value=s).pack(),
        )
        for s in STYLES
    ]
    delete = [InlineKeyboardButton(text=t(lang, "btn_delete"), callback_data=SettingsCb(action="delete").pack())]
    return _kb(langs, styles, delete)


def age_kb(lang: str) -> InlineKeyboardMarkup:
    return _kb(
        [
            InlineKeyboardButton(text=t(lang, "btn_age_yes"), callback_data=AgeCb(yes=True).pack()),
            InlineKeyboardButton(text=t(lang, "btn_age_no"), callback_data=AgeCb(yes=False).pack()),
        ]
    )


def memory_kb(
    lang: str, first: int, fact_ids: list[int], page: int, pages: int, webapp_url: str | None
) -> InlineKeyboardMarkup | None:
    """/memory's buttons: [N · Забыть] for each fact shown (numbered as listed, from `first`),
    ◀ ▶ between pages, and the Web App's memory page when there is one."""
    forget = t(lang, "memory_forget")
    buttons = [
        InlineKeyboardButton(
            text=f"{first + i} · {forget}",
            callback_data=MemoryCb(action="forget", page=page, fact_id=fact_id).pack(),
        )
        for i, fact_id in enumerate(fact_ids)
    ]
    rows = [buttons[i : i + 2] for i in range(0, len(buttons), 2)]
    nav = []
    if page > 0:
        nav.append(InlineKeyboardButton(text="◀", callback_data=MemoryCb(action="page", page=page - 1).pack()))
    if page + 1 < pages:
        nav.append(InlineKeyboardButton(text="▶", callback_data=MemoryCb(action="page", page=page + 1).pack()))
    if nav:
        rows.append(nav)
    if webapp_url:
        url = webapp_url_for(webapp_url, "#/memory")
        rows.append([InlineKeyboardButton(text=t(lang, "memory_edit_in_app"), web_app=WebAppInfo(url=url))])
    return _kb(*rows) if rows else None
