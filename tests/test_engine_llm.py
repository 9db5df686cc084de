"""The reply pipeline against a real OpenAI-compatible server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select

from tests.support.llm_server import FakeLLMServer
from tests.support.players import adult
from vitte.catalog.cards import default_fixtures_dir, read_cards
from vitte.catalog.seed import seed_cards
from vitte.config import Settings, load_settings
from vitte.core import Core
from vitte.errors import ReplyFailed
from vitte.llm.base import LLMStreamCut, LLMUnavailable
from vitte.models import ASSISTANT, USER, Message

USER_ID = 2002


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(replies=None, default_reply="Я здесь, рядом с тобой.") as srv:
        yield srv


async def open_core(settings: Settings) -> Core:
    core = await Core.open(settings)
    if not await core.catalog.personas():
        await seed_cards(core.db, read_cards(default_fixtures_dir()))
        core.catalog.invalidate()
    await adult(core, USER_ID)
    return core


@pytest.fixture
async def core(server: FakeLLMServer, sqlite_url: str) -> AsyncIterator[Core]:
    settings = load_settings(
        database_url=sqlite_url,
        llm_base_url=server.base_url,
        llm_api_key="sk-test",
        llm_model="test-model",
        llm_retries=1,
        llm_timeout=1.0,
    )
    c = await open_core(settings)
    try:
        yield c
    finally:
        await c.close()


async def begin(core: Core) -> int:
    p = (await core.catalog.personas())[0]
    opening = await core.dialogs.choose(USER_ID, p.id, p.stories[0].id)
    return opening.dialog.id


async def test_user_text_is_stored_before_the_llm_is_called(core: Core, server: FakeLLMServer) -> None:
    dialog_id = await begin(core)
    seen_in_db: list[list[str]] = []

    def reply(body: dict) -> str:
        # runs inside the server while the engine waits for the answer
        import sqlite3

        path = core.settings.sqlite_path()
        with sqlite3.connect(str(path)) as conn:
            rows = conn.execute(
                "SELECT role, text FROM messages WHERE dialog_id=? ORDER BY id", (dialog_id,)
            ).fetchall()
        seen_in_db.append([f"{r}:{t}" for r, t in rows])
        return "Ответ персонажа."

    server.replies = reply
    out = await core.dialogs.reply(USER_ID, "Ты помнишь меня?")
    assert out.text == "Ответ персонажа."
    assert seen_in_db and "user:Ты помнишь меня?" in seen_in_db[0]
    body = server.completions[-1].json
    assert body["model"] == "test-model" and body["stream"] is True
    assert body["messages"][0]["role"] == "system"
    assert [m for m in body["messages"] if m["role"] == "user"][-1]["content"] == "Ты помнишь меня?"
    assert server.completions[-1].headers["Authorization"] == "Bearer sk-test"


async def test_llm_failure_keeps_the_message_and_retry_answers_it(core: Core, server: FakeLLMServer) -> None:
    dialog_id = await begin(core)
    server.mode = "500"
    with pytest.raises(ReplyFailed) as err:
        await core.dialogs.reply(USER_ID, "Алло?")
    assert isinstance(err.value.cause, LLMUnavailable)
    msgs = await core.dialogs.messages(dialog_id)
    assert [m.role for m in msgs] == [ASSISTANT, USER]  # the player's text kept, nothing half-written
    assert msgs[-1].text == "Алло?"
    server.mode = "normal"
    out = await core.dialogs.regenerate(USER_ID, dialog_id)
    assert out.text == "Я здесь, рядом с тобой." and not out.replaced
    msgs = await core.dialogs.messages(dialog_id)
    assert [m.role for m in msgs] == [ASSISTANT, USER, ASSISTANT]


async def test_cut_stream_leaves_no_half_reply(core: Core, server: FakeLLMServer) -> None:
    dialog_id = await begin(core)
    server.mode = "cut:2"
    with pytest.raises(ReplyFailed) as err:
        await core.dialogs.reply(USER_ID, "Расскажи что-нибудь")
    assert isinstance(err.value.cause, LLMStreamCut)
    async with core.db.session() as s:
        rows = list((await s.execute(select(Message).where(Message.dialog_id == dialog_id))).scalars())
    assert [(m.role, m.status) for m in rows] == [(ASSISTANT, "ok"), (USER, "ok")]


async def test_regenerate_keeps_the_old_reply_when_the_new_one_fails(
    core: Core, server: FakeLLMServer
) -> None:
    dialog_id = await begin(core)
    first = await core.dialogs.reply(USER_ID, "Привет")
    server.mode = "hang"
    with pytest.raises(ReplyFailed):
        await core.dialogs.regenerate(USER_ID, dialog_id)
    msgs = await core.dialogs.messages(dialog_id)
    assert msgs[-1].text == first.text


async def test_redis_down_degrades_to_the_database(server: FakeLLMServer, pg_url: str) -> None:
    settings = load_settings(
        database_url=pg_url,
        redis_url="redis://127.0.0.1:1/0",  # nothing listens there
        llm_base_url=server.base_url,
    )
    core = await open_core(settings)
    try:
        dialog_id = await begin(core)
        out = await core.dialogs.reply(USER_ID, "Ты здесь?")
        out2 = await core.dialogs.reply(USER_ID, "А сейчас?")
        assert out.text and out2.text
        msgs = await core.dialogs.messages(dialog_id)
        assert [m.role for m in msgs] == [ASSISTANT, USER, ASSISTANT, USER, ASSISTANT]
        # the second prompt was built from the database: it carries the first exchange
        contents = [m["content"] for m in server.completions[-1].json["messages"]]
        assert "Ты здесь?" in contents
    finally:
        await core.close()


async def test_prompt_carries_card_story_and_memory(core: Core, server: FakeLLMServer) -> None:
    p = (await core.catalog.personas())[0]
    story = p.stories[0]
    await adult(core, USER_ID, first_name="Аня")
    opening = await core.dialogs.choose(USER_ID, p.id, story.id)
    from sqlalchemy import update

    from vitte.models import Dialog

    async with core.db.session() as s:
        await s.execute(
            update(Dialog).where(Dialog.id == opening.dialog.id).values(summary="Аня любит сирень.")
        )
        await s.commit()
    await core.dialogs.reply(USER_ID, "Угадай, какие цветы я люблю?")
    system = server.completions[-1].json["messages"][0]["content"]
    assert "Аня любит сирень." in system
    assert story.premise[:40] in system
    assert "{{char}}" not in system and "{{user}}" not in system
    history = server.completions[-1].json["messages"][1:]
    assert history[0] == {"role": "assistant", "content": opening.text}


@pytest.mark.parametrize("cache", ["memory", "redis"])
async def test_the_cached_history_matches_the_stored_one_whatever_the_reply_did(
    server: FakeLLMServer, sqlite_url: str, cache: str, request: pytest.FixtureRequest
) -> None:
    """The player's message reaches the cache together with the reply (one round trip); when
    no reply is stored (LLM down, a cut stream) it goes alone."""
    import asyncio

    extra = {}
    if cache == "redis":
        extra = {
            "redis_url": request.getfixturevalue("redis_url"),
            "redis_prefix": request.getfixturevalue("redis_prefix"),
        }
    settings = load_settings(
        database_url=sqlite_url, llm_base_url=server.base_url, llm_retries=0, llm_timeout=1.0, **extra
    )
    core = await open_core(settings)
    try:
        dialog_id = await begin(core)

        async def check() -> None:
            cached = await core.cache.recent_get(dialog_id)
            assert cached is not None  # kept up to date, not dropped
            stored = await core.dialogs.messages(dialog_id)
            assert [(m.id, m.role, m.text) for m in cached] == [(m.id, m.role, m.text) for m in stored]

        await core.dialogs.reply(USER_ID, "Первое")
        await check()
        server.mode = "500"
        with pytest.raises(ReplyFailed):
            await core.dialogs.reply(USER_ID, "Второе")
        await check()
        server.mode = "cut:2"
        with pytest.raises(ReplyFailed):
            await core.dialogs.reply(USER_ID, "Третье")
        await check()
        server.mode = "normal"
        stop = asyncio.Event()
        stop.set()  # stopped at the first word: a stopped reply row
        out = await core.dialogs.reply(USER_ID, "Четвёртое", stop=stop)
        assert out.status == "stopped" and out.text
        await check()
        await core.dialogs.reply(USER_ID, "Пятое")
        await check()
        roles = [m.role for m in await core.dialogs.messages(dialog_id)]
        assert roles == [ASSISTANT, USER, ASSISTANT, USER, USER, USER, ASSISTANT, USER, ASSISTANT]
    finally:
        await core.close()
