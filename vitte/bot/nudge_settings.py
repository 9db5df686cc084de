"""/settings' "Пусть персонаж пишет первым" / "Let the persona write first" (issue 18): the
line and the toggle added to the settings message, and the toggle's press. Shown while
nudges are on for the bot (VITTE_NUDGE_AFTER > 0)."""

from __future__ import annotations

from aiogram.types import InlineKeyboardButton, InlineKeyboardMarkup

from vitte.bot.callbacks import SettingsCb
from vitte.bot.texts import t
from vitte.core import Core
from vitte.initiative.prefs import prefs_of, set_prefs

ACTION = "nudges"


async def with_nudges(core: Core, user_id: int, lang: str, text: str, markup: InlineKeyboardMarkup) -> tuple[str, InlineKeyboardMarkup]:
    """The settings message with the nudges line and its toggle (before the "delete" row)."""
    if core.settings.nudge_after <= 0:
        return text, markup
    prefs = await prefs_of(core.db, core.settings, user_id)
    text += "\n" + t(lang, "settings_nudges", state=t(lang, "nudges_on" if prefs.on else "nudges_off"))
    label = t(lang, "btn_nudges")
    button = InlineKeyboardButton(
        text=f"✓ {label}" if prefs.on else label,
        callback_data=SettingsCb(action=ACTION, value="off" if prefs.on else "on").pack(),
    )
    rows = list(markup.inline_keyboard)
    return text, InlineKeyboardMarkup(inline_keyboard=[*rows[:-1], [button], *rows[-1:]])


async def toggle(core: Core, user_id: int, value: str) -> bool | None:
    """The press: the new state, or None for a stale button (nothing changed)."""
    if value not in ("on", "off") or core.settings.nudge_after <= 0:
        return None
    return (await set_prefs(core.db, core.settings, user_id, on=value == "on")).on
