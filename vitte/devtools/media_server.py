"""The loopback OpenAI-compatible server with the media endpoints too (issue 19): speech to
text, text to speech and pictures, deterministic, with failure modes. For tests and for an
operator's experiments, like `vitte.devtools.llm_server` whose chat server it extends.

    async with FakeMediaServer(transcripts=["Привет!"]) as server:
        ...  # VITTE_LLM_BASE_URL=server.base_url, VITTE_STT_MODEL=whisper-1

- ``POST /v1/audio/transcriptions`` (multipart: file, model, language, response_format): the
  ``transcripts`` queue, else ``default_transcript``; ``verbose_json`` adds one segment;
- ``POST /v1/audio/speech`` (JSON): a real OGG/Opus file (``speech_ogg``: a sine tone of a
  length growing with the input, written with soundfile/libsndfile);
- ``POST /v1/images/generations`` (JSON): ``{"data": [{"b64_json": <PNG>}]}``, a PNG drawn
  from the prompt's hash with Pillow.

Failure modes, per request (first match wins): header ``X-Fake-Media-Mode``, then the
``media_modes`` queue, then ``media_mode`` (default ``normal``): any HTTP status (``500``,
``429`` …), ``hang`` (no answer), ``malformed`` (not JSON / not audio), ``empty`` (an empty
transcript), ``unsure`` (a verbose_json segment the model was unsure of), ``wav`` (speech as
WAV, not Opus). Every media request is recorded in ``media_requests`` (path, fields or JSON,
the uploaded file's bytes).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
from collections import deque
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

from aiohttp import web

from vitte.devtools.llm_server import FakeLLMServer

__all__ = ["FakeMediaServer", "MediaRequest", "png_bytes", "speech_ogg", "wav_bytes"]


@dataclass
class MediaRequest:
    path: str
    fields: dict[str, str]  # multipart text fields, or the JSON body's
    file: bytes | None = None  # the uploaded audio (transcriptions)
    filename: str | None = None
    mode: str = "normal"
    headers: dict[str, str] = field(default_factory=dict)


def speech_ogg(seconds: float = 1.0, rate: int = 48000) -> bytes:
    """A real OGG/Opus file: a quiet 440 Hz tone `seconds` long."""
    import numpy as np
    import soundfile

    n = max(1, int(seconds * rate))
    tone = (0.2 * np.sin(2 * math.pi * 440 * np.arange(n) / rate)).astype("float32")
    buf = io.BytesIO()
    soundfile.write(buf, tone, rate, format="OGG", subtype="OPUS")
    return buf.getvalue()


def wav_bytes(seconds: float = 1.0, rate: int = 16000) -> bytes:
    """A real WAV file (16-bit mono PCM) of a 440 Hz tone, with the stdlib's `wave`."""
    import struct
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        frames = int(seconds * rate)
        w.writeframes(
            b"".join(struct.pack("<h", int(6000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(frames))
        )
    return buf.getvalue()


def png_bytes(prompt: str, size: int = 64) -> bytes:
    """A PNG whose colour is the prompt's hash (the same prompt, the same picture)."""
    from PIL import Image

    digest = hashlib.sha256(prompt.encode()).digest()
    image = Image.new("RGB", (size, size), (digest[0], digest[1], digest[2]))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def _multipart(raw: bytes, content_type: str) -> tuple[dict[str, str], bytes | None, str | None]:
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + raw
    )
    fields: dict[str, str] = {}
    file: bytes | None = None
    filename: str | None = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        raw_payload = part.get_payload(decode=True)
        payload = raw_payload if isinstance(raw_payload, bytes) else b""
        if part.get_filename():
            file, filename = payload, part.get_filename()
        elif isinstance(name, str):
            fields[name] = payload.decode("utf-8", "replace")
    return fields, file, filename


@dataclass
class FakeMediaServer(FakeLLMServer):
    transcripts: deque[str] = field(default_factory=deque)
    default_transcript: str = "Привет! Как ты?"
    media_mode: str = "normal"
    media_modes: deque[str] = field(default_factory=deque)
    media_requests: list[MediaRequest] = field(default_factory=list)

    def of(self, path: str) -> list[MediaRequest]:
        return [r for r in self.media_requests if r.path.endswith(path)]

    def _media_mode(self, request: web.Request) -> str:
        if request.headers.get("X-Fake-Media-Mode"):
            return request.headers["X-Fake-Media-Mode"].strip()
        if self.media_modes:
            return self.media_modes.popleft()
        return self.media_mode

    async def _not_found(self, request: web.Request) -> web.Response:
        # the chat server's catch-all route: the media endpoints are answered here
        path = request.path
        if request.method == "POST" and path in (
            "/v1/audio/transcriptions",
            "/v1/audio/speech",
            "/v1/images/generations",
        ):
            return await self._media(request)
        return await super()._not_found(request)

    async def _media(self, request: web.Request) -> web.Response:
        raw = await request.read()
        mode = self._media_mode(request)
        if request.path.endswith("transcriptions"):
            fields, file, filename = _multipart(raw, request.headers.get("Content-Type", ""))
        else:
            try:
                body = json.loads(raw)
            except ValueError:
                body = {}
            fields = {k: str(v) for k, v in body.items()} if isinstance(body, dict) else {}
            file = filename = None
        self.media_requests.append(
            MediaRequest(request.path, fields, file, filename, mode, dict(request.headers))
        )
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return self._error(401, "invalid api key")
        if mode == "hang":
            await self._hang()
        if mode.isdigit():
            return self._error(int(mode), f"fake media error {mode}")
        if request.path.endswith("transcriptions"):
            return self._transcription(fields, file, mode)
        if request.path.endswith("speech"):
            if mode == "malformed":
                return web.Response(body=b"not audio", content_type="audio/ogg")
            if mode == "wav":
                return web.Response(body=wav_bytes(0.2), content_type="audio/wav")
            seconds = min(10.0, 0.5 + len(fields.get("input", "")) / 40)
            return web.Response(body=speech_ogg(seconds), content_type="audio/ogg")
        if mode == "malformed":
            return web.Response(text='{"data": [', content_type="application/json")
        picture = base64.b64encode(png_bytes(fields.get("prompt", ""))).decode()
        return web.json_response({"created": 0, "data": [{"b64_json": picture}]})

    def _transcription(self, fields: dict[str, str], file: bytes | None, mode: str) -> web.Response:
        if not file:
            return self._error(400, "no file")
        if mode == "malformed":
            return web.Response(text="{", content_type="application/json")
        text = "" if mode == "empty" else (self.transcripts.popleft() if self.transcripts else self.default_transcript)
        answer: dict[str, Any] = {"text": text}
        if fields.get("response_format") == "verbose_json":
            answer["segments"] = [
                {
                    "id": 0,
                    "text": text,
                    "avg_logprob": -1.6 if mode == "unsure" else -0.2,
                    "no_speech_prob": 0.01,
                }
            ]
            answer["language"] = fields.get("language", "")
        return web.json_response(answer)
