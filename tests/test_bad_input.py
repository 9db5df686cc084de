"""Every endpoint answers 4xx, never 500, to bad input, and logs no traceback (issue 15, item 4).

The webhook server as `vitte run-bot` composes it (vitte.serve: the bot's webhook, /metrics
behind a token, the Web App mounted at VITTE_WEBAPP_MOUNT) runs on loopback; requests are
written as raw bytes on a socket, so headers can carry bytes no HTTP client would send.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.bot_harness import cards
from tests.support.initdata import auth_header, make_init_data
from tests.support.webapp import running_webapp
from vitte import serve
from vitte.catalog.seed import seed_cards
from vitte.config import load_settings
from vitte.core import Core
from vitte.localapi import LocalBotSession, make_local_bot

TOKEN = "42:LOCAL-TEST-TOKEN-0123456789abcdef"
SECRET = "s3cret_token-1"
METRICS_TOKEN = "m-token"
HOOK = "/tg/hook"
WEB_POSTS = ["/api/me/adult", "/api/dialogs", "/api/settings", "/api/me/delete", "/api/me/export", "/api/invoice"]
DEEP = b"[" * 30_000 + b"]" * 30_000  # under the Web App's 64 KB: the depth, not the size, is refused
DEEP_OBJECT = b'{"a":' * 10_000 + b"1" + b"}" * 10_000


class _Quiet(dict):  # type: ignore[type-arg]
    def __repr__(self) -> str:
        return f"<{', '.join(self)}>"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def raw_request(
    port: int, method: bytes, path: bytes, headers: list[tuple[bytes, bytes]] = (), body: bytes = b""  # type: ignore[assignment]
) -> tuple[int, bytes]:
    """One HTTP/1.1 request written byte for byte; (status, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: %d\r\n" % (
            method,
            path,
            len(body),
        )
        head += b"".join(name + b": " + value + b"\r\n" for name, value in headers)
        writer.write(head + b"\r\n" + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()
    status_line, _, rest = data.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split(b" ")[1]), payload


def _no_errors(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [(r.name, r.levelname, r.getMessage()) for r in bad]


@pytest.fixture
async def server(sqlite_url: str) -> AsyncIterator[_Quiet]:
    port = _free_port()
    settings = load_settings(
        database_url=sqlite_url,
        bot_token=TOKEN,
        webhook_url=f"https://bot.vitte.test{HOOK}",
        webhook_secret=SECRET,
        webhook_port=port,
        webapp_mount="/app",
        metrics_token=METRICS_TOKEN,
    )
    core = await Core.open(settings)
    try:
        await seed_cards(core.db, cards())
    finally:
        await core.close()
    session = LocalBotSession()
    bot = make_local_bot(session, token=TOKEN)
    stop = asyncio.Event()
    running = asyncio.create_task(serve.run_bot(settings, bot=bot, stop=stop))
    try:
        await session.wait_for("setWebhook", timeout=10)
        yield _Quiet(port=port, session=session)
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)


def _tma(user_id: int = 1001) -> bytes:
    return b"tma " + make_init_data(user_id, TOKEN).encode()


async def test_bad_header_bytes_are_401_not_500(server: _Quiet, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    port = server["port"]
    update = json.dumps({"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": 1, "type": "private"}}})
    for value in (b"\xff\xfe\xfd", b"s3cret_token-1\xc3", b"\xc3\x28", b"\xed\xa0\x80"):
        status, _ = await raw_request(
            port, b"POST", HOOK.encode(), [(b"X-Telegram-Bot-Api-Secret-Token", value)], update.encode()
        )
        assert status == 401, value
        status, _ = await raw_request(port, b"GET", b"/metrics", [(b"Authorization", b"Bearer " + value)])
        assert status == 401, value
    status, _ = await raw_request(port, b"GET", b"/metrics", [(b"Authorization", b"Bearer m-token")])
    assert status == 200
    assert server["session"].calls_of("sendMessage") == []
    _no_errors(caplog)


async def test_an_update_of_an_unknown_type_is_one_info_line(
    server: _Quiet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    body = json.dumps({"update_id": 4242, "future_kind_of_update": {"id": 7, "what": "new in Bot API 99"}})
    status, _ = await raw_request(
        server["port"], b"POST", HOOK.encode(), [(b"X-Telegram-Bot-Api-Secret-Token", SECRET.encode())], body.encode()
    )
    assert status == 200
    await asyncio.sleep(0.1)
    _no_errors(caplog)
    about = [r for r in caplog.records if "4242" in r.getMessage()]
    assert len(about) == 1 and about[0].levelno == logging.INFO, [(r.levelname, r.getMessage()) for r in about]
    assert "\n" not in about[0].getMessage() and "future_kind_of_update" in about[0].getMessage()


async def test_deep_json_is_400_everywhere(
    server: _Quiet, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    port = server["port"]
    for body in (DEEP, DEEP_OBJECT, b'{"language": ' + b"[" * 200 + b"]" * 200 + b"}"):
        status, _ = await raw_request(port, b"POST", HOOK.encode(), [(b"X-Telegram-Bot-Api-Secret-Token", SECRET.encode())], body)
        assert status == 400
        for path in WEB_POSTS:
            status, payload = await raw_request(
                port, b"POST", b"/app" + path.encode(), [(b"Authorization", _tma()), (b"Content-Type", b"application/json")], body
            )
            assert status == 400, (path, status, payload[:300])
            assert json.loads(payload)["code"] == "bad_json"
    # the Web App on its own (vitte serve-webapp) too
    async with running_webapp(load_settings(database_url=sqlite_url)) as h:
        for path in WEB_POSTS:
            resp = await h.client.post(path, data=DEEP, headers=auth_header(make_init_data(1001)))
            assert resp.status == 400, (path, resp.status)
    _no_errors(caplog)


async def test_the_mounted_web_app_keeps_its_64k_body_limit(server: _Quiet, caplog: pytest.LogCaptureFixture) -> None:
    big = json.dumps({"language": "ru", "pad": "x" * 100_000}).encode()
    status, payload = await raw_request(
        server["port"], b"POST", b"/app/api/settings", [(b"Authorization", _tma()), (b"Content-Type", b"application/json")], big
    )
    assert status == 413, (status, payload[:300])
    small = json.dumps({"language": "ru"}).encode()
    status, payload = await raw_request(
        server["port"], b"POST", b"/app/api/settings", [(b"Authorization", _tma()), (b"Content-Type", b"application/json")], small
    )
    assert status < 500, payload
    _no_errors(caplog)


# ---------------------------------------------------------------------- property: raw bytes

header_bytes = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
bodies = st.one_of(
    st.binary(max_size=300),
    st.just(DEEP),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3),
        max_leaves=20,
    ).map(lambda v: json.dumps(v).encode()),
    st.builds(
        lambda key, value: json.dumps({"update_id": 9_000_000, key: value}).encode(),
        st.sampled_from(["message", "callback_query", "pre_checkout_query", "something_new", "edited_message"]),
        st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=10), max_size=3),
    ),
)


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
async def test_raw_bytes_never_get_a_5xx(server: _Quiet, caplog: pytest.LogCaptureFixture, data: st.DataObject) -> None:
    caplog.set_level(logging.INFO)
    caplog.clear()
    target = data.draw(st.sampled_from(["hook", "metrics", "webapp"]))
    body = data.draw(bodies)
    headers: list[tuple[bytes, bytes]] = []
    if target == "hook":
        path = HOOK.encode()
        secret = data.draw(st.sampled_from([SECRET.encode(), b"\xff" + SECRET.encode()]) | header_bytes)
        headers.append((b"X-Telegram-Bot-Api-Secret-Token", secret))
        method = b"POST"
    elif target == "metrics":
        path, method, body = b"/metrics", b"GET", b""
        headers.append((b"Authorization", data.draw(header_bytes)))
    else:
        path = b"/app" + data.draw(st.sampled_from(WEB_POSTS)).encode()
        method = b"POST"
        auth = data.draw(st.sampled_from(["valid", "bytes"]))
        headers.append((b"Authorization", _tma() if auth == "valid" else b"tma " + data.draw(header_bytes)))
    if data.draw(st.booleans()):
        headers.append((data.draw(st.sampled_from([b"Content-Type", b"X-Anything", b"Accept-Language"])), data.draw(header_bytes)))
    status, payload = await raw_request(server["port"], method, path, headers, body)
    assert status < 500, (target, status, payload[:300])
    assert b"Traceback" not in payload
    _no_errors(caplog)
