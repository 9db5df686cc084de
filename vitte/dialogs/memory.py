"""The dialog's memory: when the history outgrows its share of the prompt budget, the older
turns are folded into the dialog's summary with one LLM call, in the background, off the
reply's path. Start over and reset clear it (a new dialog, or `summary=""`)."""

from __future__ import annotations

import asyncio
import logging

from vitte.cache.base import CachedMessage
from vitte.catalog.lookup import Catalog
from vitte.config import Settings
from vitte.dialogs.store import DialogStore, cached
from vitte.llm.base import LLM, LLMRequest
from vitte.models import Dialog
from vitte.players import player_view
from vitte.prompt import history_tokens, summary_messages

log = logging.getLogger("vitte.dialogs")

KEEP_LAST = 8  # messages a fold leaves out of the summary


class Memory:
    def __init__(self, settings: Settings, store: DialogStore, llm: LLM, catalog: Catalog) -> None:
        self.settings = settings
        self.store = store
        self.llm = llm
        self.catalog = catalog
        self._background: set[asyncio.Task[None]] = set()
        self._folding: set[int] = set()

    def history_budget(self) -> int:
        return max(self.settings.llm_context_tokens * 6 // 10, 128)

    def maybe_fold(self, dialog: Dialog, history: list[CachedMessage]) -> None:
        """Fold in the background when this history is over its budget (once at a time)."""
        dialog_id = int(dialog.id or 0)
        if dialog_id in self._folding or history_tokens(history) <= self.history_budget():
            return
        self._folding.add(dialog_id)
        task = asyncio.create_task(self._fold_safely(dialog_id))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fold_safely(self, dialog_id: int) -> None:
        try:
            await self.fold(dialog_id)
        except Exception as exc:  # memory can wait for the next turn
            log.warning("memory fold for dialog %s failed: %s", dialog_id, exc)
        finally:
            self._folding.discard(dialog_id)

    async def fold(self, dialog_id: int, keep_last: int = KEEP_LAST) -> bool:
        """Fold the older turns into the dialog's memory summary with one LLM call."""
        found = await self.store.unfolded(dialog_id)
        if found is None:
            return False
        dialog, user, rows = found
        if len(rows) <= keep_last:
            return False
        fold = rows[:-keep_last]
        player = player_view(user)
        persona = await self.catalog.persona(dialog.persona_id)
        request = LLMRequest(
            messages=summary_messages(
                persona.name_in(player.language),
                player.called or "user",
                player.language,
                dialog.summary,
                [cached(m) for m in fold],
            ),
            max_tokens=300,
            temperature=0.3,
            persona=persona.card.hints(),
            language=player.language,
            purpose="summary",
        )
        summary = (await self.llm.complete(request)).strip()
        if not summary:
            return False
        return await self.store.save_summary(dialog_id, dialog.summary_upto, summary, int(fold[-1].id or 0))

    async def drain(self) -> None:
        """Wait for background work (memory folds) to finish."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
