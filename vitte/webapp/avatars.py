"""Persona pictures that a card names by URL, served from Vitte itself (issue 15, item 6).

A card may set `extensions.vitte.avatar` to an http(s) URL. Handing that URL to the page let
the card's author see every viewer's IP address and browser; now the page gets a same-origin
path (`/avatars-remote/<key>`, the key a hash of the URL) and the Web App fetches the picture
once, keeps it in memory and serves it, so the page's CSP can say `img-src 'self' data:`.

Only URLs of personas in the catalogue are fetched (the key is looked up there: never an open
proxy); only from public addresses (not loopback, private or link-local: a card cannot make the
server read its own network); no redirects; at most MAX_BYTES; and only PNG, JPEG, GIF or WebP,
recognised by their bytes (never SVG from elsewhere). A failure is remembered for a while and
the page shows the persona's monogram instead.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import time
from collections import OrderedDict
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from aiohttp.resolver import ThreadedResolver

log = logging.getLogger("vitte.webapp")

MAX_BYTES = 2 * 1024 * 1024
MAX_ENTRIES = 128  # pictures kept in memory (least recently used dropped first)
FETCH_TIMEOUT = 10.0
RETRY_FAILED_AFTER = 300.0  # seconds before a URL that failed is tried again
PUBLIC_ONLY = True  # tests on loopback switch this off


def remote_key(url: str) -> str:
    """The path segment that stands for a card's avatar URL."""
    return hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def is_remote(avatar: str | None) -> bool:
    return bool(avatar) and str(avatar).startswith(("https://", "http://"))


def image_type(data: bytes) -> str | None:
    """The picture's type from its first bytes; None for anything else (SVG, HTML, …)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _public(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_global
    except ValueError:
        return False


class _PublicResolver(ThreadedResolver):
    """Resolves a name to its public addresses only."""

    async def resolve(self, host: str, port: int = 0, family: Any = 0) -> Any:
        hosts = [h for h in await super().resolve(host, port, family) if _public(str(h["host"]))]
        if not hosts:
            raise OSError(f"{host} has no public address")
        return hosts


class RemoteAvatars:
    """The fetched pictures, by URL (in this process's memory)."""

    def __init__(self) -> None:
        self._images: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._failed: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def get(self, url: str) -> tuple[bytes, str] | None:
        """(bytes, content type) of the picture at `url`, fetched once; None when it can't be had."""
        cached = self._images.get(url)
        if cached is not None:
            self._images.move_to_end(url)
            return cached
        if time.monotonic() - self._failed.get(url, -RETRY_FAILED_AFTER) < RETRY_FAILED_AFTER:
            return None
        lock = self._locks.setdefault(url, asyncio.Lock())
        async with lock:
            cached = self._images.get(url)
            if cached is not None:
                return cached
            try:
                image = await self._fetch(url)
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                log.info("persona picture %s not fetched: %s", remote_key(url), type(exc).__name__)
                image = None
            finally:
                self._locks.pop(url, None)
            if image is None:
                self._failed[url] = time.monotonic()
                return None
            self._failed.pop(url, None)
            self._images[url] = image
            while len(self._images) > MAX_ENTRIES:
                self._images.popitem(last=False)
            return image

    async def _fetch(self, url: str) -> tuple[bytes, str] | None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return None
        if PUBLIC_ONLY:
            try:
                literal = ipaddress.ip_address(parts.hostname)
            except ValueError:
                literal = None
            if literal is not None and not literal.is_global:  # an address is not resolved: check it here
                return None
        connector = aiohttp.TCPConnector(resolver=_PublicResolver() if PUBLIC_ONLY else None)
        timeout = aiohttp.ClientTimeout(total=FETCH_TIMEOUT)
        async with (
            aiohttp.ClientSession(connector=connector, timeout=timeout) as http,
            http.get(url, allow_redirects=False, headers={"Accept": "image/*"}) as resp,
        ):
            if resp.status != 200:
                return None
            data = bytearray()
            async for chunk in resp.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > MAX_BYTES:
                    return None
        kind = image_type(bytes(data[:16]))
        return (bytes(data), kind) if kind else None


AVATARS_KEY = web.AppKey("remote_avatars", RemoteAvatars)
