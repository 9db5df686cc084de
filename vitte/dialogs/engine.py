"""`DialogEngine`: the dialogs engine assembled, the one object the faces call.

It wires the parts and exposes their operations; each rule lives in its part:

- `turn`: a player's turn (`engine.turn(user_id)`), their lock and what it holds;
- `lifecycle`: current, continue, choose, start over, reset, and the reads faces show;
- `reply`: the reply pipeline (`reply`, `regenerate`);
- `memory`: folding old turns into the dialog's summary;
- `factbook`: what the persona knows about the player (facts: prompt, extraction, edits);
- `voice`: the player's voice messages heard and answered;
- `recovery`: replies a crash cut;
- `store`: every SQL statement of dialogs and messages.

Every operation takes the player's `Turn`, or a player id for which it opens a turn of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from vitte.cache.base import Cache
from vitte.catalog.lookup import Catalog
from vitte.config import Settings
from vitte.db import Database
from vitte.dialogs.card_extras import CardExtras
from vitte.dialogs.factbook import Factbook
from vitte.dialogs.lifecycle import Lifecycle
from vitte.dialogs.memory import Memory
from vitte.dialogs.pictures import Pictures
from vitte.dialogs.recovery import recover_interrupted
from vitte.dialogs.reply import Replies
from vitte.dialogs.speech import Speech
from vitte.dialogs.store import HOT_STATEMENTS, DialogStore
from vitte.dialogs.turn import Turns
from vitte.dialogs.views import Recovery
from vitte.dialogs.voice import Hearing
from vitte.llm.base import LLM
from vitte.llm.media import MediaAPI
from vitte.media_allowance import MediaAllowance
from vitte.safety.crisis import CrisisCare, load_crisis_care
from vitte.safety.preamble import load_preamble

if TYPE_CHECKING:
    from vitte.billing import Billing


class DialogEngine:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        cache: Cache,
        llm: LLM,
        catalog: Catalog | None = None,
        preamble: Callable[[str], str] | None = None,
        billing: Billing | None = None,
        crisis: CrisisCare | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.cache = cache
        self.llm = llm
        self.catalog = catalog or Catalog(db)
        self.store = DialogStore(db)
        self.turns = Turns(settings, cache, self.store)
        self.memory = Memory(settings, self.store, llm, self.catalog)
        self.facts = Factbook(settings, db, llm, self.catalog)
        self.lifecycle = Lifecycle(self.store, cache, self.catalog, self.turns)
        self.replies = Replies(
            settings,
            self.store,
            cache,
            llm,
            self.catalog,
            self.turns,
            self.memory,
            crisis or load_crisis_care(settings),
            # the operator's safety preamble, first in every reply's prompt (vitte/safety)
            preamble or load_preamble(settings),
            billing,
            facts=self.facts,
        )
        # voice messages in (issue 19): through the LLM API's /audio/transcriptions
        self.media = MediaAPI.from_settings(settings)
        self.hearing = Hearing(settings, self.store, self.turns, self.replies, self.media)
        self.speech = Speech(settings, self.media, CardExtras(db, self.catalog))  # voice replies: /audio/speech
        # the persona's photos through /images/generations
        self.allowance = MediaAllowance(settings, db)  # voice replies and photos per day
        self.pictures = Pictures(
            settings, self.store, cache, self.turns, self.catalog, llm, self.media, self.allowance
        )
        # the operations, as the faces call them
        self.turn = self.turns.turn
        self.current = self.lifecycle.current
        self.pressed = self.lifecycle.pressed
        self.dialog = self.lifecycle.dialog
        self.latest = self.lifecycle.latest
        self.messages = self.lifecycle.messages
        self.continue_dialog = self.lifecycle.continue_dialog
        self.choose = self.lifecycle.choose
        self.start_over = self.lifecycle.start_over
        self.reset = self.lifecycle.reset
        self.opening_sent = self.lifecycle.opening_sent
        self.check_text = self.replies.check_text
        self.reply = self.replies.reply
        self.regenerate = self.replies.regenerate
        self.fold_memory = self.memory.fold
        self.memory_page = self.facts.page
        self.hear = self.hearing.hear
        self.hear_again = self.hearing.hear_again

    async def aclose(self) -> None:
        """The media client's connections closed (the LLM's are the core's)."""
        if self.media is not None:
            await self.media.aclose()

    async def drain(self) -> None:
        """Wait for background memory work (summary folds, fact extractions) to finish."""
        await self.memory.drain()
        await self.replies.recall.drain()  # background embedding
        await self.facts.drain()

    @property
    def crisis(self) -> CrisisCare:
        return self.replies.crisis

    @property
    def billing(self) -> Billing | None:
        """The daily quota (None: unlimited)."""
        return self.replies.billing

    @billing.setter
    def billing(self, billing: Billing | None) -> None:
        self.replies.billing = billing

    @property
    def rate_window(self) -> float:
        """VITTE_RATE_LIMIT_PER_MINUTE counts in windows this long (seconds)."""
        return self.turns.rate_window

    @rate_window.setter
    def rate_window(self, seconds: float) -> None:
        self.turns.rate_window = seconds

    async def recover_interrupted(self) -> Recovery:
        """After a crash: see `vitte.dialogs.recovery.recover_interrupted`."""
        return await recover_interrupted(self.store, self.cache)

    async def warm_up(self) -> None:
        """The hot path's statements compiled and a pooled connection opened (see Core.warm_up)."""
        dialect = self.db.engine.dialect
        for prepared in HOT_STATEMENTS:
            prepared.compiled(dialect)
        if self.billing is not None:
            self.billing.warm_up(dialect)
        await self.store.active_row(0)  # nobody: no row, one round trip
