"""The player speaks: a voice message (voice note, audio file, round video) stored, transcribed
and answered like text.

`hear`: the limits checked (VITTE_VOICE_MAX_SECONDS, the 20 MB getFile allows), the player
admitted, the message stored 'unheard' with its kind, duration and Telegram file id (nothing is
lost when transcription fails), the audio fetched (the face's `fetch`: getFile + download,
bounded), transcribed (`vitte.llm.media`, the player's language as the hint), the transcript
stored as the message's text, then the reply written through the reply pipeline
(`Replies.regenerate` answers the player's latest message). `hear_again`: [Повторить] on a
message that was not transcribed. A failed transcription raises NotHeard (message kept);
a file the endpoint refuses (a 4xx such as 400 "unsupported format") UnsupportedAudio, a
NotHeard that hearing again cannot help.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from vitte.cache.base import CachedMessage
from vitte.config import Settings
from vitte.dialogs.reply import Replies, crisis_marked
from vitte.dialogs.store import DialogStore
from vitte.dialogs.turn import Turn, Turns
from vitte.dialogs.views import OnText, ReplyOutcome
from vitte.errors import MediaTooLarge, NotHeard, ReplyFailed, StaleDialog, UnsupportedAudio
from vitte.llm.media import MediaAPI, MediaError
from vitte.media_keep import keep
from vitte.models import ASSISTANT, MSG_OK, MSG_STOPPED, MSG_UNHEARD, USER, Dialog, User, utcnow
from vitte.players import player_view

log = logging.getLogger("vitte.dialogs")

MAX_FILE_BYTES = 20 * 1024 * 1024  # what bots may download through getFile
SPOKEN_KINDS = ("voice", "audio", "video_note")
# the transcription endpoint's answers that refuse the file itself (its format, its size for
# that server): asking again cannot help (401/403/404 are the operator's, 408/429/5xx pass)
REFUSED_STATUSES = frozenset({400, 413, 415, 422})

# (Telegram file id, at most this many bytes) → the file's bytes; raises MediaError, FileTooBig
# when the file is over the limit (Telegram may not tell a file's size before it is downloaded)
Fetch = Callable[[str, int], Awaitable[bytes]]
# told what was understood (and whether the model was unsure) before the reply is written
OnHeard = Callable[[str, bool], Awaitable[None]]


class FileTooBig(MediaError):
    """A `Fetch` found the file over its limit (told by getFile, or while downloading)."""


@dataclass(frozen=True, slots=True)
class Heard:
    """A voice message as the face received it."""

    kind: str  # voice | audio | video_note
    seconds: int
    file_ref: str  # the Telegram file id
    size: int | None = None  # bytes, when Telegram told
    filename: str = "voice.ogg"  # what the transcription endpoint is told (its extension matters)
    telegram_message_id: int | None = None


@dataclass(frozen=True, slots=True)
class Spoken:
    """A voice message answered: the reply, and what was understood."""

    outcome: ReplyOutcome
    message_id: int  # the player's message (its text is the transcript)
    transcript: str
    uncertain: bool


class Hearing:
    """Voice messages in (see the module docstring)."""

    def __init__(
        self, settings: Settings, store: DialogStore, turns: Turns, replies: Replies, media: MediaAPI | None
    ) -> None:
        self.settings = settings
        self.store = store
        self.turns = turns
        self.replies = replies
        self.media = media

    @property
    def on(self) -> bool:
        """Voice is heard (VITTE_STT_MODEL with an API to ask)."""
        return self.media is not None and self.media.hears

    def check(self, heard: Heard) -> None:
        """MediaTooLarge before anything is stored or downloaded."""
        if heard.seconds > self.settings.voice_max_seconds:
            raise MediaTooLarge(self.settings.voice_max_seconds, "s")
        if heard.size is not None and heard.size > MAX_FILE_BYTES:
            raise MediaTooLarge(MAX_FILE_BYTES // (1024 * 1024), "MB")

    async def hear(
        self,
        who: Turn | int,
        heard: Heard,
        fetch: Fetch,
        *,
        on_text: OnText | None = None,
        stop: asyncio.Event | None = None,
        on_heard: OnHeard | None = None,
    ) -> Spoken:
        """Store, transcribe and answer a voice message. Raises MediaTooLarge (nothing stored;
        or, when the file came out over 20 MB only while downloading, stored and not
        transcribed), NotHeard (stored, not transcribed), and what `Replies.regenerate` raises."""
        self.check(heard)
        async with self.turns.of(who) as turn:
            dialog, user = await self.turns.admitted_active(turn, turn.user_id)
            dialog_id = int(dialog.id or 0)
            message_id = await self.store.add_spoken(
                dialog_id, heard.kind, max(0, heard.seconds), heard.file_ref, heard.telegram_message_id
            )
            turn.wrote = True
            return await self._heard(turn, dialog, user, message_id, heard, fetch, on_text, stop, on_heard)

    async def hear_again(
        self,
        who: Turn | int,
        dialog_id: int,
        message_id: int,
        fetch: Fetch,
        *,
        on_text: OnText | None = None,
        stop: asyncio.Event | None = None,
        on_heard: OnHeard | None = None,
    ) -> Spoken:
        """[Повторить] on a voice message that was not transcribed: StaleDialog unless it is
        still the dialog's latest message and unheard."""
        async with self.turns.of(who) as turn:
            dialog, user = await self.turns.admitted_active(turn, turn.user_id)
            if int(dialog.id or 0) != dialog_id:
                raise StaleDialog()
            latest = await self.store.messages(dialog_id, 1)
            if not latest or latest[0].id != message_id or latest[0].status != MSG_UNHEARD:
                raise StaleDialog()
            row = latest[0]
            heard = Heard(
                kind=row.media_kind or "voice",
                seconds=row.media_seconds or 0,
                file_ref=row.media_ref or "",
                filename=filename_for(row.media_kind or "voice"),
            )
            return await self._heard(turn, dialog, user, message_id, heard, fetch, on_text, stop, on_heard)

    async def _heard(
        self,
        turn: Turn,
        dialog: Dialog,
        user: User,
        message_id: int,
        heard: Heard,
        fetch: Fetch,
        on_text: OnText | None,
        stop: asyncio.Event | None,
        on_heard: OnHeard | None,
    ) -> Spoken:
        """The stored voice message transcribed (`on_heard` told what was understood) and answered."""
        language = player_view(user).language
        text, uncertain = await self._transcribe(turn, int(dialog.id or 0), message_id, heard, fetch, language)
        if on_heard is not None:
            await on_heard(text, uncertain)
        outcome = await self._answer(turn, dialog, message_id, text, language, on_text, stop)
        return Spoken(outcome, message_id, text, uncertain)

    async def _answer(
        self,
        turn: Turn,
        dialog: Dialog,
        message_id: int,
        text: str,
        language: str,
        on_text: OnText | None,
        stop: asyncio.Event | None,
    ) -> ReplyOutcome:
        """The heard message answered like text: a crisis signal in it is counted and flagged
        (the face sends the crisis resources), "запомни, что …" is remembered; a failed reply
        names it ([Повторить] answers it)."""
        crisis = self.replies.crisis.detect(text)
        if crisis:
            await self.store.count_event("crisis", language)
        await self.replies.remember(dialog, text, message_id)
        try:
            async with crisis_marked(crisis):
                outcome = await self.replies.regenerate(
                    turn, int(dialog.id or 0), expected_message_id=message_id, on_text=on_text, stop=stop
                )
        except ReplyFailed as exc:
            exc.user_message_id = exc.user_message_id or message_id
            raise
        return dataclasses.replace(outcome, crisis=True) if crisis else outcome

    async def transcript(self, user_id: int, message_id: int) -> str | None:
        """The text behind 📝: of one of the player's voice messages, or of a reply the persona
        sent as a voice note; None: not theirs, not such a message, or not transcribed."""
        row = await self.store.message_of(user_id, message_id)
        if row is None or row.status not in (MSG_OK, MSG_STOPPED):
            return None
        if row.role == USER and row.media_kind not in SPOKEN_KINDS:
            return None
        return row.text if row.role in (USER, ASSISTANT) else None

    async def _transcribe(
        self, turn: Turn, dialog_id: int, message_id: int, heard: Heard, fetch: Fetch, language: str
    ) -> tuple[str, bool]:
        media = self.media
        if media is None or not media.hears:
            raise NotHeard(message_id, "VITTE_STT_MODEL is not set")
        try:
            audio = await fetch(heard.file_ref, MAX_FILE_BYTES)
            await keep(self.settings, "heard", f"{message_id}-{heard.filename}", audio)  # VITTE_MEDIA_DIR only
            result = await media.transcribe(audio, heard.filename, language)
        except FileTooBig as exc:  # Telegram did not tell its size beforehand
            log.warning("voice message %s not transcribed: %s", message_id, exc)
            raise MediaTooLarge(MAX_FILE_BYTES // (1024 * 1024), "MB", message_id) from exc
        except MediaError as exc:
            log.warning("voice message %s not transcribed: %s", message_id, exc)
            if exc.status in REFUSED_STATUSES:
                raise UnsupportedAudio(message_id, str(exc)) from exc
            raise NotHeard(message_id, str(exc)) from exc
        text = result.text.replace("\x00", "").strip()[: self.settings.max_message_chars]
        if not text:
            raise NotHeard(message_id, "nothing was said")
        await self.store.set_heard(message_id, text)
        # in the cache before the reply reads it (`regenerate` flushes the turn's appends first)
        await turn.append(
            self.replies.cache, dialog_id, CachedMessage(message_id, USER, text, MSG_OK, utcnow().timestamp())
        )
        return text, result.uncertain


def filename_for(kind: str, mime_type: str | None = None) -> str:
    """A file name whose extension tells the transcription endpoint the format."""
    if kind == "video_note":
        return "video_note.mp4"
    if mime_type:
        for part, ext in (("ogg", "ogg"), ("opus", "ogg"), ("mpeg", "mp3"), ("mp3", "mp3"), ("mp4", "m4a"),
                          ("m4a", "m4a"), ("wav", "wav"), ("webm", "webm"), ("flac", "flac")):
            if part in mime_type:
                return f"{kind}.{ext}"
    return f"{kind}.ogg"
