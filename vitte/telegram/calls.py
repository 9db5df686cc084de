"""Bot API calls made safely: `call_with_retry` waits out 429 (`TelegramRetryAfter`) and brief
network or server trouble; `split_text` cuts a long text at Telegram's 4096 characters on the best
boundary. Used by every face that sends (vitte.bot, vitte.webapp through vitte.telegram.messages)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from aiogram.exceptions import TelegramNetworkError, TelegramRetryAfter, TelegramServerError

from vitte.metrics import TELEGRAM_RETRY_AFTER

log = logging.getLogger("vitte.telegram")

T = TypeVar("T")

TELEGRAM_LIMIT = 4096

# where a text may be cut, best first: paragraph, line, sentence end, clause, word
_SENTENCE_END = re.compile(r"[.!?…]+[\"'»”)\]]*\s+")
_CLAUSE_END = re.compile(r"[,;:—–]\s+")


def split_text(text: str, limit: int = TELEGRAM_LIMIT) -> list[str]:
    """Cut `text` into pieces of at most `limit` characters, on the best boundary available.

    Prefers a paragraph break, then a line break, then a sentence end, then a clause, then a
    space; only a text with no such place in its second half is cut mid-word.
    """
    text = text.strip()
    parts: list[str] = []
    while len(text) > limit:
        window = text[:limit]
        floor = limit // 2
        cut = -1
        for sep in ("\n\n", "\n"):
            i = window.rfind(sep)
            if i >= floor:
                cut = i + len(sep)
                break
        if cut < 0:
            for pattern in (_SENTENCE_END, _CLAUSE_END):
                ends = [m.end() for m in pattern.finditer(window) if m.end() >= floor]
                if ends:
                    cut = ends[-1]
                    break
        if cut < 0:
            i = window.rfind(" ")
            cut = i + 1 if i >= floor else limit
        head, text = text[:cut].rstrip(), text[cut:].lstrip()
        if head:
            parts.append(head)
    if text:
        parts.append(text)
    return parts


async def call_with_retry(
    call: Callable[[], Awaitable[T]],
    *,
    attempts: int = 8,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Make a Bot API call; wait out `TelegramRetryAfter` (counted: vitte_telegram_retry_after_total)
    and brief network/server trouble."""
    for attempt in range(attempts):
        try:
            return await call()
        except TelegramRetryAfter as exc:
            if attempt == attempts - 1:
                raise
            log.info("Telegram asks to retry after %s s", exc.retry_after)
            TELEGRAM_RETRY_AFTER.inc()
            await sleep(float(exc.retry_after))
        except (TelegramNetworkError, TelegramServerError) as exc:
            if attempt == attempts - 1:
                raise
            delay = min(0.5 * 2**attempt, 5.0)
            log.info("Telegram call failed (%s); retrying in %.1f s", exc, delay)
            await sleep(delay)
    raise AssertionError("unreachable")
