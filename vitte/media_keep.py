"""Keeping media on disk, only when the operator asks (VITTE_MEDIA_DIR): the player's voice
messages as received, the persona's voice notes and photos as made, under
`<dir>/<kind>/<YYYY-MM-DD>/<name>`. Without it nothing is written anywhere: media live in
memory only for as long as the call that needs them."""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

from vitte.config import Settings
from vitte.models import utcnow

log = logging.getLogger("vitte.media")

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


def _write(root: str, relative: str, data: bytes) -> Path:
    path = Path(root).expanduser() / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return path


async def keep(settings: Settings, kind: str, name: str, data: bytes) -> Path | None:
    """`data` written as `<VITTE_MEDIA_DIR>/<kind>/<today>/<name>` (names made safe); None when
    VITTE_MEDIA_DIR is unset or the write failed (logged: keeping is never worth a reply)."""
    if not settings.media_dir:
        return None
    safe = _SAFE.sub("_", name).strip("._") or "media"
    relative = f"{_SAFE.sub('_', kind)}/{utcnow().strftime('%Y-%m-%d')}/{safe}"
    try:
        return await asyncio.to_thread(_write, settings.media_dir, relative, data)
    except OSError as exc:
        log.warning("could not keep %s in VITTE_MEDIA_DIR: %s", safe, exc)
        return None
