"""The persona speaks: when a reply comes as a voice note, and what of it is spoken.

The player's setting (`PlayerView.voice_replies`: never | voice | always) decides, with
VITTE_TTS_MODEL configured; "voice" answers voice messages with voice. At most
VITTE_TTS_MAX_CHARS are spoken, cut at a sentence's (else a word's) end; the rest goes as text.
The voice is made by `/audio/speech` as OGG/Opus (`vitte.llm.media`), in the card's
`extensions.vitte.voice`, else VITTE_TTS_VOICE.
"""

from __future__ import annotations

import re

from vitte.config import Settings
from vitte.dialogs.card_extras import CardExtras
from vitte.llm.media import MediaAPI, MediaError

_SENTENCE_END = re.compile(r"[.!?…](?:[\"»”)]*)\s")


class Speech:
    """Voice replies (see the module docstring)."""

    def __init__(self, settings: Settings, media: MediaAPI | None, extras: CardExtras | None = None) -> None:
        self.settings = settings
        self.media = media
        self.extras = extras  # the card's extensions.vitte.voice

    @property
    def on(self) -> bool:
        return self.media is not None and self.media.speaks

    def wanted(self, mode: str, heard: bool) -> bool:
        """Whether a reply goes as voice: the player's mode, and whether they spoke."""
        return self.on and (mode == "always" or (mode == "voice" and heard))

    def split(self, text: str) -> tuple[str, str]:
        """(spoken, rest): the whole text when it fits VITTE_TTS_MAX_CHARS, else its head cut
        at the last sentence end (else word end) within the cap, and the rest."""
        text = text.strip()
        cap = self.settings.tts_max_chars
        if len(text) <= cap:
            return text, ""
        head = text[: cap + 1]
        ends = [m.end() for m in _SENTENCE_END.finditer(head)]
        cut = ends[-1] if ends else head.rfind(" ")
        if cut <= 0:
            cut = cap
        return text[:cut].strip(), text[cut:].strip()

    async def voice_of(self, persona_id: str | None) -> str | None:
        """The persona's voice (the card's `extensions.vitte.voice`), else None (VITTE_TTS_VOICE)."""
        if persona_id is None or self.extras is None:
            return None
        try:
            return await self.extras.text(persona_id, "voice", 64)
        except Exception:  # an unknown persona or a read failure: the default voice
            return None

    async def synthesize(self, text: str, persona_id: str | None = None) -> bytes:
        """The spoken text as OGG/Opus bytes, in the persona's voice; MediaError when the
        endpoint fails."""
        if self.media is None:
            raise MediaError("VITTE_TTS_MODEL is not set")
        return await self.media.speak(text, await self.voice_of(persona_id))
