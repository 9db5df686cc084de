"""Shared fixtures: real PostgreSQL and Redis on loopback, SQLite files, settings.

Services: PostgreSQL at 127.0.0.1:5432 (trust auth) and Redis at 127.0.0.1:6379 (override
with VITTE_TEST_PG / VITTE_TEST_REDIS). Missing services skip the tests that need them,
except under CI=true, where a missing service is a failure.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from vitte.aiogram_models import install as _lazy_aiogram_models

_lazy_aiogram_models()  # as the bot, console and Web App processes do, before aiogram is imported

from tests.support.redis_keys import drop_redis_prefix  # noqa: E402
from vitte.config import Settings, load_settings  # noqa: E402

PG_ADMIN_URL = os.environ.get("VITTE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("VITTE_TEST_REDIS", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _need(service: str, host: str, port: int) -> None:
    if not _reachable(host, port):
        msg = f"{service} is not reachable at {host}:{port}"
        if IN_CI:
            pytest.fail(msg + " (CI=true: a missing service is a failure)", pytrace=False)
        pytest.skip(msg)


def _pg_hostport() -> tuple[str, int]:
    from sqlalchemy.engine import make_url

    u = make_url(PG_ADMIN_URL)
    return u.host or "127.0.0.1", u.port or 5432


@pytest.fixture(scope="session")
def pg_server() -> str:
    host, port = _pg_hostport()
    _need("PostgreSQL", host, port)
    return PG_ADMIN_URL


@pytest.fixture(scope="session")
def redis_server() -> str:
    from urllib.parse import urlparse

    u = urlparse(REDIS_URL)
    _need("Redis", u.hostname or "127.0.0.1", u.port or 6379)
    return REDIS_URL


def create_pg_database(admin_url: str, name: str) -> str:
    """Create an empty database; return its async SQLAlchemy URL."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(admin_url)
    dsn = f"host={u.host or '127.0.0.1'} port={u.port or 5432} user={u.username or 'postgres'} dbname={u.database or 'postgres'}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return str(u.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False))


def drop_pg_database(admin_url: str, name: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(admin_url)
    dsn = f"host={u.host or '127.0.0.1'} port={u.port or 5432} user={u.username or 'postgres'} dbname={u.database or 'postgres'}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_template(pg_server: str) -> Iterator[str]:
    """A migrated PostgreSQL database for the session; tests get clean copies of it."""
    import asyncio

    from vitte.db import Database

    name = f"vitte_tpl_{os.getpid()}"
    url = create_pg_database(pg_server, name)

    async def _migrate() -> None:
        db = Database(load_settings(database_url=url))
        try:
            await db.upgrade()
        finally:
            await db.dispose()

    asyncio.run(_migrate())
    yield name
    drop_pg_database(pg_server, name)


@pytest.fixture
def pg_url(pg_server: str, pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test (a copy of the template)."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"vitte_t_{uuid.uuid4().hex[:12]}"
    u = make_url(pg_server)
    dsn = f"host={u.host or '127.0.0.1'} port={u.port or 5432} user={u.username or 'postgres'} dbname={u.database or 'postgres'}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    yield str(u.set(drivername="postgresql+psycopg", database=name).render_as_string(hide_password=False))
    drop_pg_database(pg_server, name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'vitte.sqlite3'}"


@pytest.fixture
def redis_url(redis_server: str) -> str:
    return redis_server


@pytest.fixture
def redis_prefix() -> str:
    return f"vitte-test-{uuid.uuid4().hex[:10]}:"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's .env or VITTE_* variables by accident."""
    for key in list(os.environ):
        if key.startswith("VITTE_") and not key.startswith("VITTE_TEST_"):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)


def make_settings(**kw: object) -> Settings:
    return load_settings(**kw)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Run a test on the embedded defaults and on PostgreSQL + Redis."""
    return str(request.param)


@pytest.fixture
def backend_settings(backend: str, request: pytest.FixtureRequest, redis_prefix: str) -> Settings:
    if backend == "sqlite":
        url = request.getfixturevalue("sqlite_url")
        return make_settings(database_url=url)
    url = request.getfixturevalue("pg_url")
    redis = request.getfixturevalue("redis_url")
    return make_settings(database_url=url, redis_url=redis, redis_prefix=redis_prefix)


@pytest.fixture
async def redis_cleanup(redis_url: str, redis_prefix: str) -> AsyncIterator[None]:
    yield
    await drop_redis_prefix(redis_url, redis_prefix)


@pytest.fixture
async def redis_cleanup_if_any(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[None]:
    """`redis_cleanup` for a test run on both backends (SQLite has no Redis)."""
    yield
    if backend == "postgres":
        await drop_redis_prefix(request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix"))
