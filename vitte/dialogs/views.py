"""What the faces receive from the dialogs engine: plain, frozen views of dialogs, openings,
replies, messages and crash recoveries, and how a stored dialog becomes a view."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import TYPE_CHECKING

from vitte.catalog.lookup import Catalog
from vitte.catalog.shown import pick_seed, player_macros, shown
from vitte.models import Dialog

if TYPE_CHECKING:
    from vitte.billing import QuotaDecision

# a reply's text so far, for a face that shows it while it is written
OnText = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class DialogView:
    id: int
    user_id: int
    persona_id: str
    persona_name: str  # in the player's language
    story_id: str | None
    story_title: str
    status: str
    summary: str
    created_at: datetime
    language: str


@dataclass(frozen=True, slots=True)
class Opening:
    """A dialog just opened, with the persona's first message (already stored)."""

    dialog: DialogView
    text: str
    message_id: int
    reused: bool = False  # a double click: the dialog opened by the first click
    restarted: bool = False  # the Web App's "same persona and story": started over
    # a reused opening the first click already delivered (`DialogEngine.opening_sent`): not again
    delivered: bool = False


@dataclass(frozen=True, slots=True)
class ReplyOutcome:
    dialog_id: int
    message_id: int
    text: str
    status: str  # ok | stopped
    replaced: bool = False  # a regenerated reply that replaced the previous one
    quota: QuotaDecision | None = None  # the reply counted against the quota (low_quota_notice)
    crisis: bool = False  # the player's message was a crisis signal: also send crisis_resources()


@dataclass(frozen=True, slots=True)
class MessageView:
    id: int
    role: str
    text: str
    status: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class InterruptedReply:
    """A player whose reply a crash cut, still waiting for it (`recover_interrupted`)."""

    user_id: int  # also the private chat's id
    dialog_id: int
    language: str  # a catalogue language (vitte.i18n)
    # the dialog's last message: the player's unanswered one ([Повторить] answers it, RetryCb),
    # or, `partial`, the interrupted reply with the words stored before the crash (🔄 replaces it)
    message_id: int
    partial: bool


@dataclass(frozen=True, slots=True)
class Recovery:
    """What `recover_interrupted` recovered: how many replies were marked interrupted, and
    `notices`, one per player to tell."""

    marked: int = 0
    notices: tuple[InterruptedReply, ...] = ()
    deferred: int = 0  # streaming rows of players whose lock is held (live, or a lease not out yet)


async def view_of(
    catalog: Catalog, dialog: Dialog, language: str, player_name: str | None, *, zone: tzinfo | None = None
) -> DialogView:
    """A stored dialog as the faces see it, names in the player's language; `player_name`: what
    {{user}} in the story's title stands for (None: the catalogue's unnamed-player word);
    `zone`: the player's time zone for its {{time}}, {{date}} … (vitte.players.zone_of; None: UTC)."""
    persona = await catalog.persona(dialog.persona_id)
    story_title = ""
    if dialog.story_id:
        try:
            # a title made from a greeting may hold macros ({{char}}, {{user}}: the player's name)
            title = (await catalog.story(dialog.story_id)).title_in(language)
            story_title = shown(title, player_macros(persona, language, player_name, seed=pick_seed(dialog.id), zone=zone))
        except Exception:  # an unknown story is not fatal for a view
            story_title = ""
    return DialogView(
        id=int(dialog.id or 0),
        user_id=dialog.user_id,
        persona_id=dialog.persona_id,
        persona_name=persona.name_in(language),
        story_id=dialog.story_id,
        story_title=story_title,
        status=dialog.status,
        summary=dialog.summary,
        created_at=dialog.created_at,
        language=language,
    )
