"""What the persona knows about the player, per dialog: the facts' part of each reply's prompt
(from an in-process cache keyed by the dialog's `facts_version`, which the reply's dialog row
already carries: no SQL on the reply's path unless the facts changed), the background
extraction every VITTE_MEMORY_FACTS_EVERY player messages, "запомни, что …", and what the
player and the operator see and change (/memory, the Web App, `vitte memory show`).

The rules (parsing, merging, choosing) are `vitte.dialogs.facts`; the SQL is `facts_store`.
An extraction's failure (the LLM's error, an answer that is not JSON) never touches a reply:
it is logged, `facts_upto` stays, and the same turns are read again at the next extraction.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from vitte.cache.base import CachedMessage
from vitte.catalog.lookup import Catalog
from vitte.config import Settings
from vitte.db import Database
from vitte.dialogs.facts import (
    EXTRACT_TURNS_MAX,
    PLAYER,
    FactsParseError,
    Known,
    PromptFact,
    clean_text,
    extraction_messages,
    now_block,
    parse_extraction,
    pinned,
    pinned_block,
    plan,
    prompt_facts,
    relevant,
)
from vitte.dialogs.facts_store import FactsStore
from vitte.dialogs.store import cached
from vitte.errors import NotFound, VitteError
from vitte.llm.base import LLM, LLMError, LLMRequest
from vitte.models import USER, Dialog, Fact, User
from vitte.players import player_view
from vitte.prompt import estimate_tokens

log = logging.getLogger("vitte.memory")

CACHE_DIALOGS = 4096  # dialogs whose facts a process keeps for the prompt
PINNED_SHARE = 10  # % of VITTE_LLM_CONTEXT_TOKENS for the pinned facts
RELEVANT_SHARE = 5  # % for the facts relevant to the new text
PAGE_SIZE = 5  # facts per /memory page
EXTRACT_RESERVE = (
    1200  # tokens of VITTE_LLM_CONTEXT_TOKENS an extraction keeps for its instruction, facts, answer
)


class FactNotFound(NotFound):
    """No such fact among the player's (theirs, live, in their active dialog)."""


class EmptyFact(VitteError):
    """A fact's text is empty once cleaned."""


@dataclass(frozen=True, slots=True)
class FactView:
    """A fact as the faces show it."""

    id: int
    kind: str
    text: str
    importance: int
    origin: str
    created_at: datetime
    updated_at: datetime
    superseded_by: int | None = None


def fact_view(f: Fact) -> FactView:
    return FactView(
        int(f.id or 0), f.kind, f.text, f.importance, f.origin, f.created_at, f.updated_at, f.superseded_by
    )


@dataclass(frozen=True, slots=True)
class MemoryPage:
    """A page of what the persona remembers: live facts newest first, and the summary."""

    dialog_id: int | None  # None: no active dialog
    facts: list[FactView]
    total: int
    page: int
    pages: int
    summary: str


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    language: str
    char: str
    facts: tuple[PromptFact, ...]
    pinned_ids: frozenset[int]
    pinned_text: str


class Factbook:
    """A dialog's facts (see the module docstring)."""

    def __init__(self, settings: Settings, db: Database, llm: LLM, catalog: Catalog) -> None:
        self.settings = settings
        self.store = FactsStore(db)
        self.llm = llm
        self.catalog = catalog
        self._cache: OrderedDict[int, _Entry] = OrderedDict()
        self._background: set[asyncio.Task[None]] = set()
        self._extracting: set[int] = set()
        self._failed_at: dict[int, int] = {}  # dialog -> the player's message id when it last failed
        # dialog -> the last message an extraction that found nothing read: kept here, not in the
        # dialog's row, so a fruitless extraction changes no row the reply's path reads (a restart
        # reads those turns once more; repeats merge)
        self._read_upto: dict[int, int] = {}
        self.reloads = 0  # facts read for the prompt (cache misses), for tests and benchmarks

    # ------------------------------------------------------------------ the prompt
    def _budget(self, share: int) -> int:
        return max(self.settings.llm_context_tokens * share // 100, 32)

    async def prompt_parts(
        self, dialog: Dialog, language: str, char: str, new_text: str, remembered: str = ""
    ) -> tuple[str, str]:
        """(the pinned facts' block for the stable part, the note for the changing part): the
        facts relevant to `new_text` and the fact just `remembered`. No SQL while the dialog's
        facts version is the one cached (or 0: no facts ever)."""
        dialog_id, version = int(dialog.id or 0), int(dialog.facts_version or 0)
        if version == 0:
            return "", now_block([], remembered, language)
        entry = self._cache.get(dialog_id)
        if entry is None or entry.version != version or entry.language != language or entry.char != char:
            entry = await self._load(dialog_id, version, language, char)
        else:
            self._cache.move_to_end(dialog_id)
        chosen = relevant(entry.facts, new_text, language, entry.pinned_ids, self._budget(RELEVANT_SHARE))
        return entry.pinned_text, now_block(chosen, remembered, language)

    async def _load(self, dialog_id: int, version: int, language: str, char: str) -> _Entry:
        """The dialog's facts read (one statement) and cached under `version` (the dialog row's:
        facts changed since are read again at the next reply, which sees the newer version)."""
        self.reloads += 1
        live = await self.store.live(dialog_id)
        facts = prompt_facts(live, language)
        chosen = pinned(facts, self._budget(PINNED_SHARE))
        entry = _Entry(
            version,
            language,
            char,
            facts,
            frozenset(f.id for f in chosen),
            pinned_block(chosen, language, char),
        )
        self._cache[dialog_id] = entry
        self._cache.move_to_end(dialog_id)
        while len(self._cache) > CACHE_DIALOGS:
            self._cache.popitem(last=False)
        return entry

    # ------------------------------------------------------------------ "запомни, что …"
    async def remember(self, dialog: Dialog, text: str, source_id: int) -> str:
        """Store a fact the player asked to remember in chat, at once; `dialog.facts_version`
        becomes the new version. Returns the stored text ("" when nothing was stored)."""
        text = clean_text(text)
        if not text:
            return ""
        stored = await self.store.add(dialog.user_id, int(dialog.id or 0), text, "player", 4, [source_id])
        if stored is None:
            return ""
        dialog.facts_version = stored[1]
        return stored[0].text

    # ------------------------------------------------------------------ the extraction
    def maybe_extract(self, dialog: Dialog, history: Sequence[CachedMessage]) -> None:
        """Extract in the background when VITTE_MEMORY_FACTS_EVERY player messages were not
        read yet (counted in the reply's history), or turns were folded into the summary unread;
        once at a time per dialog."""
        every = self.settings.memory_facts_every
        dialog_id = int(dialog.id or 0)
        if every <= 0 or dialog_id in self._extracting:
            return
        upto = max(
            int(dialog.facts_upto or 0), self._failed_at.get(dialog_id, 0), self._read_upto.get(dialog_id, 0)
        )
        unread = [m for m in history if m.role == USER and m.id > upto]
        # turns folded into the summary before any extraction read them count as enough
        behind = int(dialog.summary_upto or 0) > upto
        if not unread or (len(unread) < every and not behind):
            return
        self._extracting.add(dialog_id)
        task = asyncio.create_task(self._extract_safely(dialog_id, unread[-1].id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _extract_safely(self, dialog_id: int, last_player_message: int) -> None:
        try:
            await self.extract(dialog_id)
            self._failed_at.pop(dialog_id, None)
        except (LLMError, FactsParseError) as exc:
            _keep(self._failed_at, dialog_id, last_player_message)  # again at the next extraction
            log.warning("fact extraction for dialog %s failed: %s", dialog_id, exc)
        except Exception as exc:  # the store: the next extraction tries again
            _keep(self._failed_at, dialog_id, last_player_message)
            log.warning("fact extraction for dialog %s failed: %s", dialog_id, exc)
        finally:
            self._extracting.discard(dialog_id)

    async def extract(self, dialog_id: int) -> int:
        """Read the dialog's unread turns with one LLM call and store the facts found: repeats
        merged, contradictions superseding. Returns how many facts were added or merged.
        Raises LLMError / FactsParseError (nothing stored, `facts_upto` kept)."""
        unread = await self.store.unread(dialog_id, EXTRACT_TURNS_MAX, self._read_upto.get(dialog_id, 0))
        if unread is None or not unread.messages:
            return 0
        dialog = unread.dialog
        user = await self._player(dialog.user_id)
        player = player_view(user) if user is not None else None
        language = player.language if player is not None else "ru"
        persona = await self.catalog.persona(dialog.persona_id)
        budget = self.settings.llm_context_tokens
        shown = _facts_within(unread.facts, budget // 4)  # the newest known facts, a quarter at most
        used = sum(estimate_tokens(f.text) + 4 for f in shown)
        turns = _within([cached(m) for m in unread.messages], max(budget - EXTRACT_RESERVE - used, 256))
        request = LLMRequest(
            messages=extraction_messages(
                persona.name_in(language),
                (player.called if player is not None else None) or "user",
                language,
                shown,
                turns,
            ),
            max_tokens=600,
            temperature=0.2,
            persona=persona.card.hints(),
            language=language,
            purpose="facts",
        )
        answer = await self.llm.complete(request)
        extracted = parse_extraction(answer)
        changes = plan(unread.facts, extracted, [m.id for m in turns])
        if changes.empty:  # nothing new: no write (see `_read_upto`)
            _keep(self._read_upto, dialog_id, turns[-1].id)
            return 0
        if not await self.store.apply(dialog, changes, turns[-1].id):
            log.info("fact extraction for dialog %s: the facts changed meanwhile; later", dialog_id)
            return 0
        return len(changes.add) + len(changes.merge)

    async def _player(self, user_id: int) -> User | None:
        async with self.store.db.session() as s:
            return await s.get(User, user_id)

    async def drain(self) -> None:
        """Wait for background extractions to finish."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # ------------------------------------------------------------------ the player's
    async def page(self, user_id: int, page: int = 0, size: int = PAGE_SIZE) -> MemoryPage:
        """What the persona remembers in the player's active dialog: a page of live facts,
        newest first, and the summary (the story so far)."""
        page = max(page, 0)
        dialog, rows, total = await self.store.page(user_id, page * size, size)
        pages = max((total + size - 1) // size, 1)
        if dialog is not None and not rows and page > 0 and total:  # past the end: the last page
            return await self.page(user_id, pages - 1, size)
        return MemoryPage(
            int(dialog.id or 0) if dialog is not None else None,
            [fact_view(f) for f in rows],
            total,
            page,
            pages,
            dialog.summary if dialog is not None else "",
        )

    async def add(self, user_id: int, text: str) -> FactView:
        """A fact the player adds (the Web App); FactNotFound without an active dialog."""
        text = clean_text(text)
        if not text:
            raise EmptyFact()
        stored = await self.store.add(user_id, None, text, "player", 4, [])
        if stored is None:
            raise FactNotFound()
        return fact_view(stored[0])

    async def edit(self, user_id: int, fact_id: int, text: str) -> FactView:
        text = clean_text(text)
        if not text:
            raise EmptyFact()
        fact = await self.store.edit(user_id, fact_id, text)
        if fact is None:
            raise FactNotFound()
        return fact_view(fact)

    async def forget(self, user_id: int, fact_id: int) -> None:
        """The fact is gone; the next reply no longer knows it."""
        if not await self.store.forget(user_id, fact_id):
            raise FactNotFound()

    # ------------------------------------------------------------------ operators
    async def of_dialog(self, dialog_id: int) -> list[FactView]:
        """Every fact of a dialog, superseded ones too, oldest first."""
        return [fact_view(f) for f in await self.store.of_dialog(dialog_id)]


def _within(turns: list[CachedMessage], budget: int) -> list[CachedMessage]:
    """The newest turns whose text fits `budget` tokens (at least the newest one), oldest first."""
    kept: list[CachedMessage] = []
    used = 0
    for m in reversed(turns):
        used += estimate_tokens(m.text)
        if kept and used > budget:
            break
        kept.append(m)
    kept.reverse()
    return kept


def _facts_within(facts: list[Known], budget: int) -> list[Known]:
    """The newest facts whose text fits `budget` tokens, oldest first."""
    kept: list[Known] = []
    used = 0
    for f in reversed(facts):
        used += estimate_tokens(f.text) + 4
        if used > budget:
            break
        kept.append(f)
    kept.reverse()
    return kept


def _keep(marks: dict[int, int], dialog_id: int, message_id: int) -> None:
    """A per-dialog mark, the oldest dropped past CACHE_DIALOGS (a process stays bounded)."""
    marks.pop(dialog_id, None)
    marks[dialog_id] = message_id
    while len(marks) > CACHE_DIALOGS:
        marks.pop(next(iter(marks)))


def counts(facts: Sequence[FactView]) -> dict[str, int]:
    """How many facts: in use, superseded, extracted, told by the player (stable keys)."""
    live = [f for f in facts if f.superseded_by is None]
    return {
        "facts": len(live),
        "superseded": len(facts) - len(live),
        "extracted": sum(1 for f in live if f.origin != PLAYER),
        "player": sum(1 for f in live if f.origin == PLAYER),
    }
