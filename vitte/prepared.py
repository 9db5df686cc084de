"""Statements compiled once and sent straight to the database driver: the reply's hot path.

Through SQLAlchemy's async engine one small statement costs ≈ 420 µs of CPU on this project's
machine (greenlet hand-offs, cache-key generation, result machinery); the same statement sent
by the driver itself costs ≈ 60 µs. A player's message needs four statements, so the hot path
(`vitte.dialogs`, `vitte.billing`) builds its statements with SQLAlchemy as usual, lets
SQLAlchemy compile each once per dialect, and sends them on the DB-API driver connection of
a pooled SQLAlchemy connection (psycopg's `AsyncConnection`, aiosqlite's `Connection`).

What stays SQLAlchemy's: the pool (and its pre-ping and recycling), the SQL text, parameter
defaults, bind and result type processing (so SQLite's datetimes and JSON come back exactly
as through the ORM), and errors: a driver error is raised as SQLAlchemy's `DBAPIError`
subclass, and a connection the dialect calls disconnected is invalidated, so callers and
`vitte.db.unavailable_as` see what they see on the ORM path.

`Database.raw()` hands out a `RawConnection` in autocommit mode: each statement is one round
trip and commits on its own (use it only where each statement is complete by itself).

A connection that drops under a statement (a PostgreSQL restart, `pg_terminate_backend`, a
failover) invalidates the whole pool (every connection opened before now is replaced at its
next checkout, as SQLAlchemy does on its own execution path), and the statement is sent once
more on a fresh connection when that is safe (`Prepared.idempotent`, `never_ran`); otherwise
the caller gets the error (`vitte.db.unavailable_as` makes it StoreUnavailable). Connections
the server already closed never reach a statement: `vitte.db` looks at each one on checkout.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlalchemy.pool import Pool, PoolProxiedConnection
from sqlalchemy.sql import ClauseElement
from sqlalchemy.util import greenlet_spawn

if TYPE_CHECKING:
    from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["Prepared", "RawConnection", "never_ran", "open_pooled", "open_raw"]

Row = tuple[Any, ...]

log = logging.getLogger("vitte.db")

# PostgreSQL's FATAL errors that prove the statement they fail did not commit (see `never_ran`):
# admin_shutdown (pg_terminate_backend, a fast shutdown or restart) and idle_session_timeout
NEVER_RAN_SQLSTATES = frozenset({"57P01", "57P05"})


def never_ran(exc: BaseException) -> bool:
    """Whether a driver error proves the failed statement did not commit (so sending it again
    on another connection cannot apply it twice), whatever the statement.

    PostgreSQL reports `admin_shutdown` (57P01, "terminating connection due to administrator
    command": `pg_terminate_backend`, `pg_ctl stop/restart -m fast`, a failover's fencing) and
    `idle_session_timeout` (57P05) from its interrupt checks, which run in two places only:
    while a statement executes (the FATAL aborts the statement's transaction: nothing of it
    commits), and while the backend waits for the next command, after the previous statement's
    result and ReadyForQuery were flushed (the statement then failing is one the server never
    read). An autocommit statement commits when its Sync is processed, with interrupts held,
    and ReadyForQuery follows before the next check; so a statement that committed is always
    answered in full before any FATAL, and the client, which reads up to ReadyForQuery, has
    returned its result already. A backend that dies while writing to the client sends no
    message at all (the client sees a bare connection loss): that, and every other way a
    connection breaks ("server closed the connection unexpectedly", a timeout, a reset), is
    ambiguous — the server may have committed the statement before the answer was lost — and
    is not counted here.
    """
    return getattr(exc, "sqlstate", None) in NEVER_RAN_SQLSTATES


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positional: bool
    order: tuple[str, ...]  # bind names in the order of a positional paramstyle
    defaults: dict[str, Any]  # every bind's own value (literals in the statement)
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]  # bind processors that exist
    results: tuple[Callable[[Any], Any] | None, ...]  # one per result column
    keys: tuple[str, ...]  # result column names


class Prepared:
    """One statement, compiled on first use for each dialect it meets.

    `statement` is the statement, or a function of the dialect's name that builds it (for SQL
    that differs by dialect, such as PostgreSQL's and SQLite's INSERT … ON CONFLICT).

    `idempotent`: running it twice leaves the database as running it once (a read; an UPDATE
    that sets values), so when its connection drops it is sent again on a fresh one whatever
    the error. Otherwise (the default: an INSERT, a counter, a SELECT with data-modifying CTEs)
    it is sent again only when the error proves it never committed (`never_ran`).
    """

    __slots__ = ("_by_dialect", "idempotent", "name", "statement")

    def __init__(
        self,
        statement: ClauseElement | Callable[[str], ClauseElement],
        name: str = "",
        *,
        idempotent: bool = False,
    ) -> None:
        self.statement = statement
        self.name = name or type(statement).__name__
        self.idempotent = idempotent
        self._by_dialect: dict[str, _Compiled] = {}

    def __repr__(self) -> str:
        return f"<Prepared {self.name}>"

    def compiled(self, dialect: Dialect) -> _Compiled:
        key = dialect.name
        found = self._by_dialect.get(key)
        if found is None:
            found = self._by_dialect[key] = self._compile(dialect)
        return found

    def _compile(self, dialect: Dialect) -> _Compiled:
        statement = (
            self.statement if isinstance(self.statement, ClauseElement) else self.statement(dialect.name)
        )
        compiled = cast("SQLCompiler", statement.compile(dialect=dialect))
        binds = []
        for name, bind in compiled.binds.items():
            processor = bind.type._cached_bind_processor(dialect)
            if processor is not None:
                binds.append((name, processor))
        columns = list(getattr(statement, "selected_columns", None) or [])
        if not columns:
            columns = list(getattr(statement, "_returning", ()) or ())
        results = tuple(col.type._cached_result_processor(dialect, None) for col in columns)
        keys = tuple(str(getattr(col, "key", "") or getattr(col, "name", "")) for col in columns)
        return _Compiled(
            sql=compiled.string,
            positional=bool(compiled.positional),
            order=tuple(compiled.positiontup or ()),
            defaults=dict(compiled.construct_params(_check=False) or {}),  # literals; binds to fill are None
            binds=tuple(binds),
            results=results,
            keys=keys,
        )


class RawConnection:
    """A pooled connection's driver connection, in autocommit mode (see the module docstring for
    what happens when the connection drops under a statement)."""

    __slots__ = ("_close_cursors", "_counter", "_dbapi", "_dbapi_connection", "_dialect", "_driver", "_lease")

    def __init__(self, dbapi_connection: Any, dialect: Dialect, counter: list[int], lease: _Lease) -> None:
        self._dialect = dialect
        self._dbapi = dialect.loaded_dbapi
        self._counter = counter
        self._lease = lease
        # a psycopg cursor holds nothing on the server once fetched; an sqlite3 one must be closed
        self._close_cursors = dialect.name == "sqlite"
        self._use(dbapi_connection)

    def _use(self, dbapi_connection: Any) -> None:
        self._dbapi_connection = dbapi_connection  # SQLAlchemy's adapted DB-API connection
        self._driver = dbapi_connection.driver_connection  # psycopg's / aiosqlite's own

    @property
    def dialect(self) -> Dialect:
        return self._dialect

    async def rows(self, prepared: Prepared, params: dict[str, Any] | None = None) -> list[Row]:
        """Run the statement; its rows (empty for a statement without RETURNING)."""
        c = prepared.compiled(self._dialect)
        values = dict(c.defaults)
        if params:
            values.update(params)
        for name, processor in c.binds:
            values[name] = processor(values[name])
        args: Sequence[Any] | dict[str, Any] = tuple(values[n] for n in c.order) if c.positional else values
        self._counter[0] += 1
        try:
            cursor = await self._driver.execute(c.sql, args)
            if self._close_cursors:
                try:
                    raw = await cursor.fetchall() if cursor.description is not None else []
                finally:
                    await cursor.close()
            else:
                raw = await cursor.fetchall() if cursor.description is not None else []
        except self._dbapi.Error as exc:
            raw = await self._again(prepared, c, args, exc)
        if not any(c.results):
            return [tuple(r) for r in raw]
        results = c.results
        return [tuple(v if p is None else p(v) for p, v in zip(results, r, strict=False)) for r in raw]

    async def first(self, prepared: Prepared, params: dict[str, Any] | None = None) -> Row | None:
        found = await self.rows(prepared, params)
        return found[0] if found else None

    async def mapping(
        self, prepared: Prepared, params: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """The first row as {column key: value}, or None."""
        row = await self.first(prepared, params)
        if row is None:
            return None
        return dict(zip(prepared.compiled(self._dialect).keys, row, strict=False))

    async def _again(self, prepared: Prepared, c: _Compiled, args: Any, exc: Exception) -> list[Any]:
        """The statement failed with `exc`. If its connection dropped, the pool is invalidated
        (every connection opened before now is replaced at its checkout: a restart killed them
        all) and, when that is safe (`Prepared.idempotent`, or `never_ran(exc)`), the statement
        is sent once more on a fresh connection: its rows. Else the error, as SQLAlchemy raises
        it (`connection_invalidated` set when the connection dropped)."""
        if not self._disconnected(exc):
            raise self._error(exc, c, args, gone=False) from exc
        await self._drop(exc)
        if not (prepared.idempotent or never_ran(exc)):
            raise self._error(exc, c, args, gone=True) from exc
        log.warning(
            "the database connection dropped under %r (%s); sending it again on a fresh connection",
            prepared.name,
            _first_line(exc),
        )
        self._use(await self._lease.take())  # a connection error here: the database is away
        self._counter[0] += 1
        try:
            cursor = await self._driver.execute(c.sql, args)
            try:
                return await cursor.fetchall() if cursor.description is not None else []
            finally:
                if self._close_cursors:
                    await cursor.close()
        except self._dbapi.Error as again:
            gone = self._disconnected(again)
            if gone:
                await self._drop(again)
            raise self._error(again, c, args, gone=gone) from again

    def _disconnected(self, exc: Exception) -> bool:
        try:
            return bool(self._dialect.is_disconnect(exc, self._dbapi_connection, None))  # type: ignore[arg-type]
        except Exception:
            return True

    async def _drop(self, exc: Exception) -> None:
        with contextlib.suppress(Exception):  # the pool drops it anyway when it fails again
            await self._lease.drop(exc)

    def _error(self, exc: Exception, c: _Compiled, args: Any, *, gone: bool) -> Exception:
        """The driver's error as SQLAlchemy raises it."""
        return sa_exc.DBAPIError.instance(
            c.sql, args, exc, self._dbapi.Error, connection_invalidated=gone, dialect=self._dialect
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


def _check_autocommit(driver: Any) -> None:
    # psycopg says `autocommit`, sqlite3/aiosqlite `isolation_level is None`
    autocommit = driver.autocommit if hasattr(driver, "autocommit") else driver.isolation_level is None
    if not autocommit:
        raise RuntimeError("raw connections need an engine with isolation_level='AUTOCOMMIT'")


def _cannot_connect(dialect: Dialect, exc: Exception) -> Exception:
    """A driver's connection error as SQLAlchemy's engine raises it (an OperationalError …)."""
    return sa_exc.DBAPIError.instance(None, None, exc, dialect.loaded_dbapi.Error, dialect=dialect)


def _invalidate_all(pool: Pool, fairy: PoolProxiedConnection, exc: BaseException | None) -> None:
    """`fairy` invalidated (closed, returned to the pool) and, with it, every pooled connection
    opened before now: each is replaced at its next checkout, none is tried first. What
    SQLAlchemy's own execution path does on a disconnect (`Pool._invalidate`)."""
    pool._invalidate(fairy, exc)


class _Lease(Protocol):
    """Where a RawConnection's connection comes from: `take` one (SQLAlchemy's connection error
    when none can be opened), `drop` it (it died: the pool is invalidated)."""

    async def take(self) -> Any: ...

    async def drop(self, exc: BaseException) -> None: ...


class _PoolLease:
    """A connection straight from an engine's pool (`open_pooled`)."""

    __slots__ = ("dialect", "fairy", "pool")

    def __init__(self, engine: AsyncEngine) -> None:
        self.pool = engine.sync_engine.pool
        self.dialect = engine.dialect
        self.fairy: PoolProxiedConnection | None = None

    async def take(self) -> Any:
        if self.fairy is not None:
            await self.release()
        try:
            self.fairy = await greenlet_spawn(self.pool.connect)  # the checkout's checks run here
        except self.dialect.loaded_dbapi.Error as exc:
            raise _cannot_connect(self.dialect, exc) from exc
        _check_autocommit(self.fairy.driver_connection)
        return self.fairy.dbapi_connection

    async def drop(self, exc: BaseException) -> None:
        fairy, self.fairy = self.fairy, None
        if fairy is not None:
            await greenlet_spawn(_invalidate_all, self.pool, fairy, exc)

    async def release(self) -> None:
        fairy, self.fairy = self.fairy, None
        if fairy is not None:
            await greenlet_spawn(fairy.close)


class _EngineLease:
    """A connection of an engine through SQLAlchemy's AsyncConnection (`open_raw`)."""

    __slots__ = ("connection", "engine", "fairy")

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.connection: AsyncConnection | None = None
        self.fairy: PoolProxiedConnection | None = None

    async def take(self) -> Any:
        if self.connection is not None:
            await self.release()
        self.connection = await self.engine.connect()  # its execution options applied anew
        self.fairy = await self.connection.get_raw_connection()
        _check_autocommit(self.fairy.driver_connection)
        return self.fairy.dbapi_connection

    async def drop(self, exc: BaseException) -> None:
        fairy, self.fairy = self.fairy, None
        connection, self.connection = self.connection, None
        if fairy is not None and connection is not None:
            pool = self.engine.sync_engine.pool
            await greenlet_spawn(pool._invalidate, fairy, exc, False)  # the pool's invalidation time
            try:
                await connection.invalidate(exc)  # this one, through the connection that holds it
            finally:
                await connection.close()

    async def release(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            await connection.close()


@asynccontextmanager
async def open_raw(engine: AsyncEngine, counter: list[int]) -> AsyncIterator[RawConnection]:
    """A connection of `engine` (autocommit) through SQLAlchemy's AsyncConnection: for an
    engine whose autocommit is an execution option (set and reset at every checkout)."""
    lease = _EngineLease(engine)
    try:
        yield RawConnection(await lease.take(), engine.dialect, counter, lease)
    finally:
        await lease.release()


@asynccontextmanager
async def open_pooled(engine: AsyncEngine, counter: list[int]) -> AsyncIterator[RawConnection]:
    """A connection straight from the pool of an engine created in autocommit mode, with no
    reset on return (nothing to roll back): ≈ 16 µs of CPU for checkout and return where
    `engine.connect()` costs ≈ 60-100 µs. The pool's events (the checkout's checks, recycling)
    still run."""
    lease = _PoolLease(engine)
    try:
        yield RawConnection(await lease.take(), engine.dialect, counter, lease)
    finally:
        await lease.release()
