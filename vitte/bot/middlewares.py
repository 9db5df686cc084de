"""The outer middlewares every update passes through: one concern each, registered by
`vitte.bot.factory.build_dispatcher` in this order (the first is the outermost):

1. `InFlightMiddleware`: the update's task is tracked while it is handled (a graceful shutdown,
   `Runtime.drain`, waits for these).
2. `ObservabilityMiddleware`: logs carry the update and the player (`vitte.logs`); metrics
   count and time the update by outcome (`vitte.metrics`; later layers set the outcome in
   ``data[OUTCOME_KEY]``).
3. `PlayerLockMiddleware`: the player's turn (`core.dialogs.turn`: their lock) held for the whole
   handling of messages, edited messages and button presses: one reply at a time per player,
   in arrival order (the lock is FIFO); a message sent while a reply streams waits, it is not
   dropped. A `stopped_message_generation` update takes no lock: it must reach the running
   reply. De-duplication by update_id goes with it: inside the lock, so a duplicate never
   overtakes its original, and with Redis done by the very call that takes the lock (one round
   trip for both); without a lock, `core.cache.first_seen`. An update seen for the first time
   marks its player online (`core.cache.touch_online`).
4. `ErrorAnswersMiddleware`: no traceback ever reaches the player. An engine refusal (age gate,
   block, rate, quota) is answered with its reason; a store outage keeps the player's message
   in the spool (`vitte.bot.spooling`, when the bot runs one: the player is told once that the
   answer comes a bit later) or, when it cannot be kept, becomes a short "one moment"; anything
   else a short "something went wrong"; all are logged. While a player has messages kept, their
   next ones are kept behind them (with Redis, whichever process kept them: `Turn.spool_held`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiogram import BaseMiddleware, Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Chat, TelegramObject, Update, User

from vitte.bot.refusals import REFUSALS, answer_refusal
from vitte.bot.runtime import Runtime
from vitte.bot.spooling import REPLAY_KEY, Replay, keep, sender
from vitte.bot.texts import t
from vitte.core import Core
from vitte.db import is_unavailable
from vitte.errors import StoreUnavailable
from vitte.initiative.rules import online_window
from vitte.logs import log_context
from vitte.metrics import handling_update
from vitte.players import language_from_telegram
from vitte.spool import Kept

log = logging.getLogger("vitte.bot")

LOCKED_UPDATES = frozenset({"message", "edited_message", "callback_query"})
DEDUP_TTL = 2 * 86400  # Telegram keeps undelivered updates for 24 hours
OUTCOME_KEY = "vitte_outcome"  # data[...]: the update's outcome for vitte.metrics

Handler = Callable[[TelegramObject, dict[str, Any]], Awaitable[Any]]


def _unavailable(exc: BaseException) -> bool:
    """A database or Redis connection failure not already turned into StoreUnavailable."""
    if is_unavailable(exc):
        return True
    name = type(exc).__name__
    return type(exc).__module__.startswith("redis") and ("Connection" in name or "Timeout" in name)


def _dedup_key(event: Update, bot: Bot | None) -> str:
    """The update's de-duplication key (`Cache.first_seen`): the bot and the update id."""
    return f"update:{bot.id if bot is not None else 0}:{event.update_id}"


def _outcome(data: dict[str, Any], outcome: str) -> None:
    cell = data.get(OUTCOME_KEY)
    if cell is not None:
        cell[0] = outcome


class InFlightMiddleware(BaseMiddleware):
    """1. The update's task is in `runtime.tasks` while it is handled (`Runtime.drain`)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        task = asyncio.current_task()
        if task is None:
            return await handler(event, data)
        tasks = self.runtime.tasks
        tasks.add(task)
        try:
            return await handler(event, data)
        finally:
            tasks.discard(task)


class ObservabilityMiddleware(BaseMiddleware):
    """2. Log context (update and player ids) and the update's metrics."""

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        user: User | None = data.get("event_from_user")
        with (
            log_context(update_id=event.update_id, player_id=user.id if user is not None else None),
            handling_update(event.event_type) as outcome,
        ):
            data[OUTCOME_KEY] = outcome
            return await handler(event, data)


class PlayerLockMiddleware(BaseMiddleware):
    """3. The per-player lock with the update's de-duplication (one call), the online mark."""

    def __init__(self, core: Core) -> None:
        self.core = core
        settings = core.settings
        self._online_ttl = max(int(online_window(settings.online_window, settings.nudge_after)), 1)

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        user: User | None = data.get("event_from_user")
        if user is None or event.event_type not in LOCKED_UPDATES:
            return await self._admit(handler, event, data, user)
        bot: Bot | None = data.get("bot")
        # the de-duplication goes with the lock when that costs nothing more (one round trip);
        # a kept update fed again (the spool) was seen already
        # plain text (not a command) will likely ask for a reply: its first cache reads go too
        text = (event.message.text or "") if event.message is not None else ""
        seen = None if REPLAY_KEY in data else (_dedup_key(event, bot), DEDUP_TTL)
        turns = self.core.dialogs.turn(user.id, seen=seen, replying=bool(text) and not text.startswith("/"))
        try:
            turn = await turns.__aenter__()
        except Exception as exc:  # the cache degrades by contract; never fail the player
            log.warning("player lock for %s unavailable: %s", user.id, exc)
            return await self._admit(handler, event, data, user)
        data["turn"] = turn  # the handler's engine calls take it
        try:
            result = await self._admit(handler, event, data, user, first_seen=turn.first_seen)
        except BaseException as exc:
            if not await turns.__aexit__(type(exc), exc, exc.__traceback__):
                raise
            return None
        await turns.__aexit__(None, None, None)
        return result

    async def _admit(
        self,
        handler: Handler,
        event: Update,
        data: dict[str, Any],
        user: User | None,
        *,
        first_seen: bool | None = None,
    ) -> Any:
        """Handle the update unless it is a duplicate. `first_seen`: the de-duplication's answer
        when the lock gave it (None: ask)."""
        if first_seen is None:
            first_seen = True if REPLAY_KEY in data else await self._first_seen(event, data.get("bot"))
        if not first_seen:
            log.info("duplicate update %s ignored", event.update_id)
            _outcome(data, "duplicate")
            return None
        if user is not None:
            try:
                # online: an update within VITTE_ONLINE_WINDOW, at most VITTE_NUDGE_AFTER (issue 18)
                await self.core.cache.touch_online(user.id, self._online_ttl)
            except Exception as exc:
                log.debug("online mark failed: %s", exc)
        return await handler(event, data)

    async def _first_seen(self, event: Update, bot: Bot | None) -> bool:
        try:
            return await self.core.cache.first_seen(_dedup_key(event, bot), DEDUP_TTL)
        except Exception as exc:  # let it through: handlers are idempotent enough
            log.warning("de-duplication unavailable: %s", exc)
            return True


class ErrorAnswersMiddleware(BaseMiddleware):
    """4. A handler's failure becomes a short answer to the player, and a log line."""

    def __init__(self, core: Core, runtime: Runtime) -> None:
        self.core = core
        self.runtime = runtime

    async def __call__(self, handler: Handler, event: TelegramObject, data: dict[str, Any]) -> Any:
        assert isinstance(event, Update)
        replay: Replay | None = data.get(REPLAY_KEY)
        if replay is not None:
            replay.admitted = True
        else:
            self.runtime.admitted(asyncio.current_task())
            spool = self.runtime.spool
            # kept messages of the player's: known to this process, or (Redis) read as the
            # lock was taken, whichever process kept them (no extra call)
            turn = data.get("turn")
            held = turn is not None and turn.spool_held
            if (
                spool is not None
                and (held or not spool.empty)
                and (who := sender(event))
                and (held or spool.holds(who[0]))
            ):
                _outcome(data, "spooled")  # behind the player's kept messages
                if await keep(spool, event) is Kept.FULL:
                    await self._tell(event, data, "one_moment")
                return None
        try:
            return await handler(event, data)
        except REFUSALS as exc:  # the engine said no (age gate, block, rate, quota): say why
            _outcome(data, "refused")
            await self._refuse(event, data, exc)
        except StoreUnavailable as exc:
            await self._unavailable(event, data, exc)
        except TelegramAPIError as exc:
            log.warning("Telegram error while handling update %s: %s", event.update_id, exc)
            _outcome(data, "error")
            await self._tell(event, data, "oops")
        except Exception as exc:
            if _unavailable(exc):
                await self._unavailable(event, data, exc)
            else:
                _outcome(data, "error")
                user: User | None = data.get("event_from_user")
                log.exception(
                    "update %s (user %s) failed", event.update_id, user.id if user is not None else "-"
                )
                await self._tell(event, data, "oops")
        return None

    async def _unavailable(self, event: Update, data: dict[str, Any], exc: BaseException) -> None:
        """The store is away: keep the message for later (the spool), or say "one moment".
        A replayed update goes back to the spool (raised) unless part of it was stored."""
        turn = data.get("turn")
        untouched = turn is None or not turn.wrote
        if REPLAY_KEY in data and untouched:
            raise exc
        log.warning("store unavailable while handling update %s: %s", event.update_id, exc)
        spool = self.runtime.spool
        kept = await keep(spool, event) if spool is not None and untouched and REPLAY_KEY not in data else None
        _outcome(data, "spooled" if kept in (Kept.FIRST, Kept.MORE) else "unavailable")
        if kept is Kept.FIRST:
            await self._tell(event, data, "spooled")
        elif kept is not Kept.MORE:
            await self._tell(event, data, "one_moment")

    def _addressee(self, data: dict[str, Any]) -> tuple[Bot, User, Chat | None, str] | None:
        """Who to tell, and in which language: the bot, the player, the chat (None when unknown)."""
        bot: Bot | None = data.get("bot")
        user: User | None = data.get("event_from_user")
        if bot is None or user is None:
            return None
        lang = self.runtime.lang_hint.get(user.id) or language_from_telegram(user.language_code)
        return bot, user, data.get("event_chat"), lang

    async def _refuse(self, event: Update, data: dict[str, Any], exc: BaseException) -> None:
        to = self._addressee(data)
        if to is None:
            return
        bot, user, chat, lang = to
        if event.callback_query is not None:
            with contextlib.suppress(Exception):
                await event.callback_query.answer()
        try:
            await answer_refusal(self.core, bot, chat.id if chat is not None else user.id, lang, exc)
        except Exception as err:
            log.info("could not tell user %s about a refusal: %s", user.id, err)

    async def _tell(self, event: Update, data: dict[str, Any], key: str) -> None:
        """A short plain line to the player; failures to tell are only logged."""
        to = self._addressee(data)
        if to is None:
            return
        bot, user, chat, lang = to
        text = t(lang, key)
        if event.callback_query is not None:
            try:
                await event.callback_query.answer(text[:200])
                return
            except Exception as exc:  # answered already, or too old: say it in the chat
                log.debug("callback answer failed: %s", exc)
        try:
            if chat is not None:
                await bot.send_message(chat_id=chat.id, text=text)
        except Exception as exc:  # Telegram itself may be the trouble
            log.info("could not tell user %s about an error: %s", user.id, exc)
