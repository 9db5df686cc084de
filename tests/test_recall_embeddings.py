"""Meaning-based recall (issue 16, item 1) against the loopback /v1/embeddings, on PostgreSQL and
SQLite: messages embedded off the reply's path, vectors stored, found by meaning where no word
matches, fused with the lexical ranking; a message not embedded yet is still found lexically."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlmodel import col
from typer.testing import CliRunner

from cli.main import app
from tests.support.llm_server import FakeLLMServer, run_subprocess
from tests.support.players import chatting
from vitte.config import Settings
from vitte.core import Core
from vitte.dialogs.recall import TAG
from vitte.models import ASSISTANT, USER, Dialog, Message, MessageVector

USER_ID = 6161
CHATTER = ["Сегодня был длинный день.", "Погода снова меняется.", "Я пью чай у окна.", "Расскажи что-нибудь."]
PLANTED = "У меня живёт кот Барсик, рыжий и наглый."


@pytest.fixture
async def server() -> AsyncIterator[FakeLLMServer]:
    async with FakeLLMServer(replies=None, default_reply="Конечно.") as srv:
        yield srv


def with_embeddings(settings: Settings, server: FakeLLMServer) -> Settings:
    return settings.model_copy(
        update={
            "llm_base_url": server.base_url, "llm_retries": 0, "llm_timeout": 2.0, "recent_messages": 6,
            "embeddings_model": "toy-embed", "memory_facts_every": 0,
        }
    )  # fmt: skip


async def setup(core: Core) -> int:
    await chatting(core, USER_ID, language_code="ru", first_name="Аня")
    async with core.db.session() as s:
        dialog_id = int(
            (
                await s.execute(select(col(Dialog.id)).where(col(Dialog.user_id) == USER_ID, col(Dialog.status) == "active"))
            ).scalar_one()
            or 0
        )
        texts = [PLANTED, *CHATTER * 5]
        s.add_all(Message(dialog_id=dialog_id, role=USER if i % 2 == 0 else ASSISTANT, text=t) for i, t in enumerate(texts))
        await s.commit()
    await core.cache.recent_drop(dialog_id)
    return dialog_id


def recalled_block(body: dict[str, Any]) -> str:
    for m in body["messages"]:
        found = re.search(rf"<{TAG}>\n(.*)\n</{TAG}>", m["content"], re.DOTALL)
        if found:
            return found.group(1)
    return ""


async def vectors(core: Core) -> int:
    async with core.db.session() as s:
        return int((await s.execute(select(func.count()).select_from(MessageVector))).scalar() or 0)


async def test_found_by_meaning_once_embedded_and_lexically_before(
    backend_settings: Settings, server: FakeLLMServer, redis_cleanup_if_any: None
) -> None:
    core = await Core.open(with_embeddings(backend_settings, server), seed_if_empty=True)
    try:
        dialog_id = await setup(core)
        # not embedded yet: the word form still finds it
        await core.dialogs.reply(USER_ID, "Помнишь моего кота?")
        assert "Барсик" in recalled_block(server.completions[-1].json)
        await core.dialogs.drain()  # the background embedding of the dialog
        assert await vectors(core) >= 20
        assert all(r.json["model"] == "toy-embed" for r in server.embeddings)
        # no word in common, the same meaning (the toy embedding's pet group)
        await core.dialogs.reply(USER_ID, "Как поживает мой питомец?")
        assert "Барсик" in recalled_block(server.completions[-1].json)
        found = await core.dialogs.replies.recall.find(dialog_id, "ru", "Как поживает мой питомец?", 2**62)
        top = next(r for r in found if "Барсик" in r.text)
        assert top.semantic is not None and top.lexical is None  # found by meaning only
        # a lexical and a meaning match fuse: both ranks
        planted = min(r.id for r in found if r.text == PLANTED)
        both = await core.dialogs.replies.recall.find(dialog_id, "ru", "кот и питомец", planted + 1)
        assert both[0].text == PLANTED and both[0].lexical == 1 and both[0].semantic == 1
    finally:
        await core.close()


async def test_an_embeddings_failure_costs_only_the_meaning(
    backend_settings: Settings, server: FakeLLMServer, redis_cleanup_if_any: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    core = await Core.open(with_embeddings(backend_settings, server), seed_if_empty=True)
    try:
        await setup(core)
        await core.dialogs.reply(USER_ID, "Привет")
        await core.dialogs.drain()
        embed = core.llm.embed  # type: ignore[attr-defined]

        async def broken(*a: Any, **kw: Any) -> Any:
            raise RuntimeError("embeddings down")

        monkeypatch.setattr(core.llm, "embed", broken)
        out = await core.dialogs.reply(USER_ID, "Помнишь моего кота?")
        assert out.text == "Конечно." and "Барсик" in recalled_block(server.completions[-1].json)
        monkeypatch.setattr(core.llm, "embed", embed)
    finally:
        await core.close()


def test_reindex_embeds_every_message_resumably(backend_settings: Settings, redis_cleanup_if_any: None) -> None:
    with run_subprocess() as (_proc, base_url):
        settings = backend_settings.model_copy(update={"llm_base_url": base_url, "embeddings_model": "toy-embed"})

        async def prepare() -> None:
            core = await Core.open(settings, seed_if_empty=True)
            try:
                await setup(core)
            finally:
                await core.close()

        asyncio.run(prepare())
        env = {
            "VITTE_DATABASE_URL": settings.database_url, "VITTE_LLM_BASE_URL": base_url,
            "VITTE_EMBEDDINGS_MODEL": "toy-embed", "VITTE_RECENT_MESSAGES": "6",
            **({"VITTE_REDIS_URL": settings.redis_url, "VITTE_REDIS_PREFIX": settings.redis_prefix} if settings.redis_url else {}),
        }  # fmt: skip
        runner = CliRunner()
        res = runner.invoke(app, ["memory", "reindex", "--embeddings", "--json"], env=env)
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout)["embedded"] == 22  # the opening and 21 messages
        res = runner.invoke(app, ["memory", "reindex", "--embeddings", "--json"], env=env)
        assert json.loads(res.stdout)["embedded"] == 0  # resumed: nothing left to embed
        res = runner.invoke(app, ["memory", "search", str(USER_ID), "мой питомец", "--json"], env=env)
        data = json.loads(res.stdout)
        assert data["embeddings"] == "toy-embed"
        assert any(r["text"] == PLANTED and r["semantic_rank"] for r in data["recalled"]), data
