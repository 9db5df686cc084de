"""A client for any OpenAI-compatible Chat Completions API (OpenAI, OpenRouter, vLLM, Ollama,
llama.cpp server …), streaming over server-sent events.

Failure model (what the caller sees; every message is one line and never contains the key):

- connect error, 429, 5xx, a connection dropped before the response headers: retried with
  exponential backoff and jitter (Retry-After honoured up to a cap), then `LLMUnavailable`
  (`LLMRateLimited` for 429, `LLMTimeout` for a connect timeout);
- no response headers / no first token within the read timeout: `LLMTimeout` (not retried:
  a hung server would only multiply the player's wait);
- any failure after the first token: `LLMStreamCut` with `partial` = the text so far
  (`LLMStreamStalled`, which is also an `LLMTimeout`, when the next token did not come);
- a stream that ends without `[DONE]` or a `finish_reason`: `LLMStreamCut`;
- other 4xx, malformed JSON, an unexpected shape: `LLMBadResponse`.

Cancelling the consumer's task, or closing the generator (`contextlib.aclosing`), closes the
HTTP response at once, so the server stops generating. A consumer that merely `break`s out of
`async for` should wrap the generator in `aclosing(...)` to get the same promptness.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, NoReturn

import httpx

from vitte.llm.base import (
    LLMBadResponse,
    LLMError,
    LLMRateLimited,
    LLMRequest,
    LLMStreamCut,
    LLMStreamStalled,
    LLMTimeout,
    LLMUnavailable,
)

if TYPE_CHECKING:
    from vitte.config import Settings

__all__ = ["OpenAICompatibleLLM"]

_SNIPPET_CHARS = 160
_ERROR_BODY_BYTES = 4096
_USER_AGENT = "vitte/0.1 (+openai-compatible client)"


def _one_line(text: str, limit: int = _SNIPPET_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _redacted_url(url: httpx.URL) -> str:
    """The URL without user:password and without a query string (which may carry a key)."""
    return str(url.copy_with(username=None, password=None, query=None, fragment=None))


def _endpoint(base_url: str) -> httpx.URL:
    """`{base}/chat/completions`; a base that already names the endpoint is used as is."""
    url = httpx.URL(base_url.strip())
    path = url.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return url.copy_with(path=path)


def _parse_retry_after(headers: httpx.Headers) -> float | None:
    """Seconds to wait as the server asks (`retry-after-ms`, `Retry-After` seconds or date)."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _Retryable(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(self, error: LLMError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class OpenAICompatibleLLM:
    """The `LLM` protocol over one shared `httpx.AsyncClient`.

    Build it from settings (`OpenAICompatibleLLM(settings)`, or `make_llm(settings)`), or pass
    the values directly; keyword arguments win over settings. Call `aclose()` at shutdown.
    """

    is_demo = False

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        retries: int | None = None,
        backoff_base: float = 0.2,
        backoff_max: float = 2.0,
        retry_after_max: float = 10.0,
        max_connections: int = 1000,
        transport: httpx.AsyncBaseTransport | None = None,
        trust_env: bool = True,
    ) -> None:
        if base_url is None and settings is not None:
            base_url = settings.llm_base_url
        if not base_url:
            raise ValueError("OpenAICompatibleLLM needs a base URL (VITTE_LLM_BASE_URL)")
        if api_key is None and settings is not None and settings.llm_api_key is not None:
            api_key = settings.llm_api_key.get_secret_value()
        self.base_url = base_url.strip().rstrip("/")
        self.url = _endpoint(self.base_url)
        self.model = model or (settings.llm_model if settings is not None else "gpt-4o-mini")
        self.timeout = float(
            timeout if timeout is not None else (settings.llm_timeout if settings else 60.0)
        )
        self.connect_timeout = float(
            connect_timeout
            if connect_timeout is not None
            else (settings.llm_connect_timeout if settings else 5.0)
        )
        self.retries = int(
            retries if retries is not None else (settings.llm_retries if settings else 2)
        )
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.max_connections = max_connections
        self._api_key = (api_key or "").strip()
        self._transport = transport
        self._trust_env = trust_env  # HTTPS_PROXY / NO_PROXY / SSL_CERT_FILE from the environment
        self._client: httpx.AsyncClient | None = None
        self._random = random.Random()
        self.label = f"openai-compatible {self.model} @ {_redacted_url(httpx.URL(self.base_url))}"

    def __repr__(self) -> str:
        return f"<OpenAICompatibleLLM {self.label}>"

    # ---------------------------------------------------------------- plumbing

    @property
    def client(self) -> httpx.AsyncClient:
        """The shared client, created on first use (and again after `aclose()`)."""
        if self._client is None or self._client.is_closed:
            headers = {"User-Agent": _USER_AGENT}
            if self._api_key:
                headers["Authorization"] = f"Bearer {self._api_key}"
            self._client = httpx.AsyncClient(
                headers=headers,
                timeout=httpx.Timeout(
                    connect=self.connect_timeout,
                    read=self.timeout,
                    write=self.timeout,
                    pool=self.timeout,
                ),
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=min(self.max_connections, 200),
                    keepalive_expiry=30.0,
                ),
                transport=self._transport,
                follow_redirects=False,
                trust_env=self._trust_env,
            )
        return self._client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def _redact(self, text: str) -> str:
        """The API key blanked wherever it appears (before anything is shortened)."""
        if self._api_key and len(self._api_key) >= 4:
            text = text.replace(self._api_key, "***")
        return text

    def _clean(self, text: str) -> str:
        """One line, without the API key."""
        return _one_line(self._redact(text), limit=400)

    def _fail(self, cls: type[LLMError], message: str, **kw: Any) -> LLMError:
        return cls(self._clean(message), **kw)

    def _body(self, request: LLMRequest, *, stream: bool) -> dict[str, Any]:
        return {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": stream,
        }

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        return self._random.uniform(ceiling / 2, ceiling)

    async def _error_snippet(self, response: httpx.Response) -> str:
        """A short, one-line description of an error body (the JSON `error.message` if any)."""
        raw = b""
        try:
            async for part in response.aiter_bytes():
                raw += part
                if len(raw) >= _ERROR_BODY_BYTES:
                    break
        except httpx.HTTPError:
            pass
        text = raw[:_ERROR_BODY_BYTES].decode("utf-8", "replace")
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            err = data.get("error", data)
            if isinstance(err, dict) and isinstance(err.get("message"), str):
                text = err["message"]
            elif isinstance(err, str):
                text = err
            elif isinstance(data.get("detail"), str):
                text = data["detail"]
        return _one_line(self._redact(text)) or "(empty body)"

    async def _attempt(self, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        """One POST; returns a 2xx response with its body not read yet."""
        client = self.client
        headers = {"Accept": "text/event-stream" if stream else "application/json"}
        where = _redacted_url(self.url)
        try:
            req = client.build_request("POST", self.url, json=body, headers=headers)
            response = await client.send(req, stream=True)
        except httpx.ConnectTimeout:
            raise _Retryable(
                self._fail(LLMTimeout, f"LLM: no connection to {where} within {self.connect_timeout:g}s")
            ) from None
        except httpx.ConnectError as exc:
            raise _Retryable(
                self._fail(LLMUnavailable, f"LLM: cannot connect to {where}: {exc or type(exc).__name__}")
            ) from None
        except httpx.PoolTimeout:
            raise self._fail(
                LLMTimeout, f"LLM: no free connection to {where} within {self.timeout:g}s"
            ) from None
        except httpx.TimeoutException:
            raise self._fail(
                LLMTimeout, f"LLM: no answer from {where} within {self.timeout:g}s"
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # The server dropped the connection before answering (a stale keep-alive, a restart).
            raise _Retryable(
                self._fail(LLMUnavailable, f"LLM: {where} closed the connection: {exc or type(exc).__name__}")
            ) from None
        except httpx.HTTPError as exc:
            raise self._fail(
                LLMUnavailable, f"LLM: request to {where} failed: {type(exc).__name__}: {exc}"
            ) from None

        status = response.status_code
        if 200 <= status < 300:
            return response
        try:
            snippet = await self._error_snippet(response)
        finally:
            await response.aclose()
        if status == 429:
            raise _Retryable(
                self._fail(LLMRateLimited, f"LLM rate limited (HTTP 429) at {where}: {snippet}"),
                retry_after=_parse_retry_after(response.headers),
            )
        if status >= 500:
            raise _Retryable(
                self._fail(LLMUnavailable, f"LLM server error HTTP {status} at {where}: {snippet}"),
                retry_after=_parse_retry_after(response.headers) if status == 503 else None,
            )
        hint = ""
        if status == 404:
            hint = " (does VITTE_LLM_BASE_URL include the API's /v1, and is the model name right?)"
        elif status in (401, 403):
            hint = " (check VITTE_LLM_API_KEY)"
        raise self._fail(LLMBadResponse, f"LLM answered HTTP {status} at {where}: {snippet}{hint}")

    async def _open(self, body: dict[str, Any], *, stream: bool) -> httpx.Response:
        """POST with retries (nothing has reached the caller yet, so retrying is safe)."""
        attempt = 0
        while True:
            try:
                return await self._attempt(body, stream=stream)
            except _Retryable as exc:
                if attempt >= self.retries:
                    err = exc.error
                    if self.retries:
                        err.args = (f"{err.args[0]} (after {attempt + 1} attempts)",)
                    raise err from None
                await asyncio.sleep(self._delay(attempt, exc.retry_after))
                attempt += 1

    # ------------------------------------------------------------- responses

    def _bad(self, what: str, data: str) -> LLMError:
        return self._fail(LLMBadResponse, f"LLM sent {what}: {_one_line(self._redact(data), 120)}")

    def _chunk_delta(self, data: str) -> tuple[str, bool]:
        """(content, finished) of one streamed chunk; raises LLMBadResponse on a bad chunk."""
        try:
            chunk = json.loads(data)
        except ValueError:
            raise self._bad("malformed JSON in the stream", data) from None
        if not isinstance(chunk, dict):
            raise self._bad("an unexpected stream chunk", data)
        if chunk.get("error") is not None:
            err = chunk["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            raise self._fail(LLMBadResponse, f"LLM reported an error in the stream: {msg}")
        choices = chunk.get("choices")
        if choices is None:
            if "usage" in chunk:  # a trailing usage-only chunk
                return "", False
            raise self._bad("a stream chunk without choices", data)
        if not isinstance(choices, list):
            raise self._bad("a stream chunk with malformed choices", data)
        if not choices:
            return "", False
        choice = choices[0]
        if not isinstance(choice, dict):
            raise self._bad("a stream chunk with a malformed choice", data)
        delta = choice.get("delta") or {}
        if not isinstance(delta, dict):
            raise self._bad("a stream chunk with a malformed delta", data)
        content = delta.get("content")
        if content is None:
            content = ""  # role-only chunk, tool call, reasoning tokens: nothing to show
        if not isinstance(content, str):
            raise self._bad("a stream chunk with non-text content", data)
        return content, choice.get("finish_reason") is not None

    def _message_content(self, raw: bytes) -> str:
        """The text of a non-streamed Chat Completions response."""
        text = raw.decode("utf-8", "replace")
        try:
            data = json.loads(text)
        except ValueError:
            raise self._bad("malformed JSON", text) from None
        if isinstance(data, dict) and data.get("error") is not None:
            err = data["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            raise self._fail(LLMBadResponse, f"LLM reported an error: {msg}")
        try:
            choice = data["choices"][0]
            message = choice["message"]
            content = message.get("content")
        except (KeyError, IndexError, TypeError, AttributeError):
            raise self._bad("an unexpected response", text) from None
        if content is None:
            return ""
        if not isinstance(content, str):
            raise self._bad("non-text content", text)
        return content

    def _cut(self, partial: str, exc: BaseException | None = None, reason: str = "") -> NoReturn:
        where = _redacted_url(self.url)
        if isinstance(exc, httpx.TimeoutException):
            if partial:
                raise self._fail(
                    LLMStreamStalled,
                    f"LLM stream from {where} stalled: no next token within {self.timeout:g}s "
                    f"after {len(partial)} chars",
                    partial=partial,
                ) from None
            raise self._fail(
                LLMTimeout, f"LLM: no first token from {where} within {self.timeout:g}s"
            ) from None
        detail = reason or (f"{type(exc).__name__}: {exc}" if exc else "connection closed")
        raise self._fail(
            LLMStreamCut,
            f"LLM stream from {where} cut after {len(partial)} chars: {detail}",
            partial=partial,
        ) from None

    async def _deltas(self, response: httpx.Response) -> AsyncGenerator[str, None]:
        """Text deltas of an open 2xx response, SSE or (if the server ignored `stream`) JSON."""
        ctype = response.headers.get("content-type", "").lower()
        if "application/json" in ctype:
            where = _redacted_url(self.url)
            try:
                raw = await response.aread()
            except httpx.TimeoutException:
                raise self._fail(
                    LLMTimeout, f"LLM: no (complete) answer from {where} within {self.timeout:g}s"
                ) from None
            except httpx.HTTPError as exc:
                raise self._fail(
                    LLMUnavailable, f"LLM: {where} cut the connection mid-answer: {exc}"
                ) from None
            content = self._message_content(raw)
            if content:
                yield content
            return

        partial: list[str] = []
        data_lines: list[str] = []
        finished = False
        lines = response.aiter_lines()
        try:
            while True:
                try:
                    line: str | None = await anext(lines)
                except StopAsyncIteration:
                    line = None
                except httpx.HTTPError as exc:
                    self._cut("".join(partial), exc)
                if line:
                    if line.startswith(":"):
                        continue  # comment / keep-alive
                    field, _, value = line.partition(":")
                    if field == "data":
                        data_lines.append(value[1:] if value.startswith(" ") else value)
                    continue  # event:, id:, retry: carry nothing we need
                # a blank line (or the end of the body) dispatches the event
                if data_lines:
                    data = "\n".join(data_lines)
                    data_lines = []
                    if data.strip() == "[DONE]":
                        return
                    try:
                        content, done = self._chunk_delta(data)
                    except LLMBadResponse as exc:
                        if line is None and not finished:
                            # a half-written last line: the connection was cut mid-chunk
                            self._cut("".join(partial), reason="truncated chunk")
                        if partial:
                            self._cut("".join(partial), reason=str(exc))
                        raise
                    finished = finished or done
                    if content:
                        partial.append(content)
                        yield content
                if line is None:
                    break
        finally:
            await lines.aclose()  # type: ignore[attr-defined]
        if not finished:
            self._cut("".join(partial), reason="the stream ended without [DONE]")

    # ------------------------------------------------------------------- API

    async def stream(self, request: LLMRequest) -> AsyncGenerator[str, None]:
        """Yield text deltas as they arrive (see the module docstring for failures)."""
        response = await self._open(self._body(request, stream=True), stream=True)
        try:
            async with aclosing(self._deltas(response)) as deltas:
                async for delta in deltas:
                    yield delta
        finally:
            await response.aclose()

    async def complete(self, request: LLMRequest) -> str:
        """The whole answer, requested without streaming."""
        response = await self._open(self._body(request, stream=False), stream=False)
        try:
            async with aclosing(self._deltas(response)) as deltas:
                return "".join([d async for d in deltas])
        finally:
            await response.aclose()
