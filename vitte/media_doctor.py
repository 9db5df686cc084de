"""`vitte doctor`'s ``media`` check (issue 19): the configured speech-to-text, text-to-speech
and image models (VITTE_STT_MODEL, VITTE_TTS_MODEL, VITTE_IMAGE_MODEL) answer through the LLM
API's base URL. Only with ``--deep`` are they asked (a half-second WAV transcribed, "OK" spoken
as OGG/Opus, one picture drawn): each call may cost money at a provider."""

from __future__ import annotations

import io
import time
import wave
from typing import Any

from vitte.config import Settings
from vitte.llm.media import MediaAPI, MediaError

FIX_MEDIA = (
    "check that the server at VITTE_LLM_BASE_URL offers /audio/transcriptions, /audio/speech "
    "(opus) and /images/generations for the configured models, or unset the model"
)


def _silence_wav(seconds: float = 0.5, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return buf.getvalue()


def _configured(settings: Settings) -> dict[str, str]:
    return {
        name: model
        for name, model in (
            ("stt", settings.stt_model),
            ("tts", settings.tts_model),
            ("image", settings.image_model),
        )
        if model
    }


async def probe_media(settings: Settings, deep: bool) -> tuple[str, str, str | None, dict[str, Any]]:
    """(status, detail, fix, data) of the ``media`` check (`vitte.doctor` makes it a Check)."""
    models = _configured(settings)
    data: dict[str, Any] = {"models": models}
    if not models:
        return ("ok", "voice and photos off (no VITTE_STT_MODEL, VITTE_TTS_MODEL or VITTE_IMAGE_MODEL)", None, data)
    named = ", ".join(f"{k} {v}" for k, v in models.items())
    api = MediaAPI.from_settings(settings)
    if api is None:
        return (
            "warn",
            f"{named} set, but VITTE_LLM_BASE_URL is unset: voice and photos stay off",
            "set VITTE_LLM_BASE_URL to the OpenAI-compatible server that serves these models",
            data,
        )
    if not deep:
        return ("skipped", f"{named} configured; run with --deep to ask each", None, data)
    answered: list[str] = []
    try:
        for kind in models:
            started = time.monotonic()
            try:
                if kind == "stt":
                    await api.transcribe(_silence_wav(), "doctor.wav", "en")
                elif kind == "tts":
                    await api.speak("OK")
                else:
                    await api.draw("A plain blue square, nothing else.")
            except MediaError as exc:
                data["failed"] = kind
                return ("fail", f"{kind} {models[kind]}: {exc}", FIX_MEDIA, data)
            ms = round((time.monotonic() - started) * 1000)
            data[f"{kind}_ms"] = ms
            answered.append(f"{kind} {models[kind]} in {ms} ms")
    finally:
        await api.aclose()
    return ("ok", "answered: " + ", ".join(answered), None, data)
