"""Recall of past messages: the few earlier messages of the dialog most relevant to the
player's new text, as a fenced block of the prompt ("earlier in your story…").

Per reply: the history the prompt shows is the dialog's window (`vitte.dialogs.window`);
recall searches only the messages before it (`vitte.dialogs.recall_store`: PostgreSQL
full-text search, SQLite FTS5 over Snowball stems), blends the store's rank with recency,
fuses it with meaning-based ranks when embeddings are on (`vitte.dialogs.embeddings`,
reciprocal rank fusion), keeps VITTE_MEMORY_RECALL of them (0 = off: no query at all) and
writes them, oldest first, each with when it was said, within `SHARE` of the token budget.

A dialog whose messages all fit in the window (no summary, the recent list not full) sends no
query: recall costs a reply at most one round trip, and a short dialog none.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from vitte.cache.base import CachedMessage
from vitte.catalog.lookup import Catalog
from vitte.config import Settings
from vitte.dialogs.recall_store import Found, RecallStore
from vitte.dialogs.store import DialogStore
from vitte.dialogs.window import Windows
from vitte.models import ASSISTANT, USER
from vitte.players import player_view
from vitte.prompt import estimate_tokens, fence, fence_text, safe_name
from vitte.textsearch import keywords

if TYPE_CHECKING:
    from vitte.dialogs.embeddings import Embeddings

SHARE = 0.15  # of the prompt's token budget, at most, for recalled messages
WINDOW_SHARE = 0.55  # of the prompt's token budget, at most, for the history window
LINE_CHARS = 500  # characters of one recalled message, at most
CANDIDATES = 3  # each ranking offers this many times VITTE_MEMORY_RECALL candidates
RECENCY_DAYS = 30.0  # recency's weight halves over this many days
RECENCY_WEIGHT = 0.25  # of a lexical score that recency can add or take
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al.)

TAG = "memory_recalled"
INTRO = {
    "ru": "Раньше в вашей истории (сказанное прежде, к новому сообщению):",
    "en": "Earlier in your story (said before, relevant to the new message):",
}
WHEN = {
    "ru": {"today": "сегодня", "yesterday": "вчера", "days": "{n} дн. назад"},
    "en": {"today": "today", "yesterday": "yesterday", "days": "{n} days ago"},
}


@dataclass(frozen=True, slots=True)
class Recalled:
    """A recalled message with its score and the ranks that made it (None: not in that ranking)."""

    id: int
    role: str
    text: str
    created_at: datetime
    score: float
    lexical: int | None = None  # 1-based rank in the full-text ranking
    semantic: int | None = None  # 1-based rank in the embeddings' ranking
    rank: float = 0.0  # the store's relevance (ts_rank_cd, or -bm25)


@dataclass(slots=True)
class PromptParts:
    """What a reply's prompt gets from the window and recall."""

    history: list[CachedMessage]
    block: str = ""  # the fenced recalled block ("" = none)
    recalled: list[Recalled] = field(default_factory=list)
    searched: bool = False  # a query was sent


def when_said(created_at: datetime, now: datetime, lang: str) -> str:
    words = WHEN.get(lang, WHEN["en"])
    created = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    days = (now.astimezone(UTC).date() - created.astimezone(UTC).date()).days
    if days <= 0:
        return words["today"]
    if days == 1:
        return words["yesterday"]
    return words["days"].format(n=days)


def recall_block(
    recalled: Sequence[Recalled], char: str, user: str, lang: str, budget: int, now: datetime | None = None
) -> str:
    """The fenced block: the messages oldest first, each `[when] Name: text` (names sanitised,
    text escaped and cut to LINE_CHARS), as many as fit `budget` tokens (best first)."""
    if not recalled:
        return ""
    lang = lang if lang in INTRO else "en"
    now = now or datetime.now(UTC)
    char = safe_name(char) or ("персонаж" if lang == "ru" else "the character")
    user = safe_name(user) or ("собеседник" if lang == "ru" else "the player")
    used = estimate_tokens(INTRO[lang]) + 8
    kept: list[Recalled] = []
    for r in recalled:  # best first
        text = r.text.strip()
        if len(text) > LINE_CHARS:
            text = text[:LINE_CHARS].rstrip() + "…"
        cost = estimate_tokens(text) + 6
        if used + cost > budget:
            continue
        used += cost
        kept.append(Recalled(r.id, r.role, text, r.created_at, r.score, r.lexical, r.semantic, r.rank))
    if not kept:
        return ""
    lines = [
        f"[{when_said(r.created_at, now, lang)}] {char if r.role == ASSISTANT else user}: "
        + fence_text(" ".join(r.text.split()))
        for r in sorted(kept, key=lambda r: r.id)
    ]
    return INTRO[lang] + "\n" + fence(TAG, "\n".join(lines))


def _recency(created_at: datetime, now: datetime) -> float:
    created = created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
    age_days = max((now - created).total_seconds(), 0.0) / 86400.0
    return math.pow(0.5, age_days / RECENCY_DAYS)


def blend(found: Sequence[Found], now: datetime) -> list[Recalled]:
    """The store's ranking with recency blended in, best first (lexical ranks kept)."""
    weight = lambda f: 1.0 - RECENCY_WEIGHT + RECENCY_WEIGHT * _recency(f.created_at, now)  # noqa: E731
    out = sorted(found, key=lambda f: (-f.rank * weight(f), -f.id))
    return [
        Recalled(f.id, f.role, f.text, f.created_at, f.rank * weight(f), i + 1, None, f.rank)
        for i, f in enumerate(out)
    ]


def fuse(lexical: Sequence[Recalled], semantic: Sequence[Recalled]) -> list[Recalled]:
    """Reciprocal rank fusion of two rankings (each best first): score = Σ 1/(RRF_K + rank)."""
    by_id: dict[int, Recalled] = {}
    scores: dict[int, float] = {}
    ranks: dict[int, tuple[int | None, int | None]] = {}
    for r in lexical:
        by_id[r.id] = r
        scores[r.id] = scores.get(r.id, 0.0) + 1.0 / (RRF_K + (r.lexical or 1))
        ranks[r.id] = (r.lexical, None)
    for r in semantic:
        by_id.setdefault(r.id, r)
        scores[r.id] = scores.get(r.id, 0.0) + 1.0 / (RRF_K + (r.semantic or 1))
        ranks[r.id] = (ranks.get(r.id, (None, None))[0], r.semantic)
    fused = [
        Recalled(r.id, r.role, r.text, r.created_at, scores[i], ranks[i][0], ranks[i][1], r.rank)
        for i, r in by_id.items()
    ]
    fused.sort(key=lambda r: (-r.score, -r.id))
    return fused


class Recall:
    """Recall of past messages for a reply (see the module docstring)."""

    def __init__(self, settings: Settings, store: RecallStore, embeddings: Embeddings | None = None) -> None:
        self.settings = settings
        self.store = store
        self.embeddings = embeddings
        self.windows = Windows()

    @property
    def limit(self) -> int:
        return self.settings.memory_recall

    async def find(
        self, dialog_id: int, language: str, text: str, before: int, limit: int | None = None
    ) -> list[Recalled]:
        """The dialog's messages with id < `before` most relevant to `text`, best first."""
        k = self.limit if limit is None else limit
        if k <= 0 or not text.strip():
            return []
        now = datetime.now(UTC)
        near: list[tuple[int, float]] = []
        if self.embeddings is not None and self.embeddings.enabled:
            near = await self.embeddings.search(dialog_id, text, before, k * CANDIDATES)
        # the meaning-based candidates' rows come with the lexical search (one round trip)
        found = await self.store.search(dialog_id, language, text, before, k * CANDIDATES, [i for i, _s in near])
        lexical = blend([f for f in found if f.lexical], now)
        if not near:
            return lexical[:k]
        rows = {f.id: f for f in found}
        semantic = [
            Recalled(f.id, f.role, f.text, f.created_at, sim, None, n + 1, f.rank)
            for n, (i, sim) in enumerate(near)
            if (f := rows.get(i)) is not None
        ]
        return fuse(lexical, semantic)[:k]

    async def drain(self) -> None:
        """Wait for background embedding to finish."""
        if self.embeddings is not None:
            await self.embeddings.drain()

    async def prompt_parts(
        self,
        dialog_id: int,
        summary_upto: int,
        language: str,
        history: Sequence[CachedMessage],
        char: str,
        user: str,
        windows: Windows | None = None,
    ) -> PromptParts:
        """The reply's history window and the recalled block for the player's newest message
        (`windows`: whose anchors, the process's by default)."""
        budget = self.settings.llm_context_tokens
        full = summary_upto > 0 or len(history) > self.settings.recent_messages  # older messages exist
        shown = (windows or self.windows).window(dialog_id, history, int(budget * WINDOW_SHARE), full=full)
        if self.limit <= 0 or not shown:
            return PromptParts(shown)
        older = full or len(shown) < len(history)
        new_text = next((m.text for m in reversed(history) if m.role == USER), "")
        if not older or not new_text.strip():
            return PromptParts(shown)
        recalled = await self.find(dialog_id, language, new_text, shown[0].id)
        block = recall_block(recalled, char, user, language, int(budget * SHARE))
        return PromptParts(shown, block, recalled, searched=True)

    async def preview(
        self, store: DialogStore, user_id: int, text: str, catalog: Catalog | None = None
    ) -> Preview | None:
        """What recall would put in the prompt if the player wrote `text` now (their active
        dialog, else the latest; a fresh window over the recent messages), with the scores.
        None: the player has no dialog."""
        found = await store.latest_with_player(user_id)
        if found is None:
            return None
        dialog, player_row = found
        player = player_view(player_row)
        dialog_id = int(dialog.id or 0)
        recent = await store.recent(dialog_id, self.settings.recent_messages)
        history = [m for m in recent if m.id > dialog.summary_upto]
        history.append(CachedMessage(2**62, USER, text))  # the new message, after everything stored
        if self.embeddings is not None and self.embeddings.enabled:
            await self.embeddings.sync(dialog_id, limit=0)  # the stored vectors in memory, none embedded
        persona = dialog.persona_id
        if catalog is not None:
            with contextlib.suppress(Exception):  # a persona gone from the catalogue: its id
                persona = (await catalog.persona(dialog.persona_id)).name_in(player.language)
        parts = await self.prompt_parts(
            dialog_id, dialog.summary_upto, player.language, history, persona, player.called or "",
            windows=Windows(),
        )  # fmt: skip
        return Preview(dialog_id, dialog.status, player.language, keywords(text, player.language), parts)


@dataclass(frozen=True, slots=True)
class Preview:
    """`Recall.preview`: the dialog searched and what recall found for the text."""

    dialog_id: int
    status: str
    language: str
    words: list[str]  # the text's words that were searched for
    parts: PromptParts
