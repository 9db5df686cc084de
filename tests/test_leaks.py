"""A Bot API reply that isn't JSON (a proxy's HTML error page, a cut body) is a Telegram error
like any other, and its body is never echoed: it can repeat the request's URL, `/bot<TOKEN>/…`
(issue 15, item 6). The Web App answers 502; `vitte payments refund` prints one line."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from typer.testing import CliRunner

from cli.main import app
from tests.support.bot_api_server import FakeBotAPI
from tests.support.initdata import TEST_BOT_TOKEN, auth_header, make_init_data
from tests.support.webapp import running_webapp
from vitte.config import load_settings
from vitte.core import Core

TOKEN = "42:LOCAL-TEST-TOKEN-0123456789abcdef"


def page(token: str, method: str) -> str:
    return f"<html><body><h1>502 Bad Gateway</h1>upstream failed for /bot{token}/{method}</body></html>\n" * 3


def _logged(caplog: pytest.LogCaptureFixture) -> str:
    """What Vitte logged (not the fake Bot API server's access log, which names its URLs)."""
    return "\n".join(
        r.getMessage() + (str(r.exc_info[1]) if r.exc_info else "")
        for r in caplog.records
        if r.name != "aiohttp.access"
    )


async def test_web_app_answers_502_and_never_echoes_the_body(
    sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with running_webapp(load_settings(database_url=sqlite_url)) as h:
        tma = auth_header(make_init_data(1001))
        assert (await h.client.post("/api/me/adult", json={"adult": True}, headers=tma)).status == 200
        h.botapi.not_json["createinvoicelink"] = (502, page(TEST_BOT_TOKEN, "createInvoiceLink"))
        resp = await h.client.post("/api/invoice", json={"plan_id": "premium"}, headers=tma)
        text = await resp.text()
        assert resp.status == 502 and (await resp.json())["code"] == "invoice_failed", text
        assert TEST_BOT_TOKEN not in text and "Bad Gateway" not in text
    logged = _logged(caplog)
    assert TEST_BOT_TOKEN not in logged and "Bad Gateway" not in logged
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], logged


@contextmanager
def bot_api_in_a_thread(token: str) -> Iterator[FakeBotAPI]:
    """FakeBotAPI on its own event loop, for a CLI command that runs asyncio.run itself."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    api = FakeBotAPI(token=token)
    asyncio.run_coroutine_threadsafe(api.start(), loop).result(10)
    try:
        yield api
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_cli_refund_is_one_line_without_the_body() -> None:
    async def pay() -> None:
        core = await Core.open(load_settings(), seed_if_empty=True)
        try:
            await core.players.seen(4343, first_name="Ann")
            await core.billing.record_payment(
                4343, telegram_payment_charge_id="ch-leak", total_amount=100, invoice_payload="whatever"
            )
        finally:
            await core.close()

    asyncio.run(pay())
    with bot_api_in_a_thread(TOKEN) as api:
        api.not_json["refundStarPayment"] = (502, page(TOKEN, "refundStarPayment"))
        env = {"VITTE_BOT_TOKEN": TOKEN, "VITTE_TELEGRAM_API_URL": api.base_url}
        res = CliRunner().invoke(app, ["payments", "refund", "ch-leak", "--yes"], env=env)
        assert [c.method for c in api.calls] == ["refundStarPayment"]
    assert res.exit_code == 1, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: refund failed"), res.output
    assert TOKEN not in res.output and "Bad Gateway" not in res.output and "<html>" not in res.output
    listed = CliRunner().invoke(app, ["payments", "list", "--json"])
    assert '"refunded_at": null' in listed.stdout  # nothing changed here


# ---------------------------------------------------------------------- persona pictures

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + b"\x00" * 64


async def test_persona_pictures_are_served_from_vitte_and_the_csp_allows_nothing_else(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestServer

    from vitte.catalog.cards import parse_card
    from vitte.catalog.seed import seed_cards
    from vitte.webapp import avatars

    hits: list[str] = []

    async def picture(request: web.Request) -> web.Response:
        hits.append(request.path)
        if request.path == "/eve.png":
            return web.Response(body=PNG, content_type="image/png")
        return web.Response(body=b"<svg onload=alert(1)></svg>", content_type="image/png")  # not a picture

    author = web.Application()
    author.router.add_get("/{name}", picture)
    server = TestServer(author, host="127.0.0.1")
    await server.start_server()
    try:
        async with running_webapp(load_settings(database_url=sqlite_url)) as h:
            cards = [
                parse_card(
                    {"spec": "chara_card_v2", "spec_version": "2.0", "data": {
                        "name": name, "first_mes": "hi",
                        "extensions": {"vitte": {"id": name.lower(), "avatar": str(server.make_url(f"/{name.lower()}.png"))}},
                    }},
                    f"{name}.json",
                )
                for name in ("Eve", "Mallory")
            ]
            await seed_cards(h.core.db, cards)
            h.core.catalog.invalidate()
            index = await h.client.get("/")
            csp = index.headers["Content-Security-Policy"]
            assert "img-src 'self' data:;" in csp + ";" and "https:" not in csp.split("img-src")[1].split(";")[0]
            assert "frame-ancestors https://web.telegram.org" in csp
            listed = await (await h.client.get("/api/personas")).json()
            urls = {p["id"]: p["avatar_url"] for p in listed["personas"]}
            for pid in ("eve", "mallory"):
                assert urls[pid].startswith("/avatars-remote/") and "127.0.0.1" not in urls[pid], urls[pid]
            detail = await (await h.client.get("/api/personas/eve")).text()
            assert str(server.port) not in detail
            # by default only public addresses are fetched: a card can't make the server read its network
            resp = await h.client.get(urls["eve"])
            assert resp.status == 404 and hits == []
            monkeypatch.setattr(avatars, "PUBLIC_ONLY", False)
            monkeypatch.setattr(avatars, "RETRY_FAILED_AFTER", 0.0)  # try again at once
            for _ in range(3):
                resp = await h.client.get(urls["eve"])
                assert resp.status == 200 and await resp.read() == PNG
                assert resp.content_type == "image/png" and "default-src 'none'" in resp.headers["Content-Security-Policy"]
            assert hits == ["/eve.png"]  # fetched once, then served from memory
            assert (await h.client.get(urls["mallory"])).status == 404  # not a picture: never served
            assert (await h.client.get("/avatars-remote/" + "0" * 32)).status == 404  # not a catalogue URL
    finally:
        await server.close()
