"""Showing a reply while the LLM writes it, and delivering the final text.

- Private chats: `sendMessageDraft` (one draft_id per reply, a stop button via `can_stop`),
  throttled (a draft at most every `draft_interval` seconds, and only when the text grew);
  the first draft has empty text, which Telegram shows as a "Thinking…" placeholder.
- Where drafts fail (an old Bot API server, a chat that does not allow them): one message
  edited at most once per `edit_interval` seconds (Telegram's ~1 message/s per chat).
- A typing action while waiting for the first token, once the wait lasts `TYPING_DELAY` s.
- The final text is persisted with `sendMessage` (drafts are ephemeral), split on sentence
  boundaries at Telegram's 4096 characters; `TelegramRetryAfter` is waited out.

Progress is sent from a background task: the engine's `on_text` only records the newest
text, so a slow Telegram never slows the LLM stream down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable

from aiogram import Bot
from aiogram.enums import ChatAction
from aiogram.exceptions import (
    TelegramAPIError,
    TelegramBadRequest,
    TelegramNetworkError,
    TelegramNotFound,
    TelegramRetryAfter,
    TelegramServerError,
)
from aiogram.types import InlineKeyboardMarkup

from vitte.telegram.calls import call_with_retry, split_text

log = logging.getLogger("vitte.bot.streaming")

TYPING_EVERY = 4.5  # Telegram shows a chat action for ~5 s
TYPING_DELAY = 0.3  # no typing action for a reply that shows something sooner than this
FIRST_SHOW_DELAY = 0.3  # no draft or progress message for a reply written sooner than this
PLACEHOLDER_EMPTY = ""  # an empty draft: Telegram shows "Thinking…"
PLACEHOLDER_TEXT = "…"  # where an empty draft is refused


def _not_modified(exc: TelegramAPIError) -> bool:
    return "not modified" in str(exc).lower()


class TypingLoop:
    """Send the typing action until stopped (or until `until` is set).

    The first action goes out only if the wait lasts: `TYPING_DELAY` seconds after `start()`
    (a reply whose first words, draft or message come sooner shows no typing at all, and costs
    no call and no task); from then on it is repeated every `TYPING_EVERY` seconds as before.
    """

    def __init__(self, bot: Bot, chat_id: int, until: asyncio.Event | None = None) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.until = until or asyncio.Event()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, delay: float | None = None) -> TypingLoop:
        """Begin after `delay` seconds (default `TYPING_DELAY`; 0: at once)."""
        delay = TYPING_DELAY if delay is None else delay
        if delay <= 0:
            self._begin()
        else:
            self._timer = asyncio.get_running_loop().call_later(delay, self._begin)
        return self

    def _begin(self) -> None:
        self._timer = None
        if not self.until.is_set():
            self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while not self.until.is_set():
            try:
                await self.bot.send_chat_action(chat_id=self.chat_id, action=ChatAction.TYPING)
            except TelegramRetryAfter:
                return
            except TelegramAPIError as exc:
                log.debug("typing action failed: %s", exc)
            if self.until.is_set():
                return
            try:  # (asyncio.timeout: wait_for would start one more task per wait)
                async with asyncio.timeout(TYPING_EVERY):
                    await self.until.wait()
            except TimeoutError:
                continue

    async def stop(self) -> None:
        self.until.set()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await task


class ReplyStream:
    """One reply being written: progress while it streams, then the final message(s)."""

    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        draft_id: int,
        use_drafts: bool = True,
        draft_interval: float = 0.5,
        edit_interval: float = 1.0,
        first_show_delay: float = FIRST_SHOW_DELAY,
        on_drafts_unsupported: Callable[[], None] | None = None,
        replaces: int | None = None,
    ) -> None:
        self.bot = bot
        # the message the final text replaces (🔄 rewrites the reply in place); None: a new one
        self.replaces = replaces
        self.first_show_delay = first_show_delay
        self.chat_id = chat_id
        self.draft_id = draft_id
        self.mode = "draft" if use_drafts else "edit"
        self.draft_interval = draft_interval
        self.edit_interval = edit_interval
        self.on_drafts_unsupported = on_drafts_unsupported
        self.stop = asyncio.Event()  # the engine's stop event (the player pressed stop)
        self.message_id: int | None = None  # the progress message in edit mode
        self._latest = ""
        self._shown = ""
        self._changed = asyncio.Event()
        self._signalled = False  # `_changed` set by on_text and not yet seen by the worker
        self._first_text = asyncio.Event()
        self._closed = False
        self._busy = False
        self._progress = True
        self._next_at = 0.0
        self._worker: asyncio.Task[None] | None = None
        self._worker_timer: asyncio.TimerHandle | None = None
        self._typing: TypingLoop | None = None

    # ------------------------------------------------------------------ driving
    def start(self) -> ReplyStream:
        """Progress begins `first_show_delay` seconds from now: the worker task starts then
        (a reply written by then arrives as the final message alone, and costs no task)."""
        self._typing = TypingLoop(self.bot, self.chat_id, self._first_text).start()
        loop = asyncio.get_running_loop()
        self._next_at = loop.time() + self.first_show_delay
        if self.first_show_delay > 0:
            self._worker_timer = loop.call_later(self.first_show_delay, self._start_worker)
        else:
            self._start_worker()
        return self

    def _start_worker(self) -> None:
        self._worker_timer = None
        if not self._closed and not self.stop.is_set():
            self._worker = asyncio.create_task(self._work())

    async def on_text(self, text: str) -> None:
        """The engine's `on_text`: the reply so far. Never blocks on Telegram.

        Called for every LLM delta: it only keeps the text, and wakes the worker when it is not
        awake already (the worker reads the newest text when a draft is due).
        """
        self._latest = text
        if not self._signalled:
            self._signalled = True
            self._first_text.set()
            self._changed.set()

    def halt(self) -> None:
        """The player pressed stop: no more progress; the engine keeps what was written."""
        self.stop.set()
        self._changed.set()

    @property
    def written(self) -> str:
        return self._latest

    # ------------------------------------------------------------------ progress
    async def _work(self) -> None:
        """Started `first_show_delay` after `start` (nothing is shown before: see `start`)."""
        loop = asyncio.get_running_loop()
        if self.mode == "draft" and (self.first_show_delay <= 0 or not self._changed.is_set()):
            # no word yet (or shown at once): the "Thinking…" placeholder, with the stop button
            await self._show("")
            self._next_at = loop.time() + self.draft_interval
        while True:
            await self._changed.wait()
            self._changed.clear()
            self._signalled = False
            if self._closed or self.stop.is_set() or not self._progress:
                return
            delay = self._next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
                if self._closed or self.stop.is_set():
                    return
            text = self._latest
            if len(text.strip()) <= len(self._shown.strip()):
                continue  # only when the text grew
            await self._show(text)
            interval = self.draft_interval if self.mode == "draft" else self.edit_interval
            self._next_at = max(self._next_at, loop.time() + interval)

    async def _show(self, text: str) -> None:
        self._busy = True
        try:
            if self.mode == "draft":
                await self._show_draft(text)
            else:
                await self._show_edit(text)
        finally:
            self._busy = False

    async def _draft(self, text: str) -> None:
        """The draft shown now, with the stop button (what was written is kept on stop)."""
        await self.bot.send_message_draft(
            chat_id=self.chat_id, draft_id=self.draft_id, text=text, can_stop=True, keep_on_stop=True
        )

    async def _show_draft(self, text: str) -> None:
        parts = split_text(text)
        shown = parts[-1] if parts else PLACEHOLDER_EMPTY
        try:
            await self._draft(shown)
            self._shown = text
        except TelegramRetryAfter as exc:
            self._next_at = asyncio.get_running_loop().time() + exc.retry_after
        except (TelegramNetworkError, TelegramServerError) as exc:
            log.debug("draft skipped: %s", exc)
        except TelegramAPIError as exc:
            if shown == PLACEHOLDER_EMPTY and isinstance(exc, TelegramBadRequest):
                # an empty draft is Telegram's "Thinking…"; where it is refused, show "…"
                with contextlib.suppress(TelegramAPIError):
                    await self._draft(PLACEHOLDER_TEXT)
                    return
            log.info("drafts unavailable in chat %s (%s); editing one message instead", self.chat_id, exc)
            if isinstance(exc, TelegramNotFound) and self.on_drafts_unsupported is not None:
                self.on_drafts_unsupported()
            self.mode = "edit"
            if text.strip():
                await self._show_edit(text)

    async def _show_edit(self, text: str) -> None:
        parts = split_text(text)
        if not parts:
            return
        shown = parts[0]
        try:
            if self.message_id is None:
                sent = await self.bot.send_message(chat_id=self.chat_id, text=shown)
                self.message_id = sent.message_id
            else:
                await self.bot.edit_message_text(chat_id=self.chat_id, message_id=self.message_id, text=shown)
            self._shown = text
        except TelegramRetryAfter as exc:
            self._next_at = asyncio.get_running_loop().time() + exc.retry_after
        except (TelegramNetworkError, TelegramServerError) as exc:
            log.debug("progress edit skipped: %s", exc)
        except TelegramAPIError as exc:
            if not _not_modified(exc):
                log.info("progress edits stopped in chat %s: %s", self.chat_id, exc)
                self._progress = False

    async def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._changed.set()
        timer, self._worker_timer = self._worker_timer, None
        if timer is not None:
            timer.cancel()
        if self._typing is not None:
            await self._typing.stop()
        worker, self._worker = self._worker, None
        if worker is None:
            return
        if self._busy:
            # let a request in flight finish (a progress message must not be sent unseen)
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(worker), 5.0)
        worker.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await worker

    # ------------------------------------------------------------------ the end
    async def finish(self, text: str, markup: InlineKeyboardMarkup | None = None) -> int:
        """Deliver the final text; returns the Telegram id of the last message (it has `markup`).
        With `replaces`, the final text replaces that message (a progress message goes)."""
        await self._close()
        if self.replaces is not None:
            await self.abort()
            return await edit_or_send(self.bot, self.chat_id, self.replaces, text, markup)
        return await edit_or_send(
            self.bot, self.chat_id, self.message_id if self.mode == "edit" else None, text, markup
        )

    async def abort(self) -> None:
        """No final text (the reply failed): stop progress, take a half-written message away."""
        await self._close()
        if self.mode == "edit" and self.message_id is not None:
            message_id, self.message_id = self.message_id, None
            with contextlib.suppress(TelegramAPIError):
                await self.bot.delete_message(chat_id=self.chat_id, message_id=message_id)


async def edit_or_send(
    bot: Bot,
    chat_id: int,
    message_id: int | None,
    text: str,
    markup: InlineKeyboardMarkup | None = None,
) -> int:
    """Replace a message's text (and keyboard); send a new message when it cannot be edited.

    A text longer than one message: the first part replaces the message, the rest follow;
    the last one carries `markup`. Returns the Telegram id of the last message.
    """
    parts = split_text(text) or ["…"]
    ids: list[int] = []
    rest = parts
    if message_id is not None:
        first_markup = markup if len(parts) == 1 else None
        try:
            await call_with_retry(
                lambda: bot.edit_message_text(
                    chat_id=chat_id, message_id=message_id, text=parts[0], reply_markup=first_markup
                )
            )
            ids.append(message_id)
            rest = parts[1:]
        except TelegramBadRequest as exc:
            if _not_modified(exc):
                ids.append(message_id)
                rest = parts[1:]
            else:
                log.info("edit failed in chat %s (%s); sending anew", chat_id, exc)
    for i, part in enumerate(rest):
        part_markup = markup if i == len(rest) - 1 else None
        sent = await call_with_retry(
            functools.partial(bot.send_message, chat_id=chat_id, text=part, reply_markup=part_markup)
        )
        ids.append(sent.message_id)
    return ids[-1]
