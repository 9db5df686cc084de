"""The faces served together: the one module that imports both the bot and the Web App.

`vitte run-bot` runs `run_bot(settings)`: the bot (`vitte.bot.runner.run_bot`) and, in webhook
mode with VITTE_WEBAPP_MOUNT, the Web App (`vitte.webapp.app.make_webapp`) mounted in the same
aiohttp server. The bot does not import the Web App, nor the Web App the bot; `vitte
serve-webapp` runs the Web App alone (`vitte.webapp.app.serve_webapp`).
"""

from __future__ import annotations

from typing import Any

from vitte.bot.runner import run_bot as run_bot_only
from vitte.config import Settings
from vitte.webapp.app import make_webapp


async def run_bot(settings: Settings, **embedding: Any) -> None:
    """`vitte.bot.runner.run_bot` with the Web App to mount at VITTE_WEBAPP_MOUNT (if set).

    `embedding`: run_bot's `bot`, `core`, `stop`, `runtime` (tests, embedding)."""
    await run_bot_only(settings, webapp=make_webapp if settings.webapp_mount else None, **embedding)
