"""Audio into OGG/Opus, what Telegram shows as a voice note, for TTS servers that cannot answer
`response_format=opus` (WAV, FLAC, MP3 …): decoded and encoded by libsndfile (soundfile), in a
thread. Opus takes 8, 12, 16, 24 or 48 kHz; other rates are resampled to 48 kHz by linear
interpolation (numpy), enough for speech."""

from __future__ import annotations

import asyncio
import io

OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class TranscodeError(Exception):
    """The audio could not be read or written; the message is one line."""


def _to_opus(data: bytes) -> bytes:
    import numpy as np
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError, TypeError, ValueError) as exc:
        raise TranscodeError(f"unreadable audio: {exc}") from None
    mono = samples.mean(axis=1)
    if rate not in OPUS_RATES:
        n = max(1, round(len(mono) * 48000 / rate))
        mono = np.interp(np.linspace(0, len(mono) - 1, n), np.arange(len(mono)), mono).astype("float32")
        rate = 48000
    out = io.BytesIO()
    try:
        soundfile.write(out, mono, rate, format="OGG", subtype="OPUS")
    except (RuntimeError, soundfile.LibsndfileError, ValueError) as exc:
        raise TranscodeError(f"cannot write OGG/Opus: {exc}") from None
    return out.getvalue()


async def to_ogg_opus(data: bytes) -> bytes:
    """`data` (any format libsndfile reads) as OGG/Opus bytes; TranscodeError when it cannot."""
    return await asyncio.to_thread(_to_opus, data)
