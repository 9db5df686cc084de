"""The Web App's part of "the persona writes first" (issue 18): the player's switch and time
zone. Every route needs the player's initData and acts only on that player.

    GET  /api/me/nudges   {"available", "nudges", "timezone", "timezone_set"}
    POST /api/me/nudges   {"nudges": bool?, "timezone": "Area/City"?, "browser": bool?} → the same
                          ("browser": true: the zone Intl reported, kept only until the player
                          chooses one in Settings)
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from vitte.initiative.prefs import prefs_of, set_prefs
from vitte.players import BadSetting
from vitte.webapp.api import ApiError, ctx_of, json_response, read_object, require_user

nudge_routes = web.RouteTableDef()
ZONE_MAX = 64


def _payload(core: Any, prefs: Any) -> dict[str, Any]:
    return {"available": core.settings.nudge_after > 0, **prefs.to_json()}


@nudge_routes.get("/api/me/nudges")
async def get_nudges(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    user = require_user(request)
    await _known(ctx.core, user)
    return json_response(_payload(ctx.core, await prefs_of(ctx.core.db, ctx.core.settings, user.id)))


@nudge_routes.post("/api/me/nudges")
async def post_nudges(request: web.Request) -> web.Response:
    ctx = ctx_of(request)
    user = require_user(request)
    data = await read_object(request)
    on, zone, browser = data.get("nudges"), data.get("timezone"), data.get("browser", False)
    if on is not None and not isinstance(on, bool):
        raise ApiError(400, "bad_request", "nudges must be true or false")
    if zone is not None and (not isinstance(zone, str) or not zone.strip() or len(zone) > ZONE_MAX):
        raise ApiError(400, "bad_setting", "timezone must be an IANA time zone such as Europe/Moscow")
    if not isinstance(browser, bool):
        raise ApiError(400, "bad_request", "browser must be true or false")
    if on is None and zone is None:
        raise ApiError(400, "bad_request", "nothing to change: send nudges and/or timezone")
    await _known(ctx.core, user)
    try:
        prefs = await set_prefs(
            ctx.core.db, ctx.core.settings, user.id, on=on, timezone=zone.strip() if zone else None,
            from_browser=browser,
        )  # fmt: skip
    except BadSetting as exc:
        raise ApiError(400, "bad_setting", str(exc)) from None
    return json_response(_payload(ctx.core, prefs))


async def _known(core: Any, user: Any) -> None:
    """The player's row exists (created on first sight, as the other settings routes do)."""
    await core.players.seen(
        user.id, language_code=user.language_code, first_name=user.first_name, username=user.username
    )
