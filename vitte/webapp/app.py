"""The Web App server: the static single page, persona avatars and the JSON API (aiohttp).

`make_webapp(core, bot)` builds an `aiohttp.web.Application` that can run alone or be
mounted in another one (`parent.add_subapp("/webapp/", make_webapp(core, bot))`): the page
uses relative URLs only. `serve_webapp(settings)` runs it until SIGINT/SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import logging
import mimetypes
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiogram import Bot
from aiohttp import web

import vitte
from vitte.config import ConfigError, Settings
from vitte.core import Core
from vitte.i18n import DEFAULT_LANGUAGE, LANGUAGES
from vitte.logs import quiet_bad_requests
from vitte.metrics import metrics_route
from vitte.telegram.bot import make_bot
from vitte.webapp.api import CTX, WebContext, error_middleware, json_response, routes
from vitte.webapp.avatars import AVATARS_KEY, RemoteAvatars, is_remote, remote_key
from vitte.webapp.memory_api import memory_routes
from vitte.webapp.nudges_api import nudge_routes
from vitte.webapp.portraits import add_portrait_routes
from vitte.webapp.texts import language_texts, noscript_html, page_texts_json

__all__ = ["STATIC_DIR", "default_avatars_dir", "make_webapp", "serve_webapp"]

log = logging.getLogger("vitte.webapp")

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_BODY_BYTES = 64 * 1024

PAGE_CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self' https://telegram.org",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",  # persona pictures named by URL are served from here (vitte.webapp.avatars)
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'none'",
        # framed only by Telegram's web clients (the apps open the page in a webview, unframed)
        "frame-ancestors https://web.telegram.org https://webk.telegram.org https://webz.telegram.org",
    ]
)
# an SVG avatar opened on its own must not run anything
AVATAR_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def default_avatars_dir() -> Path:
    """vitte/fixtures/avatars, inside the package: the avatars of the personas shipped with the product."""
    return Path(vitte.__file__).resolve().parent / "fixtures" / "avatars"


def _asset_version() -> str:
    digest = hashlib.sha256()
    for name in ("app.js", "app.css"):
        with contextlib.suppress(OSError):
            digest.update((STATIC_DIR / name).read_bytes())
    return digest.hexdigest()[:10]


@web.middleware
async def _body_limit_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The Web App's own body limit (MAX_BODY_BYTES) wherever it runs: aiohttp takes the limit
    from the application that accepted the connection, so mounted at VITTE_WEBAPP_MOUNT in the
    webhook server the requests would carry the webhook's 4 MB."""
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        request = request.clone(client_max_size=MAX_BODY_BYTES)
    return await handler(request)


@web.middleware
async def _headers_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


def _index_handler(html: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    body = html.encode("utf-8")
    gzipped = gzip.compress(body, 9, mtime=0)  # the page carries its texts (vitte.webapp.texts)

    async def index(request: web.Request) -> web.Response:
        headers = {"Cache-Control": "no-cache", "Content-Security-Policy": PAGE_CSP, "Vary": "Accept-Encoding"}
        payload = body
        if "gzip" in request.headers.get("Accept-Encoding", "").lower():
            payload = gzipped
            headers["Content-Encoding"] = "gzip"
        return web.Response(body=payload, content_type="text/html", charset="utf-8", headers=headers)

    return index


async def _texts(request: web.Request) -> web.Response:
    """GET api/texts/<lang>.json: the page's texts in one language (vitte.webapp.texts)."""
    lang = request.match_info["lang"]
    if lang not in LANGUAGES:
        raise web.HTTPNotFound()
    return json_response(language_texts(lang))


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    gzipped: bytes
    content_type: str
    etag: str


def _load_assets() -> dict[str, _Asset]:
    """The page's few static files, held in memory with a gzip copy (phones on slow networks)."""
    assets: dict[str, _Asset] = {}
    for path in sorted(STATIC_DIR.iterdir()):
        if not path.is_file() or path.name == "index.html":
            continue
        body = path.read_bytes()
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        assets[path.name] = _Asset(body, gzip.compress(body, 9, mtime=0), ctype, etag)
    return assets


def _static_handler(assets: dict[str, _Asset]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def static(request: web.Request) -> web.Response:
        asset = assets.get(request.match_info["filename"])
        if asset is None:
            raise web.HTTPNotFound()
        headers = {"Cache-Control": "public, max-age=604800", "ETag": asset.etag, "Vary": "Accept-Encoding"}
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers=headers)
        body = asset.body
        if "gzip" in request.headers.get("Accept-Encoding", "").lower():
            body = asset.gzipped
            headers["Content-Encoding"] = "gzip"
        charset = "utf-8" if asset.content_type.startswith("text/") or "javascript" in asset.content_type else None
        return web.Response(body=body, content_type=asset.content_type, charset=charset, headers=headers)

    return static


async def _remote_avatar(request: web.Request) -> web.StreamResponse:
    """GET avatars-remote/<key>: the picture a card names by URL, fetched once and served from
    here (vitte.webapp.avatars); only URLs of the catalogue's personas."""
    key = request.match_info["key"]
    ctx = request.config_dict[CTX]
    urls = [p.avatar for p in await ctx.core.catalog.personas() if is_remote(p.avatar)]
    url = next((u for u in urls if u and remote_key(u) == key), None)
    if url is None:
        raise web.HTTPNotFound()
    image = await request.config_dict[AVATARS_KEY].get(url)
    if image is None:
        raise web.HTTPNotFound()
    data, content_type = image
    return web.Response(
        body=data,
        content_type=content_type,
        headers={"Cache-Control": "public, max-age=86400", "Content-Security-Policy": AVATAR_CSP},
    )


async def _avatar(request: web.Request) -> web.StreamResponse:
    ctx = request.config_dict[CTX]
    resp = _file(ctx.avatars_dir, request.match_info["filename"], "public, max-age=86400")
    resp.headers["Content-Security-Policy"] = AVATAR_CSP
    return resp


def _file(root: Path, name: str, cache: str) -> web.FileResponse:
    if not name or "\\" in name or any(part in ("", ".", "..") for part in name.split("/")):
        raise web.HTTPNotFound()
    base = root.resolve()
    path = (base / name).resolve()
    try:
        path.relative_to(base)
    except ValueError:
        raise web.HTTPNotFound() from None
    if not path.is_file():
        raise web.HTTPNotFound()
    resp = web.FileResponse(path)
    resp.headers["Cache-Control"] = cache
    return resp


def make_webapp(core: Core, bot: Bot, *, avatars_dir: Path | None = None) -> web.Application:
    """The Web App as an aiohttp application (the caller owns and closes `core` and `bot`)."""
    app = web.Application(
        middlewares=[_body_limit_middleware, _headers_middleware, error_middleware], client_max_size=MAX_BODY_BYTES
    )
    app[CTX] = WebContext(core=core, bot=bot, avatars_dir=avatars_dir or default_avatars_dir())
    app[AVATARS_KEY] = RemoteAvatars()
    html = (
        (STATIC_DIR / "index.html")
        .read_text("utf-8")
        .replace("__VERSION__", _asset_version())
        .replace("__LANG__", DEFAULT_LANGUAGE)
        .replace("__TEXTS__", page_texts_json())
        .replace("__NOSCRIPT__", noscript_html())
    )
    index = _index_handler(html)
    app.router.add_get("/", index, name="index")
    app.router.add_get("/index.html", index)
    app.add_routes(routes)
    app.add_routes(memory_routes)  # the memory page (vitte.webapp.memory_api)
    app.add_routes(nudge_routes)  # the persona writes first: switch, time zone (vitte.webapp.nudges_api)
    app.router.add_get("/api/texts/{lang}.json", _texts, name="texts")
    app.router.add_get("/static/{filename}", _static_handler(_load_assets()), name="static")
    app.router.add_get("/avatars/{filename:.+}", _avatar, name="avatars")
    app.router.add_get("/avatars-remote/{key}", _remote_avatar, name="remote_avatars")
    add_portrait_routes(app, core.db)  # a card's own picture, stored in the database
    return app


async def serve_webapp(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Serve the Web App on webapp_host:webapp_port until SIGINT/SIGTERM (or `stop` is set).

    Raises ConfigError when the bot token is missing or malformed, or the port is taken.
    """
    settings.require_bot_token()
    stop = stop or asyncio.Event()
    core = await Core.open(settings)
    bot = make_bot(settings)
    runner: web.AppRunner | None = None
    loop = asyncio.get_running_loop()
    signals: list[signal.Signals] = []
    try:
        app = make_webapp(core, bot)
        metrics_route(app, token=settings.metrics_token.get_secret_value() if settings.metrics_token else None)
        quiet_bad_requests()
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, settings.webapp_host, settings.webapp_port)
        try:
            await site.start()
        except OSError as exc:
            raise ConfigError(
                f"VITTE_WEBAPP_PORT: cannot listen on {settings.webapp_host}:{settings.webapp_port} "
                f"({exc.strerror or exc})"
            ) from None
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
                signals.append(sig)
        log.info("web app on http://%s:%s/", settings.webapp_host, settings.webapp_port)
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
        if runner is not None:
            await runner.cleanup()
        await bot.session.close()
        await core.close()
