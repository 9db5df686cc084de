"""A nudge's text: the reply's prompt (persona, story, summary, facts, recent turns) with one
more instruction at its end: the persona writes first, in character, picking up the story or
what it remembers about the player."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from vitte.cache.base import CachedMessage
from vitte.dialogs.reply import _Written
from vitte.llm.base import LLMBadResponse, LLMRequest
from vitte.models import Dialog, User

if TYPE_CHECKING:
    from vitte.dialogs.engine import DialogEngine

INSTRUCTION = {
    "ru": (
        "(Служебная пометка, не от собеседника.) Собеседник молчит уже {hours}. Напиши ему первым "
        "одно короткое сообщение от своего лица, в своём характере: подхвати то, на чём "
        "остановилась история, или то, что ты помнишь о нём (из памяти и фактов выше). Не упрекай "
        "за молчание, не повторяй свои прошлые слова, задай не больше одного вопроса. "
        "Только текст сообщения."
    ),
    "en": (
        "(A note from the system, not from the player.) The player has been silent for {hours}. "
        "Write to them first: one short message in your own voice and character, picking up where "
        "the story stopped or something you remember about them (from the memory and facts above). "
        "Do not reproach them for the silence, do not repeat your earlier words, ask at most one "
        "question. Only the message itself."
    ),
}


def silence(seconds: float, language: str) -> str:
    """ "20 ч" / "20 h", "3 дн." / "3 d" (for the instruction only, not shown to the player)."""
    hours = max(int(seconds // 3600), 0)
    if hours >= 48:
        return f"{hours // 24} дн." if language == "ru" else f"{hours // 24} d"
    if hours >= 1:
        return f"{hours} ч" if language == "ru" else f"{hours} h"
    minutes = max(int(seconds // 60), 1)
    return f"{minutes} мин" if language == "ru" else f"{minutes} min"


async def nudge_request(
    engine: DialogEngine,
    dialog: Dialog,
    user: User,
    since: datetime,
    now: datetime,
    recent: list[CachedMessage] | None = None,
) -> LLMRequest:
    """The LLM request for a nudge in this dialog (the player silent since `since`); `recent`:
    the dialog's recent messages when the caller has them (else the engine reads them)."""
    if recent is None:
        recent = await engine.replies.recent(int(dialog.id or 0))
    history = [m for m in recent if m.id > dialog.summary_upto]
    request = await engine.replies._request(_Written(dialog, user, history, None))
    language = request.language if request.language in INSTRUCTION else "ru"
    note = INSTRUCTION[language].format(hours=silence((now - since).total_seconds(), language))
    request.messages.append({"role": "system", "content": note})
    request.purpose = "nudge"
    return request


async def write_nudge(
    engine: DialogEngine,
    dialog: Dialog,
    user: User,
    since: datetime,
    now: datetime,
    recent: list[CachedMessage] | None = None,
) -> str:
    """The nudge's text (LLMError when the LLM fails or writes nothing)."""
    request = await nudge_request(engine, dialog, user, since, now, recent)
    written: list[str] = []
    await engine.replies._stream_into(written, request, None, None)
    text = "".join(written).strip()
    if not text:
        raise LLMBadResponse("the model returned an empty nudge")
    return text
