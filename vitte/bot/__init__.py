"""The Telegram bot (aiogram 3): thin handlers over the dialogs engine.

Public entry points:

- ``vitte.bot.factory.build_dispatcher(core, runtime=None) -> Dispatcher``: every handler
  (``vitte.bot.handlers``: module-level functions, fresh routers) and the update middlewares
  (``vitte.bot.middlewares``: in-flight tracking, logs and metrics, the per-player lock with
  de-duplication, error answers). The same Dispatcher serves polling, the webhook, the local
  console, the tests and the benchmark.
- ``vitte.bot.runner.run_bot(settings, webapp=None) -> None``: polling, or the webhook server
  when VITTE_WEBHOOK_URL is set; graceful SIGINT/SIGTERM. `vitte run-bot` runs it through
  ``vitte.serve.run_bot``, which also mounts the Web App (VITTE_WEBAPP_MOUNT): the bot never
  imports the Web App, nor the Web App the bot.
- ``vitte.bot.runtime.Runtime``: per-process state (running replies for the stop button, the
  latest reply per chat, in-flight updates; ``drain(grace)`` for shutdown).
- ``vitte.bot.texts.t(lang, key, **kw)``: every player-facing string, ru and en.
"""

from vitte.aiogram_models import install as _lazy_aiogram_models

_lazy_aiogram_models()  # before aiogram is imported: its models are built on first use
