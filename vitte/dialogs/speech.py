"""The persona speaks: when a reply comes as a voice note, and what of it is spoken.

The player's setting (`PlayerView.voice_replies`: never | voice | always) decides, with
VITTE_TTS_MODEL configured; "voice" answers voice messages with voice. At most
VITTE_TTS_MAX_CHARS are spoken, cut at a sentence's (else a word's) end; the rest goes as text.
The voice is made by `/audio/speech` as OGG/Opus (`vitte.llm.media`), in VITTE_TTS_VOICE.
"""

from __future__ import annotations

import re

from vitte.config import Settings
from vitte.llm.media import MediaAPI, MediaError

_SENTENCE_END = re.compile(r"[.!?…](?:[\"»”)]*)\s")


class Speech:
    """Voice replies (see the module docstring)."""

    def __init__(self, settings: Settings, media: MediaAPI | None) -> None:
        self.settings = settings
        self.media = media

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

    async def synthesize(self, text: str) -> bytes:
        """The spoken text as OGG/Opus bytes; MediaError when the endpoint fails."""
        if self.media is None:
            raise MediaError("VITTE_TTS_MODEL is not set")
        return await self.media.speak(text)
