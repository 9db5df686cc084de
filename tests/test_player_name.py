"""What the player asked to be called (issue 17: "the player's name: Telegram first name, or the
name they set"): POST /api/settings {"name"} over a real aiohttp server on loopback, SQLite and
PostgreSQL + Redis; the name is {{user}} in the Web App's card texts, the opening, the story's
title and the LLM's prompt; an empty name brings Telegram's back; bad names are refused with a
clear message and change nothing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from tests.support.initdata import OTHER_BOT_TOKEN, auth_header, make_init_data
from tests.support.llm_server import FakeLLMServer
from tests.support.webapp import WebAppHarness, running_webapp
from vitte.catalog.cards import parse_card
from vitte.catalog.seed import seed_cards
from vitte.config import Settings
from vitte.player_names import NAME_MAX, BadName, clean_name, stored_name

ANYA = 1001  # make_init_data's player is called "Аня"
BORIS = 2002

RIKA = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "Rika",
        "description": "{{char}} is a student who lives next door to {{user}}. She loves the rain.",
        "scenario": "{{user}} forgot an umbrella; {{char}} did not.",
        "first_mes": "Oh my gosh, {{user}}! *waves*",
        "creator_notes": "A cheerful neighbour for rainy days.",
    },
}


def init(user_id: int) -> dict[str, str]:
    return auth_header(make_init_data(user_id, first_name="Борис" if user_id == BORIS else "Аня"))


def test_clean_name_follows_the_prompts_name_rules() -> None:
    assert clean_name("  Анечка  ") == "Анечка"
    assert clean_name("") == clean_name("   ") == ""  # cleared: Telegram's name again
    assert clean_name("{{char}} <b>Ann</b>\n\u202e") == "char b Ann /b"  # no macros, tags, lines, controls
    assert clean_name("x" * NAME_MAX) == "x" * NAME_MAX
    with pytest.raises(BadName) as exc:
        clean_name("x" * (NAME_MAX + 1))
    assert exc.value.reason == "too_long" and str(NAME_MAX) in str(exc.value)
    with pytest.raises(BadName) as exc:
        clean_name("{{}} <>")
    assert exc.value.reason == "unusable"
    assert stored_name({"name": "{{user}}"}) == "user" and stored_name({"name": 5}) is None and stored_name({}) is None


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(replies=None, default_reply="*smiles*") as srv:
        yield srv


@pytest.fixture
async def webapp(
    backend_settings: Settings, llm: FakeLLMServer, redis_cleanup_if_any: None
) -> AsyncIterator[WebAppHarness]:
    llm_settings = {"llm_base_url": llm.base_url, "llm_api_key": SecretStr("sk-test"), "llm_model": "m", "llm_retries": 1}
    async with running_webapp(backend_settings, seed=False, **llm_settings) as h:
        await seed_cards(h.core.db, [parse_card(RIKA, "rika.json")])
        h.core.catalog.invalidate()
        yield h


async def settings(h: WebAppHarness, body: dict[str, Any], user_id: int = ANYA) -> tuple[int, dict[str, Any]]:
    resp = await h.client.post("/api/settings", json=body, headers=init(user_id))
    return resp.status, await resp.json()


async def rika_page(h: WebAppHarness, user_id: int = ANYA) -> dict[str, Any]:
    resp = await h.client.get("/api/personas/rika", headers=init(user_id))
    assert resp.status == 200, await resp.text()
    return dict(await resp.json())


async def test_the_name_the_player_sets_is_what_the_persona_calls_them(
    webapp: WebAppHarness, llm: FakeLLMServer
) -> None:
    headers = auth_header(make_init_data(ANYA))
    status, me = await settings(webapp, {"name": "  Анечка  "})
    assert status == 200, me
    assert (me["name"], me["first_name"]) == ("Анечка", "Аня")  # Telegram's name is kept beside it
    page = await rika_page(webapp)
    assert page["description"] == "Rika is a student who lives next door to Анечка. She loves the rain."
    assert page["stories"][0]["premise"] == "Анечка forgot an umbrella; Rika did not."
    assert (await rika_page(webapp, BORIS))["stories"][0]["premise"].startswith("Борис forgot")  # theirs
    assert (await webapp.client.post("/api/me/adult", json={"adult": True}, headers=headers)).status == 200
    resp = await webapp.client.post("/api/dialogs", json={"persona_id": "rika", "story_id": "rika-main"}, headers=headers)
    assert resp.status == 200, await resp.text()
    sent = await webapp.botapi.wait_for_messages(ANYA)
    assert sent[-1]["text"] == "Oh my gosh, Анечка! *waves*"
    me = await (await webapp.client.get("/api/me", headers=headers)).json()
    assert me["story_title"] == "Oh my gosh, Анечка!"

    await webapp.core.dialogs.reply(ANYA, "Hi!")
    system = llm.completions[-1].json["messages"][0]["content"]
    assert "lives next door to Анечка." in system and "Аня" not in system

    # empty: Telegram's first name again, from the next reply on
    status, me = await settings(webapp, {"name": ""})
    assert status == 200 and me["name"] == ""
    assert (await rika_page(webapp))["stories"][0]["premise"] == "Аня forgot an umbrella; Rika did not."
    await webapp.core.dialogs.reply(ANYA, "Me again.")
    system = llm.completions[-1].json["messages"][0]["content"]
    assert "lives next door to Аня." in system and "Анечка" not in system
    player = await webapp.core.players.get(ANYA)
    assert player.name is None and player.called == "Аня"


async def test_a_name_is_made_safe_and_bad_ones_are_refused(webapp: WebAppHarness) -> None:
    status, me = await settings(webapp, {"name": "{{char}} <b>Ann</b>"})
    assert status == 200 and me["name"] == "char b Ann /b"  # no macro, no tag: the prompt's name rules
    assert "lives next door to char b Ann /b." in (await rika_page(webapp))["description"]

    status, body = await settings(webapp, {"name": "Я" * (NAME_MAX + 1)})
    assert (status, body["code"]) == (400, "name_too_long")
    assert body["error"] == "Слишком длинное имя: не больше 40 символов." and NAME_MAX == 40
    status, body = await settings(webapp, {"name": "{{ }} «»"})
    assert (status, body["code"], body["error"]) == (400, "name_unusable", "В имени должны быть буквы или цифры.")
    status, body = await settings(webapp, {"name": 42})
    assert (status, body["code"]) == (400, "bad_request")
    status, body = await settings(webapp, {"name": ["Ann"], "style": "long"})
    assert (status, body["code"]) == (400, "bad_request")
    resp = await webapp.client.post(
        "/api/settings", json={"name": "Ann"}, headers=auth_header(make_init_data(ANYA, OTHER_BOT_TOKEN))
    )
    assert resp.status == 401
    player = await webapp.core.players.get(ANYA)
    assert (player.name, player.style) == ("char b Ann /b", "normal")  # the refusals changed nothing

    status, body = await settings(webapp, {"name": "Ann"}, user_id=BORIS)  # another player's own setting
    assert status == 200 and body["name"] == "Ann"
    assert (await webapp.core.players.get(ANYA)).name == "char b Ann /b"
    status, me = await settings(webapp, {"style": "short"})  # other settings keep the name
    assert status == 200 and (me["name"], me["style"]) == ("char b Ann /b", "short")
