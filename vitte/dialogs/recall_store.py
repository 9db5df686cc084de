"""The SQL of recall: a dialog's earlier messages that match a text, on each store.

PostgreSQL: full-text search with the dialog language's configuration (`russian`, `english`)
over the GIN indexes `ix_messages_search_<config>` (migration 0007): for each word of the new
text the newest `PER_TERM` matches among the dialog's messages before a given id, scored by the
words each holds (rarer words weigh more: ts_rank_cd alone has no IDF, and a word the dialog
repeats everywhere would bury a detail said once) plus `ts_rank_cd`. One statement, one round
trip, sent straight to the driver (`vitte.prepared`).

SQLite: an FTS5 table (`messages_fts`: the dialog as a token, the text Snowball-stemmed for
the language by `vitte.textsearch`): per stem the newest matches, scored by the same formula
(`idf_scores`; FTS5's bm25 weighs a word by its rarity in the whole table, where the previous
questions' common words together outweigh the one rare word of a detail). It is derived data outside Alembic:
created on first use, fed with the messages that left the recent window before each search
(`catch_up`, at most `CATCH_UP` a time, resumable: the index's newest row per dialog says how
far it got), emptied of a deleted message by a trigger, rebuilt by `vitte memory reindex`.

Recency is blended into the score by the caller (`vitte.dialogs.recall`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Integer, String, Text, bindparam, column, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.sql.expression import ColumnClause

from vitte.db import Database, unavailable_as
from vitte.errors import StoreUnavailable
from vitte.models import MSG_STREAMING, SEARCH_CONFIGS, UTCDateTime
from vitte.prepared import Prepared
from vitte.textsearch import keywords, regconfig, stemmed

PER_TERM = 48  # PostgreSQL: the newest matches of each word that are candidates (bounds a search)
POOL = 12  # PostgreSQL: candidates given ts_rank_cd (their text parsed again)
CATCH_UP = 2000  # SQLite: messages stemmed into the index per search, at most
FTS_TABLE = "messages_fts"
QUERY_WORDS = 16  # words of the new text that are searched for, at most

_SQLITE_SCHEMA = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS {FTS_TABLE} USING fts5(dialog, stems)",
    # a deleted message (a deleted player, a deleted dialog) leaves nothing in the index
    f"CREATE TRIGGER IF NOT EXISTS {FTS_TABLE}_forget AFTER DELETE ON messages "
    f"BEGIN DELETE FROM {FTS_TABLE} WHERE rowid = old.id; END",
)


# the rank comes as the driver gives it (a float): no result processing
_FOUND_COLUMNS: tuple[ColumnClause[Any], ...] = (
    column("id", BigInteger()), column("role", String()), column("text", Text()),
    column("created_at", UTCDateTime()), column("rank"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Found:
    """A message that matched, with the store's relevance (higher is better)."""

    id: int
    role: str
    text: str
    created_at: datetime
    rank: float
    lexical: bool = True  # False: fetched only as a meaning-based candidate


def _pg_search(config: str) -> Prepared:
    """Per word of the new text, the dialog's newest PER_TERM messages holding it (the GIN index,
    and the dialog's rows through ix_messages_dialog_id_id); each candidate scored by the words it
    holds, a word weighing more the fewer candidates hold it (an IDF over the candidates, squared:
    tf-idf on both the query's and the message's side), plus
    ts_rank_cd (cover density) of the whole query; the best `limit`. And, in the same round trip,
    the rows of `extra` (meaning-based candidates, rank NULL)."""
    cfg = f"'{config}'::regconfig"
    sql = text(
        f"""
        WITH words AS (
            SELECT tq FROM (SELECT DISTINCT to_tsquery({cfg}, w) AS tq FROM unnest(CAST(:words AS text[])) AS w) x
            WHERE numnode(tq) > 0
        ),
        picked AS (
            SELECT wd.tq::text AS term, m.id FROM words wd CROSS JOIN LATERAL (
                SELECT m.id FROM messages m
                WHERE m.dialog_id = :dialog_id AND m.id < :before AND m.status <> '{MSG_STREAMING}'
                  AND to_tsvector({cfg}, m.text) @@ wd.tq
                ORDER BY m.id + 0 DESC
                LIMIT {PER_TERM}
            ) m
        ),
        scored AS (
            SELECT id, sum(power(ln(1.0 + picks::float8 / holding), 2)) AS idf
            FROM (
                SELECT id, count(*) OVER (PARTITION BY term) AS holding, count(*) OVER () AS picks
                FROM picked
            ) x
            GROUP BY id
            ORDER BY idf DESC, id DESC
            LIMIT {POOL}
        )
        (
            SELECT m.id, m.role, m.text, m.created_at,
                   s.idf + ts_rank_cd(to_tsvector({cfg}, m.text), to_tsquery({cfg}, :query), 1) AS rank
            FROM scored s JOIN messages m ON m.id = s.id
            ORDER BY rank DESC, m.id DESC
            LIMIT :limit
        )
        UNION ALL
        (
            SELECT m.id, m.role, m.text, m.created_at, NULL
            FROM messages m
            WHERE m.id = ANY(CAST(:extra AS bigint[])) AND m.dialog_id = :dialog_id AND m.id < :before
        )
        """
    ).bindparams(
        bindparam("words", type_=ARRAY(Text())),
        bindparam("extra", type_=ARRAY(BigInteger())),
        bindparam("query", type_=Text()),
        bindparam("dialog_id", type_=BigInteger()),
        bindparam("before", type_=BigInteger()),
        bindparam("limit", type_=Integer()),
    )
    # `m.id + 0`: each word's matches come from the GIN index, never from a walk of the dialog's
    # rows that would compute every row's tsvector
    return Prepared(sql.columns(*_FOUND_COLUMNS), f"recall search ({config})", idempotent=True)


PG_SEARCH = {config: _pg_search(config) for config in SEARCH_CONFIGS}

_SQLITE_TERM = text(
    f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :match AND rowid < :before "
    f"ORDER BY rowid DESC LIMIT {PER_TERM}"
)


_SQLITE_ROWS = (
    text(
        "SELECT m.id, m.role, m.text, m.created_at, 0.0 AS rank FROM messages m "
        f"WHERE m.id IN :ids AND m.dialog_id = :d AND m.id < :before AND m.status <> '{MSG_STREAMING}'"
    )
    .bindparams(bindparam("ids", expanding=True))
    .columns(*_FOUND_COLUMNS)
)


def idf_scores(picked: dict[str, list[int]]) -> dict[int, float]:
    """Each candidate's score: the sum, over the words it holds, of ln(1 + picks / holding)²
    (the IDF weighs both the query's and the message's word, as tf-idf's cosine does),
    where `holding` is how many candidates hold that word and `picks` all (word, candidate)
    pairs; a word the dialog says everywhere weighs little, one said once a lot. The same
    formula as PostgreSQL's statement."""
    picks = sum(len(ids) for ids in picked.values())
    scores: dict[int, float] = {}
    for ids in picked.values():
        if ids:
            weight = math.log(1.0 + picks / len(ids)) ** 2
            for i in ids:
                scores[i] = scores.get(i, 0.0) + weight
    return scores


def dialog_token(dialog_id: int) -> str:
    """The dialog's token in the FTS5 table's `dialog` column."""
    return f"d{int(dialog_id)}"


def pg_query(words: list[str]) -> str:
    """A to_tsquery text: any of the words (letters and digits only: no query syntax)."""
    return " | ".join(words)


class RecallStore:
    """A dialog's earlier messages that match a text (see the module docstring)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._sqlite_ready = False

    @property
    def sqlite(self) -> bool:
        return self.db.engine.dialect.name == "sqlite"

    async def search(
        self, dialog_id: int, language: str, text_: str, before: int, limit: int, extra: Sequence[int] = ()
    ) -> list[Found]:
        """The dialog's messages with id < `before` that best match `text_` (at most `limit`),
        best first, then the rows of the `extra` ids not among them (`Found.lexical` False).
        PostgreSQL: one round trip. SQLite: the index caught up first."""
        if before <= 0:
            return []
        words = keywords(text_, language)[:QUERY_WORDS] if limit > 0 else []
        if not words and not extra:
            return []
        if self.sqlite:
            found: list[Found] = []
            if words:
                await self.catch_up(dialog_id, language, before)
                found = await self._sqlite_search(dialog_id, language, words, before, limit)
            seen = {f.id for f in found}
            return found + await self._sqlite_rows(dialog_id, before, [i for i in extra if i not in seen])
        config = regconfig(language)
        statement = PG_SEARCH.get(config, PG_SEARCH["russian"])
        async with unavailable_as(StoreUnavailable), self.db.raw() as conn:
            rows = await conn.rows(
                statement,
                {
                    "words": words,
                    "extra": list(extra),
                    "query": pg_query(words) if words else "x",
                    "dialog_id": dialog_id,
                    "before": before,
                    "limit": limit,
                },
            )
        lexical = [
            Found(int(r[0]), str(r[1]), str(r[2]), r[3], float(r[4])) for r in rows if r[4] is not None
        ]
        seen = {f.id for f in lexical}
        return lexical + [
            Found(int(r[0]), str(r[1]), str(r[2]), r[3], 0.0, lexical=False)
            for r in rows
            if r[4] is None and int(r[0]) not in seen
        ]

    # ------------------------------------------------------------------ SQLite
    async def ensure_sqlite(self) -> None:
        """The FTS5 table and its trigger exist (once per process)."""
        if self._sqlite_ready or not self.sqlite:
            return
        async with self.db.session() as s:
            for statement in _SQLITE_SCHEMA:
                await s.execute(text(statement))
            await s.commit()
        self._sqlite_ready = True

    async def _sqlite_search(
        self, dialog_id: int, language: str, words: list[str], before: int, limit: int
    ) -> list[Found]:
        """Per stem the dialog's newest PER_TERM messages holding it (FTS5), scored as on
        PostgreSQL (`idf_scores`); the best `limit` with their rows."""
        stems = list(dict.fromkeys(stemmed(" ".join(words), language).split()))
        if not stems:
            return []
        token = dialog_token(dialog_id)
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            picked = {
                stem: [
                    int(i)
                    for (i,) in (
                        await s.execute(
                            _SQLITE_TERM,
                            {"match": f'dialog : "{token}" AND stems : "{stem}"', "before": before},
                        )
                    ).all()
                ]
                for stem in stems
            }
            scores = idf_scores(picked)
            best = sorted(scores, key=lambda i: (-scores[i], -i))[:limit]
            if not best:
                return []
            rows = (await s.execute(_SQLITE_ROWS, {"ids": best, "d": dialog_id, "before": before})).all()
        found = [Found(int(r[0]), str(r[1]), str(r[2]), r[3], scores[int(r[0])]) for r in rows]
        found.sort(key=lambda f: (-f.rank, -f.id))
        return found

    async def _sqlite_rows(self, dialog_id: int, before: int, ids: list[int]) -> list[Found]:
        if not ids:
            return []
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            rows = (await s.execute(_SQLITE_ROWS, {"ids": ids, "d": dialog_id, "before": before})).all()
        return [Found(int(r[0]), str(r[1]), str(r[2]), r[3], 0.0, lexical=False) for r in rows]

    async def indexed_upto(self, dialog_id: int) -> int:
        """SQLite: the newest message of the dialog in the index (0: none)."""
        await self.ensure_sqlite()
        async with self.db.session() as s:
            found = (
                await s.execute(
                    text(
                        f"SELECT rowid FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH :m ORDER BY rowid DESC LIMIT 1"
                    ),
                    {"m": f'dialog : "{dialog_token(dialog_id)}"'},
                )
            ).scalar_one_or_none()
        return int(found or 0)

    async def catch_up(self, dialog_id: int, language: str, before: int, *, chunk: int = CATCH_UP) -> int:
        """SQLite: the dialog's messages with id < `before` not in the index yet stemmed into it
        (at most `chunk`, oldest first); how many."""
        if not self.sqlite:
            return 0
        upto = await self.indexed_upto(dialog_id)
        if upto >= before - 1:
            return 0
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            rows = (
                await s.execute(
                    text(
                        "SELECT id, text FROM messages WHERE dialog_id = :d AND id > :upto AND id < :before "
                        f"AND status <> '{MSG_STREAMING}' ORDER BY id LIMIT :n"
                    ),
                    {"d": dialog_id, "upto": upto, "before": before, "n": chunk},
                )
            ).all()
            if not rows:
                return 0
            token = dialog_token(dialog_id)
            await s.execute(
                text(
                    f"INSERT OR REPLACE INTO {FTS_TABLE}(rowid, dialog, stems) VALUES (:id, :dialog, :stems)"
                ),
                [{"id": int(i), "dialog": token, "stems": stemmed(t or "", language)} for i, t in rows],
            )
            await s.commit()
        return len(rows)

    async def reindex_dialog(
        self, dialog_id: int, language: str, *, progress: Callable[[int], Any] | None = None
    ) -> int:
        """SQLite: the dialog's index built again from its messages (resumable: what is indexed
        stays; a message indexed with an outdated text is replaced). PostgreSQL: nothing to do
        per dialog (its indexes follow the rows). How many messages were indexed."""
        if not self.sqlite:
            return 0
        await self.ensure_sqlite()
        done = 0
        while True:
            n = await self.catch_up(dialog_id, language, 2**62, chunk=CATCH_UP)
            done += n
            if progress is not None and n:
                progress(n)
            if n == 0:
                return done

    async def dialogs(self) -> list[tuple[int, str, int]]:
        """Every dialog with messages: (id, its player's language, its messages), oldest first."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            rows = (
                await s.execute(
                    text(
                        "SELECT d.id, u.language, count(m.id) FROM dialogs d "
                        "JOIN users u ON u.id = d.user_id JOIN messages m ON m.dialog_id = d.id "
                        "GROUP BY d.id, u.language ORDER BY d.id"
                    )
                )
            ).all()
        return [(int(d), str(lang or ""), int(n)) for d, lang, n in rows]

    async def drop_sqlite_index(self) -> None:
        """SQLite: the whole FTS5 index emptied (before a full rebuild)."""
        await self.ensure_sqlite()
        async with self.db.session() as s:
            await s.execute(text(f"DELETE FROM {FTS_TABLE}"))
            await s.commit()

    async def reindex_postgres(self) -> None:
        """PostgreSQL: the GIN indexes rebuilt (REINDEX)."""
        if self.sqlite:
            return
        async with self.db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            for config in SEARCH_CONFIGS:
                await conn.execute(text(f"REINDEX INDEX ix_messages_search_{config}"))
