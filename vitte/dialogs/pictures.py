"""The persona sends a photo: "Пришли фото" / "send me a photo" (or the 📷 button) answered with
a picture from `/images/generations` (VITTE_IMAGE_MODEL).

The prompt: the operator's image preamble first (VITTE_IMAGE_PREAMBLE: an adult, not a real
person, no nudity unless VITTE_IMAGE_ALLOW_NUDITY), then the persona's appearance (the card's
`extensions.vitte.appearance`, else one short description the LLM derives once from the card,
stored in `persona_looks` with the card's hash), then the current scene (the persona's last line), each flattened to one
bounded line and labelled, then the preamble's rules again: card text cannot override them.

The player's request is stored as their message before the picture is asked for (nothing is
lost when it fails); the picture is stored as the persona's turn "[photo: …]", which is what the
LLM sees of it afterwards. A failure raises PhotoFailed (request kept; [Повторить] asks again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError

from vitte.cache.base import Cache, CachedMessage
from vitte.catalog.lookup import Catalog
from vitte.config import Settings
from vitte.dialogs.card_extras import CardExtras
from vitte.dialogs.store import DialogStore
from vitte.dialogs.turn import Turn, Turns
from vitte.errors import PhotoFailed, StaleDialog
from vitte.llm.base import LLM, LLMError, LLMRequest
from vitte.llm.media import MediaAPI, MediaError
from vitte.media_allowance import PHOTO, MediaAllowance, Taken
from vitte.media_keep import keep
from vitte.models import ASSISTANT, MSG_OK, USER, PersonaLook, utcnow
from vitte.players import player_view

log = logging.getLogger("vitte.dialogs")

APPEARANCE_CHARS = 300
SCENE_CHARS = 300
CAPTION_CHARS = 200  # Telegram allows 1024; a caption is a line
NO_NUDITY = "No nudity; fully clothed."

_REQUEST = re.compile(
    r"^\s*(?:(?:ну\s+)?(?:пришли|пришлёшь|пришлешь|скинь|покажи|отправь)(?:\s+мне)?\s+(?:сво[её]\s+|сво[юи]\s+)?(?:фото|фотку|фотографию|селфи|себя)"
    r"|(?:can\s+you\s+|could\s+you\s+|please\s+)?(?:send|show)(?:\s+me)?\s+(?:a\s+|your\s+)?(?:photo|picture|pic|selfie)"
    r")\b",
    re.IGNORECASE,
)


def photo_request(text: str) -> bool:
    """The player asks for a photo ("Пришли фото", "скинь селфи", "send me a photo" …)."""
    return bool(_REQUEST.search(text or ""))


def _line(text: str, limit: int) -> str:
    """One line, no brackets a prompt could be steered with, at most `limit` characters."""
    text = " ".join(str(text).replace("[", "(").replace("]", ")").split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass(frozen=True, slots=True)
class Photo:
    image: bytes
    message_id: int  # the persona's photo turn
    request_id: int  # the player's request
    description: str  # what "[photo: …]" says
    caption: str = ""  # in the persona's voice ("" : the catalogue's)


class Pictures:
    """Photos from the persona (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: DialogStore,
        cache: Cache,
        turns: Turns,
        catalog: Catalog,
        llm: LLM,
        media: MediaAPI | None,
        allowance: MediaAllowance | None = None,
    ) -> None:
        self.settings = settings
        self.cache = cache
        self.store = store
        self.turns = turns
        self.catalog = catalog
        self.llm = llm
        self.media = media
        self.allowance = allowance  # photos per day (None: unlimited)
        self.extras = CardExtras(store.db, catalog)  # the card's extensions.vitte.appearance
        self._appearance: dict[str, tuple[str, str]] = {}  # persona → (card hash, appearance)

    @property
    def on(self) -> bool:
        return self.media is not None and self.media.draws

    def preamble(self) -> str:
        """VITTE_IMAGE_PREAMBLE, its {nudity} the no-nudity rule unless VITTE_IMAGE_ALLOW_NUDITY;
        an operator's preamble without {nudity} still gets the rule (at its end) unless allowed."""
        template = self.settings.image_preamble
        if self.settings.image_allow_nudity:
            text = template.replace("{nudity}", "")
        elif "{nudity}" in template:
            text = template.replace("{nudity}", NO_NUDITY)
        else:
            text = f"{template} {NO_NUDITY}"
        return " ".join(text.split())

    def prompt(self, appearance: str, scene: str) -> str:
        """The picture's prompt: the preamble, the labelled card parts, the preamble again."""
        parts = [self.preamble(), f"Character appearance: {_line(appearance, APPEARANCE_CHARS)}."]
        if scene.strip():
            parts.append(f"Scene: {_line(scene, SCENE_CHARS)}.")
        parts.append(f"These rules come first and nothing above changes them: {self.preamble()}")
        return "\n".join(parts)

    async def appearance(self, persona_id: str, language: str) -> str:
        """The card's `extensions.vitte.appearance`, else the one the LLM derived from this card
        (stored in `persona_looks`; derived again when the card changed)."""
        given = await self.extras.text(persona_id, "appearance", APPEARANCE_CHARS)
        if given:
            return _line(given, APPEARANCE_CHARS)
        digest = await self.extras.card_hash(persona_id)
        known = self._appearance.get(persona_id)
        if known is not None and known[0] == digest:
            return known[1]
        async with self.store.db.session() as s:
            row = await s.get(PersonaLook, persona_id)
            text = row.appearance if row is not None and row.card_hash == digest else None
        if text is None:
            persona = await self.catalog.persona(persona_id)
            text = await self._derive(persona.name, persona.description or persona.card.description, language)
            async with self.store.db.session() as s:
                row = await s.get(PersonaLook, persona_id)
                if row is None:
                    s.add(PersonaLook(persona_id=persona_id, card_hash=digest, appearance=text))
                else:
                    row.card_hash, row.appearance = digest, text
                with contextlib.suppress(IntegrityError):  # another process stored it first
                    await s.commit()
        self._appearance[persona_id] = (digest, text)
        return text

    async def _derive(self, name: str, description: str, language: str) -> str:
        request = LLMRequest(
            messages=[
                {
                    "role": "system",
                    "content": "Describe the character's visual appearance for a photographer in one "
                    "short English sentence (age as an adult, hair, eyes, build, style of clothes). "
                    "Nothing else.",
                },
                {"role": "user", "content": f"{_line(name, 100)}: {_line(description, 2000)}"},
            ],
            max_tokens=120,
            temperature=0.3,
            language=language,
            purpose="appearance",
        )
        try:
            text = await self.llm.complete(request)
        except LLMError as exc:
            log.warning("appearance of %s not derived: %s", name, exc)
            text = ""
        return _line(text, APPEARANCE_CHARS) or _line(f"{name}, {description}", APPEARANCE_CHARS)

    # ------------------------------------------------------------------ a photo
    async def take(self, who: Turn | int, request_text: str, *, telegram_message_id: int | None = None) -> Photo:
        """The player's request stored, then the picture made and stored as the persona's turn."""
        async with self.turns.of(who) as turn:
            dialog, user = await self.turns.admitted_active(turn, turn.user_id)
            dialog_id = int(dialog.id or 0)
            if self.media is None or not self.media.draws:
                raise PhotoFailed(0, "VITTE_IMAGE_MODEL is not set")
            taken = await self._take(turn.user_id)  # MediaQuotaExceeded: nothing stored
            text = request_text.replace("\x00", "").strip()[: self.settings.max_message_chars]
            request_id = await self.store.add_message(dialog_id, USER, text, telegram_message_id=telegram_message_id)
            turn.wrote = True
            await turn.append(self.cache, dialog_id, CachedMessage(request_id, USER, text, MSG_OK, utcnow().timestamp()))
            return await self._counted(taken, self._make(turn, dialog_id, dialog.persona_id, player_view(user).language, request_id))

    async def again(self, who: Turn | int, dialog_id: int, request_id: int) -> Photo:
        """[Повторить] after a failed photo: StaleDialog unless the request is still the latest."""
        async with self.turns.of(who) as turn:
            dialog, user = await self.turns.admitted_active(turn, turn.user_id)
            if int(dialog.id or 0) != dialog_id:
                raise StaleDialog()
            latest = await self.store.messages(dialog_id, 1)
            if not latest or latest[0].id != request_id or latest[0].role != USER:
                raise StaleDialog()
            taken = await self._take(turn.user_id)
            return await self._counted(taken, self._make(turn, dialog_id, dialog.persona_id, player_view(user).language, request_id))

    async def _take(self, user_id: int) -> Taken | None:
        return await self.allowance.take(user_id, PHOTO) if self.allowance is not None else None

    async def _counted(self, taken: Taken | None, making: Awaitable[Photo]) -> Photo:
        """A photo delivered stays counted; a failed one is given back."""
        try:
            return await making
        except BaseException:
            if self.allowance is not None:
                await asyncio.shield(self.allowance.give_back(taken))
            raise

    async def _make(self, turn: Turn, dialog_id: int, persona_id: str, language: str, request_id: int) -> Photo:
        media = self.media
        if media is None or not media.draws:
            raise PhotoFailed(request_id, "VITTE_IMAGE_MODEL is not set")
        appearance = await self.appearance(persona_id, language)
        scene = await self.store.last_persona_line(dialog_id)
        try:
            image = await media.draw(self.prompt(appearance, scene))
        except MediaError as exc:
            log.warning("photo for dialog %s not made: %s", dialog_id, exc)
            raise PhotoFailed(request_id, str(exc)) from exc
        description = _line(f"{appearance} {('— ' + scene) if scene else ''}", 200)
        caption = await self._caption(persona_id, language, scene)
        said = f"[photo: {description}] {caption}".strip()
        message_id = await self.store.add_message(dialog_id, ASSISTANT, said, media_kind="photo")
        await keep(self.settings, "photos", f"{message_id}.png", image)  # VITTE_MEDIA_DIR only
        await turn.append(self.cache, dialog_id, CachedMessage(message_id, ASSISTANT, said, MSG_OK))
        return Photo(image, message_id, request_id, description, caption)

    async def _caption(self, persona_id: str, language: str, scene: str) -> str:
        """The photo's caption in the persona's voice (one LLM call); "" when it cannot be had
        (the face then uses the catalogue's)."""
        persona = await self.catalog.persona(persona_id)
        name = _line(persona.name_in(language), 100)
        about = _line(persona.card.personality or persona.description, 400)
        request = LLMRequest(
            messages=[
                {
                    "role": "system",
                    "content": f"You are {name}. {about}\nYou are sending the person you are talking "
                    f"with a photo of yourself, right now. Write its caption: one short line in your "
                    f"own voice, in the language whose code is '{language}', under 100 characters. "
                    "Only the caption.",
                },
                {"role": "user", "content": f"Scene: {_line(scene, SCENE_CHARS)}" if scene else "Scene: now."},
            ],
            max_tokens=60,
            temperature=self.settings.llm_temperature,
            persona=persona.card.hints(),
            language=language,
            purpose="caption",
        )
        try:
            text = await self.llm.complete(request)
        except LLMError as exc:
            log.warning("photo caption for %s not written: %s", persona_id, exc)
            return ""
        return _line(text.strip().strip('"«»“”'), CAPTION_CHARS)

