"""The Web App's memory API (issue 16, item 4) over a real aiohttp server on loopback, on
SQLite and PostgreSQL: list, add ("запомни: …"), edit, forget; the summary read-only; bad
input is a 4xx with one code; nobody reads or changes another player's memory (forged
initData, another bot's signature, a stale one, a foreign fact id)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.support.initdata import OTHER_BOT_TOKEN, auth_header, make_init_data
from tests.support.webapp import WebAppHarness, running_webapp
from vitte.config import Settings

ANYA = 1101
BORIS = 2202
MILA_STORY = "mila.rainy-closing"


@pytest.fixture
async def webapp(backend_settings: Settings, redis_cleanup_if_any: None) -> AsyncIterator[WebAppHarness]:
    async with running_webapp(backend_settings) as h:
        yield h


def tma(user_id: int = ANYA, **kw: Any) -> dict[str, str]:
    return auth_header(make_init_data(user_id, **kw))


async def chatting(h: WebAppHarness, user_id: int, language: str = "ru") -> int:
    resp = await h.client.post(
        "/api/me/adult", json={"adult": True}, headers=tma(user_id, language_code=language)
    )
    assert resp.status == 200, await resp.text()
    resp = await h.client.post(
        "/api/dialogs",
        json={"persona_id": "mila", "story_id": MILA_STORY},
        headers=tma(user_id, language_code=language),
    )
    assert resp.status == 200, await resp.text()
    return int((await resp.json())["dialog_id"])


async def test_list_add_edit_forget_and_the_summary(webapp: WebAppHarness) -> None:
    c = webapp.client
    resp = await c.get("/api/me/memory", headers=tma())
    body = await resp.json()
    assert resp.status == 200 and body["dialog_id"] is None and body["facts"] == []

    dialog_id = await chatting(webapp, ANYA)
    assert await webapp.core.dialogs.store.save_summary(dialog_id, 0, "Они встретились в кафе.", 0)
    resp = await c.post("/api/me/memory", json={"text": "Запомни: у меня кот Барсик"}, headers=tma())
    assert resp.status == 201, await resp.text()
    cat = (await resp.json())["fact"]
    assert (cat["text"], cat["origin"]) == ("у меня кот Барсик", "player")
    resp = await c.post("/api/me/memory", json={"text": "  Люблю грозу\n"}, headers=tma())
    storm = (await resp.json())["fact"]
    assert storm["text"] == "Люблю грозу"

    body = await (await c.get("/api/me/memory", headers=tma())).json()
    assert [f["text"] for f in body["facts"]] == ["Люблю грозу", "у меня кот Барсик"]  # newest first
    assert (
        body["summary"] == "Они встретились в кафе." and body["total"] == 2 and body["dialog_id"] == dialog_id
    )
    assert body["persona"] and body["max_chars"] == 300
    assert set(body["facts"][0]) == {"id", "kind", "text", "importance", "origin", "created_at", "updated_at"}

    resp = await c.patch(f"/api/me/memory/{cat['id']}", json={"text": "у меня кот Мурзик"}, headers=tma())
    assert resp.status == 200 and (await resp.json())["fact"]["text"] == "у меня кот Мурзик"
    resp = await c.delete(f"/api/me/memory/{storm['id']}", headers=tma())
    assert resp.status == 200 and (await resp.json()) == {"deleted": True}
    body = await (await c.get("/api/me/memory", headers=tma())).json()
    assert [f["text"] for f in body["facts"]] == ["у меня кот Мурзик"]
    # the summary is read-only: no route writes it
    resp = await c.patch("/api/me/memory", json={"summary": "x"}, headers=tma())
    assert resp.status == 405
    # the next reply knows the edited fact, not the forgotten one
    turn = await webapp.core.dialogs.reply(ANYA, "Привет")
    assert turn.text
    entry = webapp.core.dialogs.facts._cache[dialog_id]
    assert [f.text for f in entry.facts] == ["у меня кот Мурзик"]


async def test_bad_input_is_a_4xx_with_a_code(webapp: WebAppHarness) -> None:
    c = webapp.client
    resp = await c.post("/api/me/memory", json={"text": "x"}, headers=tma(language_code="en"))
    assert resp.status == 409 and (await resp.json())["code"] == "no_active_dialog"
    await chatting(webapp, ANYA, "en")
    for body, code in (
        ({"text": ""}, "fact_empty"),
        ({"text": "   "}, "fact_empty"),
        ({"text": 5}, "fact_empty"),
        ({}, "fact_empty"),
        ({"text": "я" * 301}, "fact_too_long"),
        ({"text": "\x00\x01\u202e"}, "fact_empty"),
    ):
        resp = await c.post("/api/me/memory", json=body, headers=tma(language_code="en"))
        answer = await resp.json()
        assert resp.status == 400 and answer["code"] == code, (body, answer)
    assert (await resp.json())["error"] == "Write what to remember."  # in the player's language
    resp = await c.post("/api/me/memory", data=b"[1,2", headers=tma())
    assert resp.status == 400 and (await resp.json())["code"] == "bad_json"
    for path in ("/api/me/memory/abc", "/api/me/memory/-1", "/api/me/memory/99999999999999999999999"):
        resp = await c.delete(path, headers=tma())
        assert resp.status == 404 and (await resp.json())["code"] == "not_found", path
    resp = await c.post("/api/me/memory", json={"text": "<script>alert(1)</script> & \u202e"}, headers=tma())
    assert resp.status == 201 and (await resp.json())["fact"]["text"] == "<script>alert(1)</script> &"


async def test_nobody_reaches_another_players_memory(webapp: WebAppHarness) -> None:
    c = webapp.client
    await chatting(webapp, ANYA)
    await chatting(webapp, BORIS)
    resp = await c.post("/api/me/memory", json={"text": "секрет Ани"}, headers=tma(ANYA))
    secret = (await resp.json())["fact"]

    # Boris's own initData with Anya's fact id: as if it did not exist
    body = await (await c.get("/api/me/memory", headers=tma(BORIS))).json()
    assert body["facts"] == []
    resp = await c.patch(f"/api/me/memory/{secret['id']}", json={"text": "взломано"}, headers=tma(BORIS))
    assert resp.status == 404
    resp = await c.delete(f"/api/me/memory/{secret['id']}", headers=tma(BORIS))
    assert resp.status == 404

    # forged: signed by another bot, edited after signing, stale, missing
    forged = make_init_data(ANYA, OTHER_BOT_TOKEN)
    tampered = make_init_data(BORIS).replace("%22id%22%3A2202", "%22id%22%3A1101")
    assert tampered != make_init_data(BORIS)
    old = make_init_data(ANYA, auth_date=int(time.time()) - 2 * 86400)
    for headers in (
        auth_header(forged),
        auth_header(tampered),
        auth_header(old),
        {},
        {"Authorization": "tma "},
    ):
        for method, path, json_body in (
            ("GET", "/api/me/memory", None),
            ("POST", "/api/me/memory", {"text": "чужое"}),
            ("PATCH", f"/api/me/memory/{secret['id']}", {"text": "чужое"}),
            ("DELETE", f"/api/me/memory/{secret['id']}", None),
        ):
            resp = await c.request(method, path, json=json_body, headers=headers)
            assert resp.status == 401, (method, path, headers, await resp.text())
            assert "секрет" not in await resp.text()

    body = await (await c.get("/api/me/memory", headers=tma(ANYA))).json()
    assert [f["text"] for f in body["facts"]] == ["секрет Ани"]
