"""The Web App's JSON API over a real aiohttp server on loopback, SQLite and PostgreSQL.

The bot side is an aiogram Bot pointed at a fake Bot API HTTP server (tests/support).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any
from urllib.parse import quote, urlencode

import aiohttp
import pytest
from aiogram.utils.web_app import check_webapp_signature
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr
from sqlalchemy import update

from tests.support.initdata import OTHER_BOT_TOKEN, TEST_BOT_TOKEN, auth_header, make_init_data
from tests.support.webapp import WebAppHarness, running_webapp
from vitte.bot.texts import t as bot_t
from vitte.config import ConfigError, Settings, load_settings
from vitte.errors import StoreUnavailable, UnknownUser
from vitte.models import ACTIVE, ENDED, User, utcnow
from vitte.webapp.auth import InitDataError, sign_init_data, validate_init_data

ANYA = 1001
BORIS = 2002
MILA_STORY = "mila.rainy-closing"
MILA_STORY_2 = "mila.white-nights"


@pytest.fixture
def _clean_redis(backend: str, request: pytest.FixtureRequest) -> None:
    if backend == "postgres":
        request.getfixturevalue("redis_cleanup")


@pytest.fixture
async def webapp(backend_settings: Settings, _clean_redis: None) -> AsyncIterator[WebAppHarness]:
    async with running_webapp(backend_settings) as h:
        yield h


@pytest.fixture
async def sqlite_webapp(sqlite_url: str) -> AsyncIterator[WebAppHarness]:
    async with running_webapp(load_settings(database_url=sqlite_url)) as h:
        yield h


def tma(user_id: int = ANYA, **kw: Any) -> dict[str, str]:
    return auth_header(make_init_data(user_id, **kw))


async def adult(h: WebAppHarness, user_id: int = ANYA, **kw: Any) -> None:
    """The player answers the age gate with "Мне есть 18"."""
    resp = await h.client.post("/api/me/adult", json={"adult": True}, headers=tma(user_id, **kw))
    assert resp.status == 200, await resp.text()


async def body_of(resp: aiohttp.ClientResponse) -> dict[str, Any]:
    assert resp.content_type == "application/json", await resp.text()
    return await resp.json()


# ---------------------------------------------------------------------- initData (unit)


def test_signature_matches_aiogram_and_telegram_recipe() -> None:
    init = make_init_data(ANYA, extra={"signature": "abc", "chat_type": "private"})
    assert check_webapp_signature(TEST_BOT_TOKEN, init)  # an independent implementation agrees
    user = validate_init_data(init, TEST_BOT_TOKEN, max_age=86400)
    assert user.id == ANYA and user.first_name == "Аня" and user.language_code == "ru"
    assert not check_webapp_signature(OTHER_BOT_TOKEN, init)
    with pytest.raises(InitDataError) as exc:
        validate_init_data(init, OTHER_BOT_TOKEN, max_age=86400)
    assert exc.value.code == "auth_invalid"


def test_data_check_string_is_sorted_and_excludes_only_hash() -> None:
    import hashlib
    import hmac

    fields = {"user": '{"id":1}', "auth_date": "1700000000", "query_id": "q", "signature": "s"}
    secret = hmac.new(b"WebAppData", TEST_BOT_TOKEN.encode(), hashlib.sha256).digest()
    check = "auth_date=1700000000\nquery_id=q\nsignature=s\nuser={\"id\":1}"
    assert sign_init_data(fields, TEST_BOT_TOKEN) == hmac.new(secret, check.encode(), hashlib.sha256).hexdigest()


@pytest.mark.parametrize(
    ("init_data", "code"),
    [
        ("", "auth_missing"),
        ("%%%", "auth_malformed"),
        ("user=1&auth_date=1", "auth_malformed"),  # no hash
        ("hash=zz&auth_date=1", "auth_malformed"),
        ("a=1&a=2&hash=" + "0" * 64, "auth_malformed"),
        ("x" * 9000, "auth_malformed"),
        ("auth_date=1&hash=" + "0" * 64, "auth_invalid"),
    ],
)
def test_malformed_init_data(init_data: str, code: str) -> None:
    with pytest.raises(InitDataError) as exc:
        validate_init_data(init_data, TEST_BOT_TOKEN, max_age=86400)
    assert exc.value.code == code


def _signed(fields: dict[str, str]) -> str:
    return urlencode({**fields, "hash": sign_init_data(fields, TEST_BOT_TOKEN)})


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"auth_date": "now"}, "auth_no_user"),
        ({"auth_date": "now", "user": "not json"}, "auth_malformed"),
        ({"auth_date": "now", "user": "[1]"}, "auth_malformed"),
        ({"auth_date": "now", "user": '{"first_name":"x"}'}, "auth_malformed"),
        ({"auth_date": "now", "user": '{"id":"1001"}'}, "auth_malformed"),
        ({"auth_date": "now", "user": '{"id":true}'}, "auth_malformed"),
        ({"auth_date": "now", "user": '{"id":-5}'}, "auth_malformed"),
        ({"auth_date": "soon", "user": '{"id":1}'}, "auth_malformed"),
        ({"user": '{"id":1}'}, "auth_malformed"),
    ],
)
def test_signed_but_unusable_init_data(fields: dict[str, str], code: str) -> None:
    fields = {k: (str(int(time.time())) if v == "now" else v) for k, v in fields.items()}
    with pytest.raises(InitDataError) as exc:
        validate_init_data(_signed(fields), TEST_BOT_TOKEN, max_age=86400)
    assert exc.value.code == code


def test_freshness_window() -> None:
    now = 1_800_000_000
    fresh = make_init_data(ANYA, auth_date=now - 86000)
    assert validate_init_data(fresh, TEST_BOT_TOKEN, max_age=86400, now=now).id == ANYA
    with pytest.raises(InitDataError) as exc:
        validate_init_data(make_init_data(ANYA, auth_date=now - 86401), TEST_BOT_TOKEN, max_age=86400, now=now)
    assert exc.value.code == "auth_expired"
    skew = make_init_data(ANYA, auth_date=now + 30)
    assert validate_init_data(skew, TEST_BOT_TOKEN, max_age=86400, now=now).id == ANYA
    with pytest.raises(InitDataError) as exc:
        validate_init_data(make_init_data(ANYA, auth_date=now + 3600), TEST_BOT_TOKEN, max_age=86400, now=now)
    assert exc.value.code == "auth_future"


# ---------------------------------------------------------------------- 401 everywhere

USER_ENDPOINTS = [
    ("GET", "/api/me", None),
    ("POST", "/api/me/adult", {"adult": True}),
    ("POST", "/api/dialogs", {"persona_id": "mila", "story_id": MILA_STORY}),
    ("POST", "/api/settings", {"language": "en"}),
    ("POST", "/api/me/delete", {"confirm": True}),
    ("POST", "/api/invoice", {"plan_id": "premium"}),
]


def _bad_headers() -> dict[str, dict[str, str]]:
    good = make_init_data(ANYA)
    tampered = good.replace(quote('"id":1001'), quote('"id":2002'))
    assert tampered != good
    return {
        "missing": {},
        "empty": {"Authorization": ""},
        "wrong_scheme": {"Authorization": f"Bearer {good}"},
        "scheme_only": {"Authorization": "tma "},
        "forged": auth_header(make_init_data(ANYA, OTHER_BOT_TOKEN)),
        "tampered": auth_header(tampered),
        "expired": auth_header(make_init_data(ANYA, auth_date=int(time.time()) - 86400 - 60)),
        "future": auth_header(make_init_data(ANYA, auth_date=int(time.time()) + 7200)),
        "garbage": {"Authorization": "tma %zz&&==\u00e9"},
        "no_hash": {"Authorization": "tma user=%7B%22id%22%3A1001%7D&auth_date=1"},
    }


@pytest.mark.parametrize("case", list(_bad_headers()))
async def test_user_endpoints_reject_bad_init_data(webapp: WebAppHarness, case: str) -> None:
    headers = _bad_headers()[case]
    for method, path, payload in USER_ENDPOINTS:
        resp = await webapp.client.request(method, path, json=payload, headers=headers)
        assert resp.status == 401, (case, path, await resp.text())
        body = await body_of(resp)
        assert body["code"].startswith("auth_") and body["error"], body
        assert "Traceback" not in json.dumps(body)
    # nothing happened for anybody
    assert await webapp.dialogs_of(ANYA) == [] and await webapp.dialogs_of(BORIS) == []
    assert webapp.botapi.sent_messages() == []
    with pytest.raises(UnknownUser):
        await webapp.core.players.get(ANYA)


async def test_auth_codes_and_localized_messages(sqlite_webapp: WebAppHarness) -> None:
    c = sqlite_webapp.client
    resp = await c.get("/api/me")
    body = await body_of(resp)
    assert (resp.status, body["code"]) == (401, "auth_missing")
    assert body["error"] == "Откройте приложение из чата с ботом в Telegram."
    assert resp.headers["WWW-Authenticate"] == "tma"
    body = await body_of(await c.get("/api/me?lang=en"))
    assert body["error"] == "Open the app from the bot's chat in Telegram."
    body = await body_of(await c.get("/api/me", headers=auth_header(make_init_data(ANYA, OTHER_BOT_TOKEN))))
    assert body["code"] == "auth_invalid"
    expired = make_init_data(ANYA, auth_date=int(time.time()) - 90000)
    body = await body_of(await c.get("/api/me", headers=auth_header(expired)))
    assert body["code"] == "auth_expired"
    # a forged initData on a public read is refused too, not silently ignored
    resp = await c.get("/api/personas", headers=auth_header(make_init_data(ANYA, OTHER_BOT_TOKEN)))
    assert resp.status == 401


async def test_max_age_comes_from_settings(sqlite_url: str) -> None:
    async with running_webapp(load_settings(database_url=sqlite_url), webapp_auth_max_age=60) as h:
        old = make_init_data(ANYA, auth_date=int(time.time()) - 120)
        resp = await h.client.get("/api/me", headers=auth_header(old))
        assert resp.status == 401 and (await resp.json())["code"] == "auth_expired"
        resp = await h.client.get("/api/me", headers=tma())
        assert resp.status == 200


# ---------------------------------------------------------------------- public reads


async def test_personas_list_anonymous(webapp: WebAppHarness) -> None:
    resp = await webapp.client.get("/api/personas")
    assert resp.status == 200 and resp.headers["Cache-Control"] == "no-store"
    body = await body_of(resp)
    assert body["language"] == "ru" and body["authenticated"] is False
    personas = body["personas"]
    assert [p["id"] for p in personas] == ["mila", "lev", "vera", "mark", "kira"]
    mila = personas[0]
    assert set(mila) == {"id", "name", "tagline", "tags", "avatar_url", "portrait_url", "colors", "story_count", "current"}
    assert mila["name"] == "Мила" and mila["story_count"] == 3 and mila["current"] is False
    assert mila["avatar_url"] == "/avatars/mila.svg"
    assert all(c.startswith("#") and len(c) == 7 for c in mila["colors"]) and len(mila["colors"]) == 2
    assert "description" not in mila  # the list stays small
    assert len(await resp.read()) < 4000

    en = await body_of(await webapp.client.get("/api/personas?lang=en"))
    assert en["language"] == "en" and en["personas"][0]["name"] == "Mila"
    assert en["personas"][0]["tagline"].startswith("A barista")
    odd = await body_of(await webapp.client.get("/api/personas?lang=xx"))
    assert odd["language"] == "ru"


async def test_persona_details_anonymous(webapp: WebAppHarness) -> None:
    body = await body_of(await webapp.client.get("/api/personas/mila"))
    assert body["id"] == "mila" and body["description"].startswith("Миле 26")
    assert [s["id"] for s in body["stories"]] == [MILA_STORY, MILA_STORY_2, "mila.first-exhibition"]
    story = body["stories"][0]
    assert set(story) == {"id", "title", "premise", "current"}
    assert story["title"] == "Закрытие под дождём"
    assert "{{" not in story["premise"] and "Мила уже перевернула" in story["premise"]
    assert body["current_story_id"] is None and body["dialog_id"] is None
    en = await body_of(await webapp.client.get("/api/personas/mila?lang=en"))
    assert en["stories"][0]["title"] == "Closing time in the rain"
    assert "Mila has already flipped" in en["stories"][0]["premise"]


async def test_unknown_persona_is_404_json(webapp: WebAppHarness) -> None:
    for path in ("/api/personas/nobody", "/api/personas/" + "x" * 500, "/api/personas/%D0%BA%D1%82%D0%BE"):
        resp = await webapp.client.get(path)
        body = await body_of(resp)
        assert resp.status == 404 and body == {"error": "Такого персонажа нет.", "code": "unknown_persona"}
    body = await body_of(await webapp.client.get("/api/personas/nobody?lang=en"))
    assert body["error"] == "There is no such persona."


async def test_unknown_routes_and_methods_are_json(sqlite_webapp: WebAppHarness) -> None:
    c = sqlite_webapp.client
    resp = await c.get("/api/nothing-here")
    assert resp.status == 404 and (await body_of(resp))["code"] == "not_found"
    resp = await c.get("/api/dialogs")
    assert resp.status == 405 and (await body_of(resp))["code"] == "method_not_allowed"
    resp = await c.delete("/api/personas")
    assert resp.status == 405


# ---------------------------------------------------------------------- /api/me and dialogs


async def test_me_for_a_new_player_creates_nothing(webapp: WebAppHarness) -> None:
    resp = await webapp.client.get("/api/me", headers=tma(language_code="en-GB"))
    body = await body_of(resp)
    assert resp.status == 200
    assert body == {
        "id": ANYA,
        "first_name": "Аня",
        "name": "",  # what the player asked to be called: not set
        "registered": False,
        "language": "en",
        "style": "normal",
        "voice_replies": "never",
        "voice_available": False,
        "adult_confirmed": False,
        "persona_id": None,
        "persona_name": None,
        "story_id": None,
        "story_title": None,
        "dialog_id": None,
        "plan": "free",
        "plan_title": "Free",
        "is_premium": False,
        "premium_until": None,
        "renews": False,
        "subscription_state": None,
        "daily_limit": 30,
        "used_today": 0,
        "left_today": 30,
        "extra_replies": 0,
        "extra_photos": 0,
        "extra_voice": 0,
    }
    with pytest.raises(UnknownUser):
        await webapp.core.players.get(ANYA)


async def test_open_dialog_sends_the_opening(webapp: WebAppHarness) -> None:
    await adult(webapp)
    c = webapp.client
    resp = await c.post("/api/dialogs", json={"persona_id": "mila", "story_id": MILA_STORY}, headers=tma())
    body = await body_of(resp)
    assert resp.status == 200, body
    assert body["persona_id"] == "mila" and body["story_id"] == MILA_STORY
    assert body["reused"] is False and body["restarted"] is False and body["sent"] is True

    current = await webapp.core.dialogs.current(ANYA)
    assert current is not None and current.id == body["dialog_id"]
    assert (current.persona_id, current.story_id, current.status) == ("mila", MILA_STORY, ACTIVE)
    player = await webapp.core.players.get(ANYA)
    assert player.active_persona_id == "mila" and player.first_name == "Аня" and player.username == "anya"

    sent = webapp.botapi.sent_messages(ANYA)
    story = await webapp.core.catalog.story(MILA_STORY)
    assert len(sent) == 1 and sent[0]["text"] == story.opening
    assert all(call.token == TEST_BOT_TOKEN for call in webapp.botapi.calls)

    me = await body_of(await c.get("/api/me", headers=tma()))
    assert me["registered"] is True and me["dialog_id"] == body["dialog_id"]
    assert (me["persona_id"], me["persona_name"], me["story_id"]) == ("mila", "Мила", MILA_STORY)
    assert me["story_title"] == "Закрытие под дождём"
    listing = await body_of(await c.get("/api/personas", headers=tma()))
    assert listing["authenticated"] is True
    assert [p["id"] for p in listing["personas"] if p["current"]] == ["mila"]
    details = await body_of(await c.get("/api/personas/mila", headers=tma()))
    assert details["current"] is True and details["current_story_id"] == MILA_STORY
    assert details["dialog_id"] == body["dialog_id"]
    assert [s["current"] for s in details["stories"]] == [True, False, False]
    assert "Аня" in details["stories"][0]["premise"]  # {{user}} is the player
    other = await body_of(await c.get("/api/personas/lev", headers=tma()))
    assert other["current"] is False and other["current_story_id"] is None


async def test_double_click_opens_one_dialog(webapp: WebAppHarness) -> None:
    await adult(webapp)
    payload = {"persona_id": "mila", "story_id": MILA_STORY}
    first, second = await asyncio.gather(
        webapp.client.post("/api/dialogs", json=payload, headers=tma()),
        webapp.client.post("/api/dialogs", json=payload, headers=tma()),
    )
    a, b = await body_of(first), await body_of(second)
    assert first.status == second.status == 200
    assert a["dialog_id"] == b["dialog_id"]
    assert sorted([a["reused"], b["reused"]]) == [False, True]
    third = await body_of(await webapp.client.post("/api/dialogs", json=payload, headers=tma()))
    assert third["dialog_id"] == a["dialog_id"] and third["reused"] is True
    assert len(await webapp.dialogs_of(ANYA)) == 1
    assert len(webapp.botapi.sent_messages(ANYA)) == 1  # the opening is not repeated


async def test_refresh_and_continue_starts_over(webapp: WebAppHarness) -> None:
    await adult(webapp)
    c = webapp.client
    payload = {"persona_id": "mila", "story_id": MILA_STORY}
    first = await body_of(await c.post("/api/dialogs", json=payload, headers=tma()))
    await webapp.core.dialogs.reply(ANYA, "Привет!")
    resp = await c.post(
        "/api/dialogs", json={**payload, "restart": True, "dialog_id": first["dialog_id"]}, headers=tma()
    )
    second = await body_of(resp)
    assert resp.status == 200, second
    assert second["restarted"] is True and second["dialog_id"] != first["dialog_id"]
    dialogs = await webapp.dialogs_of(ANYA)
    assert [(d.status, d.story_id) for d in dialogs] == [(ENDED, MILA_STORY), (ACTIVE, MILA_STORY)]
    assert len(webapp.botapi.sent_messages(ANYA)) == 2
    # a stale page (the first dialog's id) cannot restart the new dialog
    resp = await c.post(
        "/api/dialogs", json={**payload, "restart": True, "dialog_id": first["dialog_id"]}, headers=tma()
    )
    assert resp.status == 409 and (await body_of(resp))["code"] == "stale_dialog"
    assert len(await webapp.dialogs_of(ANYA)) == 2


async def test_restart_of_another_story_is_a_plain_choice(webapp: WebAppHarness) -> None:
    await adult(webapp)
    c = webapp.client
    await c.post("/api/dialogs", json={"persona_id": "mila", "story_id": MILA_STORY}, headers=tma())
    body = await body_of(
        await c.post(
            "/api/dialogs", json={"persona_id": "lev", "story_id": "lev.perseids", "restart": True}, headers=tma()
        )
    )
    assert body["restarted"] is False and body["persona_id"] == "lev"
    dialogs = await webapp.dialogs_of(ANYA)
    assert [(d.persona_id, d.status) for d in dialogs] == [("mila", ENDED), ("lev", ACTIVE)]
    assert (await webapp.core.players.get(ANYA)).active_persona_id == "lev"


@pytest.mark.parametrize(
    ("raw", "status", "code"),
    [
        (b"{not json", 400, "bad_json"),
        (b"[1, 2]", 400, "bad_json"),
        (b'"mila"', 400, "bad_json"),
        (b"\xff\xfe", 400, "bad_json"),
        (b"{}", 400, "bad_request"),
        (b'{"persona_id": 5, "story_id": "mila.rainy-closing"}', 400, "bad_request"),
        (b'{"persona_id": "mila"}', 400, "bad_request"),
        (b'{"persona_id": "mila", "story_id": ["x"]}', 400, "bad_request"),
        (b'{"persona_id": "", "story_id": "x"}', 400, "bad_request"),
        (b'{"persona_id": "mila", "story_id": "mila.rainy-closing", "restart": "yes"}', 400, "bad_request"),
        (b'{"persona_id": "mila", "story_id": "mila.rainy-closing", "dialog_id": "1"}', 400, "bad_request"),
        (b'{"persona_id": "mila", "story_id": "mila.rainy-closing", "dialog_id": true}', 400, "bad_request"),
        (b'{"persona_id": "nobody", "story_id": "mila.rainy-closing"}', 404, "unknown_persona"),
        (b'{"persona_id": "mila", "story_id": "nope"}', 404, "unknown_story"),
        (b'{"persona_id": "mila", "story_id": "lev.perseids"}', 404, "unknown_story"),
    ],
)
async def test_open_dialog_rejects_bad_input(webapp: WebAppHarness, raw: bytes, status: int, code: str) -> None:
    await adult(webapp)
    headers = {**tma(), "Content-Type": "application/json"}
    resp = await webapp.client.post("/api/dialogs", data=raw, headers=headers)
    body = await body_of(resp)
    assert (resp.status, body["code"]) == (status, code), body
    assert body["error"]
    assert await webapp.dialogs_of(ANYA) == [] and webapp.botapi.sent_messages() == []


async def test_huge_body_is_413_json(sqlite_webapp: WebAppHarness) -> None:
    big = json.dumps({"persona_id": "mila", "story_id": MILA_STORY, "pad": "x" * 200_000})
    resp = await sqlite_webapp.client.post(
        "/api/dialogs", data=big, headers={**tma(), "Content-Type": "application/json"}
    )
    assert resp.status == 413 and (await body_of(resp))["code"] == "too_large"


async def test_blocked_bot_and_retry(webapp: WebAppHarness) -> None:
    await adult(webapp)
    c = webapp.client
    payload = {"persona_id": "mila", "story_id": MILA_STORY}
    webapp.botapi.fail_next[ANYA] = (403, "Forbidden: bot was blocked by the user")
    resp = await c.post("/api/dialogs", json=payload, headers=tma())
    body = await body_of(resp)
    assert resp.status == 409 and body["code"] == "bot_blocked" and "Старт" in body["error"]
    assert body["dialog_id"] == (await webapp.core.dialogs.current(ANYA)).id  # type: ignore[union-attr]
    # the player unblocks the bot and taps again: same dialog, and this time the opening arrives
    resp = await c.post("/api/dialogs", json=payload, headers=tma())
    again = await body_of(resp)
    assert resp.status == 200 and again["dialog_id"] == body["dialog_id"] and again["reused"] is True
    assert len(webapp.botapi.sent_messages(ANYA)) == 2  # one refused, one delivered
    webapp.botapi.fail_next[ANYA] = (400, "Bad Request: chat not found")
    resp = await c.post("/api/dialogs", json={"persona_id": "lev", "story_id": "lev.perseids"}, headers=tma())
    assert resp.status == 502 and (await body_of(resp))["code"] == "send_failed"


async def test_blocked_player_is_refused(sqlite_webapp: WebAppHarness) -> None:
    h = sqlite_webapp
    await h.core.players.seen(ANYA)
    async with h.core.db.session() as s:
        await s.execute(update(User).where(User.id == ANYA).values(blocked_at=utcnow(), blocked_reason="spam"))
        await s.commit()
    resp = await h.client.post("/api/dialogs", json={"persona_id": "mila", "story_id": MILA_STORY}, headers=tma())
    assert resp.status == 403 and (await body_of(resp))["code"] == "blocked"
    assert await h.dialogs_of(ANYA) == []


async def test_age_gate(webapp: WebAppHarness) -> None:
    c = webapp.client
    payload = {"persona_id": "mila", "story_id": MILA_STORY}
    resp = await c.post("/api/dialogs", json=payload, headers=tma())
    body = await body_of(resp)
    assert (resp.status, body["code"]) == (403, "age_unconfirmed")
    assert body["error"] == "Подтвердите, что вам уже исполнилось 18 лет."
    assert await webapp.dialogs_of(ANYA) == [] and webapp.botapi.sent_messages() == []
    for bad in ({}, {"adult": "yes"}, {"adult": 1}):
        resp = await c.post("/api/me/adult", json=bad, headers=tma())
        assert resp.status == 400, bad
    me = await body_of(await c.post("/api/me/adult", json={"adult": True}, headers=tma()))
    assert me["adult_confirmed"] is True and me["registered"] is True
    assert (await webapp.core.players.get(ANYA)).adult_confirmed_at is not None
    resp = await c.post("/api/dialogs", json=payload, headers=tma())
    assert resp.status == 200
    # "Мне нет 18" withdraws it: the engine refuses again
    me = await body_of(await c.post("/api/me/adult", json={"adult": False}, headers=tma()))
    assert me["adult_confirmed"] is False
    resp = await c.post("/api/dialogs", json={**payload, "restart": True}, headers=tma())
    assert resp.status == 403 and (await body_of(resp))["code"] == "age_unconfirmed"


# ---------------------------------------------------------------------- settings, delete, isolation


async def test_settings(webapp: WebAppHarness) -> None:
    c = webapp.client
    resp = await c.post("/api/settings", json={"language": "en", "style": "short"}, headers=tma())
    body = await body_of(resp)
    assert resp.status == 200 and body["language"] == "en" and body["style"] == "short"
    player = await webapp.core.players.get(ANYA)
    assert (player.language, player.style) == ("en", "short")
    body = await body_of(await c.post("/api/settings", json={"style": "long"}, headers=tma()))
    assert (body["language"], body["style"]) == ("en", "long")
    # the player's language now localizes everything, errors included
    listing = await body_of(await c.get("/api/personas", headers=tma()))
    assert listing["language"] == "en" and listing["personas"][0]["name"] == "Mila"
    bad = await c.post("/api/settings", json={"language": "de"}, headers=tma())
    assert bad.status == 400 and (await body_of(bad))["code"] == "bad_setting"
    for payload in ({"style": "epic"}, {"style": 3}, {}, {"language": None}, {"language": ["ru"]}):
        resp = await c.post("/api/settings", json=payload, headers=tma())
        assert resp.status == 400, payload
        assert (await body_of(resp))["code"] in {"bad_setting", "bad_request"}
    resp = await c.post("/api/settings", data=b"language=en", headers=tma())
    assert resp.status == 400 and (await body_of(resp))["code"] == "bad_json"
    player = await webapp.core.players.get(ANYA)
    assert (player.language, player.style) == ("en", "long")


async def test_delete_my_data(webapp: WebAppHarness) -> None:
    await adult(webapp)
    c = webapp.client
    await c.post("/api/dialogs", json={"persona_id": "mila", "story_id": MILA_STORY}, headers=tma())
    for payload in ({}, {"confirm": False}, {"confirm": "true"}, {"confirm": 1}):
        resp = await c.post("/api/me/delete", json=payload, headers=tma())
        assert resp.status == 400 and (await body_of(resp))["code"] == "confirm_required"
    assert len(await webapp.dialogs_of(ANYA)) == 1
    body = await body_of(await c.post("/api/me/delete", json={"confirm": True}, headers=tma()))
    assert body["deleted"] is True and body["dialogs"] == 1
    with pytest.raises(UnknownUser):
        await webapp.core.players.get(ANYA)
    assert await webapp.dialogs_of(ANYA) == []
    # reading afterwards does not bring the player back; deleting again is harmless
    me = await body_of(await c.get("/api/me", headers=tma()))
    assert me["registered"] is False and me["dialog_id"] is None
    body = await body_of(await c.post("/api/me/delete", json={"confirm": True}, headers=tma()))
    assert body == {"deleted": True, "dialogs": 0, "payments_anonymised": 0}


async def test_players_never_see_each_other(webapp: WebAppHarness) -> None:
    c = webapp.client
    await adult(webapp, ANYA)
    await adult(webapp, BORIS, first_name="Борис", username="boris")
    anya = await body_of(
        await c.post(
            "/api/dialogs",
            json={"persona_id": "mila", "story_id": MILA_STORY, "user_id": BORIS},  # user_id is ignored
            headers=tma(ANYA),
        )
    )
    await c.post("/api/settings", json={"style": "long"}, headers=tma(ANYA))
    boris = tma(BORIS, first_name="Борис", username="boris")
    me = await body_of(await c.get("/api/me", headers=boris))
    assert me["id"] == BORIS and me["dialog_id"] is None and me["persona_id"] is None and me["style"] == "normal"
    listing = await body_of(await c.get("/api/personas", headers=boris))
    assert not any(p["current"] for p in listing["personas"])
    details = await body_of(await c.get("/api/personas/mila", headers=boris))
    assert details["current_story_id"] is None and details["dialog_id"] is None
    assert "Борис" in details["stories"][0]["premise"] and "Аня" not in json.dumps(details)
    # Boris restarting "his" current story cannot touch Anya's dialog
    resp = await c.post(
        "/api/dialogs",
        json={"persona_id": "mila", "story_id": MILA_STORY, "restart": True, "dialog_id": anya["dialog_id"]},
        headers=boris,
    )
    assert resp.status == 200
    assert (await body_of(resp))["dialog_id"] != anya["dialog_id"]
    await c.post("/api/me/delete", json={"confirm": True}, headers=boris)
    still = await webapp.core.dialogs.current(ANYA)
    assert still is not None and still.id == anya["dialog_id"]
    assert (await webapp.core.players.get(ANYA)).style == "long"
    assert len(webapp.botapi.sent_messages(ANYA)) == 1 and len(webapp.botapi.sent_messages(BORIS)) == 1


# ---------------------------------------------------------------------- plans and invoice


async def test_plans_and_premium_status(webapp: WebAppHarness) -> None:
    c = webapp.client
    body = await body_of(await c.get("/api/plans"))
    assert body["current_plan"] is None and body["language"] == "ru"
    assert [p["id"] for p in body["plans"]] == ["free", "premium", "pack"]
    assert body["items"] == []  # photos and voice replies off: neither is sold one by one
    for plan in body["plans"]:
        assert {"id", "title", "price_stars", "period_days", "perks"} <= set(plan)
        assert isinstance(plan["price_stars"], int) and isinstance(plan["period_days"], int)
        assert plan["perks"] and all(isinstance(p, str) for p in plan["perks"])
    premium = body["plans"][1]
    assert (premium["title"], premium["price_stars"], premium["period_days"]) == ("Премиум", 250, 30)
    en = await body_of(await c.get("/api/plans?lang=en"))
    assert en["plans"][1]["title"] == "Premium"
    assert (await body_of(await c.get("/api/plans", headers=tma())))["current_plan"] == "free"

    await webapp.core.players.seen(ANYA)
    until = utcnow() + timedelta(days=30)
    async with webapp.core.db.session() as s:
        await s.execute(update(User).where(User.id == ANYA).values(premium_until=until))
        await s.commit()
    me = await body_of(await c.get("/api/me", headers=tma()))
    assert me["plan"] == "premium" and me["is_premium"] is True and me["plan_title"] == "Премиум"
    assert me["premium_until"].startswith(until.date().isoformat()) and me["premium_until"].endswith("Z")
    assert me["daily_limit"] == 1000
    assert (await body_of(await c.get("/api/plans", headers=tma())))["current_plan"] == "premium"


async def test_me_counts_the_photos_and_voice_replies_bought_and_not_spent(
    backend_settings: Settings, _clean_redis: None
) -> None:
    """Issue 19: /api/me carries extra_photos / extra_voice, bought for Stars (a recorded
    payment of the photo or voice item) and not spent yet (the allowance spends them past the
    day's), so the Web App can show them."""
    from vitte.media_allowance import PHOTO, VOICE

    on = {"llm_base_url": "http://127.0.0.1:9/v1", "image_model": "img", "tts_model": "tts-1",
          "free_daily_photos": 0, "free_daily_voice_replies": 0}  # fmt: skip
    async with running_webapp(backend_settings, **on) as h:
        c, billing = h.client, h.core.billing
        me = await body_of(await c.get("/api/me", headers=tma()))
        assert (me["extra_photos"], me["extra_voice"]) == (0, 0)  # a new player has bought nothing

        await h.core.players.seen(ANYA)
        for n, (kind, price) in enumerate(((PHOTO, 25), (PHOTO, 25), (PHOTO, 25), (VOICE, 10), (VOICE, 10))):
            _, created = await billing.record_payment(
                ANYA,
                telegram_payment_charge_id=f"charge-{n}",
                total_amount=price,
                invoice_payload=billing.make_invoice(ANYA, kind).payload,
            )
            assert created
        await billing.record_payment(  # Telegram delivers a payment twice: counted once
            ANYA, telegram_payment_charge_id="charge-0", total_amount=25,
            invoice_payload=billing.make_invoice(ANYA, PHOTO).payload,
        )  # fmt: skip
        me = await body_of(await c.get("/api/me", headers=tma()))
        assert (me["extra_photos"], me["extra_voice"]) == (3, 2)

        taken = await h.core.dialogs.allowance.take(ANYA, PHOTO)  # a photo sent: a bought one spent
        assert taken.bought
        me = await body_of(await c.get("/api/me", headers=tma()))
        assert (me["extra_photos"], me["extra_voice"]) == (2, 2)
        other = await body_of(await c.get("/api/me", headers=tma(BORIS)))
        assert (other["extra_photos"], other["extra_voice"]) == (0, 0)  # only the buyer's


async def test_invoice_links(webapp: WebAppHarness) -> None:
    c = webapp.client
    resp = await c.post("/api/invoice", json={"plan_id": "premium"})
    assert resp.status == 401
    resp = await c.post("/api/invoice", json={"plan_id": "premium"}, headers=tma())
    body = await body_of(resp)
    assert resp.status == 200 and body["plan_id"] == "premium"
    assert body["invoice_link"].startswith("https://t.me/$")
    call = [c for c in webapp.botapi.calls if c.method.lower() == "createinvoicelink"][-1]
    assert call.params["currency"] == "XTR" and call.params["subscription_period"] == "2592000"
    assert f":{ANYA}:" in call.params["payload"]  # signed for this player only
    body = await body_of(await c.post("/api/invoice", json={"plan_id": "pack"}, headers=tma()))
    assert body["plan_id"] == "pack"
    for payload, status, code in (
        ({"plan_id": "gold"}, 404, "unknown_plan"),
        ({"plan_id": "free"}, 400, "bad_request"),
        ({}, 400, "bad_request"),
        ({"plan_id": 7}, 400, "bad_request"),
    ):
        resp = await c.post("/api/invoice", json=payload, headers=tma())
        assert (resp.status, (await body_of(resp))["code"]) == (status, code), payload


# ---------------------------------------------------------------------- failures inside


async def test_store_unavailable_and_bugs_never_leak(
    sqlite_webapp: WebAppHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def down() -> None:
        raise StoreUnavailable("db down")

    monkeypatch.setattr(sqlite_webapp.core.catalog, "personas", down)
    resp = await sqlite_webapp.client.get("/api/personas")
    assert resp.status == 503 and (await body_of(resp))["code"] == "store_unavailable"

    async def bug() -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(sqlite_webapp.core.catalog, "personas", bug)
    resp = await sqlite_webapp.client.get("/api/personas")
    text = await resp.text()
    assert resp.status == 500 and "secret internals" not in text and "Traceback" not in text
    assert (await resp.json())["code"] == "internal"


# ---------------------------------------------------------------------- page and assets


async def test_page_static_and_avatars(sqlite_webapp: WebAppHarness) -> None:
    c = sqlite_webapp.client
    resp = await c.get("/")
    html = await resp.text()
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "static/app.js?v=" in html and "__VERSION__" not in html
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    resp = await c.get("/static/app.js")
    assert resp.status == 200 and "javascript" in resp.content_type
    assert "max-age" in resp.headers["Cache-Control"]
    resp = await c.get("/static/app.css")
    assert resp.status == 200 and resp.content_type == "text/css"
    raw = await c.get("/static/app.js", headers={"Accept-Encoding": "identity"}, auto_decompress=False)
    zipped = await c.get("/static/app.js", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert zipped.headers["Content-Encoding"] == "gzip"
    assert len(await zipped.read()) < len(await raw.read()) / 2
    again = await c.get("/static/app.js", headers={"If-None-Match": raw.headers["ETag"]})
    assert again.status == 304
    listing = await c.get("/api/personas", headers={"Accept-Encoding": "gzip"}, auto_decompress=False)
    assert listing.headers.get("Content-Encoding") == "gzip"
    resp = await c.get("/avatars/mila.svg")
    assert resp.status == 200 and resp.content_type == "image/svg+xml"
    assert resp.headers["Content-Security-Policy"].startswith("default-src 'none'")
    for bad in ("/avatars/nope.svg", "/avatars/../personas/mila.json", "/avatars/%2e%2e/personas/mila.json",
                "/static/../app.py", "/static/%2e%2e/app.py", "/avatars/"):
        resp = await c.get(bad)
        assert resp.status == 404, bad


async def test_mountable_under_a_prefix(sqlite_url: str) -> None:
    async with running_webapp(load_settings(database_url=sqlite_url)) as h:
        from vitte.webapp.app import make_webapp

        parent = web.Application()
        parent.add_subapp("/webapp/", make_webapp(h.core, h.bot))
        async with TestClient(TestServer(parent, host="127.0.0.1")) as client:
            assert (await client.get("/webapp/")).status == 200
            body = await body_of(await client.get("/webapp/api/personas"))
            assert body["personas"][0]["avatar_url"] == "/webapp/avatars/mila.svg"
            assert (await client.get("/webapp/avatars/mila.svg")).status == 200
            resp = await client.get("/webapp/api/me")
            assert resp.status == 401 and (await body_of(resp))["code"] == "auth_missing"
            resp = await client.post("/webapp/api/me/adult", json={"adult": True}, headers=tma())
            assert resp.status == 200
            resp = await client.post(
                "/webapp/api/dialogs", json={"persona_id": "mila", "story_id": MILA_STORY}, headers=tma()
            )
            assert resp.status == 200


# ---------------------------------------------------------------------- serve_webapp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_serve_webapp_needs_a_token(sqlite_url: str) -> None:
    from vitte.webapp.app import serve_webapp

    with pytest.raises(ConfigError, match="VITTE_BOT_TOKEN is not set"):
        await serve_webapp(load_settings(database_url=sqlite_url))
    with pytest.raises(ConfigError, match="malformed"):
        await serve_webapp(load_settings(database_url=sqlite_url, bot_token="not-a-token"))


async def test_serve_webapp_serves_until_stopped(sqlite_url: str) -> None:
    from vitte.webapp.app import serve_webapp

    port = _free_port()
    settings = load_settings(database_url=sqlite_url, bot_token=TEST_BOT_TOKEN, webapp_port=port)
    stop = asyncio.Event()
    task = asyncio.create_task(serve_webapp(settings, stop=stop))
    try:
        async with aiohttp.ClientSession() as http:
            for _ in range(100):
                try:
                    async with http.get(f"http://127.0.0.1:{port}/api/personas") as resp:
                        assert resp.status == 200
                        assert (await resp.json())["personas"] == []  # nothing seeded
                        break
                except aiohttp.ClientConnectorError:
                    await asyncio.sleep(0.05)
            else:
                pytest.fail("serve_webapp did not start")
            # the same port again: a clear configuration error, not a traceback
            clash = load_settings(database_url=sqlite_url, bot_token=TEST_BOT_TOKEN, webapp_port=port)
            with pytest.raises(ConfigError, match="VITTE_WEBAPP_PORT"):
                await serve_webapp(clash)
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    assert task.exception() is None


def test_settings_token_is_the_signing_key() -> None:
    settings = load_settings(bot_token=TEST_BOT_TOKEN)
    assert isinstance(settings.bot_token, SecretStr)
    assert settings.require_bot_token() == TEST_BOT_TOKEN


async def test_destructive_actions_need_a_fresh_initdata(webapp: WebAppHarness) -> None:
    """Deleting data and withdrawing the age confirmation want initData younger than
    VITTE_WEBAPP_FRESH_AUTH (600 s): a leaked initData is not a day-long bearer token for them."""
    await adult(webapp)
    c = webapp.client
    await c.post("/api/dialogs", json={"persona_id": "mila", "story_id": MILA_STORY}, headers=tma())
    old = tma(auth_date=int(time.time()) - 700)  # valid for reading (24 h), too old for these
    me = await body_of(await c.get("/api/me", headers=old))
    assert me["registered"] is True

    resp = await c.post("/api/me/delete", json={"confirm": True}, headers=old)
    body = await body_of(resp)
    # the deletion is confirmed in the chat instead: the bot asks there, with /settings' buttons
    assert resp.status == 401 and body["code"] == "auth_stale_chat"
    assert "чате с ботом" in body["error"]
    assert len(await webapp.dialogs_of(ANYA)) == 1  # nothing deleted
    await webapp.core.players.get(ANYA)
    asked = webapp.botapi.sent_messages(ANYA)[-1]
    assert asked["text"] == bot_t("ru", "delete_confirm")
    buttons = json.loads(asked["reply_markup"])["inline_keyboard"][0]
    assert [b["callback_data"] for b in buttons] == ["st:delete_yes:", "st:back:"]
    # a second and third stale try within five minutes: one more question, then only "reopen"
    assert (await body_of(await c.post("/api/me/delete", json={"confirm": True}, headers=old)))["code"] == "auth_stale_chat"
    third = await body_of(await c.post("/api/me/delete", json={"confirm": True}, headers=old))
    assert third["code"] == "auth_stale" and "бот" in third["error"]
    assert len(webapp.botapi.sent_messages(ANYA)) == 3  # the opening and two questions

    resp = await c.post("/api/me/adult", json={"adult": False}, headers=old)
    assert resp.status == 401 and (await body_of(resp))["code"] == "auth_stale"
    assert (await body_of(await c.get("/api/me", headers=tma())))["adult_confirmed"] is True  # kept
    # confirming is not destructive: an older initData may do it
    assert (await c.post("/api/me/adult", json={"adult": True}, headers=old)).status == 200

    body = await body_of(await c.post("/api/me/delete", json={"confirm": True}, headers=tma()))
    assert body["deleted"] is True and body["dialogs"] == 1


async def test_a_deletion_asked_with_a_stale_proof_is_done_by_the_chat_button(webapp: WebAppHarness) -> None:
    """The question the Web App had the bot send is answered in the chat: [Удалить мои данные]
    deletes the data through the bot's own /settings handler (the chat is Telegram's proof)."""
    from aiogram.types import Update

    from vitte.bot.factory import build_dispatcher

    await adult(webapp)
    c = webapp.client
    await c.post("/api/dialogs", json={"persona_id": "mila", "story_id": MILA_STORY}, headers=tma())
    old = tma(auth_date=int(time.time()) - 700)
    assert (await body_of(await c.post("/api/me/delete", json={"confirm": True}, headers=old)))["code"] == "auth_stale_chat"
    asked = webapp.botapi.sent_messages(ANYA)[-1]
    sender = {"id": ANYA, "is_bot": False, "first_name": "Anya", "language_code": "ru"}
    chat = {"id": ANYA, "type": "private"}
    press = Update.model_validate(
        {
            "update_id": 99,
            "callback_query": {
                "id": "cq1",
                "from": sender,
                "chat_instance": "ci",
                "data": "st:delete_yes:",
                "message": {"message_id": 77, "date": int(time.time()), "chat": chat, "text": asked["text"]},
            },
        }
    )
    await build_dispatcher(webapp.core).feed_update(webapp.bot, press)
    assert await webapp.dialogs_of(ANYA) == []
    with pytest.raises(UnknownUser):
        await webapp.core.players.get(ANYA)
