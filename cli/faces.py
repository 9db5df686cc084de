"""`vitte run-bot` and `vitte serve-webapp`: the faces, served.

Registered in cli/main.py: ``app.command("run-bot")(run_bot)``, ``app.command("serve-webapp")(serve_webapp)``.
"""

from __future__ import annotations

from cli.common import run_async, settings_with_token


def run_bot() -> None:
    """Run the Telegram bot (long polling; webhook when VITTE_WEBHOOK_URL is set)."""
    settings = settings_with_token()
    from vitte.serve import run_bot as _run

    run_async(lambda: _run(settings))


def serve_webapp() -> None:
    """Serve the Telegram Web App (pages + JSON API) on VITTE_WEBAPP_HOST:VITTE_WEBAPP_PORT."""
    settings = settings_with_token()
    from vitte.webapp.app import serve_webapp as _serve

    run_async(lambda: _serve(settings))
