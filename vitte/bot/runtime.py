"""Per-process bot state: running replies (for the stop button), the latest reply per chat
(its 🔄 moves to the newest reply), in-flight updates (for a graceful shutdown), and the spool
(`vitte.spool`) when the bot runs one."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from aiogram import Bot
from aiogram.exceptions import TelegramAPIError
from aiogram.types import Update

from vitte.bot.streaming import ReplyStream
from vitte.spool import Spool

log = logging.getLogger("vitte.bot")

_MAX_REMEMBERED = 100_000


@dataclass
class Runtime:
    draft_interval: float = 0.5  # seconds between drafts (only when the text grew)
    edit_interval: float = 1.0  # seconds between edits of the fallback progress message
    use_drafts: bool = True
    streams: dict[tuple[int, int], ReplyStream] = field(default_factory=dict)
    last_reply: OrderedDict[int, int] = field(default_factory=OrderedDict)
    lang_hint: OrderedDict[int, str] = field(default_factory=OrderedDict)
    tasks: set[asyncio.Task[object]] = field(default_factory=set)
    spool: Spool | None = None  # set by `vitte.bot.runner.run_bot`, which drains it
    # polled updates not yet admitted (waiting for their player's turn): a shutdown cuts them
    # before they begin, and they are kept in the spool (`cut_waiting` after `drain`)
    waiting: dict[asyncio.Task[object], Update] = field(default_factory=dict)
    cut_waiting: list[Update] = field(default_factory=list)
    _draft_ids: itertools.count[int] = field(
        default_factory=lambda: itertools.count(secrets.randbelow(1 << 30) + 1)
    )

    # ------------------------------------------------------------------ replies
    def next_draft_id(self) -> int:
        return next(self._draft_ids) % ((1 << 31) - 1) or 1

    def new_stream(self, bot: Bot, chat_id: int, *, replaces: int | None = None) -> ReplyStream:
        stream = ReplyStream(
            bot,
            chat_id,
            draft_id=self.next_draft_id(),
            use_drafts=self.use_drafts,
            draft_interval=self.draft_interval,
            edit_interval=self.edit_interval,
            on_drafts_unsupported=self._drafts_unsupported,
            replaces=replaces,
        )
        self.streams[(chat_id, stream.draft_id)] = stream
        return stream

    def end_stream(self, stream: ReplyStream) -> None:
        self.streams.pop((stream.chat_id, stream.draft_id), None)

    def stop_stream(self, chat_id: int, draft_id: int) -> bool:
        stream = self.streams.get((chat_id, draft_id))
        if stream is None:
            return False
        stream.halt()
        return True

    def _drafts_unsupported(self) -> None:
        if self.use_drafts:
            log.warning("the Bot API server does not know sendMessageDraft; editing messages instead")
        self.use_drafts = False

    async def set_last_reply(self, bot: Bot, chat_id: int, message_id: int) -> None:
        """`message_id` is now the chat's latest reply; the previous one loses its 🔄."""
        previous = self.last_reply.pop(chat_id, None)
        self.last_reply[chat_id] = message_id
        while len(self.last_reply) > _MAX_REMEMBERED:
            self.last_reply.popitem(last=False)
        if previous is not None and previous != message_id:
            await drop_markup(bot, chat_id, previous)

    async def forget_last_reply(self, bot: Bot, chat_id: int) -> None:
        """The dialog changed: the latest reply's 🔄 goes away."""
        previous = self.last_reply.pop(chat_id, None)
        if previous is not None:
            await drop_markup(bot, chat_id, previous)

    def remember_lang(self, user_id: int, lang: str) -> None:
        self.lang_hint[user_id] = lang
        self.lang_hint.move_to_end(user_id)
        while len(self.lang_hint) > _MAX_REMEMBERED:
            self.lang_hint.popitem(last=False)

    # ------------------------------------------------------------------ shutdown
    def track(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self.tasks.add(task)

    def untrack(self, task: asyncio.Task[object] | None) -> None:
        if task is not None:
            self.tasks.discard(task)

    def admitted(self, task: asyncio.Task[Any] | None) -> None:
        """The update of `task` began its handling (it is no longer only waiting)."""
        if self.waiting and task is not None:
            self.waiting.pop(task, None)

    async def drain(self, grace: float) -> int:
        """Let in-flight updates finish for up to `grace` seconds, then cancel the rest.

        A cancelled reply is stored by the engine as interrupted (never shown as complete).
        Returns how many were cancelled.
        """
        current = asyncio.current_task()
        pending = {t for t in self.tasks if t is not current and not t.done()}
        if not pending:
            return 0
        log.info("waiting up to %.0f s for %d update(s) in progress", grace, len(pending))
        _done, still = await asyncio.wait(pending, timeout=grace) if grace > 0 else (set(), pending)
        # those cut before their handling began (once cancelled, they never begin): nothing of
        # them happened
        cut = [self.waiting.pop(t) for t in still if t in self.waiting]
        self.cut_waiting.extend(sorted(cut, key=lambda u: u.update_id))
        for task in still:
            task.cancel()
        if still:
            log.warning("cancelling %d update(s) still running after %.0f s", len(still), grace)
            await asyncio.wait(still, timeout=10)
        return len(still)


async def drop_markup(bot: Bot, chat_id: int, message_id: int) -> None:
    with contextlib.suppress(TelegramAPIError):
        await bot.edit_message_reply_markup(chat_id=chat_id, message_id=message_id, reply_markup=None)
