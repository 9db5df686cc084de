"""`vitte run-scheduler`: the nudge scheduler alone (issue 18), for operators who run the
bot's roles apart. Every `vitte run-bot` process runs the same scheduler beside its updates;
any number of both may run at once (the schedule's claims keep each nudge to one process)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiogram import Bot

from vitte.config import ConfigError, Settings
from vitte.core import Core
from vitte.initiative.nudger import Nudger
from vitte.logs import setup_logging
from vitte.telegram.bot import make_bot
from vitte.telegram.nudges import mark_unreachable_in, nudge_sender

log = logging.getLogger("vitte.nudges")


async def run_scheduler(
    settings: Settings, *, bot: Bot | None = None, core: Core | None = None, stop: asyncio.Event | None = None
) -> None:
    """Claim and send due nudges until SIGINT/SIGTERM (or `stop`). ConfigError without a
    usable token or with VITTE_NUDGE_AFTER=0 (nothing to run)."""
    settings.require_bot_token()
    if settings.nudge_after <= 0:
        raise ConfigError("VITTE_NUDGE_AFTER=0: nudges are off, the scheduler has nothing to do")
    setup_logging()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    own_core, own_bot = core is None, bot is None
    core = core or await Core.open(settings)
    bot = bot or make_bot(settings)
    bot.session.middleware(mark_unreachable_in(core.db))  # 403 on any send: unreachable, counted
    try:
        log.info("nudge scheduler running (every %.0f s, batches of %d)", settings.nudge_poll, settings.nudge_batch)
        await Nudger(core, nudge_sender(bot)).run(stop)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        if own_bot:
            await bot.session.close()
        if own_core:
            await core.close()
