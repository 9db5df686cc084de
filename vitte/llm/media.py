"""A client for the OpenAI-compatible media endpoints the replies' API offers: speech to text
(`/audio/transcriptions`), text to speech (`/audio/speech`, `opus` for Telegram voice notes) and
pictures (`/images/generations`). Same base URL and key as the replies (VITTE_LLM_BASE_URL,
VITTE_LLM_API_KEY); each is on only when its model is configured.

Every failure is a `MediaError` whose message is one line without the key: unreachable, an
error status, a timeout (VITTE_MEDIA_TIMEOUT), or an answer of the wrong shape.
"""

from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from yarl import URL

from vitte.llm.transcode import TranscodeError, to_ogg_opus
from vitte.metrics import observe_media

if TYPE_CHECKING:
    from vitte.config import Settings

__all__ = ["MediaAPI", "MediaError", "Transcript", "opus_seconds"]

MAX_ANSWER_BYTES = 25 * 1024 * 1024  # a synthesised voice note or a picture, at most
_SNIPPET = 160
# a segment this unsure (whisper's verbose_json) makes the transcript "uncertain"
UNSURE_LOGPROB = -1.0
UNSURE_NO_SPEECH = 0.6


def opus_seconds(ogg: bytes) -> int:
    """An OGG/Opus file's length in whole seconds (≥ 1): the last page's granule position at
    Opus's 48 kHz; 0 when the bytes are not OGG."""
    last = ogg.rfind(b"OggS")
    if last < 0 or len(ogg) < last + 14:
        return 0
    granule = int.from_bytes(ogg[last + 6 : last + 14], "little", signed=True)
    return max(1, round(granule / 48000)) if granule > 0 else 1


class MediaError(Exception):
    """A media call failed; `str(exc)` is one line for the operator log. `status`: the
    endpoint's HTTP error status when it answered with one (None: unreachable, slow, malformed)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Transcript:
    text: str
    uncertain: bool = False  # the server said it was unsure (shown to the player)


def _uncertain(data: dict[str, Any]) -> bool:
    segments = data.get("segments")
    if not isinstance(segments, list):
        return False
    for seg in segments:
        if not isinstance(seg, dict):
            continue
        logprob, no_speech = seg.get("avg_logprob"), seg.get("no_speech_prob")
        if isinstance(logprob, int | float) and logprob < UNSURE_LOGPROB:
            return True
        if isinstance(no_speech, int | float) and no_speech > UNSURE_NO_SPEECH:
            return True
    return False


class MediaAPI:
    """Transcribe, speak and draw through one OpenAI-compatible base URL (see the module docstring)."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        *,
        stt_model: str | None = None,
        tts_model: str | None = None,
        tts_voice: str = "alloy",
        image_model: str | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.base = URL(base_url.rstrip("/"))
        self._key = api_key or ""
        self.stt_model = stt_model
        self.tts_model = tts_model
        self.tts_voice = tts_voice
        self.image_model = image_model
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> MediaAPI | None:
        """None without VITTE_LLM_BASE_URL (the offline demo has no voice and no pictures)."""
        if not settings.llm_base_url:
            return None
        key = settings.llm_api_key.get_secret_value() if settings.llm_api_key else None
        return cls(
            settings.llm_base_url,
            key,
            stt_model=settings.stt_model,
            tts_model=settings.tts_model,
            tts_voice=settings.tts_voice,
            image_model=settings.image_model,
            timeout=settings.media_timeout,
        )

    @property
    def hears(self) -> bool:
        return bool(self.stt_model)

    @property
    def speaks(self) -> bool:
        return bool(self.tts_model)

    @property
    def draws(self) -> bool:
        return bool(self.image_model)

    # ------------------------------------------------------------------ transport
    async def _http(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(self.timeout, 10.0))
            )
            self._loop = loop
        return self._session

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed and self._loop is asyncio.get_running_loop():
            await self._session.close()
        self._session = None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._key}"} if self._key else {}

    def _clean(self, text: str) -> str:
        text = " ".join(str(text).split())
        if self._key:
            text = text.replace(self._key, "***")
        return text[:_SNIPPET]

    async def _post(self, path: str, *, json: Any = None, data: Any = None) -> tuple[bytes, str]:
        """The answer's body and content type; MediaError on anything else."""
        url = self.base / path
        session = await self._http()
        try:
            async with session.post(url, json=json, data=data, headers=self._headers()) as response:
                body = await response.content.read(MAX_ANSWER_BYTES + 1)
                if response.status >= 400:
                    raise MediaError(
                        f"{path}: HTTP {response.status} {self._clean(body.decode('utf-8', 'replace'))}",
                        response.status,
                    )
                if len(body) > MAX_ANSWER_BYTES:
                    raise MediaError(f"{path}: the answer is over {MAX_ANSWER_BYTES} bytes")
                return body, response.headers.get("Content-Type", "")
        except TimeoutError:
            raise MediaError(f"{path}: no answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise MediaError(f"{path}: {self._clean(type(exc).__name__ + ' ' + str(exc))}") from None

    async def _json(self, path: str, **kw: Any) -> dict[str, Any]:
        body, _ctype = await self._post(path, **kw)
        try:
            import orjson

            data = orjson.loads(body)
        except ValueError:
            raise MediaError(f"{path}: the answer is not JSON") from None
        if not isinstance(data, dict):
            raise MediaError(f"{path}: the answer is not a JSON object")
        return data

    # ------------------------------------------------------------------ the three calls
    async def transcribe(self, audio: bytes, filename: str, language: str | None = None) -> Transcript:
        """Speech to text (`/audio/transcriptions`, multipart). Whisper models are asked for
        `verbose_json` (its segments tell when it was unsure), others for `json`."""
        model = self.stt_model
        if not model:
            raise MediaError("VITTE_STT_MODEL is not set")
        form = aiohttp.FormData()
        form.add_field("file", audio, filename=filename, content_type="application/octet-stream")
        form.add_field("model", model)
        form.add_field("response_format", "verbose_json" if "whisper" in model.lower() else "json")
        if language:
            form.add_field("language", language)
        async with observe_media("transcription"):
            data = await self._json("audio/transcriptions", data=form)
        text = data.get("text")
        if not isinstance(text, str):
            raise MediaError("audio/transcriptions: no text in the answer")
        return Transcript(text.strip(), _uncertain(data))

    async def speak(self, text: str, voice: str | None = None) -> bytes:
        """Text to speech as OGG/Opus (`/audio/speech`, response_format=opus; another format
        the server answers is transcoded, `vitte.llm.transcode`)."""
        if not self.tts_model:
            raise MediaError("VITTE_TTS_MODEL is not set")
        payload = {
            "model": self.tts_model,
            "input": text,
            "voice": voice or self.tts_voice,
            "response_format": "opus",
        }
        async with observe_media("synthesis"):
            body, _ctype = await self._post("audio/speech", json=payload)
            if not body.startswith(b"OggS"):  # the server could not answer Opus: made into it
                try:
                    body = await to_ogg_opus(body)
                except TranscodeError as exc:
                    raise MediaError(f"audio/speech: not OGG/Opus, and {exc}") from None
        return body

    async def draw(self, prompt: str) -> bytes:
        """A picture (`/images/generations`): the first image, as bytes (b64_json, else its URL)."""
        if not self.image_model:
            raise MediaError("VITTE_IMAGE_MODEL is not set")
        payload = {"model": self.image_model, "prompt": prompt, "n": 1, "response_format": "b64_json"}
        async with observe_media("image"):
            data = await self._json("images/generations", json=payload)
            items = data.get("data")
            first = items[0] if isinstance(items, list) and items and isinstance(items[0], dict) else None
            if first is None:
                raise MediaError("images/generations: no image in the answer")
            if isinstance(first.get("b64_json"), str):
                try:
                    return base64.b64decode(first["b64_json"], validate=True)
                except ValueError:
                    raise MediaError("images/generations: b64_json is not base64") from None
            if isinstance(first.get("url"), str):
                return await self._fetch(first["url"])
            raise MediaError("images/generations: no b64_json or url in the answer")

    async def _fetch(self, url: str) -> bytes:
        session = await self._http()
        try:
            async with session.get(url) as response:
                body = await response.content.read(MAX_ANSWER_BYTES + 1)
                if response.status >= 400 or len(body) > MAX_ANSWER_BYTES:
                    raise MediaError(f"image url: HTTP {response.status}")
                return body
        except TimeoutError:
            raise MediaError(f"image url: no answer within {self.timeout:g} s") from None
        except aiohttp.ClientError as exc:
            raise MediaError(f"image url: {type(exc).__name__}") from None
