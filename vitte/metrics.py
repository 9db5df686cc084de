"""Prometheus metrics: what the bot is doing, for an operator's dashboard and alerts.

Counters and histograms (process-wide, the default registry):

- ``vitte_updates_total{type,outcome}``  Telegram updates handled; outcome ok | duplicate |
  refused (age gate, block, rate limit, quota: the player was told why) | unavailable (store
  or cache down: the player was told "one moment") | error
- ``vitte_update_seconds{type}``         time to handle one update, LLM included
- ``vitte_updates_in_flight``            updates being handled right now
- ``vitte_lock_waiting``                 updates waiting for their player's lock (queue depth:
  a player who sends while a reply streams waits here, in order)
- ``vitte_replies_total{status}``        replies the LLM wrote: ok | stopped (the player pressed
  stop) | failed (LLM error; the player's message is kept) | interrupted (shutdown, crash)
- ``vitte_llm_seconds{phase}``           LLM latency: ``first_token`` and ``total`` per reply
- ``vitte_llm_errors_total{kind}``       timeout | unavailable | rate_limited | bad_response | cut
- ``vitte_media_total{kind,outcome}``    transcriptions, syntheses, images (kind
  transcription | synthesis | image): ok | error | cancelled
- ``vitte_media_seconds{kind}``          their latency
- ``vitte_db_connections_in_use``, ``vitte_cache_available`` (from `observe_core`)
- ``vitte_telegram_blocked_total``       Bot API calls to a player's chat Telegram refused with
  403 (the player blocked the bot): the player marked unreachable (`vitte.telegram.nudges.MarkUnreachable`,
  on every bot that sends: run-bot, run-scheduler, nudge run, the persona-removed notice)
- ``vitte_telegram_retry_after_total``   Telegram's 429s (TelegramRetryAfter) waited out by
  `vitte.telegram.calls.call_with_retry` before trying again
- ``vitte_nudges_total{outcome}``        the persona writing first (defined in
  `vitte.initiative.nudger`): sent | failed | unconfirmed | recovered | lost_claim, or the
  reason one waits (quiet, unanswered, off, no_quota, unreachable, online, in_flight, …)

Serve them with `metrics_route(app)` on any aiohttp application (the webhook server, the Web
App); give a `token` to require ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from vitte.llm.base import (
    LLMBadResponse,
    LLMError,
    LLMRateLimited,
    LLMStreamCut,
    LLMTimeout,
    LLMUnavailable,
)

if TYPE_CHECKING:
    from aiohttp import web

    from vitte.cache.base import Cache
    from vitte.db import Database

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)

UPDATES = Counter("vitte_updates", "Telegram updates handled", ["type", "outcome"])
UPDATE_SECONDS = Histogram("vitte_update_seconds", "Time to handle one update (LLM included)", ["type"], buckets=_SECONDS)
IN_FLIGHT = Gauge("vitte_updates_in_flight", "Updates being handled right now")
LOCK_WAITING = Gauge("vitte_lock_waiting", "Updates waiting for their player's lock (queue depth)")
REPLIES = Counter("vitte_replies", "Replies written by the LLM", ["status"])
LLM_SECONDS = Histogram("vitte_llm_seconds", "LLM latency per reply", ["phase"], buckets=_SECONDS)
LLM_ERRORS = Counter("vitte_llm_errors", "LLM failures", ["kind"])
TELEGRAM_BLOCKED = Counter(
    "vitte_telegram_blocked", "Bot API calls refused with 403 (the player blocked the bot): marked unreachable"
)
TELEGRAM_RETRY_AFTER = Counter("vitte_telegram_retry_after", "Telegram 429s (retry after) waited out")

_FIRST_TOKEN = LLM_SECONDS.labels("first_token")
_TOTAL = LLM_SECONDS.labels("total")


# the `kind` label of an LLM failure, first match
_LLM_ERROR_KINDS: tuple[tuple[type[BaseException], str], ...] = (
    (LLMStreamCut, "cut"),  # before LLMTimeout: a stalled stream is both
    (LLMTimeout, "timeout"),
    (LLMRateLimited, "rate_limited"),
    (LLMUnavailable, "unavailable"),
    (LLMBadResponse, "bad_response"),
)


def llm_error_kind(exc: BaseException) -> str:
    return next((kind for cls, kind in _LLM_ERROR_KINDS if isinstance(exc, cls)), "other")


async def observe_llm(stream: AsyncIterator[str]) -> AsyncGenerator[str, None]:
    """Pass an LLM stream through, recording latency, the reply's fate and errors.

    Ended by the LLM: ok; closed early by the consumer: stopped; cancelled: interrupted;
    an `LLMError`: failed (and its kind).
    """
    started = time.perf_counter()
    first = True
    status = "failed"
    try:
        async for delta in stream:
            if first:
                _FIRST_TOKEN.observe(time.perf_counter() - started)
                first = False
            yield delta
        status = "ok"
    except GeneratorExit:
        status = "stopped"  # the consumer closed the stream before its end
        raise
    except asyncio.CancelledError:
        status = "interrupted"
        raise
    except LLMError as exc:
        _child(_llm_errors, LLM_ERRORS, llm_error_kind(exc)).inc()
        raise
    except Exception:
        _child(_llm_errors, LLM_ERRORS, "other").inc()
        raise
    finally:
        closer = getattr(stream, "aclose", None)
        if closer is not None:
            await closer()
        _TOTAL.observe(time.perf_counter() - started)
        _child(_replies, REPLIES, status).inc()


MEDIA = Counter("vitte_media", "Transcriptions, syntheses and images asked for", ["kind", "outcome"])
MEDIA_SECONDS = Histogram("vitte_media_seconds", "Media call latency", ["kind"], buckets=_SECONDS)


@contextlib.asynccontextmanager
async def observe_media(kind: str) -> AsyncIterator[None]:
    """`async with observe_media("transcription"):` one media call counted and timed."""
    started = time.perf_counter()
    outcome = "error"
    try:
        yield
        outcome = "ok"
    except asyncio.CancelledError:
        outcome = "cancelled"
        raise
    finally:
        MEDIA_SECONDS.labels(kind).observe(time.perf_counter() - started)
        MEDIA.labels(kind, outcome).inc()


class _WaitingForLock:
    """`with waiting_for_lock():` the queue depth gauge, up while inside."""

    __slots__ = ()

    def __enter__(self) -> None:
        LOCK_WAITING.inc()

    def __exit__(self, *exc: object) -> None:
        LOCK_WAITING.dec()


_WAITING_FOR_LOCK = _WaitingForLock()


def waiting_for_lock() -> _WaitingForLock:
    return _WAITING_FOR_LOCK


# label children per label values: `.labels(...)` takes a lock and builds a key every call
_update_seconds: dict[str, Any] = {}
_updates: dict[tuple[str, str], Any] = {}
_replies: dict[str, Any] = {}
_llm_errors: dict[str, Any] = {}


def _child(cache: dict[Any, Any], metric: Any, key: Any) -> Any:
    child = cache.get(key)
    if child is None:
        child = cache[key] = metric.labels(*key) if isinstance(key, tuple) else metric.labels(key)
    return child


class handling_update:  # lower case: called like the function it was
    """Time one update; the caller sets `outcome[0]` (default ok; an exception: error)."""

    __slots__ = ("outcome", "started", "update_type")

    def __init__(self, update_type: str) -> None:
        self.update_type = update_type
        self.outcome = ["ok"]
        self.started = 0.0

    def __enter__(self) -> list[str]:
        IN_FLIGHT.inc()
        self.started = time.perf_counter()
        return self.outcome

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self.outcome[0] = "error"
        IN_FLIGHT.dec()
        update_type = self.update_type
        _child(_update_seconds, UPDATE_SECONDS, update_type).observe(time.perf_counter() - self.started)
        _child(_updates, UPDATES, (update_type, self.outcome[0])).inc()


class Observed(Protocol):
    """What the gauges read: the core's database and cache (`vitte.core.Core`)."""

    @property
    def db(self) -> Database: ...

    @property
    def cache(self) -> Cache: ...


class _CoreCollector(Collector):
    """Gauges read from the running core when Prometheus scrapes."""

    def __init__(self) -> None:
        self.core: weakref.ReferenceType[Observed] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        core = self.core() if self.core is not None else None
        if core is None:
            return
        pool = core.db.engine.sync_engine.pool
        checked_out = getattr(pool, "checkedout", None)
        if callable(checked_out):
            yield GaugeMetricFamily(
                "vitte_db_connections_in_use", "Database connections checked out", value=float(checked_out())
            )
        available = getattr(core.cache, "available", True)
        yield GaugeMetricFamily(
            "vitte_cache_available", "1 while the cache answers (Redis up, or the in-process cache)",
            value=1.0 if available else 0.0,
        )


_core_collector = _CoreCollector()
REGISTRY.register(_core_collector)


def observe_core(core: Observed) -> None:
    """Expose the core's database pool and cache health (the latest core opened wins)."""
    _core_collector.core = weakref.ref(core)


def render() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


def metrics_route(app: web.Application, path: str = "/metrics", token: str | None = None) -> None:
    """Serve GET `path` on an aiohttp application; with `token`, only to ``Bearer <token>``."""
    from aiohttp import web

    async def metrics(request: web.Request) -> web.Response:
        if token:
            from vitte.text import same_secret

            if not same_secret(request.headers.get("Authorization"), f"Bearer {token}"):
                return web.Response(status=401, text="unauthorized")
        body, content_type = render()
        return web.Response(body=body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

    app.router.add_get(path, metrics)


def snapshot() -> dict[str, Any]:
    """Current sample values by name and labels (for tests and the console)."""
    values: dict[str, Any] = {}
    for family in REGISTRY.collect():
        for sample in family.samples:
            key = sample.name + (
                "{" + ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items())) + "}" if sample.labels else ""
            )
            values[key] = sample.value
    return values
