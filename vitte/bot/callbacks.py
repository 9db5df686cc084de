"""Inline-button payloads. Every button that acts on a dialog carries the dialog's id, so a
press from an earlier dialog is recognised as stale and changes nothing."""

from __future__ import annotations

from aiogram.filters.callback_data import CallbackData

# /settings: the Web App sends its buttons too (a deletion confirmed in the chat)
from vitte.telegram.callbacks import SettingsCb as SettingsCb


class EntryCb(CallbackData, prefix="go"):
    """"💕 Начать общение": the same answer as /chat."""


class DialogCb(CallbackData, prefix="d"):
    """"Продолжить общение" (action "cont") / "Начать заново" (action "over")."""

    action: str
    dialog_id: int


class RegenCb(CallbackData, prefix="rg"):
    """[🔄] under the latest reply: `message_id` is the engine's id of that reply."""

    dialog_id: int
    message_id: int


class RetryCb(CallbackData, prefix="rt"):
    """[Повторить] after a failed reply: `message_id` is the engine's id of the player's message."""

    dialog_id: int
    message_id: int


class HearCb(CallbackData, prefix="hr"):
    """[Повторить] under "could not make out your voice message": `message_id` is the engine's
    id of the voice message (transcribed again, then answered)."""

    dialog_id: int
    message_id: int


class NoteCb(CallbackData, prefix="tx"):
    """[📝] under a reply to a voice message: the transcript of voice message `message_id`."""

    message_id: int


class PhotoCb(CallbackData, prefix="ph"):
    """[📷] under a reply (`message_id` 0), or [Повторить] after a failed photo (`message_id`:
    the engine's id of the player's request)."""

    dialog_id: int
    message_id: int = 0


class AgeCb(CallbackData, prefix="age"):
    """The age gate: "Мне есть 18" (yes=1) / "Мне нет 18" (yes=0)."""

    yes: bool


class MemoryCb(CallbackData, prefix="mem"):
    """/memory: action "page" (show `page`) or "forget" (forget `fact_id`, then show `page`)."""

    action: str
    page: int = 0
    fact_id: int = 0
