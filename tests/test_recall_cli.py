"""`vitte memory search` and `vitte memory reindex` (issue 16, item 5) on PostgreSQL and SQLite."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from sqlalchemy import text
from typer.testing import CliRunner

from cli.main import app
from tests.support.players import chatting
from vitte.config import Settings
from vitte.core import Core
from vitte.models import ASSISTANT, USER, Message

runner = CliRunner()
USER_ID = 5151


def vitte(settings: Settings, *args: str) -> Any:
    env = {"VITTE_DATABASE_URL": settings.database_url, "VITTE_RECENT_MESSAGES": "6"}
    if settings.redis_url:
        env |= {"VITTE_REDIS_URL": settings.redis_url, "VITTE_REDIS_PREFIX": settings.redis_prefix}
    return runner.invoke(app, list(args), env=env)


async def _setup(settings: Settings, texts: list[str]) -> int:
    core = await Core.open(settings, seed_if_empty=True)
    try:
        await chatting(core, USER_ID, language_code="ru", first_name="Аня")
        view = await core.dialogs.latest(USER_ID)
        assert view is not None
        async with core.db.session() as s:
            s.add_all(
                Message(dialog_id=view.id, role=USER if i % 2 == 0 else ASSISTANT, text=t) for i, t in enumerate(texts)
            )
            await s.commit()
        return int(view.id)
    finally:
        await core.close()


CHATTER = ["Сегодня был длинный день.", "Погода снова меняется.", "Я пью чай у окна.", "Расскажи что-нибудь."]


def test_search_shows_what_recall_would_bring_with_scores(backend_settings: Settings, redis_cleanup_if_any: None) -> None:
    dialog_id = asyncio.run(_setup(backend_settings, ["Моего кота зовут Барсик.", *CHATTER * 5]))
    res = vitte(backend_settings, "memory", "search", str(USER_ID), "Как поживает мой кот?", "--json")
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout)
    assert data["dialog_id"] == dialog_id and data["language"] == "ru" and data["searched"] is True
    assert data["words"] == ["поживает", "кот"]
    top = data["recalled"][0]
    assert top["text"] == "Моего кота зовут Барсик." and top["score"] > 0 and top["lexical_rank"] == 1
    assert set(top) == {"id", "role", "text", "created_at", "score", "rank", "lexical_rank", "semantic_rank"}
    assert "<memory_recalled>" in data["block"] and "Барсик" in data["block"]
    # the table: the same, inert
    res = vitte(backend_settings, "memory", "search", str(USER_ID), "Как поживает мой кот?")
    assert res.exit_code == 0 and "Барсик" in res.stdout and "\x1b" not in res.stdout


def test_search_refusals(backend_settings: Settings, redis_cleanup_if_any: None) -> None:
    res = vitte(backend_settings, "memory", "search", "999", "кот")
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output
    res = vitte(backend_settings, "memory", "search", "999", "  ")
    assert res.exit_code == 2 and "empty" in res.output
    res = vitte(backend_settings, "memory", "reindex", "--embeddings")
    assert res.exit_code == 2 and "VITTE_EMBEDDINGS_MODEL" in res.output


def test_reindex_rebuilds_and_resumes(backend_settings: Settings, redis_cleanup_if_any: None) -> None:
    asyncio.run(_setup(backend_settings, ["Моего кота зовут Барсик.", *CHATTER * 5]))
    res = vitte(backend_settings, "memory", "reindex", "--json")
    assert res.exit_code == 0, res.output
    first = json.loads(res.stdout)
    assert first["dialogs"] == 1 and first["embedded"] == 0
    if backend_settings.is_sqlite:
        assert first == {"store": "sqlite", "dialogs": 1, "indexed": 22, "embedded": 0}
        again = json.loads(vitte(backend_settings, "memory", "reindex", "--json").stdout)
        assert again["indexed"] == 0  # resumed: everything is indexed already
        fresh = json.loads(vitte(backend_settings, "memory", "reindex", "--fresh", "--json").stdout)
        assert fresh["indexed"] == 22

        async def count() -> int:
            core = await Core.open(backend_settings)
            try:
                async with core.db.session() as s:
                    return int((await s.execute(text("SELECT count(*) FROM messages_fts"))).scalar() or 0)
            finally:
                await core.close()

        assert asyncio.run(count()) == 22
    else:
        assert first == {"store": "postgresql", "dialogs": 1, "indexed": 2, "embedded": 0}
    res = vitte(backend_settings, "memory", "reindex")
    assert res.exit_code == 0 and "dialogs" in res.stdout
    res = vitte(backend_settings, "memory", "search", str(USER_ID), "кот", "--json")
    assert json.loads(res.stdout)["recalled"][0]["text"] == "Моего кота зовут Барсик."
