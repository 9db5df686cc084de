"""vitte.prepared: the hot path's statements sent straight to the driver behave as through
SQLAlchemy — same values back (datetimes, JSON, NULLs), same errors, a dead connection
leaves the pool and the statement is answered on a new one — on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, exc, insert, select, text
from sqlalchemy import inspect as sa_inspect

from vitte.config import Settings
from vitte.db import Database, unavailable_as
from vitte.errors import StoreUnavailable
from vitte.models import User, model_from_row, table_of
from vitte.prepared import Prepared

USERS = table_of(User)
INSERT_USER = Prepared(
    insert(USERS)
    .values(
        id=bindparam("id"),
        first_name=bindparam("first_name"),
        settings=bindparam("settings", type_=USERS.c.settings.type),
        premium_until=bindparam("premium_until", type_=USERS.c.premium_until.type),
        created_at=bindparam("now", type_=USERS.c.created_at.type),
        last_seen_at=bindparam("now", type_=USERS.c.last_seen_at.type),
        language="ru",
        extra_replies=0,
    )
    .returning(USERS.c.id, USERS.c.created_at),
    "insert a player",
)
USER_ROW = Prepared(select(*USERS.c).where(USERS.c.id == bindparam("id")), "a player")


@pytest.fixture
async def db(backend_settings: Settings) -> AsyncIterator[Database]:
    database = Database(backend_settings)
    if backend_settings.is_sqlite:
        await database.ensure_ready()
    try:
        yield database
    finally:
        await database.dispose()


async def test_values_come_back_as_through_the_orm(db: Database) -> None:
    now = datetime(2026, 11, 25, 12, 30, 15, 123456, tzinfo=UTC)
    before = db.raw_statements[0]
    async with db.raw() as conn:
        returned = await conn.first(
            INSERT_USER,
            {
                "id": 7001,
                "first_name": "Аня",
                "settings": {"style": "long", "n": [1, 2]},
                "premium_until": None,
                "now": now,
            },
        )
        assert returned == (7001, now)
        row = await conn.mapping(USER_ROW, {"id": 7001})
        assert await conn.first(USER_ROW, {"id": 404}) is None
    assert db.raw_statements[0] - before == 3  # counted for `vitte bench`
    assert row is not None
    assert row["first_name"] == "Аня"
    assert row["settings"] == {"style": "long", "n": [1, 2]}
    assert row["premium_until"] is None
    assert row["created_at"] == now and row["created_at"].tzinfo is not None
    # the same row through the ORM: equal field by field
    async with db.session() as s:
        orm = await s.get(User, 7001)
    assert orm is not None
    assert {k: getattr(orm, k) for k in row} == row
    assert User(**row).settings == orm.settings


async def test_driver_errors_are_sqlalchemy_errors_and_nothing_half_written(db: Database) -> None:
    now = datetime.now(UTC)
    params = {"id": 7002, "first_name": "x", "settings": {}, "premium_until": None, "now": now}
    async with db.raw() as conn:
        await conn.rows(INSERT_USER, params)
        with pytest.raises(exc.IntegrityError):
            await conn.rows(INSERT_USER, {**params, "first_name": "twice"})
        # autocommit: the connection is still usable, the first row stayed
        row = await conn.mapping(USER_ROW, {"id": 7002})
    assert row is not None and row["first_name"] == "x"


async def test_a_non_autocommit_engine_is_refused(db: Database) -> None:
    from vitte.prepared import open_raw

    with pytest.raises(RuntimeError, match="AUTOCOMMIT"):
        async with open_raw(db.engine, [0]):
            pass


async def test_a_killed_connection_leaves_the_pool_and_the_statement_is_answered_on_a_new_one(
    pg_url: str,
) -> None:
    """The server ends the connection under a statement (admin_shutdown: it never ran): the
    connection leaves the pool and the statement is sent again on a fresh connection. (A failure
    that may come after a commit is not sent again: tests/test_db_restart.py.)"""
    from vitte.config import load_settings

    backend_pid = Prepared(select(text("pg_backend_pid()")), "pid", idempotent=True)
    db = Database(load_settings(database_url=pg_url))
    try:
        async with unavailable_as(StoreUnavailable), db.raw() as conn:
            pid = await conn.first(backend_pid)
            assert pid is not None
            async with db.engine.connect() as admin:  # another pooled connection
                await admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid[0]})
            again = await conn.first(backend_pid)  # no error: answered by a fresh connection
        assert again is not None and again[0] != pid[0]
        # it was invalidated, not handed out again
        async with db.raw() as conn:
            later = await conn.first(backend_pid)
        assert later is not None and later[0] != pid[0]
    finally:
        await db.dispose()


def test_a_model_built_from_a_row_is_the_model_the_constructor_builds() -> None:
    """`model_from_row` (the hot path's cheap build) gives the same instance as `Model(**row)`."""
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    row = {
        "id": 42,
        "username": "ann",
        "first_name": "Аня",
        "language": "ru",
        "active_persona_id": None,
        "settings": {"style": "long"},
        "premium_until": now,
        "adult_confirmed_at": now,
        "blocked_at": None,
        "blocked_reason": None,
        "subscription_state": "active",
        "extra_replies": 3,
        "extra_photos": 1,
        "extra_voice": 2,
        "created_at": now,
        "last_seen_at": now,
        "unreachable_at": None,  # issue 18: the player blocked the bot (a 403)
    }
    keys = tuple(c.key for c in table_of(User).c)
    assert set(keys) == set(row)  # every column: a new column must be added above
    built = model_from_row(User, keys, [row[k] for k in keys])
    made = User(**row)
    assert isinstance(built, User)
    assert built.model_dump() == made.model_dump() == row
    assert built.model_fields_set == made.model_fields_set
    state = sa_inspect(built)
    assert state.transient and not state.modified  # as loaded: nothing to flush
    built.language = "en"  # still a normal, tracked instance
    assert sa_inspect(built).modified and built.language == "en"
