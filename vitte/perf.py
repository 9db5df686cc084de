"""Hot-path costs outside Vitte's own code, removed (found and measured with `vitte bench`).

1. Response models rebuilt. aiogram parses every Bot API answer with
   ``Response[method.__returning__]``, a pydantic generic parametrised per call. pydantic
   caches parametrisations in a *weak* dictionary and nothing in aiogram keeps them, so a
   garbage collection drops them and the next call builds the model again: 15-20 ms of CPU
   (a whole pydantic schema build) for a call that otherwise costs a fraction of a
   millisecond; under load a third of the calls paid it. `PinResponseTypes` (a request
   middleware, `install_pinning(session)`) and `pin_response_type` keep one strong reference
   per method class.

2. Magic filters run in threads. aiogram runs every non-async callable through
   ``asyncio.to_thread``, magic filters included (``F.text``, ``F.chat.type == "private"``):
   eleven thread-pool round trips for one text message, each waiting for the GIL (up to the
   5 ms switch interval under load). `inline_magic_filters(router)` makes the magic filters of
   a router tree run inline; they are pure attribute reads and comparisons. Other sync
   callables are left as aiogram runs them.

3. Full garbage collections. Importing aiogram, pydantic and SQLAlchemy leaves ~250,000
   long-lived objects; every full collection walks them all (~0.5 s on a small server),
   stalling every update in flight. `freeze_heap()` (once, after startup) moves them to the
   permanent generation, so collections only look at what the running bot allocates, and
   collects the young generation less often.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

from aiogram import Router
from aiogram.client.session.middlewares.base import BaseRequestMiddleware, NextRequestMiddlewareType
from aiogram.dispatcher.event.handler import FilterObject, HandlerObject
from aiogram.methods import Response, TelegramMethod

_PINNED: dict[type, Any] = {}


def pin_response_type(method: TelegramMethod[Any]) -> None:
    cls = type(method)
    if cls not in _PINNED:
        _PINNED[cls] = Response[cls.__returning__]  # type: ignore[name-defined]


class PinResponseTypes(BaseRequestMiddleware):
    async def __call__(
        self,
        make_request: NextRequestMiddlewareType[Any],
        bot: Any,
        method: TelegramMethod[Any],
    ) -> Any:
        pin_response_type(method)
        return await make_request(bot, method)


def install_pinning(session: Any) -> None:
    """Register `PinResponseTypes` on an aiogram session (once)."""
    manager = session.middleware
    if not any(isinstance(m, PinResponseTypes) for m in manager):
        manager(PinResponseTypes())


def _inline(flt: FilterObject) -> bool:
    if flt.magic is None or flt.awaitable:
        return False
    resolve: Callable[..., Any] = flt.callback

    async def resolve_inline(*args: Any, **kwargs: Any) -> Any:
        return resolve(*args, **kwargs)

    flt.callback = resolve_inline
    flt.awaitable = True
    return True


def inline_magic_filters(router: Router) -> int:
    """Run the magic filters of `router` and its sub-routers inline; returns how many."""
    count = 0
    for r in router.chain_tail:
        for observer in r.observers.values():
            handlers: list[HandlerObject] = [observer._handler, *observer.handlers]
            for handler in handlers:
                for flt in handler.filters or ():
                    count += _inline(flt)
    return count


def freeze_heap() -> None:
    """Collect once, then keep everything allocated so far out of later collections.

    For a long-running process (the bot, the Web App), after imports and startup; not for
    tests or libraries (objects frozen are never collected).
    """
    gc.collect()
    gc.freeze()
    # young collections every 10,000 allocations instead of 700: a reply allocates thousands
    # of short-lived objects that reference counting frees anyway; measured with `vitte bench`,
    # GC time per message fell from ~0.9 ms to ~0.2 ms with no longer pauses
    gc.set_threshold(10_000, 10, 10)
