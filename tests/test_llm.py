"""The LLM clients against a real OpenAI-compatible HTTP server on loopback, and the demo writer."""

from __future__ import annotations

import asyncio
import gc
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import aclosing, asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from tests.support.llm_server import FakeLLMServer, run_subprocess, tokens
from vitte.config import load_settings
from vitte.llm import (
    LLM,
    DemoWriter,
    LLMBadResponse,
    LLMError,
    LLMRateLimited,
    LLMRequest,
    LLMStreamCut,
    LLMStreamStalled,
    LLMTimeout,
    LLMUnavailable,
    OpenAICompatibleLLM,
    make_llm,
)

KEY = "sk-test-9f8e7d6c5b4a-SECRET"
REPLY = "Привет! Я так ждала этого вечера. Расскажи, как прошёл твой день?"


def request(text: str = "Привет", **kw: Any) -> LLMRequest:
    return LLMRequest(messages=[{"role": "user", "content": text}], **kw)


def client(server: FakeLLMServer, **kw: Any) -> OpenAICompatibleLLM:
    opts: dict[str, Any] = {
        "base_url": server.base_url,
        "api_key": KEY,
        "model": "test-model",
        "timeout": 2.0,
        "connect_timeout": 1.0,
        "retries": 2,
        "backoff_base": 0.01,
        "backoff_max": 0.05,
        "trust_env": False,  # no proxy from the environment between us and loopback
    }
    opts.update(kw)
    return OpenAICompatibleLLM(**opts)


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
async def llm(server: FakeLLMServer) -> AsyncIterator[OpenAICompatibleLLM]:
    c = client(server)
    yield c
    await c.aclose()


async def collect(llm: LLM, req: LLMRequest) -> list[str]:
    return [d async for d in llm.stream(req)]


def assert_one_line_without_key(exc: BaseException) -> None:
    text = str(exc)
    assert text and "\n" not in text
    assert KEY not in text


# ------------------------------------------------------------------- happy paths


async def test_stream_deltas_concatenate_to_the_text(
    server: FakeLLMServer, llm: OpenAICompatibleLLM
) -> None:
    server.replies = [REPLY]
    deltas = await collect(llm, request(max_tokens=123, temperature=0.5))
    assert "".join(deltas) == REPLY
    # the events of one read come out as one delta (role-only/empty ones add nothing)
    assert 1 <= len(deltas) <= len(tokens(REPLY))
    body = server.completions[0].json
    assert body["stream"] is True
    assert body["model"] == "test-model"
    assert body["max_tokens"] == 123
    assert body["temperature"] == 0.5
    assert body["messages"] == [{"role": "user", "content": "Привет"}]


async def test_complete_is_one_non_streaming_request(
    server: FakeLLMServer, llm: OpenAICompatibleLLM
) -> None:
    server.replies = [REPLY]
    assert await llm.complete(request()) == REPLY
    (rec,) = server.completions
    assert rec.json["stream"] is False
    assert rec.headers["Accept"] == "application/json"


async def test_bearer_key_and_v1_path(server: FakeLLMServer, llm: OpenAICompatibleLLM) -> None:
    await collect(llm, request())
    (rec,) = server.requests
    assert rec.method == "POST"
    assert rec.path == "/v1/chat/completions"
    assert rec.headers["Authorization"] == f"Bearer {KEY}"
    assert rec.headers["Accept"] == "text/event-stream"


@pytest.mark.parametrize("suffix", ["/", "/chat/completions"])
async def test_base_url_variants_reach_the_same_endpoint(
    server: FakeLLMServer, suffix: str
) -> None:
    c = client(server, base_url=server.base_url + suffix)
    try:
        assert await c.complete(request()) == "You said: Привет"
    finally:
        await c.aclose()
    assert [r.path for r in server.requests] == ["/v1/chat/completions"]


async def test_base_url_without_v1_gets_a_clear_404(server: FakeLLMServer) -> None:
    c = client(server, base_url=server.base_url.removesuffix("/v1"))
    try:
        with pytest.raises(LLMBadResponse) as info:
            await c.complete(request())
    finally:
        await c.aclose()
    assert server.requests[0].path == "/chat/completions"
    assert "404" in str(info.value) and "/v1" in str(info.value)
    assert_one_line_without_key(info.value)


async def test_no_key_sends_no_authorization(server: FakeLLMServer) -> None:
    c = client(server, api_key=None)
    try:
        await c.complete(request())
    finally:
        await c.aclose()
    assert "Authorization" not in server.requests[0].headers


async def test_label_names_model_and_base_url_but_no_secrets(server: FakeLLMServer) -> None:
    c = client(server, base_url=f"http://user:pw@127.0.0.1:{server.port}/v1")
    assert c.label == f"openai-compatible test-model @ http://127.0.0.1:{server.port}/v1"
    assert c.is_demo is False
    assert KEY not in repr(c) and "pw" not in c.label


async def test_slow_first_token_within_the_read_timeout_is_fine(server: FakeLLMServer) -> None:
    server.ttft, server.tps = 0.3, 100
    c = client(server, timeout=1.0)
    try:
        assert "".join(await collect(c, request())) == "You said: Привет"
    finally:
        await c.aclose()


async def test_many_concurrent_streams_share_one_client(
    server: FakeLLMServer, llm: OpenAICompatibleLLM
) -> None:
    server.tps = 200
    texts = await asyncio.gather(*(llm.complete(request(f"n{i}")) for i in range(20)))
    streams = await asyncio.gather(*(collect(llm, request(f"s{i}")) for i in range(50)))
    assert texts == [f"You said: n{i}" for i in range(20)]
    assert ["".join(s) for s in streams] == [f"You said: s{i}" for i in range(50)]


async def test_a_data_line_longer_than_64_kib_streams_whole(
    server: FakeLLMServer, llm: OpenAICompatibleLLM
) -> None:
    long = "ж" * 150_000  # one token: one `data:` line of ~300 KB
    server.replies = [long, long]
    assert await collect(llm, request()) == [long]
    assert await llm.complete(request()) == long


def sse(content: str | None = None, finish: str | None = None, **delta: Any) -> bytes:
    if content is not None:
        delta["content"] = content
    chunk = {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


@asynccontextmanager
async def raw_server(pieces: list[bytes], pause: float = 0.005) -> AsyncIterator[str]:
    """A server that answers every completion with exactly these bytes, one write (and one
    short pause, so that the client reads them separately) per piece."""

    async def handler(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for piece in pieces:
            await resp.write(piece)
            await asyncio.sleep(pause)
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    finally:
        await runner.cleanup()


async def raw_stream(pieces: list[bytes]) -> list[str]:
    async with raw_server(pieces) as url:
        c = OpenAICompatibleLLM(base_url=url, api_key=KEY, model="m", timeout=2, trust_env=False)
        try:
            return await collect(c, request())
        finally:
            await c.aclose()


async def test_sse_framing_crlf_comments_multiline_data_and_split_reads() -> None:
    pieces = [
        b": keep-alive\r\n\r\n",
        b"event: message\r\nid: 1\r\nretry: 10\r\n" + sse("", role="assistant").replace(b"\n", b"\r\n"),
        b'data: {"choices":[{"delta":{"content":"Hel',  # a line split between reads …
        b'lo"}}]}\r',  # … and a CRLF too
        b"\n\r\n",
        b'data: {"choices":[{"delta":\ndata: {"content":", wor"}}]}\n\n',  # multi-line data
        b'data: {"choices":[{"delta":{"content":"ld"}}]}\r\r',  # bare CR line ends
        b'data:{"choices":[{"delta":{"content":"!"},"finish_reason":"stop"}]}\n\n',  # no space
        b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\ndata: {"usage":{"total_tokens":2}}\n\n',
        b"data: [DONE]\n\n",
    ]
    deltas = await raw_stream(pieces)
    assert "".join(deltas) == "Hello, world!" and all(deltas)


async def test_events_read_at_once_come_out_as_one_delta() -> None:
    words = ["Я ", "здесь", ", ", "рядом", "."]
    burst = b"".join(sse(w) for w in words) + sse("", finish="stop") + b"data: [DONE]\n\n"
    assert await raw_stream([burst]) == ["".join(words)]
    # events sent apart stay apart (the draft shows them as they come)
    apart = [sse(w) for w in words] + [sse("", finish="stop"), b"data: [DONE]\n\n"]
    assert await raw_stream(apart) == words


async def test_done_or_finish_reason_without_a_trailing_blank_line_is_complete() -> None:
    assert await raw_stream([sse("Hi"), b"data: [DONE]"]) == ["Hi"]
    assert await raw_stream([sse("Hi", finish="stop").rstrip()]) == ["Hi"]


async def test_a_half_written_last_chunk_is_a_cut() -> None:
    with pytest.raises(LLMStreamCut) as info:
        await raw_stream([sse("Hi"), b'data: {"choices":[{"delta":{"content":" th'])
    assert info.value.partial == "Hi"
    assert "truncated chunk" in str(info.value)
    assert_one_line_without_key(info.value)


async def test_stream_events_read_as_the_stdlib_read_them() -> None:
    # Russian escaped and as raw UTF-8; then what orjson alone refuses and the stdlib reads:
    # an emoji cut between its UTF-16 halves (a proxy that slices strings), invalid UTF-8
    # (replaced), NaN in a field we ignore
    pieces = [
        b"data: " + json.dumps({"choices": [{"delta": {"content": "Привет"}}]}).encode() + b"\n\n",
        b"data: "
        + json.dumps({"choices": [{"delta": {"content": ", милый"}}]}, ensure_ascii=False).encode()
        + b"\n\n",
        b'data: {"choices":[{"delta":{"content":" \\ud83d"}}]}\n\n',
        b'data: {"choices":[{"delta":{"content":"\\ude0a"}}]}\n\n',
        b'data: {"choices":[{"delta":{"content":" \xff!"},"logprobs":NaN,"finish_reason":"stop"}]}\n\n',
        b"data: [DONE]\n\n",
    ]
    assert "".join(await raw_stream(pieces)) == "Привет, милый \ud83d\ude0a \ufffd!"


async def test_malformed_event_after_tokens_is_a_cut_and_before_them_a_bad_response() -> None:
    with pytest.raises(LLMStreamCut) as cut:
        await raw_stream([sse("Привет"), b'data: {"choices": [oops]}\n\n', b"data: [DONE]\n\n"])
    assert cut.value.partial == "Привет"
    assert 'malformed JSON in the stream: {"choices": [oops]}' in str(cut.value)
    with pytest.raises(LLMBadResponse) as bad:
        await raw_stream(['data: {"ответ": }\n\n'.encode(), b"data: [DONE]\n\n"])
    assert 'malformed JSON in the stream: {"ответ": }' in str(bad.value)  # the snippet decoded
    assert_one_line_without_key(bad.value)


def test_request_body_is_the_same_compact_utf8_json() -> None:
    llm = OpenAICompatibleLLM(base_url="http://127.0.0.1:9/v1", api_key=KEY, model="m", trust_env=False)
    req = request('Привет, «милый» 😊 "q" \\ \n\t\u2028', max_tokens=7, temperature=0.75)
    body = {"model": "m", "messages": req.messages, "max_tokens": 7, "temperature": 0.75, "stream": True}
    old = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
    assert llm._payload(req, stream=True) == old
    assert "Привет".encode() in old
    # a text orjson refuses (a lone surrogate) fails as it always did, not with a new error
    with pytest.raises(UnicodeEncodeError):
        llm._payload(request("\ud83d"), stream=True)


async def test_request_is_sent_as_json(server: FakeLLMServer, llm: OpenAICompatibleLLM) -> None:
    await collect(llm, request("Привет 😊"))
    (rec,) = server.completions
    assert rec.headers["Content-Type"] == "application/json"
    assert rec.headers["Authorization"] == f"Bearer {KEY}"
    assert rec.json["messages"] == [{"role": "user", "content": "Привет 😊"}]


# ----------------------------------------------------------------------- retries


async def test_retries_500_then_succeeds(server: FakeLLMServer, llm: OpenAICompatibleLLM) -> None:
    server.fail_500 = 2
    server.replies = [REPLY]
    assert "".join(await collect(llm, request())) == REPLY
    assert [r.mode for r in server.completions] == ["500", "500", "normal"]


async def test_retries_429_then_succeeds(server: FakeLLMServer, llm: OpenAICompatibleLLM) -> None:
    server.fail_429 = 2
    assert await llm.complete(request()) == "You said: Привет"
    assert len(server.completions) == 3


async def test_gives_up_on_5xx_with_unavailable(
    server: FakeLLMServer, llm: OpenAICompatibleLLM
) -> None:
    server.mode = "503"
    with pytest.raises(LLMUnavailable) as info:
        await collect(llm, request())
    assert len(server.completions) == 3  # 1 + llm_retries
    assert "503" in str(info.value) and "3 attempts" in str(info.value)
    assert_one_line_without_key(info.value)


async def test_gives_up_on_429_with_rate_limited(
    server: FakeLLMServer, llm: OpenAICompatibleLLM
) -> None:
    server.mode = "429"
    with pytest.raises(LLMRateLimited) as info:
        await llm.complete(request())
    assert len(server.completions) == 3
    assert_one_line_without_key(info.value)


async def test_retry_after_is_honoured(server: FakeLLMServer, llm: OpenAICompatibleLLM) -> None:
    server.fail_429, server.retry_after = 1, "0.3"
    started = time.monotonic()
    await llm.complete(request())
    assert time.monotonic() - started >= 0.3


async def test_retry_after_is_capped(server: FakeLLMServer) -> None:
    server.fail_429, server.retry_after = 1, "120"
    c = client(server, retry_after_max=0.05)
    try:
        started = time.monotonic()
        await c.complete(request())
        assert time.monotonic() - started < 1.0
    finally:
        await c.aclose()


async def test_zero_retries_means_one_attempt(server: FakeLLMServer) -> None:
    server.fail_500 = 1
    c = client(server, retries=0)
    try:
        with pytest.raises(LLMUnavailable):
            await c.complete(request())
    finally:
        await c.aclose()
    assert len(server.completions) == 1


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    c = OpenAICompatibleLLM(
        base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, model="m", retries=1, backoff_base=0.01
    )
    try:
        with pytest.raises(LLMUnavailable) as info:
            await collect(c, request())
    finally:
        await c.aclose()
    assert f"127.0.0.1:{port}" in str(info.value)
    assert_one_line_without_key(info.value)


# ------------------------------------------------------------------------ failures


async def test_wrong_key_is_bad_response_and_the_key_never_leaks(server: FakeLLMServer) -> None:
    server.api_key = "the-right-key"
    c = client(server)
    try:
        with pytest.raises(LLMBadResponse) as info:
            await collect(c, request())
    finally:
        await c.aclose()
    assert len(server.completions) == 1  # 4xx is not retried
    assert "401" in str(info.value) and "Incorrect API key" in str(info.value)
    assert_one_line_without_key(info.value)


async def test_hang_times_out_within_the_read_timeout(server: FakeLLMServer) -> None:
    server.mode = "hang"
    c = client(server, timeout=0.3)
    try:
        started = time.monotonic()
        with pytest.raises(LLMTimeout) as info:
            await collect(c, request())
        assert time.monotonic() - started < 1.5
    finally:
        await c.aclose()
    assert not isinstance(info.value, LLMStreamCut)
    assert len(server.completions) == 1  # a hung server is not asked again
    assert_one_line_without_key(info.value)


async def test_complete_hang_times_out(server: FakeLLMServer) -> None:
    server.mode = "hang"
    c = client(server, timeout=0.3)
    try:
        with pytest.raises(LLMTimeout):
            await c.complete(request())
    finally:
        await c.aclose()


async def test_stall_after_first_tokens_keeps_the_partial(server: FakeLLMServer) -> None:
    server.mode, server.replies = "stall:3", [REPLY]
    c = client(server, timeout=0.3)
    seen: list[str] = []
    try:
        with pytest.raises(LLMStreamStalled) as info:
            async for delta in c.stream(request()):
                seen.append(delta)
    finally:
        await c.aclose()
    assert isinstance(info.value, LLMTimeout) and isinstance(info.value, LLMStreamCut)
    assert info.value.partial == "".join(tokens(REPLY)[:3]) == "".join(seen)
    assert len(server.completions) == 1


@pytest.mark.parametrize("mode", ["cut:2", "drop:2"])
async def test_cut_stream_raises_stream_cut_with_partial(
    server: FakeLLMServer, llm: OpenAICompatibleLLM, mode: str
) -> None:
    server.mode, server.replies = mode, [REPLY]
    seen: list[str] = []
    with pytest.raises(LLMStreamCut) as info:
        async for delta in llm.stream(request()):
            seen.append(delta)
    assert info.value.partial == "".join(tokens(REPLY)[:2]) == "".join(seen)
    assert not isinstance(info.value, LLMTimeout)
    assert len(server.completions) == 1  # no retry after the first token
    assert_one_line_without_key(info.value)


async def test_cut_before_any_token_has_empty_partial(
    server: FakeLLMServer, llm: OpenAICompatibleLLM
) -> None:
    server.mode = "cut:0"
    with pytest.raises(LLMStreamCut) as info:
        await collect(llm, request())
    assert info.value.partial == ""


@pytest.mark.parametrize("mode", ["malformed", "badshape"])
async def test_malformed_stream_is_bad_response(
    server: FakeLLMServer, llm: OpenAICompatibleLLM, mode: str
) -> None:
    server.mode = mode
    with pytest.raises(LLMBadResponse) as info:
        await collect(llm, request())
    assert_one_line_without_key(info.value)


@pytest.mark.parametrize("mode", ["malformed", "badshape"])
async def test_malformed_complete_is_bad_response(
    server: FakeLLMServer, llm: OpenAICompatibleLLM, mode: str
) -> None:
    server.mode = mode
    with pytest.raises(LLMBadResponse) as info:
        await llm.complete(request())
    assert_one_line_without_key(info.value)


async def test_complete_cut_mid_body(server: FakeLLMServer, llm: OpenAICompatibleLLM) -> None:
    server.mode = "drop"
    with pytest.raises(LLMError):
        await llm.complete(request())


async def test_error_messages_never_carry_the_key_even_if_the_server_echoes_it(
    server: FakeLLMServer, llm: OpenAICompatibleLLM
) -> None:
    server.mode = "400"
    server_error = server._error

    def echo(status: int, message: str, **headers: str) -> Any:
        # the key sits where a naive 160-character snippet would cut it in half
        return server_error(status, f"{'x' * 145} key {KEY} rejected", **headers)

    server._error = echo  # type: ignore[method-assign]
    with pytest.raises(LLMBadResponse) as info:
        await llm.complete(request())
    assert "***" in str(info.value) and "sk-test" not in str(info.value)
    assert_one_line_without_key(info.value)


# -------------------------------------------------------------------- cancellation


async def test_cancelling_the_consumer_closes_the_connection(
    server: FakeLLMServer, llm: OpenAICompatibleLLM
) -> None:
    server.tps = 50
    server.replies = [" ".join(["слово"] * 200)]
    got_two = asyncio.Event()

    async def consume() -> None:
        n = 0
        async for _ in llm.stream(request()):
            n += 1
            if n == 2:
                got_two.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_two.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await server.wait_disconnect(within=2.0)
    assert server.completions[0].disconnected


async def test_closing_the_generator_closes_the_connection(
    server: FakeLLMServer, llm: OpenAICompatibleLLM
) -> None:
    server.tps = 50
    server.replies = [" ".join(["word"] * 200)]
    async with aclosing(llm.stream(request())) as deltas:
        async for _ in deltas:
            break
    assert await server.wait_disconnect(within=2.0)
    # the client is still usable afterwards
    server.tps = 0
    assert await llm.complete(request("again")) == "You said: again"


async def test_cancelling_a_hung_request_closes_the_connection(
    server: FakeLLMServer, llm: OpenAICompatibleLLM
) -> None:
    server.mode = "hang"
    task = asyncio.create_task(llm.complete(request()))
    assert await server.wait_requests(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await server.wait_disconnect(within=2.0)


# ------------------------------------------------------------------------ factory


def test_make_llm_picks_the_demo_writer_without_a_base_url() -> None:
    llm = make_llm(load_settings())
    assert isinstance(llm, DemoWriter)
    assert llm.is_demo is True
    assert llm.label == "offline demo writer (no LLM configured)"


async def test_make_llm_builds_the_api_client_from_settings(server: FakeLLMServer) -> None:
    settings = load_settings(
        llm_base_url=server.base_url, llm_api_key=KEY, llm_model="m-1", llm_retries=0
    )
    llm = make_llm(settings)
    try:
        assert isinstance(llm, OpenAICompatibleLLM)
        assert llm.label == f"openai-compatible m-1 @ {server.base_url}"
        assert llm.retries == 0
        assert await llm.complete(request()) == "You said: Привет"
    finally:
        await llm.aclose()
    assert server.completions[0].headers["Authorization"] == f"Bearer {KEY}"
    assert server.completions[0].json["model"] == "m-1"


@pytest.mark.slow
def test_server_runs_as_a_subprocess() -> None:
    async def talk(base_url: str) -> str:
        c = OpenAICompatibleLLM(base_url=base_url, api_key=KEY, model="m", timeout=5)
        try:
            return "".join([d async for d in c.stream(request("hi"))])
        finally:
            await c.aclose()

    with run_subprocess("--reply", "Fixed reply, twice as nice.", "--tps", "1000") as (_, url):
        assert asyncio.run(talk(url)) == "Fixed reply, twice as nice."


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::ResourceWarning")
def test_one_client_serves_several_event_loops() -> None:
    """The CLI and the tests run one client from several `asyncio.run` loops in turn. (An idle
    keep-alive connection of a loop that is closed already can only be left to the garbage
    collector, which warns about it: ignored here.)"""
    with run_subprocess("--reply", "Same client, new loop.", "--tps", "1000") as (_, url):
        c = OpenAICompatibleLLM(base_url=url, api_key=KEY, model="m", timeout=5, trust_env=False)

        async def talk() -> str:
            return "".join([d async for d in c.stream(request("hi"))])

        assert asyncio.run(talk()) == "Same client, new loop."
        assert asyncio.run(talk()) == "Same client, new loop."
        assert asyncio.run(c.complete(request("hi"))) == "Same client, new loop."
        asyncio.run(c.aclose())
        gc.collect()


# ---------------------------------------------------------------------- demo writer

CARD_RU = {
    "name": "Алиса",
    "personality": "игривая, дерзкая, тёплая",
    "scenario": "Вечер в маленьком кафе.",
    "first_mes": "*Алиса машет рукой из-за столика* Эй! Я здесь! Садись скорее.",
    "mes_example": (
        "<START>\n{{user}}: Привет\n"
        "{{char}}: *поправляет волосы* Ну наконец-то, {{user}}! Я уже заказала нам какао.\n"
        "{{user}}: Как дела?\n"
        "{{char}}: Лучше всех, раз ты пришёл. Садись ближе."
    ),
}
CARD_EN = {
    "name": "Mira",
    "personality": "shy, gentle bookworm",
    "first_mes": "*Mira looks up from her book* Oh! Hello there.",
    "alternate_greetings": ["*Mira waves shyly* Hi... you came."],
    "mes_example": (
        "{{user}}: hi\n{{char}}: Oh, h-hi {{user}}... I didn't expect you today.\n"
        "{{char}}: *fidgets with her sleeve* Do you want some tea? I brewed jasmine."
    ),
}


def demo_request(lang: str, card: dict[str, Any], *user: str, **kw: Any) -> LLMRequest:
    messages = [{"role": "system", "content": "You are the character."}]
    for i, text in enumerate(user):
        if i:
            messages.append({"role": "assistant", "content": "…"})
        messages.append({"role": "user", "content": text})
    return LLMRequest(messages=messages, persona=card, language=lang, **kw)


def has_cyrillic(text: str) -> bool:
    return any("а" <= ch.lower() <= "я" or ch in "ёЁ" for ch in text)


async def test_demo_writer_is_deterministic_and_streams_words() -> None:
    writer = DemoWriter(delay=0)
    req = demo_request("ru", CARD_RU, "Привет!", "Я сегодня гулял по набережной")
    first = await collect(writer, req)
    second = await collect(writer, req)
    assert first == second
    assert len(first) > 3
    assert "".join(first) == await writer.complete(req)
    other = demo_request("ru", CARD_RU, "Привет!", "А ты любишь дождь?")
    replies = {await writer.complete(r) for r in (req, other)}
    assert len(replies) == 2


async def test_demo_writer_speaks_russian_for_ru_and_english_for_en() -> None:
    writer = DemoWriter(delay=0)
    messages = ["Привет", "Как ты?", "Я сегодня ходил в кино", "Люблю тебя", "Пока"]
    for text in messages:
        reply = await writer.complete(demo_request("ru", CARD_RU, text))
        assert has_cyrillic(reply), reply
        assert "{{" not in reply and "[DEMO]" not in reply
        assert any(c in reply for c in ".!?…") and len(reply) < 400
    for text in ["Hello", "How are you?", "I went hiking in the mountains", "I love you", "bye"]:
        reply = await writer.complete(demo_request("en", CARD_EN, text))
        assert not has_cyrillic(reply), reply
        assert "{{" not in reply
    # a Russian card in an English chat still answers in English
    assert not has_cyrillic(await writer.complete(demo_request("en", CARD_RU, "hi")))


async def test_demo_writer_uses_the_persona_voice() -> None:
    writer = DemoWriter(delay=0)
    opening = await writer.complete(demo_request("ru", CARD_RU))
    assert "Алиса" in opening  # the card's first message, {{char}} filled
    opening_en = await writer.complete(demo_request("en", {"name": "Nova"}))
    assert "Nova" in opening_en
    card_lines = ("какао", "Садись ближе", "поправляет волосы")
    replies = [
        await writer.complete(demo_request("ru", CARD_RU, f"Сообщение номер {i}"))
        for i in range(12)
    ]
    assert any(any(line in r for line in card_lines) for r in replies)
    assert all("{{user}}" not in r for r in replies)


async def test_demo_writer_reacts_to_the_message() -> None:
    writer = DemoWriter(delay=0)
    greeting = await writer.complete(demo_request("en", {"name": "Nova"}, "Hello!"))
    assert any(w in greeting for w in ("Hi", "Hey", "Hello"))
    echo = [await writer.complete(demo_request("ru", {}, f"Обожаю фантастику {n}")) for n in range(8)]
    assert any("фантастику" in r.lower() for r in echo)
    question = await writer.complete(demo_request("en", {"name": "Nova"}, "Do you like the sea?"))
    assert question and not question.startswith(("Hi", "Hey", "Hello"))


async def test_demo_writer_summary() -> None:
    writer = DemoWriter(delay=0)
    req = demo_request(
        "ru", CARD_RU, "Я люблю горы", "Особенно Алтай, был там прошлым летом", purpose="summary"
    )
    summary = await writer.complete(req)
    assert "Алтай" in summary and "горы" in summary
    assert "".join(await collect(writer, req)) == summary
    transcript = LLMRequest(
        messages=[
            {"role": "system", "content": "Summarize the conversation."},
            {"role": "user", "content": "Player: I have a cat named Tofu\nMira: Cute!\nPlayer: He hates rain"},
        ],
        persona=CARD_EN,
        language="en",
        purpose="summary",
    )
    summary_en = await writer.complete(transcript)
    assert "Tofu" in summary_en and "rain" in summary_en and "Cute" not in summary_en
    empty = await writer.complete(LLMRequest(messages=[], language="en", purpose="summary"))
    assert empty


async def test_demo_writer_delay_and_cancellation() -> None:
    writer = DemoWriter(delay=0.05)
    req = demo_request("en", CARD_EN, "Tell me a story about the sea")
    started = time.monotonic()
    async with aclosing(writer.stream(req)) as deltas:
        got = [d async for d in deltas]
    assert time.monotonic() - started >= 0.05 * (len(got) - 1) * 0.8
    assert DemoWriter().delay == 0.02


async def test_demo_writer_summary_of_an_unlabelled_transcript_keeps_both_sides() -> None:
    writer = DemoWriter(delay=0)
    transcript = "Аня: Я завтра лечу в Рим\nАлиса: Возьми меня с собой!\nАня: Договорились"
    req = LLMRequest(
        messages=[{"role": "system", "content": "Кратко перескажи"}, {"role": "user", "content": transcript}],
        persona={"name": "Alice"},  # the card's name differs from the transcript's label
        purpose="summary",
    )
    summary = await writer.complete(req)
    assert summary.startswith("Из недавнего разговора:")
    assert "Аня — «Я завтра лечу в Рим»" in summary and "Алиса — «Возьми меня с собой»" in summary
