"""Upgrades while the old version serves, and `vitte db downgrade` (README "Production: upgrades").

- Every migration, applied one step at a time by `vitte db upgrade REV` to a database holding
  rows written at the revision before (every table, every column), keeps those rows exactly;
  it is additive (no table or column dropped, narrowed or made stricter; a new column is
  nullable or has a server default), so the old version's own writes, which name only the
  columns it knows, still succeed right after it; at head the models read every row.
  On SQLite and on PostgreSQL.
- On PostgreSQL, `vitte db upgrade` run as a process while the previous version keeps writing
  and reading (short transactions, as the app does) finishes, and not one of those fails.
- `vitte db downgrade REV` undoes the last migration and only it: the rows of every table
  stay (on SQLite too, where rebuilding a table with foreign keys on would cascade-delete a
  player's dialogs and messages), and upgrading again restores the column; its refusals and
  bad usage have exit codes 1 and 2 and one line each.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from cli.main import app
from tests.conftest import create_pg_database, drop_pg_database
from vitte.config import load_settings
from vitte.db import Database, alembic_config
from vitte.models import metadata

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def _history() -> list[str]:
    """The revisions, oldest first."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


REVISIONS = _history()


def vitte(url: str, *args: str) -> Any:
    return runner.invoke(app, list(args), env={"VITTE_DATABASE_URL": url})


def one_line(text: str) -> bool:
    return len([ln for ln in text.strip().splitlines() if ln.strip()]) == 1


def sync_url(url: str) -> str:
    return url.replace("sqlite+aiosqlite", "sqlite")


@dataclass
class Store:
    url: str  # the application's (async) URL

    @property
    def engine(self) -> Engine:
        return sa.create_engine(sync_url(self.url))


@pytest.fixture(params=["sqlite", "postgres"])
def empty_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """An empty database (no schema yet) on SQLite or PostgreSQL."""
    if request.param == "sqlite":
        yield Store(f"sqlite+aiosqlite:///{tmp_path / 'upgrades.sqlite3'}")
        return
    admin = request.getfixturevalue("pg_server")
    name = f"vitte_up_{uuid.uuid4().hex[:10]}"
    url = create_pg_database(admin, name)
    try:
        yield Store(url)
    finally:
        drop_pg_database(admin, name)


# ---------------------------------------------------------------------- a row in every table


@dataclass
class Schema:
    tables: dict[str, sa.Table]

    @classmethod
    def read(cls, engine: Engine) -> Schema:
        meta = sa.MetaData()
        meta.reflect(engine)
        return cls({t.name: t for t in meta.sorted_tables if t.name != "alembic_version"})


@dataclass
class Written:
    """Rows written into the schema of one revision: table -> [(primary key, {column: value})]."""

    revision: str
    rows: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = field(default_factory=dict)


def _value(column: sa.Column[Any], n: int) -> Any:
    """A value of the column's type, distinct per batch `n` (non-ASCII text on purpose)."""
    t = column.type
    if isinstance(t, sa.Boolean):
        return n % 2 == 1
    if isinstance(t, sa.Integer):
        return 1_000 * n + 7
    if isinstance(t, sa.Float | sa.Numeric):
        return 1.5 + n
    if isinstance(t, sa.DateTime):
        return datetime(2026, 1, 2, 3, 4, 5, 123000, tzinfo=UTC) + timedelta(days=n)
    if isinstance(t, sa.Date):
        return date(2026, 3, 1) + timedelta(days=n)
    if isinstance(t, sa.JSON):
        return {"batch": n, "ключ": ["значение", 1, True]}
    if isinstance(t, sa.LargeBinary):  # BLOB, BYTEA
        return bytes([n % 256]) + "ёж✨".encode() + bytes(range(4))
    if isinstance(t, sa.String):  # String, VARCHAR, Text
        text = f"{column.name}-{n}-ёж✨"
        return text[: t.length] if t.length else text
    raise AssertionError(f"no test value for {column.table.name}.{column.name}: {t!r}")


def write_rows(engine: Engine, schema: Schema, n: int, revision: str, *, known: Schema | None = None) -> Written:
    """One row in every table of `schema` (parents first, foreign keys pointing at this batch's
    rows), every column given a value. With `known` (an older revision's schema): only the
    columns that revision knows, as the old version's code writes them."""
    written = Written(revision)
    keys: dict[tuple[str, str], Any] = {}  # (table, column) -> this batch's value
    with engine.begin() as conn:
        for name, table in schema.tables.items():
            columns = [c for c in table.columns if known is None or c.name in known.tables.get(name, table).columns]
            if known is not None and name not in known.tables:
                continue  # a table the old version does not know
            row: dict[str, Any] = {}
            for column in columns:
                fks = list(column.foreign_keys)
                if fks:
                    target = fks[0].column
                    row[column.name] = keys[(target.table.name, target.name)]
                else:
                    row[column.name] = _value(column, n)
                keys[(name, column.name)] = row[column.name]
            conn.execute(table.insert().values(**row))
            pk = tuple(row[c.name] for c in table.primary_key.columns)
            written.rows.setdefault(name, []).append((pk, row))
    return written


def _same(value: Any) -> Any:
    """Compare timestamps as UTC wall time (SQLite stores them without an offset)."""
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def assert_rows_kept(engine: Engine, schema: Schema, written: Written, step: str) -> None:
    with engine.connect() as conn:
        for name, rows in written.rows.items():
            assert name in schema.tables, f"{step}: table {name} (written at {written.revision}) is gone"
            table = schema.tables[name]
            for pk, row in rows:
                cond = sa.and_(*(c == v for c, v in zip(table.primary_key.columns, pk, strict=True)))
                found = conn.execute(sa.select(*(table.c[k] for k in row)).where(cond)).mappings().all()
                assert len(found) == 1, f"{step}: {name} {pk} (written at {written.revision}) is gone"
                got = {k: _same(v) for k, v in found[0].items()}
                want = {k: _same(v) for k, v in row.items()}
                assert got == want, f"{step}: {name} {pk} written at {written.revision} changed"


def assert_additive(before: Schema, after: Schema, step: str) -> None:
    for name, old in before.tables.items():
        assert name in after.tables, f"{step} drops table {name}"
        new = after.tables[name]
        for column in old.columns:
            assert column.name in new.columns, f"{step} drops {name}.{column.name}"
            now = new.columns[column.name]
            assert type(now.type).__name__ == type(column.type).__name__, f"{step} changes {name}.{column.name}"
            length_before = getattr(column.type, "length", None)
            length_after = getattr(now.type, "length", None)
            if length_before is not None:
                assert length_after is None or length_after >= length_before, f"{step} narrows {name}.{column.name}"
            if column.nullable:
                assert now.nullable, f"{step} makes {name}.{column.name} NOT NULL"
        for column in new.columns:
            if column.name not in old.columns:
                assert column.nullable or column.server_default is not None, (
                    f"{step} adds {name}.{column.name} NOT NULL without a server default: "
                    "the old version's inserts would fail"
                )


async def _read_through_models(url: str) -> dict[str, int]:
    db = Database(load_settings(database_url=url))
    try:
        counts = {}
        async with db.session() as session:
            for table in metadata.sorted_tables:
                model = next(m for m in _models() if m.__tablename__ == table.name)
                counts[table.name] = len((await session.execute(sa.select(model))).scalars().all())
        return counts
    finally:
        await db.dispose()


def _models() -> list[Any]:
    from vitte import models

    return [
        v for v in vars(models).values() if isinstance(v, type) and hasattr(v, "__table__") and hasattr(v, "__tablename__")
    ]


# ---------------------------------------------------------------------- upgrades


def test_every_migration_keeps_the_data_of_the_revision_before(empty_store: Store) -> None:
    url, engine = empty_store.url, empty_store.engine
    try:
        history: list[Written] = []
        before: Schema | None = None
        for step, revision in enumerate(REVISIONS):
            done = vitte(url, "db", "upgrade", revision)  # the operator's command, one step
            assert done.exit_code == 0, done.output
            assert done.stdout.strip() == f"database at revision {revision}"
            schema = Schema.read(engine)
            if before is not None:
                assert_additive(before, schema, f"{REVISIONS[step - 1]} -> {revision}")
                # the old version keeps serving: its inserts name only the columns it knows
                history.append(write_rows(engine, schema, 100 + step, f"{REVISIONS[step - 1]} code", known=before))
            for written in history:
                assert_rows_kept(engine, schema, written, f"after {revision}")
            history.append(write_rows(engine, schema, step, revision))  # data at this revision
            before = schema
        # at head, the application's models read every row
        counts = asyncio.run(_read_through_models(url))
        for table in metadata.sorted_tables:
            expected = sum(len(w.rows.get(table.name, [])) for w in history)
            assert counts[table.name] == expected > 0, table.name
    finally:
        engine.dispose()


def test_a_new_not_null_column_without_default_is_caught() -> None:
    """The additivity check itself: a migration that would break the old version's inserts."""
    old = sa.Table("t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    new = sa.Table(
        "t", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True), sa.Column("x", sa.Integer, nullable=False)
    )
    with pytest.raises(AssertionError, match="without a server default"):
        assert_additive(Schema({"t": old}), Schema({"t": new}), "0001 -> 0002")
    dropped = sa.Table("t", sa.MetaData(), sa.Column("other", sa.Integer, primary_key=True))
    with pytest.raises(AssertionError, match=r"drops t\.id"):
        assert_additive(Schema({"t": old}), Schema({"t": dropped}), "0001 -> 0002")


async def test_upgrade_while_the_previous_version_serves(pg_server: str, tmp_path: Path) -> None:
    """`vitte db upgrade` (a separate process) while the previous release keeps writing."""
    name = f"vitte_live_{uuid.uuid4().hex[:10]}"
    url = create_pg_database(pg_server, name)
    engine = sa.create_engine(url)
    try:
        previous = REVISIONS[-2]
        db = Database(load_settings(database_url=url))
        try:
            await db.upgrade(previous)
        finally:
            await db.dispose()
        old = Schema.read(engine)
        write_rows(engine, old, 1, previous)

        stop, warmed_up = asyncio.Event(), asyncio.Event()
        done: list[int] = []
        errors: list[BaseException] = []

        def old_version_step(n: int) -> None:
            # a short transaction of the old code: insert a player's rows, read them back
            write_rows(engine, Schema(old.tables), 10_000 + n, previous, known=old)
            with engine.connect() as conn:
                conn.execute(sa.select(sa.func.count()).select_from(old.tables["messages"])).scalar_one()

        async def serve() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                try:
                    await asyncio.to_thread(old_version_step, n)
                    done.append(n)
                except Exception as exc:  # every failure is the finding
                    errors.append(exc)
                if len(done) >= 5:
                    warmed_up.set()
                await asyncio.sleep(0.005)

        serving = asyncio.create_task(serve())
        await asyncio.wait_for(warmed_up.wait(), 30)  # serving before the upgrade starts
        before = len(done)
        env = {k: v for k, v in os.environ.items() if not k.startswith("VITTE_")}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cli", "db", "upgrade",
            cwd=str(tmp_path), env={**env, "VITTE_DATABASE_URL": url},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 120)
        await asyncio.sleep(0.2)  # and the old version goes on after it
        stop.set()
        await serving
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == f"database at revision {REVISIONS[-1]}"
        assert errors == []
        assert len(done) > before + 3
        assert Database.head_revision() == REVISIONS[-1]
    finally:
        engine.dispose()
        drop_pg_database(pg_server, name)


# ---------------------------------------------------------------------- downgrade


def test_downgrade_undoes_the_last_migration_and_keeps_every_row(empty_store: Store) -> None:
    url, engine = empty_store.url, empty_store.engine
    try:
        head, previous = REVISIONS[-1], REVISIONS[-2]
        assert vitte(url, "db", "upgrade", previous).exit_code == 0
        at_previous = Schema.read(engine)
        assert vitte(url, "db", "upgrade").exit_code == 0
        at_head = Schema.read(engine)
        written = write_rows(engine, at_head, 1, head)
        added = {
            (t, c.name) for t, table in at_head.tables.items() for c in table.columns
            if t not in at_previous.tables or c.name not in at_previous.tables[t].columns
        }
        assert added, f"{head} adds no column?"

        done = vitte(url, "db", "downgrade", previous, "--yes")
        assert done.exit_code == 0, done.output
        assert one_line(done.stdout) and done.stdout.startswith(f"database downgraded from {head} to {previous}")
        current = json.loads(vitte(url, "db", "current", "--json").stdout)
        assert current == {"current": previous, "head": head, "up_to_date": False}
        schema = Schema.read(engine)
        assert {t: set(tb.columns.keys()) for t, tb in schema.tables.items()} == {
            t: set(tb.columns.keys()) for t, tb in at_previous.tables.items()
        }
        # every row of every table is still there, with the values of the columns that remain
        kept = Written(head, {
            t: [(pk, {k: v for k, v in row.items() if (t, k) not in added}) for pk, row in rows]
            for t, rows in written.rows.items() if t in schema.tables
        })
        assert_rows_kept(engine, schema, kept, f"after downgrade to {previous}")

        # upgrading again brings the column back (its server default), the rows still there
        assert vitte(url, "db", "upgrade").exit_code == 0
        assert_rows_kept(engine, Schema.read(engine), kept, "after upgrading again")
    finally:
        engine.dispose()


async def test_downgrade_on_sqlite_leaves_foreign_keys_enforced(tmp_path: Path) -> None:
    db = Database(load_settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'fk.sqlite3'}"))
    try:
        await db.upgrade()
        await db.downgrade(REVISIONS[-2])
        assert await db.current_revision() == REVISIONS[-2]
        async with db.engine.connect() as conn:  # the pooled connection the downgrade used
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await db.dispose()


def test_downgrade_json(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'json.sqlite3'}"
    assert vitte(url, "db", "upgrade").exit_code == 0
    done = vitte(url, "db", "downgrade", REVISIONS[-2], "--yes", "--json")
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["from"] == REVISIONS[-1] and report["to"] == REVISIONS[-2] and report["head"] == REVISIONS[-1]
    assert [u["revision"] for u in report["undone"]] == [REVISIONS[-1]]
    assert report["undone"][0]["description"]
    same = json.loads(vitte(url, "db", "downgrade", REVISIONS[-2], "--json").stdout)  # nothing to undo
    assert same == {"from": REVISIONS[-2], "to": REVISIONS[-2], "undone": [], "head": REVISIONS[-1]}


def test_downgrade_refusals_and_bad_usage(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'codes.sqlite3'}"
    head, previous = REVISIONS[-1], REVISIONS[-2]

    empty = vitte(url, "db", "downgrade", previous, "--yes")
    assert empty.exit_code == 1 and "no schema" in empty.stderr and one_line(empty.stderr)

    assert vitte(url, "db", "upgrade").exit_code == 0
    unknown = vitte(url, "db", "downgrade", "nope", "--yes")
    assert unknown.exit_code == 2 and "unknown revision 'nope'" in unknown.stderr and one_line(unknown.stderr)
    assert all(r in unknown.stderr for r in REVISIONS)
    missing = vitte(url, "db", "downgrade")
    assert missing.exit_code == 2

    unconfirmed = vitte(url, "db", "downgrade", previous)  # no --yes, no terminal
    assert unconfirmed.exit_code == 1 and "pass --yes" in unconfirmed.stderr and one_line(unconfirmed.stderr)
    assert head in unconfirmed.stderr
    assert json.loads(vitte(url, "db", "current", "--json").stdout)["current"] == head  # nothing done

    nothing = vitte(url, "db", "downgrade", head, "--yes")
    assert nothing.exit_code == 0 and "nothing to undo" in nothing.stdout

    assert vitte(url, "db", "downgrade", previous, "--yes").exit_code == 0
    upward = vitte(url, "db", "downgrade", head, "--yes")
    assert upward.exit_code == 1 and "not below" in upward.stderr and one_line(upward.stderr)

    # a database a newer release migrated: this version cannot know how to undo it
    engine = sa.create_engine(sync_url(url))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    finally:
        engine.dispose()
    newer = vitte(url, "db", "downgrade", previous, "--yes")
    assert newer.exit_code == 1 and "does not know" in newer.stderr and one_line(newer.stderr)


def test_downgrade_command_exists_in_help() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cli", "db", "--help"], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0 and "downgrade" in done.stdout


def test_an_upgrade_blocked_by_a_busy_table_gives_up_and_changes_nothing(
    pg_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PostgreSQL: a migration waits at most MIGRATION_LOCK_TIMEOUT for a table the running bot
    holds (a long transaction here), then gives up with one line; the schema is as it was."""
    import psycopg

    from vitte import db as vitte_db

    monkeypatch.setattr(vitte_db, "MIGRATION_LOCK_TIMEOUT", "300ms")
    name = f"vitte_busy_{uuid.uuid4().hex[:8]}"
    url = create_pg_database(pg_server, name)
    try:
        previous = "0002"  # 0003 alters `users`: it needs that table to itself
        assert vitte(url, "db", "upgrade", previous).exit_code == 0
        u = sa.engine.make_url(url)
        dsn = f"host={u.host} port={u.port or 5432} user={u.username or 'postgres'} dbname={name}"
        with psycopg.connect(dsn) as busy:  # a transaction reading every table, left open
            for table in metadata.sorted_tables:
                with_table = busy.execute("SELECT to_regclass(%s) IS NOT NULL", (table.name,)).fetchone()
                if with_table and with_table[0]:
                    busy.execute(f'SELECT 1 FROM "{table.name}" LIMIT 1')
            blocked = vitte(url, "db", "upgrade")
            busy.rollback()
        assert blocked.exit_code == 1, blocked.output
        assert "waited more than 300ms" in blocked.stderr and one_line(blocked.stderr)
        assert json.loads(vitte(url, "db", "current", "--json").stdout)["current"] == previous
        assert vitte(url, "db", "upgrade").exit_code == 0  # once the table is free
        assert json.loads(vitte(url, "db", "current", "--json").stdout)["current"] == REVISIONS[-1]
    finally:
        drop_pg_database(pg_server, name)
