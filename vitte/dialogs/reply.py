"""The reply pipeline: the player's message stored, the persona's reply written and stored.

`reply`: the player's text is checked, the player admitted (block, age, active dialog), the
rate limit and today's quota taken, the player's message and the reply's placeholder stored
(one statement on PostgreSQL, with the quota), then the LLM streams the reply and the row is
written. `regenerate` writes the latest reply again (🔄) or answers a message whose reply
failed ([Повторить]), through the same writing path. A reply cut by cancellation is stored
marked interrupted, never shown as complete; a failed one leaves the player's message stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from vitte.cache.base import Cache, CachedMessage, user_key, window_remaining
from vitte.catalog.lookup import Catalog
from vitte.catalog.shown import pick_seed
from vitte.config import Settings
from vitte.db import unavailable_as
from vitte.dialogs.facts import remember_request
from vitte.dialogs.memory import Memory
from vitte.dialogs.recall import PromptParts, Recall
from vitte.dialogs.recall_store import RecallStore
from vitte.dialogs.store import DialogStore, by_role
from vitte.dialogs.turn import Turn, Turns
from vitte.dialogs.views import OnText, ReplyOutcome
from vitte.errors import (
    MessageTooLong,
    NothingToRegenerate,
    QuotaExceeded,
    RateLimited,
    ReplyFailed,
    StaleDialog,
    StoreUnavailable,
    VitteError,
)
from vitte.i18n import COMMON
from vitte.llm.base import LLM, LLMBadResponse, LLMError, LLMRequest
from vitte.metrics import observe_llm
from vitte.models import ASSISTANT, MSG_INTERRUPTED, MSG_OK, MSG_STOPPED, USER, Dialog, User, utcnow
from vitte.players import player_view, zone_of
from vitte.prepared import RawConnection
from vitte.prompt import STYLE_MAX_TOKENS, PromptInput, build_messages, idle_before, safe_name
from vitte.safety.crisis import CrisisCare
from vitte.safety.preamble import load_preamble

if TYPE_CHECKING:
    from vitte.billing import Billing, QuotaDecision
    from vitte.dialogs.embeddings import Embeddings
    from vitte.dialogs.factbook import Factbook

log = logging.getLogger("vitte.dialogs")

STALE_ROW_ATTEMPTS = 3  # a reply reads the player's rows again at most this often


@contextlib.asynccontextmanager
async def crisis_marked(crisis: bool) -> AsyncIterator[None]:
    """A refusal (quota, rate, block, failure …) of a crisis message says so: `exc.crisis`."""
    try:
        yield
    except VitteError as exc:
        if crisis:
            exc.crisis = True
        raise


@dataclass(slots=True)
class _Written:
    """A reply to write: its dialog and player, the history it answers, where it goes."""

    dialog: Dialog
    user: User
    history: list[CachedMessage]
    placeholder_id: int | None  # the new reply's row (None: `replace_id`'s row, once complete)
    replace_id: int | None = None
    user_message_id: int | None = None
    crisis: bool = False  # a crisis signal in the player's new message (flagged, counted)
    care: bool = False  # answer with care (regenerating the answer to a crisis message)
    remembered: str = ""  # a fact the player has just asked to remember ("запомни, что …")
    idle: timedelta | None = None  # {{idle_duration}}: since the player's previous message (`idle_before`)


def _embeddings(settings: Settings, store: DialogStore, llm: LLM) -> Embeddings | None:
    """Meaning-based recall when VITTE_EMBEDDINGS_MODEL is set; numpy is imported only then
    (about 15 MB of a bot process that does not use it)."""
    if not (settings.embeddings_model or "").strip():
        return None
    from vitte.dialogs.embeddings import Embeddings

    return Embeddings.create(settings, store.db, llm)


class Replies:
    """The reply pipeline (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        store: DialogStore,
        cache: Cache,
        llm: LLM,
        catalog: Catalog,
        turns: Turns,
        memory: Memory,
        crisis: CrisisCare,
        preamble: Callable[[str], str],
        billing: Billing | None,
        facts: Factbook | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache
        self.llm = llm
        self.catalog = catalog
        self.turns = turns
        self.memory = memory
        self.crisis = crisis
        self.preamble = preamble
        self.billing = billing  # the daily quota (None: unlimited)
        self.facts = facts  # what the persona knows about the player (None: no facts)
        # the history window and earlier messages recalled for the new text (vitte.dialogs.recall)
        self.recall = Recall(settings, RecallStore(store.db), _embeddings(settings, store, llm))

    def check_text(self, text: str) -> str:
        # U+0000 means nothing in a chat and PostgreSQL text cannot hold it (SQLite can)
        text = text.replace("\x00", "").strip()
        if len(text) > self.settings.max_message_chars:
            raise MessageTooLong(self.settings.max_message_chars)
        return text

    # ------------------------------------------------------------------ reply
    async def reply(
        self,
        who: Turn | int,
        text: str,
        *,
        telegram_message_id: int | None = None,
        on_text: OnText | None = None,
        stop: asyncio.Event | None = None,
    ) -> ReplyOutcome:
        """Store the player's message, write the persona's reply, store it.

        Raises NoActiveDialog, MessageTooLong, ReplyFailed (the player's message stays
        stored; `regenerate` answers it later), StoreUnavailable; and, before anything is
        stored or the LLM is called, PlayerBlocked, AgeNotConfirmed, RateLimited, QuotaExceeded.
        A crisis signal sets `ReplyOutcome.crisis` (or `exc.crisis` on any VitteError raised).
        """
        # never stored, never logged: a flag for the face and a counted event
        crisis = self.crisis.detect(text[: self.settings.max_message_chars * 2])
        async with crisis_marked(crisis):
            text = self.check_text(text)
            if not text:
                raise MessageTooLong(self.settings.max_message_chars)
            async with self.turns.of(who) as turn:
                counter = _CrisisCount(self.store, crisis)
                dialog, user, recent, quota, (user_msg_id, placeholder_id), said_at = await self._store_message(
                    turn, text, telegram_message_id, counter
                )
                try:
                    remembered = await self.remember(dialog, text, user_msg_id)
                    user_msg = CachedMessage(user_msg_id, USER, text, MSG_OK, said_at.timestamp())
                    history = [m for m in recent if m.id > dialog.summary_upto] + [user_msg]
                    # the player's message reaches the cache with the reply (one round trip),
                    # or on its own when no reply is stored
                    unsaved = [user_msg]
                    try:
                        outcome = await self._write(
                            turn,
                            _Written(
                                dialog,
                                user,
                                history,
                                placeholder_id,
                                user_message_id=user_msg_id,
                                crisis=crisis,
                                remembered=remembered,
                                # the cached messages carry their times: no query for it
                                idle=idle_before(recent, user_msg_id, said_at.timestamp()),
                            ),
                            on_text,
                            stop,
                            unsaved,
                        )
                    finally:
                        if unsaved:
                            await asyncio.shield(turn.append(self.cache, int(dialog.id or 0), *unsaved))
                except BaseException:
                    await self._give_back(quota)
                    raise
                return await self._settle(outcome, quota)

    async def _store_message(
        self, turn: Turn, text: str, telegram_message_id: int | None, counter: _CrisisCount
    ) -> tuple[Dialog, User, list[CachedMessage], QuotaDecision | None, tuple[int, int], datetime]:
        """The player admitted, the rate limit checked, one reply taken from today's quota and
        the player's message and the reply's placeholder stored: the dialog, the player, the
        recent messages, the quota taken, the two rows' ids and the time the message was stored at.

        The first attempt may start from the row an earlier turn read (PostgreSQL; the turn
        statement confirms it); a changed row is read again. A refusal is never decided on an
        unconfirmed row. The crisis event is counted once the player is known admitted."""
        user_id = turn.user_id
        recent: list[CachedMessage] = []
        recent_of: int | None = None
        for attempt in range(STALE_ROW_ATTEMPTS):
            dialog, user = await self.turns.admitted_active(
                turn, user_id, optimistic=attempt == 0 and self.billing is not None
            )
            confirmed = turn.unconfirmed_versions is None
            if confirmed:
                await counter.count(user)
            dialog_id = int(dialog.id or 0)
            if recent_of != dialog_id:
                # the rate limit before anything is stored or the LLM is called; the recent
                # messages come along from the cache in the same round trip
                try:
                    recent = await self._rate_check_and_recent(turn, dialog_id)
                except RateLimited:
                    if not confirmed:  # a blocked player hears that, not "too fast"
                        self.turns.forget(user_id, turn)
                        _dialog, user = await self.turns.admitted_active(turn, user_id)
                        await counter.count(user)
                    raise
                recent_of = dialog_id
            # hot path: no transaction, each statement commits on its own (one round trip
            # each). One reply from today's quota first: QuotaExceeded means nothing is stored
            # and the LLM is not called; if storing the message fails, the reply is given back.
            now = utcnow()
            try:
                async with unavailable_as(StoreUnavailable), self.store.db.raw() as conn:
                    stored = await self._count_and_store(
                        conn, user, dialog_id, text, telegram_message_id, now, turn.unconfirmed_versions
                    )
            except QuotaExceeded:  # decided on confirmed rows
                await counter.count(user)
                raise
            if stored is not None:
                await counter.count(user)
                turn.confirmed = turn.wrote = True
                return dialog, user, recent, stored[0], stored[1], now
            self.turns.forget(user_id, turn)  # the rows changed since they were read: again
        raise StoreUnavailable("the player's rows kept changing")

    async def _count_and_store(
        self,
        conn: RawConnection,
        user: User,
        dialog_id: int,
        text: str,
        telegram_message_id: int | None,
        now: datetime,
        versions: tuple[str, str] | None,
    ) -> tuple[QuotaDecision | None, tuple[int, int]] | None:
        """One reply from today's quota and the turn's two rows: ONE statement on PostgreSQL
        within the daily quota, else the quota's statements then the turn's (QuotaExceeded
        stores nothing; a failed store gives the reply back).

        `versions`: the dialog's and the player's rows were not read in this turn; None back
        (nothing done) when they are not those versions any more, or cannot be checked."""
        billing = self.billing
        if billing is not None and conn.dialect.name == "postgresql":
            day, limit = billing.today(user)
            if limit > 0:
                rows = await self.store.count_and_store_turn(
                    conn,
                    {
                        "user_id": user.id,
                        "day": day,
                        "limit": limit,
                        "dialog_id": dialog_id,
                        "text": text,
                        "telegram_message_id": telegram_message_id,
                        "now": now,
                        "dialog_version": versions[0] if versions else None,
                        "user_version": versions[1] if versions else None,
                    },
                )
                if rows and rows[0][1] is None:
                    return None  # the rows changed (or the dialog ended): read them again
                if rows:
                    return billing.daily_decision(user, day, int(rows[0][0]), limit), by_role(rows)
                versions = None  # confirmed: only the daily quota is used up
        if versions is not None:
            return None  # nothing here confirms the rows: read them
        quota = await self._take(user, conn)
        try:
            return quota, await self.store.store_turn(conn, dialog_id, text, telegram_message_id, now)
        except BaseException:
            await self._give_back(quota)
            raise

    # ------------------------------------------------------------------ regenerate
    async def regenerate(
        self,
        who: Turn | int,
        dialog_id: int,
        *,
        expected_message_id: int | None = None,
        on_text: OnText | None = None,
        stop: asyncio.Event | None = None,
    ) -> ReplyOutcome:
        """Write the latest reply again (🔄), or answer a message whose reply failed (Повторить).

        `expected_message_id`: the message the face's button was made for (the reply for 🔄,
        the player's message for [Повторить]): StaleDialog unless it is still the dialog's latest. The new reply replaces the previous one in the
        history only once it is complete.
        """
        async with self.turns.of(who) as turn:
            dialog, user = await self.turns.admitted_active(turn, turn.user_id)
            if int(dialog.id or 0) != dialog_id:
                raise StaleDialog()
            last_two = await self.store.messages(dialog_id, 2)
            if expected_message_id is not None and (not last_two or last_two[0].id != expected_message_id):
                raise StaleDialog()
            if not last_two:
                raise NothingToRegenerate()
            last = last_two[0]
            replace_id: int | None = None
            if last.role == ASSISTANT:
                if len(last_two) < 2 or last_two[1].role != USER:
                    raise NothingToRegenerate()  # the story's opening, or nothing to answer
                replace_id = int(last.id or 0)
            elif last.role != USER:
                raise NothingToRegenerate()
            answered_row = last if replace_id is None else last_two[1]
            recent = await self._rate_check_and_recent(turn, dialog_id)  # before the LLM is called
            quota = await self._take(user)  # before the LLM is called
            try:
                history = [m for m in recent if m.id > dialog.summary_upto and m.id != replace_id]
                # the persona answers a crisis message with care again (no new flag or event)
                answered = next((m for m in reversed(history) if m.role == USER), None)
                care = answered is not None and self.crisis.detect(answered.text)
                # answering a message: the reply's placeholder first, as `reply` stores one, so
                # a crash mid-reply is recovered and told (`recover_interrupted`); a 🔄 keeps the
                # reply it replaces until the new one is complete
                placeholder_id = (
                    None if replace_id is not None else await self.store.add_placeholder(dialog_id)
                )
                outcome = await self._write(
                    turn,
                    _Written(
                        dialog,
                        user,
                        history,
                        placeholder_id,
                        replace_id,
                        care=care,
                        # the cached messages carry their times; the answered one's is read here anyway
                        idle=idle_before(recent, int(answered_row.id or 0), answered_row.created_at.timestamp()),
                    ),
                    on_text,
                    stop,
                )
            except BaseException:
                await self._give_back(quota)
                raise
            return await self._settle(outcome, quota)

    # ------------------------------------------------------------------ the cache's part
    async def _rate_check_and_recent(self, turn: Turn, dialog_id: int) -> list[CachedMessage]:
        """RateLimited when the player asked for more replies than VITTE_RATE_LIMIT_PER_MINUTE,
        else the dialog's recent messages (`recent`): one cache round trip for both.

        Under a lock whose last holder crashed (`Turn.take_suspect`) the messages come from
        the database (and are cached again): the crashed holder may have left the cache stale."""
        await turn.flush(self.cache, dialog_id)  # in the cache before it is read
        fresh = turn.take_suspect()
        limit = self.settings.rate_limit_per_minute
        if limit <= 0:
            return await self.recent(dialog_id, cached=not fresh)
        window, key = self.turns.rate_window, user_key(turn.user_id, "replies")
        read = None if fresh else turn.take_prefetched(key, window, dialog_id)
        if read is not None:  # read with the lock; the hit is counted with its release
            turn.defer_hit(key, window, read.index)
            hits, cached = read.hits + 1, read.recent
        else:
            hits, cached = await self.cache.hit_and_recent(key, window, dialog_id)
        if hits > limit:
            if fresh:
                turn.suspect_again()  # still to be read from the database
            raise RateLimited(window_remaining(window))
        return cached if cached is not None and not fresh else await self.recent(dialog_id, cached=False)

    async def recent(self, dialog_id: int, *, cached: bool = True) -> list[CachedMessage]:
        """The dialog's recent messages: the cache's, else the database's (then cached).
        `cached=False`: the cache was just asked and missed."""
        if cached:
            found = await self.cache.recent_get(dialog_id)
            if found is not None:
                return found
        recent = await self.store.recent(dialog_id, self.settings.recent_messages)
        await self.cache.recent_fill(dialog_id, recent)
        return recent

    # ------------------------------------------------------------------ writing
    def _prompt_preamble(self, language: str, care: bool) -> tuple[str, str]:
        """The operator's preamble (+ the crisis care note) and its reminder after the history
        (an engine given a bare callable gets the reminder shipped for the configured files)."""
        text = self.preamble(language)
        if care:
            text = f"{text}\n\n{self.crisis.care_note(language)}"
        reminder = getattr(self.preamble, "reminder", None)
        if not callable(reminder):
            reminder = load_preamble(self.settings).reminder
        return text, reminder(language)

    async def remember(self, dialog: Dialog, text: str, message_id: int) -> str:
        """ "запомни, что …" / "remember that …": the fact stored at once (one statement, only
        for such a message); the stored text, or ""."""
        if self.facts is None:
            return ""
        fact = remember_request(text)
        return await self.facts.remember(dialog, fact, message_id) if fact else ""

    async def _request(self, w: _Written) -> LLMRequest:
        player = player_view(w.user)
        persona = await self.catalog.persona(w.dialog.persona_id)
        char_name = persona.name_in(player.language)
        facts, facts_now = "", ""
        if self.facts is not None:  # no SQL unless the dialog's facts changed (vitte.dialogs.factbook)
            new_text = next((m.text for m in reversed(w.history) if m.role == USER), "")
            facts, facts_now = await self.facts.prompt_parts(
                w.dialog, player.language, char_name, new_text, w.remembered
            )
        recall = await self._recall(w, player.language, char_name, player.called or "")
        premise = ""
        if w.dialog.story_id:
            with contextlib.suppress(Exception):
                premise = (await self.catalog.story(w.dialog.story_id)).premise
        preamble, reminder = self._prompt_preamble(player.language, w.care or w.crisis)
        prompt = PromptInput(
            card=persona.card,
            char_name=char_name,
            # the name the player set, else Telegram's: one line, bounded, no braces/tags (vitte.prompt)
            user_name=safe_name(player.called or "") or COMMON.t(player.language, "player_unnamed"),
            language=player.language,
            style=player.style,
            premise=premise,
            memory=w.dialog.summary,
            history=recall.history,
            budget=self.settings.llm_context_tokens,
            preamble=preamble,
            reminder=reminder,
            seed=pick_seed(w.dialog.id),  # {{pick}}: the same choice in every reply of the dialog (and the Web App)
            idle=w.idle,
            # {{time}}, {{date}}, {{weekday}} in the player's zone (users.settings, in the row read already)
            now=utcnow(),
            zone=zone_of(player, self.settings.default_timezone),
            facts=facts,
            facts_now=facts_now,
            recalled=recall.block,
        )
        return LLMRequest(
            messages=build_messages(prompt),
            max_tokens=min(self.settings.llm_max_tokens, STYLE_MAX_TOKENS.get(player.style, 400))
            if player.style != "long"
            else self.settings.llm_max_tokens * 2,
            temperature=self.settings.llm_temperature,
            persona=persona.card.hints(),
            language=player.language,
        )

    async def _recall(self, w: _Written, language: str, char: str, user: str) -> PromptParts:
        """The history window and the recalled block: at most one SQL round trip, none for a
        dialog that fits its window or with VITTE_MEMORY_RECALL=0. A failed search costs the
        reply its recalled block only."""
        try:
            return await self.recall.prompt_parts(
                int(w.dialog.id or 0), w.dialog.summary_upto, language, w.history, char, user
            )
        except Exception as exc:
            log.warning("recall for dialog %s failed: %s", w.dialog.id, exc)
            return PromptParts(list(w.history))

    async def _stream_into(
        self, written: list[str], request: LLMRequest, on_text: OnText | None, stop: asyncio.Event | None
    ) -> bool:
        """The LLM's reply into `written` as it comes (kept on cancellation), shown as it grows
        (`on_text`); True when the player stopped it."""
        stream = observe_llm(self.llm.stream(request))  # latency, fate, errors (vitte.metrics)
        try:
            async for delta in stream:
                written.append(delta)
                if stop is not None and stop.is_set():
                    return True
                if on_text is not None and delta:
                    await on_text("".join(written))
        finally:
            closer = getattr(stream, "aclose", None)
            if closer is not None:
                await closer()
        return False

    async def _write(
        self,
        turn: Turn,
        w: _Written,
        on_text: OnText | None,
        stop: asyncio.Event | None,
        unsaved: list[CachedMessage] | None = None,
    ) -> ReplyOutcome:
        """Stream the reply and store it. `unsaved`: messages not in the cache yet; the reply's
        row takes them along (and empties the list) when it reaches the cache."""
        dialog_id = int(w.dialog.id or 0)
        request = await self._request(w)
        written: list[str] = []
        try:
            stopped = await self._stream_into(written, request, on_text, stop)
            reply = "".join(written).strip()
            if not reply and not stopped:
                raise LLMBadResponse("the model returned an empty reply")
        except LLMError as exc:
            log.warning("reply failed for user %s dialog %s: %s", w.dialog.user_id, dialog_id, exc)
            if w.placeholder_id is not None:
                await self.store.drop_placeholder(w.placeholder_id)
            raise ReplyFailed(exc, w.user_message_id, crisis=w.crisis) from exc
        except asyncio.CancelledError:
            if w.placeholder_id is not None:
                partial = "".join(written).strip()
                await asyncio.shield(
                    self._finish(turn, dialog_id, w.placeholder_id, partial, MSG_INTERRUPTED, unsaved)
                )
            raise
        except BaseException:
            if w.placeholder_id is not None:
                await asyncio.shield(self.store.drop_placeholder(w.placeholder_id))
            raise

        status = MSG_STOPPED if stopped else MSG_OK
        if w.replace_id is not None:
            if reply:
                await self.store.finish(w.replace_id, reply, status)
                await turn.flush(self.cache, dialog_id)  # replaced after them
                await self.cache.recent_replace(
                    dialog_id, CachedMessage(w.replace_id, ASSISTANT, reply, status)
                )
            return ReplyOutcome(dialog_id, w.replace_id, reply, status, replaced=True)
        assert w.placeholder_id is not None  # a new reply always has its row (`reply`, `regenerate`)
        if not reply:  # stopped before the first word
            await self.store.drop_placeholder(w.placeholder_id)
            return ReplyOutcome(dialog_id, 0, "", status, crisis=w.crisis)
        await self._finish(turn, dialog_id, w.placeholder_id, reply, status, unsaved)
        self.memory.maybe_fold(
            w.dialog, [*w.history, CachedMessage(w.placeholder_id, ASSISTANT, reply, status)]
        )
        if self.facts is not None:
            self.facts.maybe_extract(w.dialog, w.history)
        return ReplyOutcome(dialog_id, w.placeholder_id, reply, status, crisis=w.crisis)

    async def _finish(
        self,
        turn: Turn,
        dialog_id: int,
        message_id: int,
        text: str,
        status: str,
        unsaved: list[CachedMessage] | None,
    ) -> None:
        """The reply's row written; in the cache with the messages not there yet (`unsaved`),
        sent with the lock's release."""
        await self.store.finish(message_id, text, status)
        before = list(unsaved or ())
        if unsaved:
            unsaved.clear()
        await turn.append(self.cache, dialog_id, *before, CachedMessage(message_id, ASSISTANT, text, status))

    # ------------------------------------------------------------------ the daily quota (vitte/billing.py)
    async def _take(self, user: User, conn: RawConnection | None = None) -> QuotaDecision | None:
        """One reply from today's quota (one SQL statement; on `conn` when given), or
        QuotaExceeded; None when unlimited."""
        if self.billing is None:
            return None
        return await self.billing.check_and_count(user.id, user=user, conn=conn)

    async def _give_back(self, quota: QuotaDecision | None) -> None:
        if quota is not None and self.billing is not None:
            await asyncio.shield(self.billing.release(quota))

    async def _settle(self, outcome: ReplyOutcome, quota: QuotaDecision | None) -> ReplyOutcome:
        """Only written replies stay counted (a stop before the first word gives the reply back)."""
        if quota is None:
            return outcome
        if not outcome.text:
            await self._give_back(quota)
            return outcome
        return replace(outcome, quota=quota)


class _CrisisCount:
    """A crisis signal's safety event, counted once, when the player is known admitted."""

    __slots__ = ("pending", "store")

    def __init__(self, store: DialogStore, crisis: bool) -> None:
        self.store = store
        self.pending = crisis

    async def count(self, user: User) -> None:
        if self.pending:
            self.pending = False
            await self.store.count_event("crisis", player_view(user).language)
