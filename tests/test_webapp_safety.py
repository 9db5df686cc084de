"""Trust and safety (#8) in the Web App's API: "Download my data" (the bot sends the file into
the chat), deleting the data (no message rows, no cache keys), the age gate in English.
A real aiohttp server on loopback; SQLite and PostgreSQL + Redis."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from tests.support.initdata import auth_header, make_init_data
from tests.support.webapp import WebAppHarness, running_webapp
from vitte.config import Settings
from vitte.models import Dialog, Message, Payment
from vitte.telegram import messages as telegram_messages
from vitte.telegram.messages import export_caption

ANYA = 1001
BORIS = 2002
MILA_STORY = "mila.rainy-closing"


@pytest.fixture
def _clean_redis(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "postgres":
        request.getfixturevalue("redis_cleanup")


@pytest.fixture
async def webapp(backend_settings: Settings, _clean_redis: None) -> AsyncIterator[WebAppHarness]:
    async with running_webapp(backend_settings) as h:
        h.core.llm.delay = 0  # type: ignore[attr-defined]  # the demo writer, without pauses
        yield h


def tma(user_id: int = ANYA, **kw: Any) -> dict[str, str]:
    return auth_header(make_init_data(user_id, **kw))


async def body_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    assert resp.content_type == "application/json", await resp.text()
    return await resp.json()


async def chatting(h: WebAppHarness, user_id: int, text: str, **kw: Any) -> None:
    """The player confirms 18+, picks Mila in the Web App and says `text` (through the engine)."""
    resp = await h.client.post("/api/me/adult", json={"adult": True}, headers=tma(user_id, **kw))
    assert resp.status == 200, await resp.text()
    resp = await h.client.post(
        "/api/dialogs", json={"persona_id": "mila", "story_id": MILA_STORY}, headers=tma(user_id, **kw)
    )
    assert resp.status == 200, await resp.text()
    await h.core.dialogs.reply(user_id, text)


async def test_export_sends_the_file_to_the_chat(
    webapp: WebAppHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    h, c = webapp, webapp.client
    resp = await c.post("/api/me/export")
    assert resp.status == 401
    # nothing stored about a player yet: nothing to send (and nothing is created)
    resp = await c.post("/api/me/export", headers=tma(language_code="en"))
    body = await body_of(resp)
    assert (resp.status, body["code"], body["error"]) == (404, "no_data", "We have no data about you.")
    assert h.botapi.sent_documents() == []

    await chatting(h, ANYA, "секрет Ани: я люблю море")
    await chatting(h, BORIS, "Boris's secret: I collect stamps", first_name="Boris", language_code="en")
    body = await body_of(await c.post("/api/me/export", headers=tma()))
    assert body == {"sent": True, "filename": f"vitte-data-{ANYA}.json"}
    ((filename, raw, caption),) = h.botapi.sent_documents(ANYA)  # the bot sent it into Anya's chat
    assert filename == f"vitte-data-{ANYA}.json" and caption == export_caption("ru")
    data = json.loads(raw)
    assert data["profile"]["id"] == ANYA
    said = [m["text"] for d in data["dialogs"] for m in d["messages"] if m["role"] == "user"]
    assert said == ["секрет Ани: я люблю море"]
    assert "stamps" not in raw.decode() and str(BORIS) not in raw.decode()
    assert h.botapi.sent_documents(BORIS) == []

    body = await body_of(await c.post("/api/me/export", json={}, headers=tma(BORIS, language_code="en")))
    assert body["sent"] is True
    ((_, raw, caption),) = h.botapi.sent_documents(BORIS)
    assert caption == export_caption("en") and "stamps" in raw.decode() and "море" not in raw.decode()

    resp = await c.post("/api/me/export", data=b"please", headers=tma())
    assert resp.status == 400 and (await body_of(resp))["code"] == "bad_json"

    # Telegram refuses: the page says why, nothing pretends to be sent
    h.botapi.fail_next[ANYA] = (403, "Forbidden: bot was blocked by the user")
    resp = await c.post("/api/me/export", headers=tma())
    assert resp.status == 409 and (await body_of(resp))["code"] == "bot_blocked"
    h.botapi.fail_next[ANYA] = (400, "Bad Request: chat not found")
    resp = await c.post("/api/me/export", headers=tma())
    body = await body_of(resp)
    assert (resp.status, body["code"]) == (502, "export_failed")
    assert body["error"] == "Не удалось отправить файл в чат. Попробуйте ещё раз чуть позже."

    # a loop of clicks does not make the bot upload file after file
    tried = len(h.botapi.sent_documents(ANYA))  # the calls Telegram refused included
    monkeypatch.setattr(telegram_messages, "EXPORTS_PER_MINUTE", 1)
    monkeypatch.setattr(telegram_messages, "EXPORT_WINDOW", 3600.0)
    assert (await c.post("/api/me/export", headers=tma())).status == 200
    resp = await c.post("/api/me/export", headers=tma())
    assert resp.status == 429 and (await body_of(resp))["code"] == "rate_limited"
    assert int(resp.headers["Retry-After"]) >= 1
    assert len(h.botapi.sent_documents(ANYA)) == tried + 1


async def _redis_keys(settings: Settings) -> list[str]:
    import redis.asyncio as aioredis

    r = aioredis.from_url(settings.redis_url or "")
    try:
        return sorted([k.decode() async for k in r.scan_iter(match=settings.redis_prefix + "*")])
    finally:
        await r.aclose()


async def test_delete_leaves_no_messages_and_no_cache_keys(webapp: WebAppHarness, backend: str) -> None:
    h, core = webapp, webapp.core
    await chatting(h, ANYA, "раз")
    await chatting(h, BORIS, "два")
    await h.client.post("/api/me/export", headers=tma())  # an export counter: a key about Anya
    await core.cache.touch_online(ANYA)
    async with core.db.session() as s:
        s.add(Payment(telegram_payment_charge_id="ch-a", user_id=ANYA, amount=250, payload=f"premium:{ANYA}"))
        await s.commit()
    dialogs = [int(d.id or 0) for d in await h.dialogs_of(ANYA)]
    other = int((await h.dialogs_of(BORIS))[0].id or 0)

    def about_anya(keys: list[str]) -> list[str]:
        return [
            k
            for k in keys
            if any(k.endswith(f"recent:{d}") for d in dialogs)
            or k.endswith((f"online:{ANYA}", f"lock:{ANYA}"))
            or f":user:{ANYA}:" in k
        ]

    if backend == "postgres":
        assert about_anya(await _redis_keys(core.settings))

    body = await body_of(await h.client.post("/api/me/delete", json={"confirm": True}, headers=tma()))
    assert body == {"deleted": True, "dialogs": 1, "payments_anonymised": 1}
    async with core.db.session() as s:
        left = select(func.count()).select_from(Message).where(Message.dialog_id.in_(dialogs))  # type: ignore[attr-defined]
        assert (await s.execute(left)).scalar_one() == 0
        assert (
            await s.execute(select(func.count()).select_from(Dialog).where(Dialog.user_id == ANYA))
        ).scalar_one() == 0
        pay = (
            await s.execute(select(Payment).where(Payment.telegram_payment_charge_id == "ch-a"))
        ).scalar_one()
    assert (pay.user_id, pay.payload) == (None, "")
    assert not await core.cache.is_online(ANYA)
    if backend == "postgres":
        keys = await _redis_keys(core.settings)
        assert about_anya(keys) == []
        assert any(k.endswith(f"recent:{other}") for k in keys)
    # after the deletion there is nothing to export
    resp = await h.client.post("/api/me/export", headers=tma())
    assert resp.status == 404 and (await body_of(resp))["code"] == "no_data"


async def test_age_gate_in_english_asked_once(webapp: WebAppHarness) -> None:
    c = webapp.client
    en = tma(BORIS, language_code="en")
    payload = {"persona_id": "mila", "story_id": MILA_STORY}
    resp = await c.post("/api/dialogs", json=payload, headers=en)
    body = await body_of(resp)
    assert (resp.status, body["code"]) == (403, "age_unconfirmed")
    assert body["error"] == "Please confirm that you are 18 or older."
    me = await body_of(await c.get("/api/me", headers=en))
    assert me["adult_confirmed"] is False  # the page asks

    me = await body_of(await c.post("/api/me/adult", json={"adult": True}, headers=en))
    assert me["adult_confirmed"] is True and me["language"] == "en"
    first = (await webapp.core.players.get(BORIS)).adult_confirmed_at
    me = await body_of(await c.get("/api/me", headers=en))
    assert me["adult_confirmed"] is True  # confirmed once: the page does not ask again
    await c.post("/api/me/adult", json={"adult": True}, headers=en)
    assert (await webapp.core.players.get(BORIS)).adult_confirmed_at == first
    assert (await c.post("/api/dialogs", json=payload, headers=en)).status == 200

    me = await body_of(await c.post("/api/me/adult", json={"adult": False}, headers=en))
    assert me["adult_confirmed"] is False
    resp = await c.post("/api/dialogs", json={**payload, "restart": True}, headers=en)
    body = await body_of(resp)
    assert (resp.status, body["error"]) == (403, "Please confirm that you are 18 or older.")
