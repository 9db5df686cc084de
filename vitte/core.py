"""The core, assembled: settings, database, cache, LLM, catalog, dialogs engine and players.

Every face (bot, Web App, CLI, console) builds one `Core` and calls into it.
"""

from __future__ import annotations

from dataclasses import dataclass

from vitte.billing import Billing
from vitte.cache import make_cache
from vitte.cache.base import Cache
from vitte.catalog.lookup import Catalog
from vitte.config import Settings
from vitte.db import Database
from vitte.dialogs import DialogEngine
from vitte.initiative.rules import first_nudge
from vitte.llm import make_llm
from vitte.llm.base import LLM
from vitte.metrics import observe_core
from vitte.players import Players
from vitte.safety.preamble import load_preamble


@dataclass
class Core:
    settings: Settings
    db: Database
    cache: Cache
    llm: LLM
    catalog: Catalog
    dialogs: DialogEngine
    players: Players
    billing: Billing

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        llm: LLM | None = None,
        cache: Cache | None = None,
        seed_if_empty: bool = False,
    ) -> Core:
        """Connect everything; the embedded SQLite database upgrades itself on first use."""
        db = Database(settings)
        await db.ensure_ready()
        cache = cache or make_cache(settings)
        llm = llm or make_llm(settings)
        catalog = Catalog(db)
        billing = Billing(settings, db, cache)
        core = cls(
            settings=settings,
            db=db,
            cache=cache,
            llm=llm,
            catalog=catalog,
            dialogs=DialogEngine(
                settings, db, cache, llm, catalog, billing=billing, preamble=load_preamble(settings)
            ),
            players=Players(db, cache),
            billing=billing,
        )
        observe_core(core)  # database pool and cache health for /metrics
        # issue 18: a new dialog gets its row in the nudge schedule as it opens
        core.dialogs.store.first_nudge = first_nudge(float(settings.nudge_after))
        if seed_if_empty and not await catalog.personas():
            from vitte.catalog.cards import default_fixtures_dir, read_cards
            from vitte.catalog.seed import seed_cards

            await seed_cards(db, read_cards(default_fixtures_dir()))
            catalog.invalidate()
        return core

    async def warm_up(self) -> None:
        """Connections opened, the catalog loaded and the hot statements compiled, so that the
        first player's message costs what every later one does (the bot runs this at start)."""
        await self.catalog.personas()
        await self.cache.ping()
        await self.dialogs.warm_up()

    async def close(self) -> None:
        await self.dialogs.drain()
        await self.dialogs.aclose()
        await self.llm.aclose()
        await self.cache.close()
        await self.db.dispose()
