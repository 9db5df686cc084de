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
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import ClauseElement
from sqlalchemy.util import greenlet_spawn

if TYPE_CHECKING:
    from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["Prepared", "RawConnection", "open_pooled", "open_raw"]

Row = tuple[Any, ...]


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
    """

    __slots__ = ("_by_dialect", "name", "statement")

    def __init__(self, statement: ClauseElement | Callable[[str], ClauseElement], name: str = "") -> None:
        self.statement = statement
        self.name = name or type(statement).__name__
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
    """A pooled connection's driver connection, in autocommit mode."""

    __slots__ = ("_close_cursors", "_counter", "_dbapi", "_dbapi_connection", "_dialect", "_driver", "_invalidate")

    def __init__(
        self,
        dbapi_connection: Any,
        dialect: Dialect,
        counter: list[int],
        invalidate: Callable[[], Awaitable[None]],
    ) -> None:
        self._dbapi_connection = dbapi_connection  # SQLAlchemy's adapted DB-API connection
        self._driver = dbapi_connection.driver_connection  # psycopg's / aiosqlite's own
        self._dialect = dialect
        self._dbapi = dialect.loaded_dbapi
        self._counter = counter
        self._invalidate = invalidate
        # a psycopg cursor holds nothing on the server once fetched; an sqlite3 one must be closed
        self._close_cursors = dialect.name == "sqlite"

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
            raise await self._translate(exc, c.sql, args) from exc
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

    async def _translate(self, exc: Exception, sql: str, args: Any) -> Exception:
        """The driver's error as SQLAlchemy raises it; a dead connection leaves the pool."""
        try:
            gone = bool(self._dialect.is_disconnect(exc, self._dbapi_connection, None))  # type: ignore[arg-type]
        except Exception:
            gone = True
        if gone:
            with contextlib.suppress(Exception):  # the pool drops it anyway when it fails again
                await self._invalidate()
        return sa_exc.DBAPIError.instance(
            sql, args, exc, self._dbapi.Error, connection_invalidated=gone, dialect=self._dialect
        )


def _check_autocommit(driver: Any) -> None:
    # psycopg says `autocommit`, sqlite3/aiosqlite `isolation_level is None`
    autocommit = driver.autocommit if hasattr(driver, "autocommit") else driver.isolation_level is None
    if not autocommit:
        raise RuntimeError("raw connections need an engine with isolation_level='AUTOCOMMIT'")


@asynccontextmanager
async def open_raw(engine: AsyncEngine, counter: list[int]) -> AsyncIterator[RawConnection]:
    """A connection of `engine` (autocommit) through SQLAlchemy's AsyncConnection: for an
    engine whose autocommit is an execution option (set and reset at every checkout)."""
    async with engine.connect() as connection:
        fairy = await connection.get_raw_connection()
        _check_autocommit(fairy.driver_connection)
        yield RawConnection(fairy.dbapi_connection, engine.dialect, counter, connection.invalidate)


@asynccontextmanager
async def open_pooled(engine: AsyncEngine, counter: list[int]) -> AsyncIterator[RawConnection]:
    """A connection straight from the pool of an engine created in autocommit mode, with no
    reset on return (nothing to roll back): ≈ 16 µs of CPU for checkout and return where
    `engine.connect()` costs ≈ 60-100 µs. The pool's events (pre-ping, recycling) still run."""
    pool = engine.sync_engine.pool
    fairy = await greenlet_spawn(pool.connect)
    try:
        _check_autocommit(fairy.driver_connection)

        async def invalidate() -> None:
            await greenlet_spawn(fairy.invalidate)

        yield RawConnection(fairy.dbapi_connection, engine.dialect, counter, invalidate)
    finally:
        await greenlet_spawn(fairy.close)
