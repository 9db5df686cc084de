"""Cards that play as written (issue 17, items 1, 2, 3, 7), on SQLite and PostgreSQL + Redis:
greetings become stories, the opening is stored and sent with its macros expanded (the LLM sees
the same text), the lorebook reaches the LLM, the Web App shows the player's own name, taglines
and descriptions never show prompt syntax. Cards are written here, in the tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from pydantic import SecretStr
from sqlalchemy import delete
from sqlmodel import col

from tests.support.initdata import auth_header, make_init_data
from tests.support.llm_server import FakeLLMServer
from tests.support.players import adult
from tests.support.webapp import WebAppHarness, running_webapp
from vitte.catalog.cards import default_fixtures_dir, parse_card, read_cards
from vitte.catalog.macros import Macros, expand
from vitte.catalog.seed import seed_cards
from vitte.catalog.shown import pick_seed
from vitte.config import Settings
from vitte.core import Core
from vitte.dialogs import lifecycle as lifecycle_module
from vitte.dialogs import reply as reply_module
from vitte.initiative.prefs import set_prefs
from vitte.models import Message

ANYA = 1001  # make_init_data's player is called "Аня"

WPP = '[Rika\'s Personality= "cheerful", "clumsy"]\n[Rika\'s body= "short", "red hair"]'


def card(**data: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "Rika",
        "description": "{{char}} is a student who lives next door to {{user}}. She loves the rain.",
        "scenario": "{{user}} forgot an umbrella; {{char}} did not.",
        "first_mes": "Oh my gosh, {{user}}! {{// greeting one}}*punches {{user}} in the arm*",
        "alternate_greetings": ["<USER>, is that you? It's {{char}}!", "  "],
        "group_only_greetings": ["Hi everyone!"],
        "creator_notes": "A cheerful neighbour for rainy days.\nMore notes here.",
        "character_book": {
            "name": "Town",
            "entries": [
                {"keys": ["umbrella"], "content": "Rika's umbrella is yellow, a gift from {{user}}.",
                 "enabled": True, "insertion_order": 10},
            ],
        },
    }  # fmt: skip
    base.update(data)
    return {"spec": "chara_card_v2", "spec_version": "2.0", "data": base}


# ---------------------------------------------------------------------- parsing: greetings, taglines


def test_greetings_become_stories() -> None:
    parsed = parse_card(card(), "rika.json")
    assert [s.id for s in parsed.stories] == ["rika-main", "rika-alt-1"]  # the blank one skipped
    first, alt = parsed.stories
    assert first.opening.startswith("Oh my gosh, {{user}}!") and alt.opening.startswith("<USER>, is that you?")
    assert first.title == "Oh my gosh, {{user}}!" and alt.title == "{{user}}, is that you?"
    assert first.premise == alt.premise == "{{user}} forgot an umbrella; {{char}} did not."
    assert not any("Hi everyone" in s.opening for s in parsed.stories)  # group_only_greetings ignored


def test_only_alternate_greetings_and_titles_from_the_vitte_extension() -> None:
    parsed = parse_card(
        card(first_mes="", alternate_greetings=["First one.", "Second one."],
             extensions={"vitte": {"greeting_titles": ["", "Rainy day", "Sunny day"]}}),
        "rika.json",
    )  # fmt: skip
    assert [(s.id, s.title, s.opening) for s in parsed.stories] == [
        ("rika-alt-1", "Rainy day", "First one."),
        ("rika-alt-2", "Sunny day", "Second one."),
    ]


def test_explicit_vitte_stories_still_win() -> None:
    story = {"id": "walk", "title": "A walk", "opening": "Let's go."}
    parsed = parse_card(card(extensions={"vitte": {"stories": [story]}}), "rika.json")
    assert [s.id for s in parsed.stories] == ["rika.walk"]


def test_shipped_personas_keep_their_stories_and_taglines() -> None:
    for parsed in read_cards(default_fixtures_dir()):
        vitte = parsed.raw.get("data", {}).get("extensions", {}).get("vitte", {})
        # their own stories (extensions.vitte.stories), not greetings
        assert len(parsed.stories) == len(vitte["stories"]) and all(s.id.startswith(f"{parsed.id}.") for s in parsed.stories)
        assert parsed.tagline == vitte["tagline"].strip()


@pytest.mark.parametrize(
    ("data", "tagline"),
    [
        ({}, "A cheerful neighbour for rainy days."),
        ({"creator_notes": "", "description": WPP}, ""),
        ({"creator_notes": "[Rika = cheerful]", "description": WPP}, ""),
        ({"creator_notes": "<p><b>Neighbour</b> for <i>rainy</i> days. https://x.example/a</p>"}, "Neighbour for rainy days."),
        ({"creator_notes": "", "description": "{{char}} is a student. She loves the rain."}, "Rika is a student."),
        ({"creator_notes": "", "description": "Name: Rika\nAge: 21\nLikes: rain"}, ""),
        # RisuAI's sample: a character sheet whose lines are sentences (joined, it would read as prose)
        (
            {
                "creator_notes": "",
                "description": "Character: Rika\nGender: Female\nAge: 21 years old.\nOccupation: College student.\n"
                "Secret: Rika has been in love with {{user}} for years.",
            },
            "",
        ),
        ({"creator_notes": "x " * 400}, None),
    ],
)
def test_taglines_never_show_prompt_syntax(data: dict[str, Any], tagline: str | None) -> None:
    parsed = parse_card(card(**data), "rika.json")
    if tagline is not None:
        assert parsed.tagline == tagline
    assert len(parsed.tagline) <= 140 and not any(c in parsed.tagline for c in "[]{}=<>")


# ---------------------------------------------------------------------- the engine and the LLM


@pytest.fixture
async def llm() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(replies=None, default_reply="*smiles*") as srv:
        yield srv


@pytest.fixture
async def core(backend_settings: Settings, llm: FakeLLMServer, redis_cleanup_if_any: None) -> AsyncIterator[Core]:
    settings = backend_settings.model_copy(
        update={"llm_base_url": llm.base_url, "llm_api_key": SecretStr("sk-test"), "llm_model": "m", "llm_retries": 1}
    )
    c = await Core.open(settings)
    await seed_cards(c.db, [parse_card(card(), "rika.json")])
    c.catalog.invalidate()
    await adult(c, ANYA, first_name="Аня", language_code="en")
    try:
        yield c
    finally:
        await c.close()


async def test_opening_is_stored_expanded_and_the_llm_sees_it_with_the_lore(core: Core, llm: FakeLLMServer) -> None:
    opening = await core.dialogs.choose(ANYA, "rika", "rika-main")
    assert opening.text == "Oh my gosh, Аня! *punches Аня in the arm*"
    stored = await core.dialogs.messages(opening.dialog.id)
    assert [m.text for m in stored] == [opening.text]

    await core.dialogs.reply(ANYA, "Where is my umbrella?")
    sent = llm.completions[-1].json["messages"]
    assert {"role": "assistant", "content": "Oh my gosh, Аня! *punches Аня in the arm*"} in sent
    system = sent[0]["content"]
    assert "<card_lore>\nRika's umbrella is yellow, a gift from Аня.\n</card_lore>" in system
    assert "{{" not in system and "cheerful neighbour" not in system  # creator notes never sent

    await core.dialogs.reply(ANYA, "Nice weather today.")  # the key is out of the scan depth now
    assert not any("umbrella is yellow" in m["content"] for m in llm.completions[-1].json["messages"])


async def test_a_repeated_choice_whose_opening_row_is_gone_gets_the_opening_expanded(core: Core) -> None:
    """A double click reuses the dialog the first click opened; when its first message row is
    missing, the opening is made again as the first click made it (macros expanded)."""
    first = await core.dialogs.choose(ANYA, "rika", "rika-main")
    async with core.db.session() as s:
        await s.execute(delete(Message).where(col(Message.dialog_id) == first.dialog.id))
        await s.commit()
    again = await core.dialogs.choose(ANYA, "rika", "rika-main")
    assert again.reused and again.dialog.id == first.dialog.id and again.message_id == 0
    assert again.text == first.text == "Oh my gosh, Аня! *punches Аня in the arm*"


async def test_pick_in_the_opening_is_seeded_by_the_dialog(core: Core) -> None:
    weather = "Weather: {{pick::rain::sun::snow::fog::wind::hail::mist::storm}}."
    await seed_cards(core.db, [parse_card(card(name="Pia", first_mes=weather), "pia.json")])
    core.catalog.invalidate()
    opening = await core.dialogs.choose(ANYA, "pia", "pia-main")
    assert opening.text == expand(weather, Macros("Pia", "Аня", seed=opening.dialog.id))


async def test_idle_duration_on_the_reply_path_is_the_time_since_the_players_previous_message(
    core: Core, llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """{{idle_duration}} (V3: the time since the player's previous message) is read from the
    cached messages' times: from the cache, from the database once the cache is gone, and
    again for a regenerated reply. The reply pipeline's clock is set, not waited for."""
    idle_card = card(name="Ida", description="{{char}} last heard from {{user}} {{idle_duration}} ago.")
    await seed_cards(core.db, [parse_card(idle_card, "ida.json")])
    core.catalog.invalidate()
    opening = await core.dialogs.choose(ANYA, "ida", "ida-main")
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    clock = [start]
    monkeypatch.setattr(reply_module, "utcnow", lambda: clock[0])

    def described() -> str:
        system = llm.completions[-1].json["messages"][0]["content"]
        return system.split("<card_description", 1)[1].split("</card_description>", 1)[0]

    await core.dialogs.reply(ANYA, "Hi!")  # no earlier message of the player's: nothing to measure
    assert "Ida last heard from Аня 0 seconds ago." in described()

    clock[0] = start + timedelta(minutes=17)
    await core.dialogs.reply(ANYA, "I'm back.")  # the earlier message's time from the cache
    assert "Ida last heard from Аня 17 minutes ago." in described()

    await core.cache.recent_drop(opening.dialog.id)  # now from the database's rows
    clock[0] = start + timedelta(minutes=17, hours=2)
    outcome = await core.dialogs.reply(ANYA, "Still here?")
    assert "Ida last heard from Аня 2 hours ago." in described()

    clock[0] = start + timedelta(days=3)  # 🔄 later: measured to the message it answers
    await core.dialogs.regenerate(ANYA, outcome.dialog_id)
    assert "Ida last heard from Аня 2 hours ago." in described()


async def test_time_macros_are_in_the_players_time_zone(
    core: Core, llm: FakeLLMServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """{{weekday}}, {{time}}, {{date}} in the opening and every reply's prompt are the player's
    local ones (the zone they or their browser set, issue 18): a Moscow player at 01:30 on a
    Monday reads Monday, while it is still Sunday 22:30 in UTC (this English player's default)."""
    clock = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)  # Sunday in UTC; Monday 01:30 in Moscow
    monkeypatch.setattr(reply_module, "utcnow", lambda: clock)
    monkeypatch.setattr(lifecycle_module, "utcnow", lambda: clock)
    tia = card(
        name="Tia", first_mes="Happy {{weekday}}, {{user}}!", character_book=None,
        description="{{char}} knows it is {{weekday}}, {{isodate}} {{isotime}}, where {{user}} lives.",
    )  # fmt: skip
    await seed_cards(core.db, [parse_card(tia, "tia.json")])
    core.catalog.invalidate()

    opening = await core.dialogs.choose(ANYA, "tia", "tia-main")  # no zone set: English, UTC
    assert opening.text == "Happy Sunday, Аня!"
    await core.dialogs.reply(ANYA, "Hi!")
    assert "Tia knows it is Sunday, 2026-03-01 22:30, where Аня lives." in llm.completions[-1].json["messages"][0]["content"]

    await set_prefs(core.db, core.settings, ANYA, timezone="Europe/Moscow")  # as the Web App's Settings
    opening = await core.dialogs.choose(ANYA, "tia", "tia-main", restart=True)
    assert opening.text == "Happy Monday, Аня!"
    await core.dialogs.reply(ANYA, "Hi again!")
    assert "Tia knows it is Monday, 2026-03-02 01:30, where Аня lives." in llm.completions[-1].json["messages"][0]["content"]


# UTC+14 and UTC-11: 25 hours apart, so their weekdays always differ (and one of them UTC's)
KIRITIMATI, PAGO_PAGO = "Pacific/Kiritimati", "Pacific/Pago_Pago"
BORIS = 2002


async def test_story_title_time_macros_are_in_the_players_time_zone(core: Core) -> None:
    """A title made from a greeting, with {{weekday}}, in the dialog's view (the bot's and the
    console's "now" line) reads the player's local weekday, as the opening and the prompt do."""
    tia = card(name="Tia", first_mes="Hi {{user}}!", alternate_greetings=[], character_book=None,
               extensions={"vitte": {"greeting_titles": ["{{weekday}} with {{user}}"]}})  # fmt: skip
    await seed_cards(core.db, [parse_card(tia, "tia.json")])
    core.catalog.invalidate()
    await adult(core, BORIS, first_name="Boris", language_code="en")
    titles: dict[int, str] = {}
    for who, zone in ((ANYA, KIRITIMATI), (BORIS, PAGO_PAGO)):
        await set_prefs(core.db, core.settings, who, timezone=zone)
        before = datetime.now(ZoneInfo(zone)).strftime("%A")
        titles[who] = (await core.dialogs.choose(who, "tia", "tia-main")).dialog.story_title
        after = datetime.now(ZoneInfo(zone)).strftime("%A")
        assert titles[who].split(" with ")[0] in {before, after}, (zone, titles[who])
        view = await core.dialogs.current(who)
        assert view is not None and view.story_title.split(" with ")[0] in {before, after}
    assert titles[ANYA].endswith(" with Аня") and titles[BORIS].endswith(" with Boris")
    assert titles[ANYA].split(" ")[0] != titles[BORIS].split(" ")[0]  # not both UTC's


async def test_an_alternate_greeting_opens_its_story(core: Core) -> None:
    opening = await core.dialogs.choose(ANYA, "rika", "rika-alt-1")
    assert opening.text == "Аня, is that you? It's Rika!"


# ---------------------------------------------------------------------- the Web App


@pytest.fixture
async def webapp(backend_settings: Settings, redis_cleanup_if_any: None) -> AsyncIterator[WebAppHarness]:
    async with running_webapp(backend_settings) as h:
        await seed_cards(h.core.db, [parse_card(card(), "rika.json"), parse_card(card(name="Skynet", description=WPP, creator_notes="", extensions={"vitte": {"id": "wpp"}}), "wpp.json")])  # fmt: skip
        h.core.catalog.invalidate()
        yield h


async def test_webapp_shows_the_players_name_and_no_prompt_syntax(webapp: WebAppHarness) -> None:
    headers = auth_header(make_init_data(ANYA))
    resp = await webapp.client.get("/api/personas/rika", headers=headers)
    body = await resp.json()
    assert body["description"] == "Rika is a student who lives next door to Аня. She loves the rain."
    assert [s["title"] for s in body["stories"]] == ["Oh my gosh, Аня!", "Аня, is that you?"]
    assert body["stories"][0]["premise"] == "Аня forgot an umbrella; Rika did not."
    assert body["tagline"] == "A cheerful neighbour for rainy days."

    wpp = await (await webapp.client.get("/api/personas/wpp", headers=headers)).json()
    assert wpp["description"] == ""  # W++ is for the model: not shown
    listing = await (await webapp.client.get("/api/personas", headers=headers)).json()
    tagline = next(p["tagline"] for p in listing["personas"] if p["id"] == "wpp")
    assert tagline and not any(c in tagline for c in "[]{}=")  # the catalogue's neutral line

    resp = await webapp.client.post("/api/me/adult", json={"adult": True}, headers=headers)
    assert resp.status == 200
    resp = await webapp.client.post("/api/dialogs", json={"persona_id": "rika", "story_id": "rika-alt-1"}, headers=headers)
    assert resp.status == 200, await resp.text()
    sent = await webapp.botapi.wait_for_messages(ANYA)
    assert sent[-1]["text"] == "Аня, is that you? It's Rika!"


async def test_webapp_current_story_title_has_the_players_name(webapp: WebAppHarness) -> None:
    """/api/me's story_title (the Web App's "now" line, the console's Web App header) is the
    title made from a greeting with {{user}} as the player's name, not the unnamed word."""
    headers = auth_header(make_init_data(ANYA))
    assert (await webapp.client.post("/api/me/adult", json={"adult": True}, headers=headers)).status == 200
    resp = await webapp.client.post("/api/dialogs", json={"persona_id": "rika", "story_id": "rika-main"}, headers=headers)
    assert resp.status == 200, await resp.text()
    me = await (await webapp.client.get("/api/me", headers=headers)).json()
    assert me["story_title"] == "Oh my gosh, Аня!"
    view = await webapp.core.dialogs.current(ANYA)  # what the console and the bot read too
    assert view is not None and view.story_title == "Oh my gosh, Аня!"


async def test_webapp_taglines_read_the_players_time_zone(webapp: WebAppHarness) -> None:
    """The persona list's and the persona page's tagline: {{weekday}} in the player's zone."""
    tia = card(name="Tia", creator_notes="", extensions={"vitte": {"id": "tia", "tagline": "A {{weekday}} walk"}})
    await seed_cards(webapp.core.db, [parse_card(tia, "tia.json")])
    webapp.core.catalog.invalidate()
    seen: dict[str, tuple[str, str]] = {}
    for who, zone in ((ANYA, KIRITIMATI), (BORIS, PAGO_PAGO)):
        await adult(webapp.core, who, first_name="Аня", language_code="en")
        await set_prefs(webapp.core.db, webapp.core.settings, who, timezone=zone)
        headers = auth_header(make_init_data(who, language_code="en"))
        before = datetime.now(ZoneInfo(zone)).strftime("%A")
        listed = await (await webapp.client.get("/api/personas", headers=headers)).json()
        page = await (await webapp.client.get("/api/personas/tia", headers=headers)).json()
        after = datetime.now(ZoneInfo(zone)).strftime("%A")
        (tagline,) = (p["tagline"] for p in listed["personas"] if p["id"] == "tia")
        assert {tagline, page["tagline"]} <= {f"A {before} walk", f"A {after} walk"}, (zone, tagline)
        seen[zone] = (tagline, page["tagline"])
    assert seen[KIRITIMATI][0] != seen[PAGO_PAGO][0] and seen[KIRITIMATI][1] != seen[PAGO_PAGO][1]


WEATHER = " ".join(f"{{{{pick::{'::'.join(f'w{i}{j}' for j in range(10))}}}}}" for i in range(6))


@pytest.fixture
async def webapp_llm(
    backend_settings: Settings, llm: FakeLLMServer, redis_cleanup_if_any: None
) -> AsyncIterator[WebAppHarness]:
    llm_settings = {"llm_base_url": llm.base_url, "llm_api_key": SecretStr("sk-test"), "llm_model": "m", "llm_retries": 1}
    async with running_webapp(backend_settings, seed=False, **llm_settings) as h:
        pia = card(name="Pia", scenario=f"Weather for {{{{user}}}}: {WEATHER}.", character_book=None)
        await seed_cards(h.core.db, [parse_card(pia, "pia.json")])
        h.core.catalog.invalidate()
        yield h


async def test_webapp_premise_picks_what_the_players_chat_picks(webapp_llm: WebAppHarness, llm: FakeLLMServer) -> None:
    """{{pick}} in a premise: the Web App shows the choice the chat's prompt makes (the dialog
    seeds it); before a dialog, a choice of the player's own, the same on every visit."""
    headers = auth_header(make_init_data(ANYA))
    scenario = f"Weather for {{{{user}}}}: {WEATHER}."

    async def premise() -> str:
        body = await (await webapp_llm.client.get("/api/personas/pia", headers=headers)).json()
        return str(body["stories"][0]["premise"])

    preview = await premise()
    assert preview == await premise() == expand(scenario, Macros("Pia", "Аня", seed=pick_seed(None, ANYA)))
    assert "{{" not in preview and preview != expand(scenario, Macros("Pia", "Аня"))  # not seed 0

    assert (await webapp_llm.client.post("/api/me/adult", json={"adult": True}, headers=headers)).status == 200
    resp = await webapp_llm.client.post("/api/dialogs", json={"persona_id": "pia", "story_id": "pia-main"}, headers=headers)
    assert resp.status == 200, await resp.text()
    dialog_id = (await (await webapp_llm.client.get("/api/personas/pia", headers=headers)).json())["dialog_id"]
    shown_now = await premise()
    assert shown_now == expand(scenario, Macros("Pia", "Аня", seed=dialog_id))

    await webapp_llm.core.dialogs.reply(ANYA, "What's the weather?")
    system = llm.completions[-1].json["messages"][0]["content"]
    assert f"<story>\n{shown_now}\n</story>" in system  # the chat's choice is the one shown
