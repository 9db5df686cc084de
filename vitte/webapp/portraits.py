"""Persona portraits on the Web App: GET /portraits/<persona id>/<digest>-<size>.webp.

The digest in the URL names the picture, so the response is cacheable for good (ETag and
``Cache-Control: immutable``); a digest that was never the persona's is a 404.
"""

from __future__ import annotations

import re

from aiohttp import web

from vitte.catalog.portrait_store import PortraitStore
from vitte.catalog.portraits import SIZES
from vitte.db import Database

__all__ = ["LIST_SIZE", "PAGE_SIZE", "PORTRAITS_KEY", "add_portrait_routes", "portrait_url"]

PORTRAITS_KEY = web.AppKey("portraits", PortraitStore)
PAGE_SIZE, LIST_SIZE = SIZES  # the details page; the list (and the console)
_NAME = re.compile(r"^([0-9a-f]{64})-(\d{2,4})\.webp$")
PORTRAIT_CSP = "default-src 'none'; sandbox"
CACHE = "public, max-age=31536000, immutable"


def portrait_url(request: web.Request, persona_id: str, digest: str | None, size: int) -> str | None:
    """The same-origin URL of a persona's portrait at `size`, or None without one."""
    if not digest:
        return None
    return str(request.app.router["portraits"].url_for(persona_id=persona_id, name=f"{digest}-{size}.webp"))


async def _portrait(request: web.Request) -> web.StreamResponse:
    m = _NAME.match(request.match_info["name"])
    persona_id = request.match_info["persona_id"]
    if m is None or int(m.group(2)) not in SIZES or len(persona_id) > 64:
        raise web.HTTPNotFound()
    digest, size = m.group(1), int(m.group(2))
    etag = f'"{digest[:32]}-{size}"'
    headers = {"Cache-Control": CACHE, "ETag": etag, "Content-Security-Policy": PORTRAIT_CSP}
    found = await request.config_dict[PORTRAITS_KEY].get(persona_id, size, digest)
    if found is None:
        raise web.HTTPNotFound()
    if request.headers.get("If-None-Match") == etag:
        return web.Response(status=304, headers=headers)
    data, media_type = found
    return web.Response(body=data, content_type=media_type, headers=headers)


def add_portrait_routes(app: web.Application, db: Database) -> None:
    """Mount the portraits route on the Web App."""
    app[PORTRAITS_KEY] = PortraitStore(db)
    app.router.add_get("/portraits/{persona_id}/{name}", _portrait, name="portraits")
