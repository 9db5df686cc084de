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

Transport: one `aiohttp.ClientSession` per event loop, created on first use inside the running
loop (a client used from another loop, as the CLI and the tests do, gets a new session there).
The body is read with `readany()` and split into lines here: cheap, and an SSE line of any length
works (aiohttp's `readline()` refuses lines over 64 KiB).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import json
import os
import random
import ssl
import time
import urllib.request
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
import orjson
from yarl import URL

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
_DRAIN_BYTES = 64 * 1024  # what is still read after [DONE] to keep the connection reusable …
_DRAIN_SECONDS = 1.0  # … and for how long at most
_USER_AGENT = "vitte/0.1 (+openai-compatible client)"
_STREAM_HEADERS = {"Accept": "text/event-stream", "Content-Type": "application/json"}
_WHOLE_HEADERS = {"Accept": "application/json", "Content-Type": "application/json"}
# What reading a body can raise: aiohttp's errors, and a sock_read timeout (aiohttp's
# ServerTimeoutError is both a ClientError and a TimeoutError).
_READ_ERRORS: tuple[type[Exception], ...] = (aiohttp.ClientError, TimeoutError)


def _loads(data: bytes) -> Any:
    """JSON from the stream: orjson, straight from the bytes (~4x faster than the stdlib per
    event). What orjson refuses is read as before, by the stdlib from the text with invalid
    UTF-8 replaced, so the verdicts are the old ones: lone surrogate escapes (a proxy that cut a
    string between UTF-16 halves), NaN/Infinity and invalid UTF-8 are still accepted, and only
    what the stdlib refuses raises (`json.JSONDecodeError`, a ValueError)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data.decode("utf-8", "replace"))


def _dumps(body: Any) -> bytes:
    """Compact UTF-8 JSON, what `json.dumps(ensure_ascii=False, separators=(",", ":"))` wrote,
    by orjson. What orjson refuses (a lone surrogate, a non-str key …) goes the old way, so it
    fails (or not) exactly as before."""
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _one_line(text: str, limit: int = _SNIPPET_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _redacted_url(url: URL) -> str:
    """The URL without user:password and without a query string (which may carry a key)."""
    return str(url.with_user(None).with_query(None).with_fragment(None))


def _endpoint(base_url: str) -> URL:
    """`{base}/chat/completions`; a base that already names the endpoint is used as is."""
    url = URL(base_url.strip())
    path = url.path.rstrip("/")
    if not path.endswith("/chat/completions"):
        path += "/chat/completions"
    return url.with_path(path, keep_query=True)


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def _parse_retry_after(headers: Any) -> float | None:
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


def _split_lines(pending: list[bytes], chunk: bytes) -> list[bytes]:
    """The complete lines of `pending + chunk` (CRLF, LF or CR ended); the unterminated rest
    is left in `pending`."""
    if b"\n" not in chunk and b"\r" not in chunk:
        pending.append(chunk)
        return []
    if pending:
        pending.append(chunk)
        chunk = b"".join(pending)
        pending.clear()
    held_cr = False
    if b"\r" in chunk:
        held_cr = chunk.endswith(b"\r")  # perhaps the first half of a CRLF split between reads
        if held_cr:
            chunk = chunk[:-1]
        chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lines = chunk.split(b"\n")
    rest = lines.pop()
    if rest:
        pending.append(rest)
    if held_cr:
        pending.append(b"\r")
    return lines


def _last_lines(pending: list[bytes]) -> list[bytes]:
    """What is left in `pending` at the end of the body, as lines (the last one unterminated)."""
    data = b"".join(pending)
    pending.clear()
    if not data:
        return []
    lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if not lines[-1]:
        lines.pop()
    return lines


def _salvage(content: aiohttp.StreamReader) -> bytes:
    """Bytes that arrived before a read failed: aiohttp raises the error before handing out
    what it had buffered, and those bytes may complete events the server did send."""
    read_nowait = getattr(content, "_read_nowait", None)
    if read_nowait is None:
        return b""
    try:
        data = read_nowait(-1)
    except Exception:
        return b""
    return data if isinstance(data, bytes) else b""


class _Retryable(Exception):
    """Internal: this attempt failed in a way worth another try."""

    def __init__(self, error: LLMError, retry_after: float | None = None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


class OpenAICompatibleLLM:
    """The `LLM` protocol over one shared `aiohttp.ClientSession` (per event loop).

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
        # HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY and SSL_CERT_FILE / SSL_CERT_DIR
        # from the environment (read once per session, not on every request).
        self._trust_env = trust_env
        self._random = random.Random()
        self.label = f"openai-compatible {self.model} @ {_redacted_url(URL(self.base_url))}"

        url = self.url
        self._where = _redacted_url(url)
        # Sent with each request, never as a session default: aiohttp copies session defaults
        # into the headers for a proxy, and turns an Authorization there into Proxy-Authorization.
        self._auth: dict[str, str] = {}
        if url.user is not None or url.password is not None:
            # credentials in the URL mean HTTP Basic auth (as before, they win over the key)
            self._auth["Authorization"] = _basic(url.user or "", url.password or "")
            self._request_url = url.with_user(None)
        else:
            if self._api_key:
                self._auth["Authorization"] = f"Bearer {self._api_key}"
            self._request_url = url
        # texts to blank in error messages: the key, a URL password, the URL with its query
        self._secrets = [s for s in (self._api_key, url.password or "") if len(s) >= 4]
        forms = {str(url), url.human_repr(), str(self._request_url), self._request_url.human_repr()}
        forms.discard(self._where)
        self._url_forms = sorted(forms, key=len, reverse=True)

        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None
        self._proxy: URL | None = None
        self._proxy_headers: dict[str, str] | None = None  # for a CONNECT tunnel (https)
        self._stream_headers: dict[str, str] = {}
        self._whole_headers: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<OpenAICompatibleLLM {self.label}>"

    # ---------------------------------------------------------------- plumbing

    async def _http(self) -> aiohttp.ClientSession:
        """The session of the running loop, created on first use (and again after `aclose()`)."""
        loop = asyncio.get_running_loop()
        session, old_loop = self._session, self._session_loop
        if session is not None and old_loop is loop and not session.closed:
            return session
        fresh = self._new_session()
        self._session, self._session_loop = fresh, loop
        if session is not None:
            await self._discard(session, old_loop)
        return fresh

    def _new_session(self) -> aiohttp.ClientSession:
        self._proxy, proxy_auth = self._env_proxy()
        extra = dict(self._auth)
        self._proxy_headers = None
        if proxy_auth is not None:
            if self.url.scheme == "https":
                self._proxy_headers = {"Proxy-Authorization": proxy_auth}  # on the CONNECT only
            else:
                extra["Proxy-Authorization"] = proxy_auth  # the request itself goes to the proxy
        self._stream_headers = {**_STREAM_HEADERS, **extra}
        self._whole_headers = {**_WHOLE_HEADERS, **extra}
        connector = aiohttp.TCPConnector(
            limit=self.max_connections,
            limit_per_host=0,
            keepalive_timeout=30.0,
            ssl=self._ssl_context() if self.url.scheme == "https" else True,
        )
        return aiohttp.ClientSession(
            connector=connector,
            headers={"User-Agent": _USER_AGENT},
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=self.connect_timeout,  # a connection from the pool, or a new one
                sock_connect=self.connect_timeout,
                sock_read=self.timeout,  # to the headers, and between two reads of the body
            ),
            # The proxy is looked up once in _env_proxy: with trust_env aiohttp would ask the
            # environment and ~/.netrc in a worker thread on every request (and a .netrc entry
            # for the host would clash with the Authorization header).
            trust_env=False,
        )

    def _env_proxy(self) -> tuple[URL | None, str | None]:
        """The proxy the environment names for our URL (HTTPS_PROXY, ALL_PROXY, NO_PROXY …),
        and its Proxy-Authorization from user:password in the proxy URL."""
        if not self._trust_env:
            return None, None
        proxies = urllib.request.getproxies()
        raw = proxies.get(self.url.scheme) or proxies.get("all")
        if not raw or urllib.request.proxy_bypass(self.url.host or ""):
            return None, None
        proxy = URL(raw if "://" in raw else f"http://{raw}")
        if proxy.scheme not in ("http", "https"):
            return None, None  # socks:// and the like: aiohttp cannot use them
        if proxy.user is None and proxy.password is None:
            return proxy, None
        return proxy.with_user(None), _basic(proxy.user or "", proxy.password or "")

    def _ssl_context(self) -> ssl.SSLContext:
        """SSL_CERT_FILE / SSL_CERT_DIR when trusting the environment, else certifi's CAs."""
        if self._trust_env and os.environ.get("SSL_CERT_FILE"):
            return ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
        if self._trust_env and os.environ.get("SSL_CERT_DIR"):
            return ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
        try:
            import certifi
        except ImportError:  # pragma: no cover - certifi comes with aiogram
            return ssl.create_default_context()
        return ssl.create_default_context(cafile=certifi.where())

    @staticmethod
    async def _discard(session: aiohttp.ClientSession, loop: asyncio.AbstractEventLoop | None) -> None:
        if session.closed:
            return
        if loop is None or loop.is_closed() or loop is asyncio.get_running_loop():
            # on a closed loop this only marks it closed: there is nothing left to wait for
            await session.close()
        else:
            # another loop, still open: its connections can only be closed there; let them go
            session.detach()

    async def aclose(self) -> None:
        session, loop = self._session, self._session_loop
        self._session = self._session_loop = None
        if session is not None:
            await self._discard(session, loop)

    def _redact(self, text: str) -> str:
        """The API key (and URL secrets) blanked wherever they appear, before any shortening."""
        for form in self._url_forms:
            if form in text:
                text = text.replace(form, self._where)
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _clean(self, text: str) -> str:
        """One line, without the API key."""
        return _one_line(self._redact(text), limit=400)

    def _fail(self, cls: type[LLMError], message: str, **kw: Any) -> LLMError:
        return cls(self._clean(message), **kw)

    def _payload(self, request: LLMRequest, *, stream: bool) -> bytes:
        body = {
            "model": self.model,
            "messages": request.messages,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": stream,
        }
        return _dumps(body)  # sent as bytes, with Content-Type: application/json

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        ceiling = min(self.backoff_max, self.backoff_base * (2**attempt))
        return self._random.uniform(ceiling / 2, ceiling)

    async def _error_snippet(self, response: aiohttp.ClientResponse) -> str:
        """A short, one-line description of an error body (the JSON `error.message` if any)."""
        raw = b""
        try:
            while len(raw) < _ERROR_BODY_BYTES:
                part = await response.content.read(_ERROR_BODY_BYTES - len(raw))
                if not part:
                    break
                raw += part
        except _READ_ERRORS:
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

    async def _attempt(self, payload: bytes, *, stream: bool, url: URL | None = None) -> aiohttp.ClientResponse:
        """One POST (to the chat endpoint, or `url`); returns a 2xx response with its body not read yet."""
        session = await self._http()
        where = self._where
        try:
            response = await session.post(
                url or self._request_url,
                data=payload,
                headers=self._stream_headers if stream else self._whole_headers,
                proxy=self._proxy,
                proxy_headers=self._proxy_headers,
                allow_redirects=False,
            )
        except aiohttp.ConnectionTimeoutError:
            raise _Retryable(
                self._fail(LLMTimeout, f"LLM: no connection to {where} within {self.connect_timeout:g}s")
            ) from None
        except TimeoutError:  # sock_read: no response headers in time
            raise self._fail(
                LLMTimeout, f"LLM: no answer from {where} within {self.timeout:g}s"
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise _Retryable(
                self._fail(LLMUnavailable, f"LLM: cannot connect to {where}: {exc or type(exc).__name__}")
            ) from None
        except aiohttp.ClientConnectionError as exc:
            # The server dropped the connection before answering (a stale keep-alive, a restart).
            raise _Retryable(
                self._fail(LLMUnavailable, f"LLM: {where} closed the connection: {exc or type(exc).__name__}")
            ) from None
        except aiohttp.ClientError as exc:
            raise self._fail(
                LLMUnavailable, f"LLM: request to {where} failed: {type(exc).__name__}: {exc}"
            ) from None

        status = response.status
        if 200 <= status < 300:
            return response
        try:
            snippet = await self._error_snippet(response)
        finally:
            response.release()  # reused when the body was read to its end, else closed
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

    async def _open(self, payload: bytes, *, stream: bool, url: URL | None = None) -> aiohttp.ClientResponse:
        """POST with retries (nothing has reached the caller yet, so retrying is safe)."""
        attempt = 0
        while True:
            try:
                return await self._attempt(payload, stream=stream, url=url)
            except _Retryable as exc:
                if attempt >= self.retries:
                    err = exc.error
                    if self.retries:
                        err.args = (f"{err.args[0]} (after {attempt + 1} attempts)",)
                    raise err from None
                await asyncio.sleep(self._delay(attempt, exc.retry_after))
                attempt += 1

    async def embed(self, texts: Sequence[str], model: str) -> list[list[float]]:
        """Vectors for `texts`, in their order, from the API's `/embeddings` (next to
        `/chat/completions`, OpenAI's request and answer); the chat's timeouts, retries and errors."""
        if not texts:
            return []
        path = self._request_url.path
        base = path[: -len("/chat/completions")] if path.endswith("/chat/completions") else path.rstrip("/")
        url = self._request_url.with_path(base + "/embeddings")
        response = await self._open(_dumps({"model": model, "input": list(texts)}), stream=False, url=url)
        try:
            raw = await response.read()
        except _READ_ERRORS as exc:
            raise self._fail(LLMUnavailable, f"LLM: embeddings from {self._where} cut: {type(exc).__name__}") from None
        finally:
            self._finish(response)
        try:
            data = _loads(raw)["data"]
            vectors = [[float(x) for x in item["embedding"]] for item in sorted(data, key=lambda d: int(d["index"]))]
        except (ValueError, KeyError, TypeError) as exc:
            raise self._bad(f"embeddings ({type(exc).__name__})", raw[:200]) from None
        if len(vectors) != len(texts) or len({len(v) for v in vectors}) != 1:
            raise self._bad("embeddings (wrong count or mixed dimensions)", raw[:200])
        return vectors

    @staticmethod
    def _finish(response: aiohttp.ClientResponse) -> None:
        """Back to the pool when the body was read to its end; otherwise closed at once
        (the server sees the disconnect and stops generating)."""
        if response.content.at_eof():
            response.release()
        else:
            response.close()

    # ------------------------------------------------------------- responses

    def _bad(self, what: str, data: str | bytes) -> LLMError:
        if isinstance(data, bytes):  # a stream event: decoded only now, for the message
            data = data.decode("utf-8", "replace")
        return self._fail(LLMBadResponse, f"LLM sent {what}: {_one_line(self._redact(data), 120)}")

    def _chunk_delta(self, data: bytes) -> tuple[str, bool]:
        """(content, finished) of one streamed chunk; raises LLMBadResponse on a bad chunk."""
        try:
            chunk = _loads(data)
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

    def _event(
        self, data_lines: list[bytes], partial: list[str], finished: bool, at_eof: bool
    ) -> tuple[str, bool] | None:
        """(content, finished) of one SSE event, None for `[DONE]`."""
        data = data_lines[0] if len(data_lines) == 1 else b"\n".join(data_lines)
        if not data.startswith(b"{") and data.strip() == b"[DONE]":
            return None
        try:
            return self._chunk_delta(data)
        except LLMBadResponse as exc:
            if at_eof and not finished:
                # a half-written last line: the connection was cut mid-chunk
                self._cut("".join(partial), reason="truncated chunk")
            if partial:
                self._cut("".join(partial), reason=str(exc))
            raise

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
        where = self._where
        if isinstance(exc, TimeoutError):
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

    @staticmethod
    async def _drain(content: aiohttp.StreamReader) -> None:
        """The rest of the body after `[DONE]` (normally just the end of the chunked body),
        read so that the connection can serve the next request."""
        if content.is_eof():
            return
        try:
            async with asyncio.timeout(_DRAIN_SECONDS):
                left = _DRAIN_BYTES
                while left > 0:
                    data = await content.readany()
                    if not data:
                        return
                    left -= len(data)
        except _READ_ERRORS:
            pass

    async def _deltas(self, response: aiohttp.ClientResponse) -> AsyncGenerator[str, None]:
        """Text deltas of an open 2xx response, SSE or (if the server ignored `stream`) JSON."""
        ctype = response.headers.get("Content-Type", "").lower()
        if "application/json" in ctype:
            where = self._where
            try:
                raw = await response.read()
            except TimeoutError:
                raise self._fail(
                    LLMTimeout, f"LLM: no (complete) answer from {where} within {self.timeout:g}s"
                ) from None
            except aiohttp.ClientError as exc:
                raise self._fail(
                    LLMUnavailable, f"LLM: {where} cut the connection mid-answer: {exc}"
                ) from None
            content = self._message_content(raw)
            if content:
                yield content
            return

        body = response.content
        partial: list[str] = []
        pending: list[bytes] = []  # the unterminated end of what was read so far
        data_lines: list[bytes] = []  # the `data:` lines of the event being read
        finished = False
        while True:
            failure: Exception | None = None
            try:
                chunk = await body.readany()
            except _READ_ERRORS as exc:
                failure, chunk = exc, _salvage(body)
            at_eof = not chunk and failure is None
            if chunk:
                lines = _split_lines(pending, chunk)
            elif at_eof:
                lines = _last_lines(pending)
            else:
                lines = []
            # the events of one read go out as one delta: a fast server sends many per packet,
            # and every delta costs the consumer a round through its generators and callbacks
            batch: list[str] = []
            for line in lines:
                if line:
                    if line.startswith(b"data:"):
                        data_lines.append(line[6:] if line.startswith(b" ", 5) else line[5:])
                    elif line == b"data":
                        data_lines.append(b"")
                    continue  # comments / keep-alives, event:, id:, retry: carry nothing we need
                if not data_lines:
                    continue
                # a blank line dispatches the event
                event = self._event(data_lines, partial, finished, at_eof=False)
                data_lines = []
                if event is None:
                    if batch:
                        yield "".join(batch)
                    await self._drain(body)
                    return
                content, done = event
                finished = finished or done
                if content:
                    partial.append(content)
                    batch.append(content)
            if batch:
                yield "".join(batch)
            if failure is not None:
                self._cut("".join(partial), failure)
            if at_eof:
                break
        if data_lines:  # the end of the body dispatches the last event
            event = self._event(data_lines, partial, finished, at_eof=True)
            if event is None:
                return
            content, done = event
            finished = finished or done
            if content:
                partial.append(content)
                yield content
        if not finished:
            self._cut("".join(partial), reason="the stream ended without [DONE]")

    # ------------------------------------------------------------------- API

    async def stream(self, request: LLMRequest) -> AsyncGenerator[str, None]:
        """Yield text deltas as they arrive (see the module docstring for failures)."""
        response = await self._open(self._payload(request, stream=True), stream=True)
        try:
            async with aclosing(self._deltas(response)) as deltas:
                async for delta in deltas:
                    yield delta
        finally:
            self._finish(response)

    async def complete(self, request: LLMRequest) -> str:
        """The whole answer, requested without streaming."""
        response = await self._open(self._payload(request, stream=False), stream=False)
        try:
            async with aclosing(self._deltas(response)) as deltas:
                return "".join([d async for d in deltas])
        finally:
            self._finish(response)
