"""A real OpenAI-compatible Chat Completions server for tests and benchmarks (aiohttp, loopback).

Shipped in the package so an operator can run `vitte bench` (and their own experiments)
on their own machine; `tests.support.llm_server` re-exports it for the tests.

In process::

    async with FakeLLMServer(replies=["Hello!"], ttft=0.0) as server:
        llm = OpenAICompatibleLLM(base_url=server.base_url, api_key="k", model="m")
        ...
        assert server.completions[0].path == "/v1/chat/completions"

As a process (prints ``fake-llm listening on http://127.0.0.1:PORT/v1`` once ready)::

    python -m vitte.devtools.llm_server --port 8099 --ttft 1.0 --tps 40

Behaviour, decided per request, first match wins:

1. header ``X-Fake-Mode: <mode>``;
2. the ``modes`` queue (a script: ``server.modes.extend(["500", "429", "normal"])``);
3. ``fail_500`` / ``fail_429`` counters (answer 500 / 429 that many times, then go on);
4. the server's ``mode`` (default ``normal``).

Modes: ``normal``; ``500``, ``503``, ``429`` or any other status code (429 carries
``Retry-After: <retry_after>``); ``hang`` (never answers, not even headers); ``stall:N``
(N content chunks, then silence); ``cut:N`` (N content chunks, then the body ends cleanly
without ``finish_reason``/``[DONE]``); ``drop:N`` (N content chunks, then the TCP connection is
aborted); ``malformed`` (invalid JSON); ``badshape`` (valid JSON, not a completion).

Reply text: the ``replies`` queue (texts) or a callable ``replies(body) -> str``, then
``default_reply``, then an echo of the last user message. Time to first token ``ttft`` and
``tps`` (tokens per second, 0 = as fast as possible) shape the timing; nothing sleeps unless
configured. Every request is recorded (``requests``: method, path, headers, json), client
disconnects in mid-answer are counted (``disconnects``, ``disconnected`` event).

Control of a running process: ``POST /_control`` with a JSON object of attributes to set
(``mode``, ``modes``, ``fail_500``, ``fail_429``, ``ttft``, ``tps``, ``replies``,
``default_reply``, ``retry_after``), ``GET /_stats`` for counters.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import re
import signal
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from multidict import CIMultiDict

__all__ = ["FakeLLMServer", "RecordedRequest", "run_subprocess", "tokens"]

Replies = deque[str] | Callable[[dict[str, Any]], str]


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: CIMultiDict[str]  # case-insensitive
    json: Any  # the parsed body, or None
    mode: str = ""  # the behaviour chosen for it
    disconnected: bool = False  # the client went away before the answer was complete


def tokens(text: str) -> list[str]:
    """How the server splits a reply into streamed chunks (a word with its leading space)."""
    return re.findall(r"\s*\S+", text)


TOY_DIMENSIONS = 64
# words of one meaning share a dimension in the toy embedding: what no lexical search can see
TOY_MEANINGS = (
    ("cat", "kitten", "pet", "кот", "кошк", "котик", "котенок", "питомец", "питомц"),
    ("sea", "ocean", "beach", "море", "океан", "пляж"),
    ("music", "song", "guitar", "музык", "песн", "гитар"),
)


def toy_embedding(text: str) -> list[float]:
    """A deterministic unit vector for `text`: each word's first five letters hashed into one of
    TOY_DIMENSIONS (the same in every process), the words of one TOY_MEANINGS group into one."""
    vector = [0.0] * TOY_DIMENSIONS
    for word in re.findall(r"[^\W\d_]+", text.lower()):
        group = next((i for i, g in enumerate(TOY_MEANINGS) if any(word.startswith(p) for p in g)), None)
        if group is not None:
            vector[group] += 1.0
            continue
        if len(word) < 3:
            continue
        digest = hashlib.blake2b(word[:5].encode(), digest_size=4).digest()
        vector[len(TOY_MEANINGS) + int.from_bytes(digest, "big") % (TOY_DIMENSIONS - len(TOY_MEANINGS))] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _extraction_answer(body: dict[str, Any]) -> str | None:
    """For a fact-extraction request (vitte.dialogs.facts.extraction_messages): one fact, the
    newest player-or-persona line of its <new_lines> block, with that line as its source."""
    from vitte.dialogs.facts import extraction_lines  # only with --facts

    lines = extraction_lines(body.get("messages") or [])
    if lines is None:
        return None
    if not lines:
        return "[]"
    ref, text = lines[-1]
    return json.dumps([{"text": text[:200], "kind": "other", "importance": 2, "sources": [ref]}], ensure_ascii=False)


@dataclass
class FakeLLMServer:
    host: str = "127.0.0.1"
    port: int = 0
    replies: Replies | list[str] | None = None
    default_reply: str | None = None
    ttft: float = 0.0
    tps: float = 0.0
    mode: str = "normal"
    fail_500: int = 0
    fail_429: int = 0
    retry_after: str = "0"
    api_key: str | None = None  # when set, other keys get 401 (chat: the body echoes the key sent; models too)
    model: str = "fake-model"
    modes: deque[str] = field(default_factory=deque)
    requests: list[RecordedRequest] = field(default_factory=list)
    disconnects: int = 0
    facts: bool = False  # answer fact-extraction requests (a <new_lines> block) with a JSON array

    def __post_init__(self) -> None:
        if isinstance(self.replies, list):
            self.replies = deque(self.replies)
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self.disconnected = asyncio.Event()
        self._arrived = asyncio.Event()
        self._served = 0

    # ------------------------------------------------------------ lifecycle

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def completions(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    async def start(self) -> FakeLLMServer:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/_control", self._control)
        app.router.add_get("/_stats", self._stats)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.2, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = self._runner.addresses
        self.port = int(sockets[0][1])
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> FakeLLMServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_disconnect(self, within: float = 2.0) -> bool:
        try:
            await asyncio.wait_for(self.disconnected.wait(), within)
        except TimeoutError:
            return False
        return True

    async def wait_requests(self, count: int = 1, within: float = 2.0) -> bool:
        """Wait until `count` chat completion requests have arrived."""

        async def arrived() -> None:
            while len(self.completions) < count:
                self._arrived.clear()
                await self._arrived.wait()

        try:
            await asyncio.wait_for(arrived(), within)
        except TimeoutError:
            return False
        return True

    # ------------------------------------------------------------ behaviour

    def _choose_mode(self, request: web.Request) -> str:
        if request.headers.get("X-Fake-Mode"):
            return request.headers["X-Fake-Mode"].strip()
        if self.modes:
            return self.modes.popleft()
        if self.fail_500 > 0:
            self.fail_500 -= 1
            return "500"
        if self.fail_429 > 0:
            self.fail_429 -= 1
            return "429"
        return self.mode

    def _reply_text(self, body: dict[str, Any]) -> str:
        if self.facts:
            found = _extraction_answer(body)
            if found is not None:
                return found
        if callable(self.replies):
            return str(self.replies(body))
        if isinstance(self.replies, list) and self.replies:
            return self.replies.pop(0)
        if isinstance(self.replies, deque) and self.replies:
            return self.replies.popleft()
        if self.default_reply is not None:
            return self.default_reply
        last = ""
        for message in body.get("messages") or []:
            if isinstance(message, dict) and message.get("role") == "user":
                last = str(message.get("content") or "")
        return f"You said: {last}" if last else "Hello!"

    def _chunk(self, cid: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(payload, ensure_ascii=False).encode() + b"\n\n"

    async def _pause(self, seconds: float) -> None:
        if seconds > 0:
            await asyncio.sleep(seconds)

    async def _hang(self) -> None:
        await self._stopping.wait()

    # ------------------------------------------------------------- handlers

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = RecordedRequest(request.method, request.path, CIMultiDict(request.headers), body)
        self.requests.append(rec)
        self._arrived.set()
        return rec

    def _error(self, status: int, message: str, **headers: str) -> web.Response:
        body = {"error": {"message": message, "type": "fake_error", "code": status}}
        return web.json_response(body, status=status, headers=headers)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        rec = await self._record(request)
        if self.api_key is not None:
            sent = request.headers.get("Authorization", "")
            if sent != f"Bearer {self.api_key}":
                rec.mode = "401"
                key = sent.removeprefix("Bearer ")
                return self._error(401, f"Incorrect API key provided: {key}")
        body = rec.json
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            rec.mode = "400"
            return self._error(400, "expected a JSON object with messages")
        mode = rec.mode = self._choose_mode(request)
        kind, _, arg = mode.partition(":")
        count = int(arg) if arg.isdigit() else 2
        self._served += 1
        try:
            if kind.isdigit():
                status = int(kind)
                headers = {"Retry-After": self.retry_after} if status == 429 else {}
                return self._error(status, f"fake failure {status}", **headers)
            if kind == "hang":
                await self._hang()
                return self._error(503, "server stopping")
            text = self._reply_text(body)
            if body.get("stream"):
                return await self._stream(request, body, text, kind, count)
            return await self._whole(request, text, kind)
        except (ConnectionResetError, asyncio.CancelledError):
            if not self._stopping.is_set():
                rec.disconnected = True
                self.disconnects += 1
                self.disconnected.set()
            raise

    async def _whole(self, request: web.Request, text: str, kind: str) -> web.StreamResponse:
        parts = tokens(text)
        await self._pause(self.ttft + (len(parts) / self.tps if self.tps > 0 else 0.0))
        if kind == "malformed":
            return web.Response(text='{"choices": [{"message": ', content_type="application/json")
        if kind == "badshape":
            return web.json_response({"unexpected": True})
        payload = {
            "id": f"chatcmpl-{self._served}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": len(parts), "total_tokens": 1 + len(parts)},
        }
        data = json.dumps(payload, ensure_ascii=False).encode()
        if kind in ("cut", "drop", "stall"):
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = len(data)
            await resp.prepare(request)
            await resp.write(data[: len(data) // 2])
            if kind == "stall":
                await self._hang()
            elif request.transport is not None:
                request.transport.abort()
            return resp
        return web.Response(body=data, content_type="application/json")

    async def _stream(
        self, request: web.Request, body: dict[str, Any], text: str, kind: str, count: int
    ) -> web.StreamResponse:
        cid = f"chatcmpl-{self._served}"
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        await resp.write(b": keep-alive\n\n")
        await resp.write(self._chunk(cid, {"role": "assistant", "content": ""}))
        if kind == "malformed":
            await resp.write(b'data: {"choices": [{"delta": {"content": "Hel\n\n')
            await resp.write(b"data: [DONE]\n\n")
            return resp
        if kind == "badshape":
            await resp.write(b'data: {"unexpected": true}\n\n')
            await resp.write(b"data: [DONE]\n\n")
            return resp
        await self._pause(self.ttft)
        parts = tokens(text)
        limited = kind in ("cut", "drop", "stall")
        for i, part in enumerate(parts):
            if limited and i >= count:
                break
            if i and self.tps > 0:
                await asyncio.sleep(1.0 / self.tps)
            await resp.write(self._chunk(cid, {"content": part}))
        if kind == "stall":
            await self._hang()
            return resp
        if kind == "cut":
            return resp  # a clean end of the body, but no finish_reason and no [DONE]
        if kind == "drop":
            if request.transport is not None:
                request.transport.abort()
            return resp
        await resp.write(self._chunk(cid, {}, finish="stop"))
        options = body.get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            usage = {"prompt_tokens": 1, "completion_tokens": len(parts)}
            payload = {"id": cid, "object": "chat.completion.chunk", "choices": [], "usage": usage}
            await resp.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        return resp

    async def _models(self, request: web.Request) -> web.Response:
        rec = await self._record(request)
        if self.api_key is not None and request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            rec.mode = "401"
            return self._error(401, "Incorrect API key provided")
        return web.json_response({"object": "list", "data": [{"id": self.model, "object": "model"}]})

    @property
    def embeddings(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path.endswith("/embeddings")]

    async def _embeddings(self, request: web.Request) -> web.Response:
        """OpenAI's /v1/embeddings with a deterministic toy embedding (`toy_embedding`); the
        mode "500" fails it like the chat endpoint."""
        rec = await self._record(request)
        if self.api_key is not None and request.headers.get("Authorization", "") != f"Bearer {self.api_key}":
            rec.mode = "401"
            return self._error(401, "Incorrect API key provided")
        rec.mode = self._choose_mode(request)
        if rec.mode == "500":
            return self._error(500, "embeddings failed")
        body = rec.json if isinstance(rec.json, dict) else {}
        texts = body.get("input")
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return self._error(400, "input must be a string or a list of strings")
        data = [{"object": "embedding", "index": i, "embedding": toy_embedding(t)} for i, t in enumerate(texts)]
        return web.json_response(
            {"object": "list", "model": body.get("model", self.model), "data": data, "usage": {"prompt_tokens": 0}}
        )

    async def _control(self, request: web.Request) -> web.Response:
        data = await request.json()
        if not isinstance(data, dict):
            return self._error(400, "expected a JSON object")
        for key, value in data.items():
            if key == "modes":
                self.modes = deque(str(m) for m in value)
            elif key == "replies":
                self.replies = deque(str(r) for r in value)
            elif key in {"mode", "default_reply", "retry_after"}:
                setattr(self, key, None if value is None else str(value))
            elif key in {"fail_500", "fail_429"}:
                setattr(self, key, int(value))
            elif key in {"ttft", "tps"}:
                setattr(self, key, float(value))
            else:
                return self._error(400, f"unknown setting {key!r}")
        return web.json_response({"ok": True})

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"requests": len(self.completions), "disconnects": self.disconnects}
        )

    async def _not_found(self, request: web.Request) -> web.Response:
        await self._record(request)
        return self._error(404, f"no route for {request.method} {request.path}")


# ----------------------------------------------------------------------- as a process


@contextlib.contextmanager
def run_subprocess(*args: str, startup_timeout: float = 15.0) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Run the server as a child process; yields (process, base_url). Stops it on exit."""
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-m", "vitte.devtools.llm_server", *args]
    if "--port" not in args:
        cmd += ["--port", "0"]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + startup_timeout
        base_url = ""
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            if "listening on" in line:
                base_url = line.rsplit(" ", 1)[1].strip()
                break
        if not base_url:
            raise RuntimeError(f"fake LLM server did not start (exit code {proc.poll()})")
        yield proc, base_url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


async def _serve(args: argparse.Namespace) -> None:
    server = FakeLLMServer(
        host=args.host,
        port=args.port,
        ttft=args.ttft,
        tps=args.tps,
        mode=args.mode,
        fail_500=args.fail_500,
        fail_429=args.fail_429,
        retry_after=args.retry_after,
        api_key=args.api_key,
        default_reply=args.reply,
        model=args.model,
        facts=args.facts,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        print(f"fake-llm listening on {server.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible Chat Completions server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--ttft", type=float, default=0.0, help="seconds to the first token")
    parser.add_argument("--tps", type=float, default=0.0, help="tokens per second (0 = no limit)")
    parser.add_argument("--mode", default="normal", help="normal, hang, cut:N, 500, 429, …")
    parser.add_argument("--fail-500", type=int, default=0, help="answer 500 this many times first")
    parser.add_argument("--fail-429", type=int, default=0, help="answer 429 this many times first")
    parser.add_argument("--retry-after", default="0", help="Retry-After sent with 429")
    parser.add_argument("--api-key", default=None, help="accept only this bearer key")
    parser.add_argument("--reply", default=None, help="a fixed reply (default: echo)")
    parser.add_argument("--model", default="fake-model")
    parser.add_argument("--facts", action="store_true", help="answer fact extractions with a JSON array")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args))


if __name__ == "__main__":
    main()
