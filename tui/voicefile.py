"""A WAV or OGG file from disk as the local player's voice message: its bytes, its length in
seconds (WAV from its header with the stdlib's `wave`, OGG/Opus from its last page, `vitte.llm.media.opus_seconds`) and its MIME type; refused past the 20 MB bots may download."""

from __future__ import annotations

import io
import wave
from pathlib import Path

from vitte.llm.media import opus_seconds

MAX_BYTES = 20 * 1024 * 1024


class VoiceFileError(Exception):
    """The file cannot be sent as a voice message; the message is one line."""


def read_voice_file(path: str) -> tuple[bytes, int, str]:
    """(bytes, seconds, mime type) of a .wav / .ogg / .oga / .opus file, or VoiceFileError."""
    file = Path(path).expanduser()
    try:
        if file.stat().st_size > MAX_BYTES:
            raise VoiceFileError(f"{file.name}: over 20 MB")
        data = file.read_bytes()
    except OSError as exc:
        raise VoiceFileError(f"{file}: {exc.strerror or exc}") from None
    if data.startswith(b"RIFF"):
        try:
            with wave.open(io.BytesIO(data)) as w:
                seconds = max(1, round(w.getnframes() / float(w.getframerate() or 1)))
        except (wave.Error, EOFError) as exc:
            raise VoiceFileError(f"{file.name}: not a readable WAV ({exc})") from None
        return data, seconds, "audio/wav"
    if data.startswith(b"OggS"):
        return data, opus_seconds(data), "audio/ogg"
    raise VoiceFileError(f"{file.name}: not a WAV or OGG file")
