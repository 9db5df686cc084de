"""The Telegram Web App: persona and story choice, settings, the paywall.

`vitte.webapp.app.make_webapp(core, bot)` (an aiohttp Application, mountable) and
`serve_webapp(settings)`; `vitte.webapp.auth` validates Telegram initData; `vitte.webapp.api`
holds the JSON routes; `static/` is the hand-written single page (no build step).
"""

from vitte.aiogram_models import install as _lazy_aiogram_models

_lazy_aiogram_models()  # before aiogram is imported: its models are built on first use
