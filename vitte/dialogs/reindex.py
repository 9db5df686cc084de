"""`vitte memory reindex`: the recall indexes rebuilt, resumably, with progress reported.

- PostgreSQL: the GIN indexes (`ix_messages_search_<config>`) rebuilt with REINDEX; they follow
  the rows by themselves, so this is only for an index that went bad or bloated.
- SQLite: the FTS5 index caught up dialog by dialog (what is indexed stays: an interrupted run
  goes on where it stopped); `fresh` empties it first.
- `embeddings`: every message without a vector of the configured model embedded, in batches
  (those embedded stay: an interrupted run goes on where it stopped).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from vitte.dialogs.recall_store import RecallStore
from vitte.models import SEARCH_CONFIGS

if TYPE_CHECKING:
    from vitte.dialogs.embeddings import Embeddings


@dataclass(slots=True)
class Reindexed:
    store: str  # "postgresql" | "sqlite"
    dialogs: int = 0
    indexed: int = 0  # SQLite: messages stemmed into the index; PostgreSQL: indexes rebuilt
    embedded: int = 0  # messages embedded


Progress = Callable[[str, int, int], None]  # (what, done so far, total)


async def reindex(
    store: RecallStore,
    *,
    fresh: bool = False,
    embeddings: Embeddings | None = None,
    progress: Progress | None = None,
) -> Reindexed:
    """Rebuild the recall indexes (see the module docstring)."""
    tell = progress or (lambda _what, _done, _total: None)
    dialogs = await store.dialogs()
    done = Reindexed("sqlite" if store.sqlite else "postgresql", dialogs=len(dialogs))
    if store.sqlite:
        if fresh:
            await store.drop_sqlite_index()
        total = sum(n for _d, _lang, n in dialogs)
        seen = 0
        tell("index", 0, total)
        for dialog_id, language, count in dialogs:
            done.indexed += await store.reindex_dialog(dialog_id, language)
            seen += count
            tell("index", seen, total)
    else:
        tell("index", 0, len(SEARCH_CONFIGS))
        await store.reindex_postgres()
        done.indexed = len(SEARCH_CONFIGS)
        tell("index", len(SEARCH_CONFIGS), len(SEARCH_CONFIGS))
    if embeddings is not None:
        done.embedded = await embeddings.embed_all(
            [(d, n) for d, _lang, n in dialogs], progress=lambda k, total: tell("embeddings", k, total)
        )
    return done
