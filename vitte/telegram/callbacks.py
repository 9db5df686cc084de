"""Inline-button payloads that other faces than the bot send too (the Web App asks the player to
confirm deleting their data in the chat with the bot's own /settings buttons)."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData


class SettingsCb(CallbackData, prefix="st"):
    """The /settings menu: action lang|style|delete|delete_yes|back, value ru|en|short|…"""

    action: str
    value: str = ""
