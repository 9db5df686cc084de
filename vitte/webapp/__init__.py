"""The Telegram Web App: persona and story choice, settings, the paywall.

`vitte.webapp.app.make_webapp(core, bot)` (an aiohttp Application, mountable) and
`serve_webapp(settings)`; `vitte.webapp.auth` validates Telegram initData; `vitte.webapp.api`
holds the JSON routes; `static/` is the hand-written single page (no build step).
"""
