"""`vitte bench`: the hot path measured through the real Dispatcher (no UI here; see cli/bench.py).

Simulated players (`LocalPlayer`) send real `Update` objects into the very Dispatcher that
`vitte run-bot` runs (`build_dispatcher(core)`), over the local Bot API session, against the
configured store and cache (VITTE_DATABASE_URL / VITTE_REDIS_URL), with a loopback
OpenAI-compatible LLM server (`vitte.devtools.llm_server`, a child process) whose time to first
token and tokens per second are configurable. Three phases:

1. overhead   — one message at a time, instant LLM: handler overhead per update (total handling
                time minus the time spent awaiting the LLM stream, measured per task), SQL
                statements and round trips per message (SQLAlchemy events on the engine: every
                statement, BEGIN, COMMIT, ROLLBACK and ping), Redis round trips per message
                (every packet the Redis connections send), all on a cache hit;
2. throughput — every player's messages, `concurrency` players at a time, instant LLM:
                messages per second per process, CPU milliseconds per message;
3. in flight  — every player sends one message at once, the LLM at a realistic pace
                (default 1 s to the first token, 40 tokens/s): wall time against the ideal,
                the most replies streaming at once, peak memory (RSS) of the process.

The bench writes to the configured store: players with ids from BENCH_ID_BASE up (2**52 and
above: beyond any Telegram id, which has at most 52 significant bits), adult-confirmed and
given a dialog through the engine (`players.confirm_adult`, `dialogs.choose`). Everything it
wrote (players, dialogs, messages, usage; their Redis keys) is deleted at the end unless
`keep=True`; leftovers of an earlier run in that range are deleted before it starts. The rate
limit and the daily quota stay on the path but are raised for the bench's own core so they do
not refuse the simulated players.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import logging
import os
import resource
import secrets
import statistics
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from vitte.config import Settings
from vitte.llm.base import LLM, LLMRequest

log = logging.getLogger("vitte.bench")

BENCH_ID_BASE = 2**52  # 4_503_599_627_370_496: no Telegram user has such an id
BENCH_BOT_ID = 4_503_599_627  # the simulated bot (its id names the de-duplication keys)
TARGETS = {
    "overhead_p99_ms": 20.0,  # handler overhead p99, LLM excluded (sequential)
    "messages_per_second": 300.0,  # per process, instant LLM
    "sql_round_trips_per_message": 4.0,  # on a cache hit
    "peak_rss_mb": 300.0,  # with every player's reply in flight
}
RESULT_VERSION = 1


# --------------------------------------------------------------------------- configuration


@dataclass
class BenchConfig:
    players: int = 1000
    messages: int = 3  # per player in the throughput phase
    concurrency: int = 50  # players sending at once in the throughput phase
    overhead_messages: int = 500  # sequential messages measured in the overhead phase
    ttft: float = 1.0  # seconds to the first token in the in-flight phase
    tps: float = 40.0  # tokens per second in the in-flight phase
    reply_tokens: int = 40  # words in each reply
    in_flight: bool = True  # run the third phase
    keep: bool = False  # keep the bench players (and their dialogs) afterwards
    warmup: int = 20
    setup_concurrency: int = 16

    def check(self) -> None:
        if self.players < 1:
            raise ValueError("players must be at least 1")
        if self.messages < 0 or self.overhead_messages < 0:
            raise ValueError("message counts cannot be negative")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if self.ttft < 0 or self.tps < 0:
            raise ValueError("ttft and tps cannot be negative")
        if self.reply_tokens < 1:
            raise ValueError("reply_tokens must be at least 1")


# --------------------------------------------------------------------------- instruments

# seconds this update's task spent awaiting the LLM (a mutable cell per measured update)
_llm_seconds: contextvars.ContextVar[list[float] | None] = contextvars.ContextVar(
    "vitte_bench_llm_seconds", default=None
)


class TimedLLM:
    """Wraps the real LLM client: the time each task spends awaiting it, and streams in flight."""

    def __init__(self, inner: LLM) -> None:
        self.inner = inner
        self.label = inner.label
        self.is_demo = inner.is_demo
        self.in_flight = 0
        self.max_in_flight = 0
        self.calls = 0

    def _add(self, seconds: float) -> None:
        cell = _llm_seconds.get()
        if cell is not None:
            cell[0] += seconds

    async def stream(self, request: LLMRequest) -> AsyncGenerator[str, None]:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        inner = self.inner.stream(request)
        iterator = inner.__aiter__()
        try:
            while True:
                started = time.perf_counter()
                try:
                    delta = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                finally:
                    self._add(time.perf_counter() - started)
                yield delta
        finally:
            self.in_flight -= 1
            closer = getattr(inner, "aclose", None)
            if closer is not None:
                started = time.perf_counter()
                try:
                    await closer()
                finally:
                    self._add(time.perf_counter() - started)

    async def complete(self, request: LLMRequest) -> str:
        started = time.perf_counter()
        try:
            return await self.inner.complete(request)
        finally:
            self._add(time.perf_counter() - started)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class SqlCounts:
    statements: int = 0
    begins: int = 0
    commits: int = 0
    rollbacks: int = 0
    pings: int = 0

    @property
    def round_trips(self) -> int:
        """On PostgreSQL each of these is one round trip (psycopg sends BEGIN on its own)."""
        return self.statements + self.begins + self.commits + self.rollbacks + self.pings

    def minus(self, other: SqlCounts) -> SqlCounts:
        return SqlCounts(**{k: getattr(self, k) - getattr(other, k) for k in asdict(self)})


class SqlCounter:
    """Counts what the engine sends to the database (SQLAlchemy events on the sync engine).

    Transaction control is counted only where it reaches the server: not in autocommit mode
    (`Database.session(autocommit=True)`), where the driver sends no BEGIN/COMMIT/ROLLBACK.
    """

    def __init__(self, engine: Any, raw: list[int] | None = None) -> None:
        from sqlalchemy import event

        self.counts = SqlCounts()
        # statements the hot path sends straight to the driver (`Database.raw`, vitte/prepared.py)
        self._raw = raw if raw is not None else [0]
        self._raw_start = self._raw[0]
        self.sync_engine = engine.sync_engine
        self._event = event
        self._listeners: list[tuple[str, Callable[..., None]]] = [
            ("before_cursor_execute", self._statement),
            ("begin", self._begin),
            ("commit", self._commit),
            ("rollback", self._rollback),
        ]
        for name, fn in self._listeners:
            event.listen(self.sync_engine, name, fn)
        dialect = self.sync_engine.dialect
        self._dialect = dialect
        original = dialect._do_ping_w_event

        def counted_ping(dbapi_connection: Any) -> bool:
            self.counts.pings += 1
            return bool(original(dbapi_connection))

        dialect._do_ping_w_event = counted_ping

    @staticmethod
    def _autocommit(conn: Any) -> bool:
        return conn.get_execution_options().get("isolation_level") == "AUTOCOMMIT"

    def _statement(self, *_args: Any, **_kw: Any) -> None:
        self.counts.statements += 1

    def _begin(self, conn: Any) -> None:
        if not self._autocommit(conn):
            self.counts.begins += 1

    def _commit(self, conn: Any) -> None:
        if not self._autocommit(conn):
            self.counts.commits += 1

    def _rollback(self, conn: Any) -> None:
        if not self._autocommit(conn):
            self.counts.rollbacks += 1

    def snapshot(self) -> SqlCounts:
        counts = SqlCounts(**asdict(self.counts))
        counts.statements += self._raw[0] - self._raw_start
        return counts

    def close(self) -> None:
        for name, fn in self._listeners:
            with contextlib.suppress(Exception):
                self._event.remove(self.sync_engine, name, fn)
        with contextlib.suppress(AttributeError):
            del self._dialect._do_ping_w_event


class RedisCounter:
    """Counts Redis round trips: every packet a connection of the cache's pool sends (a
    pipeline is one, a script call is one, a health-check PING is one more). The pool's
    connection class is patched for the bench's lifetime (this process has no other Redis
    user) and restored by `close`."""

    def __init__(self, connection_class: Any) -> None:
        self.round_trips = 0
        self._class = connection_class
        self._original = connection_class.send_packed_command
        counter = self
        original = self._original

        async def send_packed_command(conn: Any, command: Any, check_health: bool = True) -> None:
            counter.round_trips += 1
            await original(conn, command, check_health)

        connection_class.send_packed_command = send_packed_command

    @classmethod
    def attach(cls, cache: Any) -> RedisCounter | None:
        pool = getattr(cache, "_pool", None)
        if pool is None or not hasattr(pool, "connection_class"):
            return None
        return cls(pool.connection_class)

    def close(self) -> None:
        self._class.send_packed_command = self._original


class GcPauses:
    """Time spent in garbage collections (gc.callbacks), to tell GC stalls from handler work."""

    def __init__(self) -> None:
        self.total = 0.0
        self.max = 0.0
        self.count = 0
        self._started = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started:
            took = time.perf_counter() - self._started
            self.total += took
            self.max = max(self.max, took)
            self.count += 1

    def reset(self) -> None:
        self.total = self.max = 0.0
        self.count = 0

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._callback)


def _rss_mb() -> float:
    """The process's resident memory now (Linux), else its peak so far."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except (OSError, ValueError, IndexError):
        return _max_rss_mb()


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@contextlib.asynccontextmanager
async def _rss_sampler(every: float = 0.02) -> AsyncIterator[list[float]]:
    peak = [_rss_mb()]

    async def sample() -> None:
        while True:
            peak[0] = max(peak[0], _rss_mb())
            await asyncio.sleep(every)

    task = asyncio.create_task(sample())
    try:
        yield peak
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        peak[0] = max(peak[0], _rss_mb())


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    if len(values) == 1:
        return values[0]
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


# --------------------------------------------------------------------------- results


@dataclass
class Sample:
    total: float
    llm: float
    ok: bool

    @property
    def overhead(self) -> float:
        return max(0.0, self.total - self.llm)


@dataclass
class PhaseResult:
    messages: int = 0
    seconds: float = 0.0
    messages_per_second: float = 0.0
    cpu_ms_per_message: float = 0.0
    overhead_p50_ms: float = 0.0
    overhead_p95_ms: float = 0.0
    overhead_p99_ms: float = 0.0
    overhead_max_ms: float = 0.0
    llm_ms_mean: float = 0.0
    errors: int = 0
    sql_statements_per_message: float = 0.0
    sql_round_trips_per_message: float = 0.0
    redis_round_trips_per_message: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _phase(
    samples: list[Sample],
    seconds: float,
    cpu: float,
    sql: SqlCounts,
    redis_trips: int | None,
) -> PhaseResult:
    n = len(samples)
    over = [s.overhead * 1000 for s in samples]
    return PhaseResult(
        messages=n,
        seconds=round(seconds, 3),
        messages_per_second=round(n / seconds, 1) if seconds > 0 else 0.0,
        cpu_ms_per_message=round(cpu * 1000 / n, 3) if n else 0.0,
        overhead_p50_ms=round(_pct(over, 0.50), 3),
        overhead_p95_ms=round(_pct(over, 0.95), 3),
        overhead_p99_ms=round(_pct(over, 0.99), 3),
        overhead_max_ms=round(max(over), 3) if over else 0.0,
        llm_ms_mean=round(statistics.fmean(s.llm * 1000 for s in samples), 3) if n else 0.0,
        errors=sum(1 for s in samples if not s.ok),
        sql_statements_per_message=round(sql.statements / n, 3) if n else 0.0,
        sql_round_trips_per_message=round(sql.round_trips / n, 3) if n else 0.0,
        redis_round_trips_per_message=(round(redis_trips / n, 3) if n else 0.0) if redis_trips is not None else None,
    )


@dataclass
class BenchResult:
    version: int
    store: str
    cache: str
    llm: str
    players: int
    messages_per_player: int
    concurrency: int
    setup_seconds: float
    overhead: PhaseResult
    throughput: PhaseResult
    in_flight: PhaseResult | None
    peak_rss_mb: float
    cpus: int
    load_average: list[float]  # the machine's 1/5/15-minute load when the bench ended
    targets: dict[str, dict[str, Any]]
    kept: bool
    error_samples: list[str]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _targets(result: BenchResult) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {}

    def check(name: str, value: float | None, limit: float, below: bool) -> None:
        if value is None:
            return
        ok = value <= limit if below else value >= limit
        checks[name] = {"value": value, "target": limit, "ok": ok, "kind": "max" if below else "min"}

    check("overhead_p99_ms", result.overhead.overhead_p99_ms, TARGETS["overhead_p99_ms"], True)
    check("messages_per_second", result.throughput.messages_per_second, TARGETS["messages_per_second"], False)
    check(
        "sql_round_trips_per_message",
        result.overhead.sql_round_trips_per_message,
        TARGETS["sql_round_trips_per_message"],
        True,
    )
    if result.in_flight is not None:
        check("peak_rss_mb", result.in_flight.extra.get("peak_rss_mb"), TARGETS["peak_rss_mb"], True)
    return checks


# --------------------------------------------------------------------------- the run


def reply_text(tokens: int) -> str:
    words = ("you", "know", "the", "night", "is", "quiet", "here", "and", "I", "was", "thinking", "of")
    body = " ".join(words[i % len(words)] for i in range(max(1, tokens)))
    return body[0].upper() + body[1:] + "."


class _Bench:
    def __init__(self, settings: Settings, config: BenchConfig, progress: Callable[[str], None]) -> None:
        self.base_settings = settings
        self.config = config
        self.progress = progress
        self.reply = reply_text(config.reply_tokens)
        self.errors: list[str] = []
        self.gc = GcPauses()

    def _gc_extra(self) -> dict[str, Any]:
        extra = {
            "gc_collections": self.gc.count,
            "gc_ms_total": round(self.gc.total * 1000, 1),
            "gc_pause_max_ms": round(self.gc.max * 1000, 1),
        }
        self.gc.reset()
        return extra

    # ---------------------------------------------------------------- players
    def _ids(self) -> list[int]:
        return [BENCH_ID_BASE + i for i in range(self.config.players)]

    async def _cleanup(self, core: Any) -> int:
        """Delete every bench player (ids from BENCH_ID_BASE) and their cache keys."""
        from sqlalchemy import delete, select
        from sqlmodel import col

        from vitte.models import Dialog, Payment, User

        lo, hi = BENCH_ID_BASE, BENCH_ID_BASE + 2**40
        users: list[int] = []
        dialogs: dict[int, list[int]] = {}
        try:
            async with core.db.session() as s:
                rows = (await s.execute(select(col(Dialog.id), col(Dialog.user_id)).where(col(Dialog.user_id).between(lo, hi)))).all()
                users = list((await s.execute(select(col(User.id)).where(col(User.id).between(lo, hi)))).scalars())
                await s.execute(delete(Payment).where(col(Payment.user_id).between(lo, hi)))
                await s.execute(delete(User).where(col(User.id).between(lo, hi)))  # dialogs, messages, usage cascade
                await s.commit()
            for dialog_id, user_id in rows:
                dialogs.setdefault(int(user_id), []).append(int(dialog_id))
        finally:
            # the players' keys name their ids, not rows: they go even when the database refused
            await self._forget_cache(core, set(users) | set(dialogs) | set(self._ids()), dialogs)
        return len(users)

    async def _forget_cache(self, core: Any, users: set[int], dialogs: dict[int, list[int]]) -> None:
        redis = getattr(core.cache, "_redis", None)
        prefix = getattr(core.cache, "prefix", None)
        if redis is None or prefix is None:
            for user_id in users:  # the in-process cache
                with contextlib.suppress(Exception):
                    await core.cache.forget_user(user_id, dialogs.get(user_id, []))
            return
        # one SCAN over the prefix instead of one per player
        recent = {f"{prefix}recent:{d}" for ds in dialogs.values() for d in ds}
        # every per-player lock key (the lock, its waiters' queue and expiries, the ticket
        # counter, the holder mark: RedisCache._lock_keys), named the way the cache names them
        lock_keys = getattr(core.cache, "_lock_keys", None)
        locks = [key.removesuffix("0") for key in lock_keys(0)] if lock_keys is not None else [f"{prefix}lock:"]
        owned = (f"{prefix}online:", *locks, f"{prefix}hit:user:")
        seen = f"{prefix}seen:update:{BENCH_BOT_ID}:"
        batch: list[bytes] = []
        try:
            async for raw in redis.scan_iter(match=prefix.replace("*", "\\*") + "*", count=1000):
                key = raw.decode() if isinstance(raw, bytes) else str(raw)
                if key in recent or key.startswith(seen):
                    batch.append(raw)
                else:
                    for head in owned:
                        if key.startswith(head):
                            rest = key[len(head) :].split(":", 1)[0]
                            if rest.isdigit() and int(rest) >= BENCH_ID_BASE:
                                batch.append(raw)
                            break
                if len(batch) >= 500:
                    await redis.delete(*batch)
                    batch = []
            if batch:
                await redis.delete(*batch)
            members = [str(u) for u in users]
            for i in range(0, len(members), 500):
                await redis.zrem(f"{prefix}online-set", *members[i : i + 500])
        except Exception as exc:  # the keys expire on their own
            log.warning("bench: could not clean the Redis keys: %s", exc)

    async def _setup(self, core: Any) -> tuple[str, str]:
        personas = await core.catalog.personas()
        chosen = next((p for p in personas if p.stories), None)
        if chosen is None:
            raise RuntimeError("the persona catalog is empty: run `vitte seed` first")
        persona_id, story_id = chosen.id, chosen.stories[0].id
        confirm = getattr(core.players, "confirm_adult", None)
        # SQLite has one writer: concurrent openings only wait on each other's lock
        semaphore = asyncio.Semaphore(1 if core.settings.is_sqlite else self.config.setup_concurrency)

        async def one(index: int, user_id: int) -> None:
            async with semaphore:
                await core.players.seen(user_id, language_code="en", first_name=f"Bench{index}")
                if confirm is not None:
                    await confirm(user_id, language_code="en")
                await core.dialogs.choose(user_id, persona_id, story_id, language_code="en")

        await asyncio.gather(*(one(i, uid) for i, uid in enumerate(self._ids())))
        return persona_id, story_id

    # ---------------------------------------------------------------- sending
    async def _send(self, player: Any, text: str) -> Sample:
        cell = [0.0]
        token = _llm_seconds.set(cell)
        started = time.perf_counter()
        ok = True
        try:
            await player.send(text)
        except Exception as exc:
            ok = False
            self._error(f"{type(exc).__name__}: {exc}")
        finally:
            total = time.perf_counter() - started
            _llm_seconds.reset(token)
        if ok:
            last = player.last_bot_text()
            if last != self.reply:
                ok = False
                self._error(f"player {player.user_id} got {last!r}")
        return Sample(total, cell[0], ok)

    def _error(self, text: str) -> None:
        if len(self.errors) < 10:
            self.errors.append(text[:300])

    # ---------------------------------------------------------------- main
    async def run(self) -> BenchResult:
        import aiohttp

        from vitte.bot.factory import build_dispatcher, warm_up
        from vitte.bot.runtime import Runtime
        from vitte.core import Core
        from vitte.devtools.llm_server import run_subprocess
        from vitte.llm.openai import OpenAICompatibleLLM
        from vitte.localapi import LocalBotSession, LocalPlayer, make_local_bot
        from vitte.perf import freeze_heap

        cfg = self.config
        cfg.check()
        with run_subprocess("--reply", self.reply, "--ttft", "0", "--tps", "0", "--facts") as (_proc, llm_url):
            update: dict[str, Any] = {
                "llm_base_url": llm_url,
                "llm_api_key": None,
                "rate_limit_per_minute": 10**9,  # on the path, never refusing
            }
            for name in ("free_daily_replies", "premium_daily_replies"):
                if name in Settings.model_fields:
                    update[name] = 10**9
            settings = self.base_settings.model_copy(update=update)
            llm = TimedLLM(OpenAICompatibleLLM(settings, api_key="bench"))
            core = await Core.open(settings, llm=llm)
            control = aiohttp.ClientSession(
                base_url=llm_url.removesuffix("/v1"), timeout=aiohttp.ClientTimeout(total=10)
            )
            sql = SqlCounter(core.db.engine, core.db.raw_statements)
            redis: RedisCounter | None = None
            runtime: Runtime | None = None
            try:
                removed = await self._cleanup(core)
                if removed:
                    self.progress(f"removed {removed} bench player(s) left by an earlier run")
                self.progress(f"setting up {cfg.players} players …")
                started = time.perf_counter()
                await self._setup(core)
                setup_seconds = time.perf_counter() - started
                redis = RedisCounter.attach(core.cache)

                session = LocalBotSession(
                    max_calls=1000,
                    max_messages_per_chat=20,
                    max_drafts_per_chat=4,
                    max_tracked_ids=2000,
                    update_id_start=secrets.randbelow(2**40) + 1,
                )
                bot = make_local_bot(session, bot_id=BENCH_BOT_ID)
                runtime = Runtime()
                dp = build_dispatcher(core, runtime)
                players = [
                    LocalPlayer(dp, bot, session, user_id=uid, first_name=f"Bench{i}", language_code="en")
                    for i, uid in enumerate(self._ids())
                ]
                freeze_heap()  # as `vitte run-bot` does after startup
                counter = iter(range(10**12))

                def text() -> str:
                    return f"Message {next(counter)}: tell me about your evening?"

                # warm-up, not measured: what `vitte run-bot` does before taking updates, and
                # two messages per warm-up player (a second reply edits the first one's markup)
                await warm_up(core)
                for i in range(min(cfg.warmup, len(players))):
                    await self._send(players[i], text())
                    await self._send(players[i], text())

                overhead = await self._sequential(players, text, sql, redis)
                throughput = await self._concurrent(players, text, sql, redis)
                in_flight = None
                if cfg.in_flight:
                    async with control.post("/_control", json={"ttft": cfg.ttft, "tps": cfg.tps}) as resp:
                        resp.raise_for_status()
                    in_flight = await self._all_at_once(players, text, sql, redis, llm)
                    async with control.post("/_control", json={"ttft": 0, "tps": 0}):
                        pass
                await runtime.drain(5.0)
                result = BenchResult(
                    version=RESULT_VERSION,
                    store=core.db.engine.dialect.name,
                    cache=core.cache.name,
                    llm=f"loopback OpenAI-compatible server (child process), {cfg.reply_tokens}-token replies",
                    players=cfg.players,
                    messages_per_player=cfg.messages,
                    concurrency=cfg.concurrency,
                    setup_seconds=round(setup_seconds, 2),
                    overhead=overhead,
                    throughput=throughput,
                    in_flight=in_flight,
                    peak_rss_mb=round(_max_rss_mb(), 1),
                    cpus=os.cpu_count() or 1,
                    load_average=[round(x, 2) for x in os.getloadavg()],
                    targets={},
                    kept=cfg.keep,
                    error_samples=list(self.errors),
                )
                result.targets = _targets(result)
                return result
            finally:
                with contextlib.suppress(Exception):
                    await control.close()
                if runtime is not None:  # after a failure or Ctrl-C: nothing still replying (or locking)
                    with contextlib.suppress(Exception):
                        await runtime.drain(0)
                if not cfg.keep:
                    self.progress("cleaning up the bench players …")
                    try:
                        await self._cleanup(core)
                    except Exception as exc:
                        log.warning("bench cleanup failed: %s", exc)
                sql.close()
                self.gc.close()
                if redis is not None:
                    redis.close()
                await core.close()

    async def _sequential(self, players: list[Any], text: Callable[[], str], sql: SqlCounter, redis: Any) -> PhaseResult:
        n = self.config.overhead_messages
        self.progress(f"overhead: {n} messages one at a time, instant LLM …")
        samples: list[Sample] = []
        sql0, redis0 = sql.snapshot(), redis.round_trips if redis else 0
        cpu0, started = time.process_time(), time.perf_counter()
        self.gc.reset()
        for i in range(n):
            samples.append(await self._send(players[i % len(players)], text()))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
        result = _phase(samples, seconds, cpu, sql.snapshot().minus(sql0), redis.round_trips - redis0 if redis else None)
        result.extra = self._gc_extra()
        return result

    async def _concurrent(self, players: list[Any], text: Callable[[], str], sql: SqlCounter, redis: Any) -> PhaseResult:
        cfg = self.config
        total = cfg.messages * len(players)
        self.progress(f"throughput: {total} messages, {cfg.concurrency} players at a time, instant LLM …")
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for p in players:
            queue.put_nowait(p)
        samples: list[Sample] = []

        async def worker() -> None:
            while True:
                try:
                    player = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                for _ in range(cfg.messages):
                    samples.append(await self._send(player, text()))

        sql0, redis0 = sql.snapshot(), redis.round_trips if redis else 0
        cpu0, started = time.process_time(), time.perf_counter()
        self.gc.reset()
        await asyncio.gather(*(worker() for _ in range(min(cfg.concurrency, len(players)))))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
        result = _phase(samples, seconds, cpu, sql.snapshot().minus(sql0), redis.round_trips - redis0 if redis else None)
        result.extra = self._gc_extra()
        return result

    async def _all_at_once(
        self, players: list[Any], text: Callable[[], str], sql: SqlCounter, redis: Any, llm: TimedLLM
    ) -> PhaseResult:
        cfg = self.config
        self.progress(
            f"in flight: {len(players)} players at once, LLM {cfg.ttft:g} s to the first token, "
            f"{cfg.tps:g} tokens/s …"
        )
        gc.collect()
        before = _rss_mb()
        llm.max_in_flight = 0
        sql0, redis0 = sql.snapshot(), redis.round_trips if redis else 0
        cpu0, started = time.process_time(), time.perf_counter()
        self.gc.reset()
        async with _rss_sampler() as peak:
            samples = await asyncio.gather(*(self._send(p, text()) for p in players))
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu0
        result = _phase(
            list(samples), seconds, cpu, sql.snapshot().minus(sql0), redis.round_trips - redis0 if redis else None
        )
        ideal = cfg.ttft + (cfg.reply_tokens - 1) / cfg.tps if cfg.tps > 0 else cfg.ttft
        result.extra = {
            "ttft": cfg.ttft,
            "tps": cfg.tps,
            "reply_tokens": cfg.reply_tokens,
            "ideal_seconds": round(ideal, 3),
            "max_llm_streams_in_flight": llm.max_in_flight,
            "rss_before_mb": round(before, 1),
            "peak_rss_mb": round(peak[0], 1),
            **self._gc_extra(),
        }
        return result


async def run_bench(
    settings: Settings,
    config: BenchConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> BenchResult:
    """Run the benchmark against the configured store and cache; see the module docstring."""
    return await _Bench(settings, config or BenchConfig(), progress or (lambda _m: None)).run()
