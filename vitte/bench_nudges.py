"""`vitte bench nudges`: the persona writes first, at scale (issue 18, item 7).

On the configured PostgreSQL store: `players` bench players, each with an active dialog whose
nudge falls due at once. Phase `one`: one scheduler (`vitte.initiative.nudger.Nudger`, the
same code every `vitte run-bot` runs) claims and sends them all, with an instant in-process
LLM, the local Bot API session and pacing off. Phase `two` (a second, smaller set): two
schedulers, each with its own core and connection pools (one OS process), claim the same
schedule at once. Reported: claims per second (rows claimed / time in claims), sends per
second (nudges sent / wall time), database time per claimed batch (the claim's UPDATE …
RETURNING and its batched read, p50/p99), duplicates (a player sent more than one nudge) and
lost (a due player sent none). Bench players have ids from `PLAYER_BASE` (beyond any Telegram
id) and are deleted with their dialogs, messages and schedule rows at the end unless `keep`.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from vitte.bench import BENCH_ID_BASE, _pct
from vitte.config import Settings
from vitte.llm.base import LLMRequest

PLAYER_BASE = BENCH_ID_BASE + 2**31  # apart from the other benches' players
TEXT = "Я тут вспомнила о тебе. Как прошёл твой день?"
INSERT_CHUNK = 5000
TARGETS = {
    "one_seconds_per_100k": 300.0,  # 100,000 due nudges claimed and sent by one process in 5 minutes
    "duplicates": 0,
    "lost": 0,
}


@dataclass(frozen=True, slots=True)
class NudgeBenchConfig:
    players: int = 100_000
    two_players: int = 10_000  # the set two schedulers share (0: skip that phase)
    batch: int = 500
    keep: bool = False

    def check(self) -> None:
        if not 1 <= self.players <= 2_000_000:
            raise ValueError("--players must be 1..2,000,000")
        if not 0 <= self.two_players <= 2_000_000:
            raise ValueError("--two-players must be 0..2,000,000")
        if not 1 <= self.batch <= 10_000:
            raise ValueError("--batch must be 1..10,000")


class InstantLLM:
    """The nudge's text at once (no network, no tokens)."""

    label = "bench nudge writer (in process)"
    is_demo = False

    async def stream(self, request: LLMRequest) -> AsyncIterator[str]:
        yield TEXT

    async def complete(self, request: LLMRequest) -> str:
        return TEXT

    async def aclose(self) -> None:
        return None


class Outbox:
    """Counts what reached the local Bot API session per player."""

    def __init__(self) -> None:
        self.sent: Counter[int] = Counter()


def _timed_claims(nudger: Any, spent: list[float]) -> None:
    """Time each claim (UPDATE … RETURNING + the batched read) of this scheduler."""
    claim = nudger.schedule.claim

    async def timed(*args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await claim(*args, **kw)
        finally:
            spent.append(time.perf_counter() - t0)

    nudger.schedule.claim = timed


async def _populate(core: Any, first: int, count: int, persona_id: str, progress: Callable[[str], None]) -> None:
    """Players (adult), their active dialogs (opened two days ago) and rows due a minute ago."""
    from vitte.models import Dialog, Nudge, User, table_of, utcnow

    now = utcnow()
    opened, due = now - timedelta(days=2), now - timedelta(minutes=1)
    users, dialogs, nudges = table_of(User), table_of(Dialog), table_of(Nudge)
    for lo in range(first, first + count, INSERT_CHUNK):
        ids = range(lo, min(lo + INSERT_CHUNK, first + count))
        async with core.db.engine.begin() as conn:
            await conn.execute(sa.insert(users), [
                {"id": i, "language": "ru", "settings": {}, "adult_confirmed_at": opened, "created_at": opened,
                 "last_seen_at": opened, "extra_replies": 0, "active_persona_id": persona_id}
                for i in ids
            ])  # fmt: skip
            made = await conn.execute(
                sa.insert(dialogs).returning(dialogs.c.id, dialogs.c.user_id),
                [
                    {"user_id": i, "persona_id": persona_id, "status": "active", "summary": "", "summary_upto": 0,
                     "facts_upto": 0, "facts_version": 0, "created_at": opened}
                    for i in ids
                ],
            )  # fmt: skip
            rows = made.all()
            await conn.execute(sa.insert(nudges), [
                {"dialog_id": d, "user_id": u, "due_at": due, "unanswered": 0, "created_at": opened} for d, u in rows
            ])  # fmt: skip
        progress(f"  {min(lo + INSERT_CHUNK, first + count) - first:,} / {count:,} players written")


async def _cleanup(core: Any, first: int, last: int) -> None:
    from vitte.models import User, table_of

    users = table_of(User)
    async with core.db.engine.begin() as conn:  # dialogs, messages and schedule rows cascade
        await conn.execute(sa.delete(users).where(users.c.id.between(first, last)))


async def _phase(cores: list[Any], first: int, count: int, batch: int) -> dict[str, Any]:
    from vitte.initiative.nudger import Nudger, RunReport
    from vitte.localapi import LocalBotSession, make_local_bot
    from vitte.telegram.nudges import nudge_sender

    outbox = Outbox()
    spent: list[float] = []
    nudgers, sessions = [], []
    for core in cores:
        session = LocalBotSession(max_calls=100, max_messages_per_chat=4)
        sessions.append(session)
        bot = make_local_bot(session)
        send = nudge_sender(bot)

        async def counted(user_id: int, text: str, send: Any = send) -> int | None:
            outbox.sent[user_id] += 1
            return await send(user_id, text)

        nudger = Nudger(core, counted)
        _timed_claims(nudger, spent)
        nudgers.append(nudger)
    t0 = time.perf_counter()
    reports: list[RunReport] = await asyncio.gather(*(n.run_due() for n in nudgers))
    seconds = time.perf_counter() - t0
    total = RunReport()
    for r in reports:
        total.add(r)
    mine = {u: n for u, n in outbox.sent.items() if first <= u < first + count}
    claims = [s for s in spent]
    return {
        "schedulers": len(cores),
        "players": count,
        "seconds": round(seconds, 2),
        "sent": total.sent,
        "claims_per_second": round(total.claimed / sum(claims), 1) if claims and sum(claims) else 0.0,
        "sends_per_second": round(total.sent / seconds, 1) if seconds else 0.0,
        "claim_batches": len([s for s in claims]),
        "batch_db_ms_p50": round(_pct([s * 1000 for s in claims], 0.5), 2),
        "batch_db_ms_p99": round(_pct([s * 1000 for s in claims], 0.99), 2),
        "duplicates": sum(n - 1 for n in mine.values() if n > 1),
        "lost": count - len(mine),
        "failed": total.failed,
        "unconfirmed": total.unconfirmed,
    }


async def run_nudge_bench(settings: Settings, config: NudgeBenchConfig, progress: Callable[[str], None]) -> dict[str, Any]:
    """The bench (see the module docstring). RuntimeError when the store is not PostgreSQL."""
    from vitte.core import Core

    if settings.is_sqlite:
        raise RuntimeError("vitte bench nudges measures PostgreSQL: set VITTE_DATABASE_URL=postgresql+psycopg://…")
    settings = settings.model_copy(update={
        "nudge_after": 72_000, "nudge_quiet_hours": "", "nudge_rate": 0.0, "nudge_batch": config.batch,
        "free_daily_replies": max(settings.free_daily_replies, 1), "memory_facts_every": 0, "memory_recall": 0,
        "database_pool_size": max(settings.database_pool_size, 10),
    })  # fmt: skip
    core = await Core.open(settings, llm=InstantLLM(), seed_if_empty=True)
    second: Any = None
    last = PLAYER_BASE + config.players + config.two_players
    try:
        await _cleanup(core, PLAYER_BASE, last)
        persona = next(p for p in await core.catalog.personas())
        progress(f"writing {config.players:,} players with a nudge due …")
        await _populate(core, PLAYER_BASE, config.players, persona.id, progress)
        progress("one scheduler: claiming and sending …")
        one = await _phase([core], PLAYER_BASE, config.players, config.batch)
        two = None
        if config.two_players:
            first = PLAYER_BASE + config.players
            progress(f"writing {config.two_players:,} more players …")
            await _populate(core, first, config.two_players, persona.id, progress)
            second = await Core.open(settings, llm=InstantLLM())
            progress("two schedulers at once: claiming and sending …")
            two = await _phase([core, second], first, config.two_players, config.batch)
        result = {
            "store": "postgresql",
            "cache": "redis" if settings.redis_url else "memory",
            "batch": config.batch,
            "one": one,
            "two": two,
        }
        result["targets"] = targets(result)
        return result
    finally:
        if not config.keep:
            await _cleanup(core, PLAYER_BASE, last)
        if second is not None:
            await second.close()
        await core.close()


def targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    one, two = result["one"], result["two"]
    per_100k = one["seconds"] * 100_000 / max(one["players"], 1)
    out = {
        "one_seconds_per_100k": {"value": round(per_100k, 1), "target": TARGETS["one_seconds_per_100k"], "kind": "max"},
        "duplicates": {"value": one["duplicates"] + (two["duplicates"] if two else 0), "target": 0, "kind": "max"},
        "lost": {"value": one["lost"] + (two["lost"] if two else 0), "target": 0, "kind": "max"},
    }
    for check in out.values():
        check["ok"] = check["value"] <= check["target"]
    return out
