"""The scheduler: claims the nudges that are due and sends each exactly once.

`Nudger.run_once` claims a batch (`vitte.initiative.schedule`), decides each row with the
rules (`vitte.initiative.rules`) on one batched read, releases the rows that wait (with their
next time and the reason, counted), and sends the rest, paced (VITTE_NUDGE_RATE a second, shared
by the processes through Redis when there is one: `SharedPacer`):
under the player's turn (never while a reply is in flight), the text written by the LLM
with the dialog's memory (`vitte.initiative.writer`), stored and marked on the row before
the Telegram call, then sent through the face's `Sender`; the batch's sent rows are released
together at its end (its sends' recent turns are read at once before). A row claimed again
with a mark (a crash between the mark and the release) is never sent again: logged and
counted `unconfirmed`. `Nudger.run` loops until stopped (every `vitte run-bot`, `vitte run-scheduler`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client import Counter

from vitte.cache.base import Cache, CachedMessage, window_index, window_remaining
from vitte.initiative import rules as r
from vitte.initiative.clock import Clock
from vitte.initiative.schedule import Claimed, Schedule, Sent, new_token
from vitte.initiative.writer import write_nudge
from vitte.llm.base import LLMError
from vitte.models import ASSISTANT, MSG_OK, utcnow

if TYPE_CHECKING:
    from vitte.core import Core

log = logging.getLogger("vitte.nudges")

NUDGES = Counter(
    "vitte_nudges", "Nudges (the persona writes first) by outcome or reason not sent", ["outcome"]
)
SENDING_AT_ONCE = 32  # nudges being written and sent concurrently per process
BACKFILL_EVERY = 600.0  # seconds between looks for active dialogs without a schedule row
RETRY_FAILED = 3600.0  # a nudge the LLM or Telegram failed is tried again this much later (at most)


class Unreachable(Exception):
    """Telegram refused the send for good: the player blocked the bot (403)."""


# sends a nudge's text to the player's private chat; the Telegram message id (None: unknown)
Sender = Callable[[int, str], Awaitable[int | None]]


@dataclass
class RunReport:
    claimed: int = 0
    sent: int = 0
    waiting: int = 0  # released for later: not due yet (the player spoke since), or a reason
    dropped: int = 0  # rows of dialogs that ended
    unconfirmed: int = 0  # marked by a run that crashed before Telegram answered: not sent again
    failed: int = 0
    reasons: Tally[str] = field(default_factory=Tally)

    def add(self, other: RunReport) -> None:
        for name in ("claimed", "sent", "waiting", "dropped", "unconfirmed", "failed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)

    def to_json(self) -> dict[str, object]:
        return {
            "claimed": self.claimed, "sent": self.sent, "waiting": self.waiting, "dropped": self.dropped,
            "unconfirmed": self.unconfirmed, "failed": self.failed, "reasons": dict(sorted(self.reasons.items())),
        }  # fmt: skip


class Pacer:
    """At most `rate` starts a second across concurrent tasks (0: no pacing)."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self.interval:
            return
        async with self._lock:
            now = time.monotonic()
            slot = max(self._next, now)
            self._next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


PACE_KEY = "nudge-pace"  # the shared pace's counter (`Cache.hit`: hit:nudge-pace:<window>)


class SharedPacer:
    """At most `rate` sends a wall-clock window across every process sharing Redis (Telegram's
    limit is per bot, not per process): each start counts one hit in a fixed window shared by
    the processes (`Cache.hit`: one round trip); past the window's budget it waits for the
    next window and asks again. Windows are one second (`rate` >= 1: floor(rate) a second),
    longer for a slower rate (0.5: one per 2 s). This process's own starts are also spaced
    by `Pacer`, so a window's budget is not spent in one burst. Redis unreachable (the hit
    answers 0): the process's own pace alone."""

    def __init__(self, rate: float, cache: Cache) -> None:
        self.local = Pacer(rate)
        self.cache = cache
        self.window = max(1.0, 1.0 / rate) if rate > 0 else 0.0
        self.budget = max(1, int(rate * self.window + 1e-9)) if rate > 0 else 0

    async def wait(self) -> int | None:
        """Wait for a start; the window index it was counted in (None: unpaced, or Redis away)."""
        await self.local.wait()
        if not self.budget:
            return None
        while True:
            index = window_index(self.window)
            hits = await self.cache.hit(PACE_KEY, self.window)
            if hits <= 0:  # Redis cannot answer: this process's pace alone
                return None
            if hits <= self.budget:
                return index
            await asyncio.sleep(max(window_remaining(self.window), 0.001))


def pacer_for(rate: float, cache: Cache) -> Pacer | SharedPacer:
    """VITTE_NUDGE_RATE shared by every process when the cache is Redis; per process otherwise."""
    return SharedPacer(rate, cache) if rate > 0 and getattr(cache, "name", "") == "redis" else Pacer(rate)


def silent_since(c: Claimed) -> datetime:
    """When the dialog last heard from the player (or opened)."""
    moments = [m for m in (c.dialog_created_at, c.last_player_at) if m is not None]
    return max(moments) if moments else c.due_at


def unreachable(c: Claimed) -> bool:
    """Telegram said the player blocked the bot, and they have not written since."""
    if c.unreachable_at is None:
        return False
    return c.last_player_at is None or c.last_player_at <= c.unreachable_at


def unanswered_now(c: Claimed) -> int:
    """The unanswered count, 0 when the player wrote after the last nudge."""
    if c.last_nudge_at is None or c.last_player_id > c.last_nudge_id:
        return 0
    return c.unanswered


class Nudger:
    """Claims due nudges and sends them (see the module docstring)."""

    def __init__(self, core: Core, send: Sender, *, clock: Clock | None = None) -> None:
        self.core = core
        self.settings = core.settings
        self.send = send
        self.clock = clock or Clock()
        self.schedule = Schedule(core.db)
        self.rules = r.Rules.of(core.settings)
        self.pacer = pacer_for(core.settings.nudge_rate, core.cache)
        self._last_backfill = float("-inf")

    @property
    def enabled(self) -> bool:
        return self.rules.enabled

    # ------------------------------------------------------------------ the loop
    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: backfill now and then, claim and send what is due, sleep VITTE_NUDGE_POLL."""
        if not self.enabled:
            log.info("nudges are off (VITTE_NUDGE_AFTER=0)")
            return
        while not stop.is_set():
            busy = False
            try:
                if time.monotonic() - self._last_backfill > BACKFILL_EVERY:
                    await self.backfill()
                report = await self.run_once()
                busy = report.claimed >= self.settings.nudge_batch
            except Exception as exc:  # the database away: try again at the next poll
                log.warning("nudge scheduler: %s", exc)
            if busy:
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.nudge_poll)

    async def backfill(self) -> int:
        added = await self.schedule.backfill(self.clock.now())
        self._last_backfill = time.monotonic()
        if added:
            log.info("%d active dialog(s) added to the nudge schedule", added)
        return added

    async def run_once(self, *, user_id: int | None = None, any_time: bool = False) -> RunReport:
        """One batch: claim, decide, release, send. `user_id`: that player's row only;
        `any_time`: whether or not it is due (the wait skipped; every other rule kept)."""
        report = RunReport()
        if not self.enabled:
            return report
        now = self.clock.now()
        token = new_token()
        batch = await self.schedule.claim(
            now, self.settings.nudge_batch, token, now + timedelta(seconds=self.settings.nudge_lease),
            user_id=user_id, any_time=any_time,
        )  # fmt: skip
        report.claimed = len(batch)
        if not batch:
            return report
        moves: list[tuple[int, datetime, int]] = []
        drops: list[int] = []
        ready: list[tuple[Claimed, int]] = []
        # players who wrote since Telegram said they blocked the bot: reachable again
        await self.schedule.reachable_again(
            [c.user_id for c in batch if c.unreachable_at is not None and not unreachable(c)]
        )
        for c in batch:
            if c.message_id is not None:
                await self._unconfirmed(c, token, now, report)
                continue
            if not c.active:
                drops.append(c.dialog_id)
                self._count(report, r.DELETED)
                continue
            unanswered = unanswered_now(c)
            base = c.last_nudge_at if unanswered > 0 and c.last_nudge_at is not None else silent_since(c)
            intended = r.next_due(base, self.rules.after, unanswered, c.dialog_id, unanswered)
            if intended > now and not any_time:
                moves.append((c.dialog_id, intended, unanswered))  # the player spoke since
                report.waiting += 1
                continue
            ready.append((c, unanswered))
        # online and in-flight are asked only for the rows every other rule lets through
        decided = [(c, u, r.decide(self._candidate(c, u, now), self.rules)) for c, u in ready]
        passing = [(c, u) for c, u, d in decided if d.reason is None]
        online = await self._online([c.user_id for c, _ in passing])
        locked = await self.core.cache.locked_users([c.user_id for c, _ in passing]) or set()
        sends: list[tuple[Claimed, int]] = []
        for c, u, d in decided:
            if d.reason is None:
                d = r.decide(
                    self._candidate(c, u, now, online=c.user_id in online, in_flight=c.user_id in locked),
                    self.rules,
                )
            if d.reason is None:
                sends.append((c, u))
            elif d.retry_at is None:
                drops.append(c.dialog_id)
                self._count(report, d.reason)
            else:
                moves.append((c.dialog_id, d.retry_at, u))
                report.waiting += 1
                self._count(report, d.reason)
        await self.schedule.reschedule(token, moves)
        await self.schedule.drop(drops)
        report.dropped += len(drops)
        if sends:
            gate = asyncio.Semaphore(SENDING_AT_ONCE)
            # the sends' recent turns in one read; one is used under the turn only while no
            # message came since (else the engine reads them again)
            recent = await self.schedule.recent_many(
                [c.dialog_id for c, _ in sends], self.settings.recent_messages
            )

            done: list[Sent] = []

            async def one(c: Claimed, u: int) -> None:
                async with gate:
                    await self._send_one(c, u, token, report, recent.get(c.dialog_id), done)

            try:
                await asyncio.gather(*(one(c, u) for c, u in sends))
            finally:
                # the batch's sent rows released at once; a crash before this leaves them marked:
                # claimed again after the lease, never sent again (counted `unconfirmed`)
                try:
                    await self.schedule.sent_many(token, done)
                except Exception as exc:
                    log.warning(
                        "%d sent nudge(s) not released (the lease brings them back): %s", len(done), exc
                    )
        return report

    async def run_due(self, *, user_id: int | None = None, any_time: bool = False) -> RunReport:
        """`run_once` until nothing due is left (`vitte nudge run`, the benchmark)."""
        total = RunReport()
        while True:
            report = await self.run_once(user_id=user_id, any_time=any_time)
            total.add(report)
            if report.claimed < self.settings.nudge_batch or user_id is not None:
                return total

    async def preview(
        self, *, due_only: bool = False, user_id: int | None = None, limit: int = 100
    ) -> list[dict[str, object]]:
        """Who is scheduled when, and what a run now would do (`vitte nudge list`): nothing is
        claimed or changed. `state`: send (due, nothing stands in the way), waiting (not due
        yet), or the reason it would not be sent (`vitte.initiative.rules.REASONS`)."""
        now = self.clock.now()
        listed = await self.schedule.listing(
            due_before=now if due_only else None, user_id=user_id, limit=limit
        )
        if not listed:
            return []
        read = await self.schedule.read(
            [(x.dialog_id, x.user_id, x.due_at, x.unanswered, x.last_nudge_at, None) for x in listed],
            now.date(),
        )
        ids = [c.user_id for c in read]
        online = await self._online(ids)
        locked = await self.core.cache.locked_users(ids) or set()
        out: list[dict[str, object]] = []
        for c in read:
            u = unanswered_now(c)
            d = r.decide(
                self._candidate(c, u, now, online=c.user_id in online, in_flight=c.user_id in locked),
                self.rules,
            )
            state = d.reason or ("send" if c.due_at <= now else "waiting")
            if d.reason is None and c.due_at <= now:
                base = c.last_nudge_at if u > 0 and c.last_nudge_at is not None else silent_since(c)
                if r.next_due(base, self.rules.after, u, c.dialog_id, u) > now:
                    state = "waiting"  # the player spoke since the row was written
            out.append({
                "user_id": c.user_id, "dialog_id": c.dialog_id, "due_at": c.due_at.isoformat(),
                "due": c.due_at <= now, "unanswered": u,
                "last_nudge_at": c.last_nudge_at.isoformat() if c.last_nudge_at else None, "state": state,
            })  # fmt: skip
        return out

    # ------------------------------------------------------------------ deciding
    def _candidate(
        self, c: Claimed, unanswered: int, now: datetime, *, online: bool = False, in_flight: bool = False
    ) -> r.Candidate:
        return r.Candidate(
            dialog_id=c.dialog_id,
            now=now,
            exists=c.active,
            blocked=c.blocked,
            adult=c.adult,
            on=r.nudges_on(c.settings, self.settings.nudge_default),
            unreachable=unreachable(c),
            unanswered=unanswered,
            online=online,
            in_flight=in_flight,
            quota_left=self._quota_left(c, now),
            zone=r.player_zone(c.settings, c.language, self.settings.default_timezone),
        )

    def _quota_left(self, c: Claimed, now: datetime) -> bool:
        """Premium players always; the free plan while today's replies (or packs) are left."""
        if c.premium_until is not None and c.premium_until > now:
            return True
        return c.extra_replies > 0 or c.used_today < self.settings.free_daily_replies

    async def _online(self, user_ids: list[int]) -> set[int]:
        # the console's clock moved past the online window ("+1 h"): every mark is that old
        if not user_ids or (
            self.clock.ages_marks and self.clock.offset.total_seconds() >= self.rules.online_window
        ):
            return set()
        answers = await asyncio.gather(
            *(self.core.cache.is_online(u) for u in user_ids), return_exceptions=True
        )
        return {u for u, a in zip(user_ids, answers, strict=True) if a is True}

    def _count(self, report: RunReport, outcome: str) -> None:
        report.reasons[outcome] += 1
        NUDGES.labels(outcome).inc()

    # ------------------------------------------------------------------ sending
    async def _unconfirmed(self, c: Claimed, token: str, now: datetime, report: RunReport) -> None:
        """A row claimed with its mark: a run stored the nudge and then died (before or after
        Telegram answered). Never sent again; recorded as sent, logged and counted. Its message
        stays in the dialog as sent: most often it was delivered (a batch's sends are recorded
        at the batch's end), so the persona keeps what the player read (README: known behaviour)."""
        assert c.message_id is not None
        if c.delivered:  # Telegram answered; only the row's release was lost
            outcome = "recovered"
        else:
            outcome = "unconfirmed"
            report.unconfirmed += 1
            log.warning(
                "nudge %s of dialog %s (player %s): the run that stored it stopped before Telegram "
                "confirmed it; not sent again", c.message_id, c.dialog_id, c.user_id,
            )  # fmt: skip
        self._count(report, outcome)
        marked = c.last_nudge_at or now
        unanswered = unanswered_now(c) + 1
        due = r.next_due(now, self.rules.after, unanswered, c.dialog_id, unanswered)
        await self.schedule.sent(
            c.dialog_id, token, c.message_id, None, marked if c.delivered else now, due, unanswered
        )

    async def _send_one(
        self,
        c: Claimed,
        unanswered: int,
        token: str,
        report: RunReport,
        prefetched: list[CachedMessage] | None = None,
        done: list[Sent] | None = None,
    ) -> None:
        """One nudge under the player's turn: re-read, written, marked, sent; `done`: where the
        sent one is recorded for the batch's release (None: released at once)."""
        await self.pacer.wait()
        dialogs = self.core.dialogs
        try:
            async with dialogs.turn(c.user_id) as turn:
                now = self.clock.now()
                found = await self.schedule.fresh(c.dialog_id)
                if found is None or found[0].status != "active":
                    await self.schedule.drop([c.dialog_id])
                    report.dropped += 1
                    return
                dialog, user, newest, newest_shown = found
                if newest > c.last_player_id:  # the player wrote while this batch was being decided
                    due = r.next_due(now, self.rules.after, 0, c.dialog_id, 0)
                    await self.schedule.reschedule(token, [(c.dialog_id, due, 0)])
                    report.waiting += 1
                    return
                try:
                    held = prefetched is not None and (prefetched[-1].id if prefetched else 0) == newest_shown
                    text = await write_nudge(
                        dialogs, dialog, user, silent_since(c), now, prefetched if held else None
                    )
                except LLMError as exc:
                    log.warning("nudge for dialog %s: the LLM failed: %s", c.dialog_id, exc)
                    await self._retry_later(c, token, unanswered, now, report)
                    return
                message_id = await self.schedule.mark(c.dialog_id, token, text, now)
                if message_id is None:  # the claim ran out and another process has the row
                    self._count(report, "lost_claim")
                    return
                await turn.append(
                    self.core.cache, c.dialog_id, CachedMessage(message_id, ASSISTANT, text, MSG_OK)
                )
                try:
                    telegram_id = await self.send(c.user_id, text)
                except Unreachable:  # marked in real time: compared with the player's messages
                    await self.schedule.mark_unreachable(c.user_id, utcnow())
                    await self.schedule.unsend(
                        c.dialog_id, token, message_id, now + timedelta(seconds=max(self.rules.after, 60.0))
                    )
                    await self.core.cache.recent_drop(c.dialog_id)
                    self._count(report, r.UNREACHABLE)
                    report.waiting += 1
                    return
                except Exception as exc:  # Telegram failed for good after its retries
                    log.warning("nudge for dialog %s: Telegram failed: %s", c.dialog_id, exc)
                    await self.schedule.unsend(c.dialog_id, token, message_id, now + self._retry_delay())
                    await self.core.cache.recent_drop(c.dialog_id)
                    report.failed += 1
                    self._count(report, "failed")
                    return
                nxt = unanswered + 1
                due = r.next_due(now, self.rules.after, nxt, c.dialog_id, nxt)
                if done is None:
                    await self.schedule.sent(c.dialog_id, token, message_id, telegram_id, now, due, nxt)
                else:
                    done.append(Sent(c.dialog_id, message_id, telegram_id, now, due, nxt))
                report.sent += 1
                self._count(report, "sent")
        except Exception as exc:  # the store or the cache away: the lease brings the row back
            log.warning("nudge for dialog %s not sent: %s", c.dialog_id, exc)
            report.failed += 1
            self._count(report, "failed")

    def _retry_delay(self) -> timedelta:
        return timedelta(seconds=min(max(self.rules.after, 60.0), RETRY_FAILED))

    async def _retry_later(
        self, c: Claimed, token: str, unanswered: int, now: datetime, report: RunReport
    ) -> None:
        await self.schedule.reschedule(token, [(c.dialog_id, now + self._retry_delay(), unanswered)])
        report.failed += 1
        self._count(report, "failed")
