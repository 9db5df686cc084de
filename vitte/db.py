"""The database: async engine, sessions, and migrations applied from code."""

from __future__ import annotations

import asyncio
import select
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from vitte.config import Settings
from vitte.errors import MigrationBusy
from vitte.prepared import RawConnection, open_pooled, open_raw

# inside the package, so an installed wheel carries it (alembic.ini points here too)
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Every PostgreSQL checkout looks at the connection without a round trip (`server_closed`): one
# the server closed (a restart, pg_terminate_backend, a failover) never reaches a statement. A
# connection idle for longer than this is pinged as well (a round trip): a peer that vanished
# without closing (a dead host, a NAT that forgot the connection) shows nothing locally. Busy
# connections are not pinged: a ping on every checkout would be one more round trip per
# statement on the hot path. A connection that dies under a statement fails it; the pool is then
# invalidated, and the hot path sends the statement again where that is safe (vitte/prepared.py).
PING_IDLE_AFTER = 5.0

_IDLE = 0  # psycopg.pq.TransactionStatus.IDLE (an IntEnum): no transaction, no statement running

# poll(2) flags that say "something arrived, or the peer is gone" (POLLRDHUP: Linux)
_READABLE_OR_GONE = (
    (select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | getattr(select, "POLLRDHUP", 0))
    if hasattr(select, "poll")
    else 0
)


class DatabaseUnavailable(Exception):
    """The database cannot be reached right now (the caller answers 'one moment')."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=5000")
    cur.close()


def make_engine(settings: Settings, *, autocommit: bool = False) -> AsyncEngine:
    """The engine; `autocommit=True` builds the hot path's own pool (PostgreSQL only): every
    connection in autocommit mode from the start, nothing to reset on return."""
    url = settings.database_url
    if settings.is_sqlite:
        path = settings.sqlite_path()
        if path is not None and path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, connect_args={"timeout": 10})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    engine = create_async_engine(
        url,
        # a fixed pool: overflow connections are closed on return whenever more than pool_size
        # are busy, so a steady load above it would open and close a connection per statement
        # (measured: vitte bench). Hot-path statements hold a connection for ~0.1 ms.
        pool_size=settings.database_pool_size,
        max_overflow=0,
        pool_recycle=1800,
        pool_use_lifo=True,  # the connection used last goes out first: it needs no ping
        # under a burst (a thousand replies at once) the process is CPU-bound and statements
        # queue for a connection: waiting is better than "one moment" (measured: vitte bench)
        pool_timeout=30,
        connect_args={"connect_timeout": 5},
        **({"isolation_level": "AUTOCOMMIT", "pool_reset_on_return": None} if autocommit else {}),
    )
    _check_on_checkout(engine, PING_IDLE_AFTER)
    return engine


def server_closed(driver: Any) -> bool:
    """Whether an idle pooled psycopg connection is dead or closed by the server, told without a
    round trip (≈ 1 µs).

    psycopg marks a connection closed only when it notices, at its next I/O. A backend that the
    server ends (`pg_terminate_backend`, a fast shutdown or restart, idle_session_timeout) sends
    its FATAL message and closes the socket, so the idle connection's socket turns readable; a
    connection that is alive receives nothing unasked while idle (this project never LISTENs),
    so a readable idle socket means the server is gone."""
    if driver.closed:
        return True
    try:
        fd = driver.pgconn.socket
    except Exception:  # psycopg: "the connection is lost"
        return True
    if not _READABLE_OR_GONE:
        return False
    poller = select.poll()
    poller.register(fd, _READABLE_OR_GONE)
    return bool(poller.poll(0))


def _left_busy(driver: Any) -> bool:
    """A pooled connection still in a transaction or mid-statement (a task cancelled while its
    statement ran): not usable as it is (the pool's reset rolls back every other case)."""
    return driver.info.transaction_status != _IDLE


def _check_on_checkout(engine: AsyncEngine, idle_after: float) -> None:
    """Every checkout: a connection the server closed invalidates the pool (each connection
    opened before now is replaced at its checkout: a restart killed them all, none is tried
    first); one left mid-statement is replaced alone; one idle longer than `idle_after` is
    pinged (see PING_IDLE_AFTER)."""
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _idle_since(_dbapi_conn: Any, record: Any) -> None:
        record.info["vitte_idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _check(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        driver = dbapi_conn.driver_connection
        if server_closed(driver):
            raise sa_exc.InvalidatePoolError("the server closed the connection")
        if _left_busy(driver):
            raise sa_exc.DisconnectionError("the connection was left mid-statement")
        since = record.info.get("vitte_idle_since")
        if since is None or time.monotonic() - since < idle_after:
            return  # fresh, or busy a moment ago
        if not sync_engine.dialect._do_ping_w_event(dbapi_conn):
            raise sa_exc.InvalidatePoolError("the connection did not answer a ping")


MIGRATION_LOCK_TIMEOUT = "10s"  # PostgreSQL's lock_timeout for `vitte db upgrade` / `downgrade`


@contextmanager
def _busy_as_migration_busy() -> Iterator[None]:
    """PostgreSQL's lock_not_available (55P03) during a migration: MigrationBusy."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) == "55P03":
            raise MigrationBusy(MIGRATION_LOCK_TIMEOUT) from None
        raise


def alembic_config(connection: Connection | None = None, url: str | None = None) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def _upgrade_sync(connection: Connection, revision: str = "head") -> None:
    from alembic import command

    command.upgrade(alembic_config(connection), revision)


def _downgrade_sync(connection: Connection, revision: str) -> None:
    from alembic import command

    command.downgrade(alembic_config(connection), revision)


def _current_sync(connection: Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def _head() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class Database:
    """Owns the engine and hands out sessions."""

    def __init__(self, settings: Settings, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        self.autocommit_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.autocommit_sessionmaker = async_sessionmaker(self.autocommit_engine, expire_on_commit=False)
        self._ready = False
        self._ready_lock = asyncio.Lock()
        # statements sent by `raw()` connections (SQLAlchemy's events do not see them)
        self.raw_statements = [0]
        # the reply's hot path has its own pool on PostgreSQL (see `raw`); SQLite, with one
        # writer at a time, keeps one pool
        self.hot_engine = None if settings.is_sqlite or engine is not None else make_engine(settings, autocommit=True)

    @asynccontextmanager
    async def session(self, *, autocommit: bool = False) -> AsyncIterator[AsyncSession]:
        """A session; `autocommit=True` for the hot path: every statement commits on its own.

        Without a transaction there is no BEGIN and no COMMIT/ROLLBACK on the wire, so one
        statement is one round trip (a transaction costs two more). Use it only where each
        statement is complete on its own: a read, or one write that is atomic by itself.
        """
        async with (self.autocommit_sessionmaker if autocommit else self.sessionmaker)() as session:
            yield session

    def raw(self) -> AbstractAsyncContextManager[RawConnection]:
        """A pooled connection for `vitte.prepared.Prepared` statements, in autocommit mode:
        the hot path's statements, sent straight to the driver (see vitte/prepared.py)."""
        if self.hot_engine is not None:
            return open_pooled(self.hot_engine, self.raw_statements)
        return open_raw(self.autocommit_engine, self.raw_statements)

    async def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to `revision`, in one transaction. PostgreSQL: while the bot
        serves, a migration that would wait more than MIGRATION_LOCK_TIMEOUT for a table's lock
        gives up (MigrationBusy, nothing changed) instead of holding every player's turn up
        behind it."""
        async with self.engine.begin() as conn:
            await self._lock_timeout(conn)
            with _busy_as_migration_busy():
                await conn.run_sync(_upgrade_sync, revision)

    async def _lock_timeout(self, conn: AsyncConnection) -> None:
        if not self.settings.is_sqlite:
            await conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT}'")

    async def downgrade(self, revision: str) -> None:
        """Undo migrations down to `revision` (an id of the history, or "base").

        SQLite: batch mode drops a column by copying the table and dropping the old one, and
        with foreign keys enforced that DROP deletes (ON DELETE CASCADE) every row pointing at
        it: a player's dialogs and messages. So foreign keys are off while it runs (Alembic's
        recipe for batch mode), and checked before the change is committed.
        """
        async with self.engine.connect() as conn:
            if not self.settings.is_sqlite:
                async with conn.begin():  # PostgreSQL: the whole downgrade or nothing
                    await self._lock_timeout(conn)
                    with _busy_as_migration_busy():
                        await conn.run_sync(_downgrade_sync, revision)
                return
            try:
                # outside a transaction (inside one the pragma is silently ignored): checked
                await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                enforced = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
                await conn.commit()
                if enforced != 0:
                    raise RuntimeError("SQLite: cannot turn foreign keys off for the downgrade")
                async with conn.begin():
                    await conn.run_sync(_downgrade_sync, revision)
                    broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                    if broken:
                        raise RuntimeError(f"SQLite: the downgrade would break foreign keys: {broken[:5]}")
            finally:
                await conn.rollback()
                await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                await conn.commit()

    async def current_revision(self) -> str | None:
        async with self.engine.connect() as conn:
            return await conn.run_sync(_current_sync)

    @staticmethod
    def head_revision() -> str | None:
        return _head()

    async def ensure_ready(self) -> None:
        """The embedded SQLite default upgrades itself on first use."""
        if self._ready:
            return
        async with self._ready_lock:
            if self._ready:
                return
            if self.settings.is_sqlite and await self.current_revision() != self.head_revision():
                await self.upgrade()
            self._ready = True

    async def dispose(self) -> None:
        await self.engine.dispose()
        if self.hot_engine is not None:
            await self.hot_engine.dispose()


def is_unavailable(exc: BaseException) -> bool:
    """Whether a database exception means 'cannot reach the database' (retry later)."""
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.TimeoutError):
        return True
    return isinstance(exc, ConnectionError | OSError)


@asynccontextmanager
async def unavailable_as(error_factory: Any) -> AsyncIterator[None]:
    """Turn connection-level database failures into the caller's error type."""
    try:
        yield
    except Exception as exc:
        if is_unavailable(exc):
            raise error_factory(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from exc
        raise


def insert_ignore(session: AsyncSession, model: Any, values: dict[str, Any], keys: list[str]) -> Any:
    """INSERT … ON CONFLICT DO NOTHING for PostgreSQL and SQLite."""
    dialect = session.bind.dialect.name if session.bind is not None else "postgresql"
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert(model).values(**values).on_conflict_do_nothing(index_elements=keys)
    from sqlalchemy.dialects.postgresql import insert as pg_insert

    return pg_insert(model).values(**values).on_conflict_do_nothing(index_elements=keys)
