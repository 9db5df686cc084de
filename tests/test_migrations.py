"""One Alembic history for PostgreSQL and SQLite; after `upgrade head` the models match."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from vitte.config import load_settings
from vitte.db import Database
from vitte.models import metadata

ROOT = Path(__file__).resolve().parents[1]


def _sync_url(url: str) -> str:
    return url.replace("+aiosqlite", "").replace("postgresql+psycopg", "postgresql+psycopg")


def _pending_diff(sync_url: str) -> list[object]:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = create_engine(sync_url)
    try:
        with engine.connect() as conn:
            ctx = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(ctx, metadata))
    finally:
        engine.dispose()


def test_alembic_cli_upgrade_head_then_models_match_on_postgres(pg_server: str) -> None:
    from tests.conftest import create_pg_database, drop_pg_database

    name = f"vitte_mig_{os.getpid()}"
    url = create_pg_database(pg_server, name)
    try:
        env = {**os.environ, "VITTE_DATABASE_URL": url}
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert _pending_diff(url) == []
        insp = inspect(create_engine(url))
        indexes = {i["name"]: i for i in insp.get_indexes("dialogs")}
        assert indexes["uq_dialogs_one_active_per_user"]["unique"]
        assert "ix_messages_dialog_id_id" in {i["name"] for i in insp.get_indexes("messages")}
    finally:
        drop_pg_database(pg_server, name)


async def test_sqlite_upgrades_itself_and_matches(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'fresh.sqlite3'}"
    db = Database(load_settings(database_url=url))
    try:
        assert await db.current_revision() is None
        await db.ensure_ready()
        assert await db.current_revision() == db.head_revision()
    finally:
        await db.dispose()
    assert _pending_diff(_sync_url(url)) == []


@pytest.mark.parametrize("which", ["sqlite", "postgres"])
def test_database_enforces_one_active_dialog(which: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("sqlite_url" if which == "sqlite" else "pg_url")
    if which == "sqlite":
        import asyncio

        db = Database(load_settings(database_url=url))
        asyncio.run(db.ensure_ready())
        asyncio.run(db.dispose())
    engine = create_engine(_sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO personas (id, name, tagline, description, personality, scenario, first_mes, mes_example, system_prompt, post_history_instructions, alternate_greetings, tags, creator, creator_notes, i18n, card, content_hash, sort_order, created_at, updated_at) VALUES ('p', 'P', '', '', '', '', '', '', '', '', '[]', '[]', '', '', '{}', '{}', '', 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO users (id, language, settings, created_at, last_seen_at) VALUES (7, 'ru', '{}', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO dialogs (user_id, persona_id, status, summary, summary_upto, created_at) VALUES (7, 'p', 'ended', '', 0, CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO dialogs (user_id, persona_id, status, summary, summary_upto, created_at) VALUES (7, 'p', 'active', '', 0, CURRENT_TIMESTAMP)"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO dialogs (user_id, persona_id, status, summary, summary_upto, created_at) VALUES (7, 'p', 'active', '', 0, CURRENT_TIMESTAMP)"))
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO payments (telegram_payment_charge_id, provider_payment_charge_id, user_id, amount, currency, payload, plan, is_recurring, is_first_recurring, created_at) VALUES ('c1', '', 7, 100, 'XTR', 'x', 'p', false, false, CURRENT_TIMESTAMP)"))
        with pytest.raises(IntegrityError), engine.begin() as conn:
            conn.execute(text("INSERT INTO payments (telegram_payment_charge_id, provider_payment_charge_id, user_id, amount, currency, payload, plan, is_recurring, is_first_recurring, created_at) VALUES ('c1', '', 7, 100, 'XTR', 'x', 'p', false, false, CURRENT_TIMESTAMP)"))
    finally:
        engine.dispose()
