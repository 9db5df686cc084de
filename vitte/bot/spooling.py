"""The bot's side of the spool (`vitte.spool`): which updates are kept while the database is
away, and the drainer that feeds them back through the dispatcher, in order, once it returns.

- Kept: a player's message (text or command) whose handling found the store unreachable before
  anything of it was stored (`Turn.wrote`), and any later message of a player who has messages
  kept (so none overtakes them). The player hears once that the answer comes a bit later
  (`spooled`); a full spool gets today's "one moment, write again" (`one_moment`). Button
  presses are not kept: they are answered "one moment" at once, and pressed again.
- In polling mode, the messages that shutdown cut while they waited for their player's turn
  (`Runtime.cut_waiting`) are kept too, and handled on the next start. (A webhook leaves them
  to Telegram, which delivers them again.)
- The drainer (one per bot process) takes the oldest kept update when the database answers,
  and feeds it marked as a replay (`REPLAY_KEY`: no de-duplication, not kept again); the store
  failing again puts it back at the front. Of the list shared in Redis, one drainer at a time
  takes (it holds the spool's lease, renewed while it works, given up when it stops), so a
  player's kept updates are answered in the order they were kept, whichever process kept them.
  With nothing to take, a drainer looks again every `DRAIN_POLL` seconds (sooner when its
  process keeps something): a lease holder that died is replaced once its lease runs out.
  An update older than `VITTE_SPOOL_MAX_AGE` is given up and its player asked to write again
  (`spool_expired`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from aiogram import Bot, Dispatcher
from aiogram.types import Update
from sqlalchemy import text

from vitte.bot.texts import t
from vitte.core import Core
from vitte.db import is_unavailable
from vitte.errors import StoreUnavailable
from vitte.players import language_from_telegram
from vitte.spool import Entry, Kept, Spool

log = logging.getLogger("vitte.bot")

REPLAY_KEY = "vitte_replay"  # feed_update(..., vitte_replay=Replay()): a kept update handled now
RETRY_MAX = 10.0  # seconds between looks at a database still away, at most
DRAIN_POLL = 3.0  # seconds between looks at the spool with nothing to take (another's lease, or empty)


@dataclass
class Replay:
    """Marks a replayed update; `admitted` once its handling began (then it is never kept again:
    part of it may be stored)."""

    admitted: bool = False


def sender(update: Update) -> tuple[int, str | None] | None:
    """The player a message update is from and their language code (None: not a message)."""
    message = update.message
    if message is None or message.from_user is None or message.chat.type != "private":
        return None
    return message.from_user.id, message.from_user.language_code


def update_json(update: Update) -> dict[str, Any]:
    return update.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)


async def keep(spool: Spool, update: Update) -> Kept | None:
    """Keep a message update (None: not a message of a private chat; not kept)."""
    who = sender(update)
    if who is None:
        return None
    return await spool.keep(who[0], update_json(update))


def _unavailable(exc: BaseException) -> bool:
    return isinstance(exc, StoreUnavailable) or is_unavailable(exc)


async def store_up(core: Core) -> bool:
    """The database answers a trivial statement."""
    try:
        async with core.db.session() as s:
            await s.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


class Drainer:
    """Feeds kept updates back through the dispatcher, oldest first, while the bot runs."""

    def __init__(
        self, spool: Spool, dp: Dispatcher, bot: Bot, core: Core, *, poll: float = DRAIN_POLL
    ) -> None:
        self.spool = spool
        self.dp = dp
        self.bot = bot
        self.core = core
        self.poll = poll

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: take, handle, release; a failure of the drainer itself is logged and
        it goes on after a pause (the kept updates stay kept). What an earlier run kept is
        loaded once, before the first take: the counts of kept updates per player live on
        across the drainer's restarts (loading again would read the file anew, while an
        update may be in hand). The lease on the shared list is
        renewed meanwhile, and given up on `stop` (cancelled without it, as by a crash, it
        runs out)."""
        loaded = False
        renewing = asyncio.create_task(self._renew())
        try:
            while not stop.is_set():
                try:
                    if not loaded:
                        await self.spool.load()
                        loaded = True
                    await self._run(stop)
                except Exception:
                    log.exception("spool: the drainer failed; trying again in %.0f s", RETRY_MAX)
                    await _wait_any(stop, None, within=RETRY_MAX)
        finally:
            renewing.cancel()
            if stop.is_set():
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.spool.give_up_lease())

    async def _renew(self) -> None:
        """The lease outlives an update in hand that takes long (a slow reply, a database
        slow to answer): renewed a few times per lease while held."""
        while True:
            await asyncio.sleep(self.spool.lease / 3)
            try:
                await self.spool.renew()
            except Exception as exc:  # the cache degrades by itself; the lease may run out
                log.warning("spool: the drainer's lease was not renewed: %s", exc)

    async def _run(self, stop: asyncio.Event) -> None:
        wait = 0.5
        while not stop.is_set():
            entry = await self.spool.take()
            if entry is None:
                self.spool.settle()
                self.spool.wakeup.clear()
                # bounded: the shared list may be another's that dies, or be filled by others
                await _wait_any(stop, self.spool.wakeup, within=self.poll)
                continue
            try:
                if self.spool.expired(entry):
                    await self._give_up(entry)
                    await self.spool.release(entry, handled=True)
                    continue
                if not await store_up(self.core):
                    await self.spool.release(entry, handled=False)
                    await _wait_any(stop, None, within=wait)
                    wait = min(wait * 2, RETRY_MAX)
                    continue
                handled = await self._feed(entry)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.spool.release(entry, handled=False))
                raise
            await self.spool.release(entry, handled=handled)
            if handled:
                wait = 0.5
            else:
                await _wait_any(stop, None, within=wait)
                wait = min(wait * 2, RETRY_MAX)

    async def _feed(self, entry: Entry) -> bool:
        """Handle one kept update; False when the store failed before its handling began
        (it stays kept)."""
        try:
            update = Update.model_validate(entry.update, context={"bot": self.bot})
        except Exception as exc:
            log.warning("spool: a kept update could not be read again, dropped: %s", exc)
            return True
        replay = Replay()
        try:
            await self.dp.feed_update(self.bot, update, **{REPLAY_KEY: replay})
        except asyncio.CancelledError:
            if replay.admitted:  # the engine stores a cut reply as interrupted: not again
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.spool.release(entry, handled=True))
            raise
        except Exception as exc:
            if _unavailable(exc):  # before anything of it was stored (ErrorAnswersMiddleware)
                log.info("spool: the database is away again; update %s stays kept", update.update_id)
                return False
            log.exception("spool: kept update %s failed", update.update_id)
        return True

    async def _give_up(self, entry: Entry) -> None:
        log.warning(
            "spool: update of player %s kept %.0f s, longer than VITTE_SPOOL_MAX_AGE: given up",
            entry.user_id,
            self.spool.max_age,
        )
        if self.spool.told_expired(entry.user_id):
            return
        message = entry.update.get("message") or {}
        lang = language_from_telegram((message.get("from") or {}).get("language_code"))
        with contextlib.suppress(Exception):
            await self.bot.send_message(chat_id=entry.user_id, text=t(lang, "spool_expired"))


async def _wait_any(stop: asyncio.Event, other: asyncio.Event | None, within: float | None) -> None:
    waits = [asyncio.ensure_future(stop.wait())]
    if other is not None:
        waits.append(asyncio.ensure_future(other.wait()))
    try:
        await asyncio.wait(waits, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
