"""The Telegram bot (aiogram 3): thin handlers over the dialogs engine.

Public entry points:

- ``vitte.bot.factory.build_dispatcher(core, runtime=None) -> Dispatcher``: every handler and
  the update middleware (de-duplication, per-player lock, error answers). The same
  Dispatcher serves polling, the webhook, the local console, the tests and the benchmark.
- ``vitte.bot.factory.make_bot(settings, session=None) -> Bot`` (VITTE_TELEGRAM_API_URL).
- ``vitte.bot.runner.run_bot(settings) -> None``: `vitte run-bot` (polling, or the webhook
  server when VITTE_WEBHOOK_URL is set; graceful SIGINT/SIGTERM).
- ``vitte.bot.notify.send_opening(bot, chat_id, opening) -> int``: the story's opening, for
  the Web App.
- ``vitte.bot.runtime.Runtime``: per-process state (running replies for the stop button, the
  latest reply per chat, in-flight updates; ``drain(grace)`` for shutdown).
- ``vitte.bot.texts.t(lang, key, **kw)``: every player-facing string, ru and en.
"""

from vitte.aiogram_models import install as _lazy_aiogram_models

_lazy_aiogram_models()  # before aiogram is imported: its models are built on first use
