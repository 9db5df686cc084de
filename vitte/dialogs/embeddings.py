"""Meaning-based recall: messages embedded off the reply's path, searched exactly per dialog.

With VITTE_EMBEDDINGS_MODEL set (and an OpenAI-compatible API at VITTE_LLM_BASE_URL), each
reply's recall `touch`es its dialog: a background task embeds the dialog's messages that have
no vector of that model yet (`/v1/embeddings`, in batches) and stores them in `message_vectors`
(float32 bytes; an ordinary column on both stores). The process keeps the vectors of recently
active dialogs in memory (a matrix per dialog, loaded in the background on first use), so a
search costs no SQL: the new text is embedded (the one call on the reply's path, with a short
timeout), and every vector of the dialog before the window is compared exactly (cosine, numpy).
Debian 12's PostgreSQL has no pgvector, and a dialog's vectors are few: no ANN index is used.

A message without a vector yet is still found lexically (`vitte.dialogs.recall` fuses both
rankings); an embeddings error costs the reply its meaning-based candidates only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from sqlalchemy import delete, insert, select, text
from sqlmodel import col

from vitte.config import Settings
from vitte.db import Database
from vitte.models import MSG_STREAMING, MessageVector, table_of

log = logging.getLogger("vitte.dialogs")

BATCH = 64  # messages per /embeddings call
RUN_LIMIT = 1024  # messages one background run embeds (the next reply's run goes on)
CACHE_DIALOGS = 64  # dialogs whose vectors a process keeps in memory
QUERY_TIMEOUT = 2.0  # seconds for the new text's embedding on the reply's path
VECTORS = table_of(MessageVector)


class Embedder(Protocol):
    async def embed(self, texts: Sequence[str], model: str) -> list[list[float]]: ...


@dataclass(slots=True)
class _Vectors:
    ids: np.ndarray  # int64, ascending
    matrix: np.ndarray  # float32 (n, dims), rows of unit length

    def add(self, ids: Sequence[int], vectors: np.ndarray) -> _Vectors:
        if not len(ids):
            return self
        if self.matrix.size and self.matrix.shape[1] != vectors.shape[1]:
            return _Vectors(np.asarray(ids, dtype=np.int64), vectors)  # the model changed its size
        both = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])
        matrix = np.vstack([self.matrix, vectors]) if self.matrix.size else vectors
        order = np.argsort(both, kind="stable")
        return _Vectors(both[order], matrix[order])


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return (vectors / norms).astype(np.float32)


def to_bytes(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def from_bytes(raw: bytes) -> np.ndarray:
    return np.frombuffer(raw, dtype="<f4")


class Embeddings:
    """Meaning-based recall for one process (see the module docstring)."""

    def __init__(self, settings: Settings, db: Database, client: Embedder | None) -> None:
        self.model = (settings.embeddings_model or "").strip()
        self.db = db
        self.client = client
        self._cache: OrderedDict[int, _Vectors] = OrderedDict()
        self._busy: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    @classmethod
    def create(cls, settings: Settings, db: Database, llm: Any) -> Embeddings | None:
        """Embeddings when VITTE_EMBEDDINGS_MODEL is set and the LLM client can embed, else None."""
        if not (settings.embeddings_model or "").strip() or not callable(getattr(llm, "embed", None)):
            return None
        return cls(settings, db, llm)

    @property
    def enabled(self) -> bool:
        return bool(self.model) and self.client is not None

    # ------------------------------------------------------------------ the reply's path
    async def search(self, dialog_id: int, text_: str, before: int, k: int) -> list[tuple[int, float]]:
        """The dialog's messages with id < `before` nearest to `text_` (id, cosine), best first;
        [] while the dialog's vectors are not in memory yet (they are being loaded)."""
        self.touch(dialog_id)
        vectors = self._cache.get(dialog_id)
        if vectors is None or not vectors.ids.size or k <= 0 or self.client is None:
            return []
        self._cache.move_to_end(dialog_id)
        try:
            query = await asyncio.wait_for(self.client.embed([text_], self.model), QUERY_TIMEOUT)
        except Exception as exc:  # recall goes on lexically
            log.warning("embedding the new text of dialog %s failed: %s", dialog_id, exc)
            return []
        q = _unit(np.asarray(query, dtype=np.float32))[0]
        if q.shape[0] != vectors.matrix.shape[1]:
            return []
        upto = int(np.searchsorted(vectors.ids, before, side="left"))
        if upto == 0:
            return []
        sims = vectors.matrix[:upto] @ q
        n = min(k, upto)
        top = np.argpartition(-sims, n - 1)[:n]
        top = top[np.argsort(-sims[top], kind="stable")]
        return [(int(vectors.ids[i]), float(sims[i])) for i in top if sims[i] > 0.0]

    def touch(self, dialog_id: int) -> None:
        """The dialog's vectors loaded and its new messages embedded, in the background."""
        if not self.enabled or dialog_id in self._busy:
            return
        self._busy.add(dialog_id)
        task = asyncio.create_task(self._sync_safely(dialog_id))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sync_safely(self, dialog_id: int) -> None:
        try:
            await self.sync(dialog_id, limit=RUN_LIMIT)
        except Exception as exc:  # the next reply tries again
            log.warning("embedding the messages of dialog %s failed: %s", dialog_id, exc)
        finally:
            self._busy.discard(dialog_id)

    # ------------------------------------------------------------------ off the path
    async def sync(self, dialog_id: int, *, limit: int | None = None, progress: Callable[[int], None] | None = None) -> int:
        """The dialog's stored vectors in memory, and its messages without one embedded and
        stored (at most `limit`); how many were embedded."""
        if dialog_id not in self._cache:
            self._remember(dialog_id, await self._load(dialog_id))
        done = 0
        while limit is None or done < limit:
            missing = await self._missing(dialog_id, BATCH)
            if not missing or self.client is None:
                break
            vectors = await self.client.embed([t for _i, t in missing], self.model)
            ids = [i for i, _t in missing]
            await self._save(dialog_id, ids, vectors)
            known = self._cache.get(dialog_id) or _Vectors(np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
            self._remember(dialog_id, known.add(ids, _unit(np.asarray(vectors, dtype=np.float32))))
            done += len(missing)
            if progress is not None:
                progress(len(missing))
        return done

    async def embed_all(
        self, dialogs: Sequence[tuple[int, int]], *, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """`vitte memory reindex --embeddings`: every dialog's messages without a vector embedded
        (resumable: what is stored stays). `dialogs`: (id, messages)."""
        total = sum(n for _d, n in dialogs)
        seen = [0]

        def step(n: int) -> None:
            seen[0] += n
            if progress is not None:
                progress(seen[0], total)

        done = 0
        for dialog_id, _n in dialogs:
            done += await self.sync(dialog_id, progress=step)
            self._cache.pop(dialog_id, None)  # a reindex keeps nothing in memory
        if progress is not None:
            progress(total, total)
        return done

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def forget(self, dialog_id: int) -> None:
        self._cache.pop(dialog_id, None)

    # ------------------------------------------------------------------ SQL
    def _remember(self, dialog_id: int, vectors: _Vectors) -> None:
        self._cache[dialog_id] = vectors
        self._cache.move_to_end(dialog_id)
        while len(self._cache) > CACHE_DIALOGS:
            self._cache.popitem(last=False)

    async def _load(self, dialog_id: int) -> _Vectors:
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    select(col(MessageVector.message_id), col(MessageVector.vector))
                    .where(col(MessageVector.dialog_id) == dialog_id, col(MessageVector.model) == self.model)
                    .order_by(col(MessageVector.message_id))
                )
            ).all()
        if not rows:
            return _Vectors(np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
        dims = {len(r[1]) for r in rows}
        if len(dims) != 1:  # vectors of two sizes under one model name: keep the newest size
            size = len(rows[-1][1])
            rows = [r for r in rows if len(r[1]) == size]
        ids = np.asarray([int(r[0]) for r in rows], dtype=np.int64)
        return _Vectors(ids, _unit(np.vstack([from_bytes(r[1]) for r in rows])))

    async def _missing(self, dialog_id: int, n: int) -> list[tuple[int, str]]:
        async with self.db.session() as s:
            rows = (
                await s.execute(
                    text(
                        "SELECT m.id, m.text FROM messages m LEFT JOIN message_vectors v "
                        "ON v.message_id = m.id AND v.model = :model "
                        f"WHERE m.dialog_id = :d AND v.message_id IS NULL AND m.status <> '{MSG_STREAMING}' "
                        "AND m.text <> '' ORDER BY m.id LIMIT :n"
                    ),
                    {"model": self.model, "d": dialog_id, "n": n},
                )
            ).all()
        return [(int(i), str(t)) for i, t in rows]

    async def _save(self, dialog_id: int, ids: list[int], vectors: list[list[float]]) -> None:
        async with self.db.session() as s:
            # a vector of another model is replaced (one vector per message)
            await s.execute(delete(VECTORS).where(VECTORS.c.message_id.in_(ids)))
            await s.execute(
                insert(VECTORS),
                [
                    {"message_id": i, "dialog_id": dialog_id, "model": self.model[:200], "vector": to_bytes(v)}
                    for i, v in zip(ids, vectors, strict=True)
                ],
            )
            await s.commit()
