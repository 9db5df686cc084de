"""Structured logs: every record carries the update and the player it was written for.

The bot's update middleware binds ``update_id`` and ``player_id`` (context variables, so the
values follow the update's task and the tasks it starts); a log record factory copies them
onto every record as ``record.update_id`` / ``record.player_id`` ("-" outside an update), for
any logger, any handler. `setup_logging()` installs it with a text format that shows them, or
one JSON object per line (``VITTE_LOG_FORMAT=json``) for a log collector.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
from datetime import UTC, datetime
from typing import Any

update_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("vitte_update_id", default=None)
player_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("vitte_player_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [update=%(update_id)s player=%(player_id)s]: %(message)s"

_installed = False


class log_context:  # lower case: called like the function it was (`with log_context(...)`)
    """Records logged inside carry these ids (unchanged where None is given)."""

    __slots__ = ("_player", "_update", "player_id", "update_id")

    def __init__(self, *, update_id: int | None = None, player_id: int | None = None) -> None:
        self.update_id = update_id
        self.player_id = player_id
        self._update: contextvars.Token[int | None] | None = None
        self._player: contextvars.Token[int | None] | None = None

    def __enter__(self) -> None:
        if self.update_id is not None:
            self._update = update_id_var.set(self.update_id)
        if self.player_id is not None:
            self._player = player_id_var.set(self.player_id)

    def __exit__(self, *exc: object) -> None:
        if self._player is not None:
            player_id_var.reset(self._player)
            self._player = None
        if self._update is not None:
            update_id_var.reset(self._update)
            self._update = None


def install_record_factory() -> None:
    """Give every log record `update_id` and `player_id` (idempotent)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        update_id = update_id_var.get()
        player_id = player_id_var.get()
        record.update_id = "-" if update_id is None else update_id
        record.player_id = "-" if player_id is None else player_id
        return record

    logging.setLogRecordFactory(factory)
    _installed = True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, update_id, player_id, exc."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("update_id", "player_id"):
            value = getattr(record, key, "-")
            if value != "-":
                data[key] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT lines made inert for the terminal they are read in (vitte.text.inert): a
    player's or a card's text in a message cannot colour it, retitle it or plant a link."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        from vitte.text import inert

        return inert(super().format(record))


def setup_logging(level: int | str = logging.INFO, fmt: str | None = None) -> None:
    """Configure the root logger when nothing else has: text (default) or JSON lines.

    `fmt` defaults to VITTE_LOG_FORMAT ("text" or "json").
    """
    install_record_factory()
    root = logging.getLogger()
    if root.handlers:
        return
    fmt = (fmt or os.environ.get("VITTE_LOG_FORMAT") or "text").strip().lower()
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level)


class _BadRequestLines(logging.Filter):
    """aiohttp logs every request its HTTP parser refuses (bytes a header may not hold, a bad
    request line: anyone on the internet can send them) as an ERROR with a traceback, then
    answers 400 itself. Such a record becomes one INFO line; a failure inside a handler (a 500)
    stays an ERROR with its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        from aiohttp.http_exceptions import HttpProcessingError

        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and 400 <= (exc.code or 400) < 500:
            reason = " ".join(str(exc.message or type(exc).__name__).split())[:200]
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else "?"
            record.msg, record.args = "bad HTTP request from %s refused (%s %s)", (remote, exc.code, reason)
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.exc_info, record.exc_text = None, None
        return True


_BAD_REQUESTS = _BadRequestLines()


def quiet_bad_requests() -> None:
    """Install (once) the filter that logs HTTP requests aiohttp's parser refuses as one INFO line."""
    logger = logging.getLogger("aiohttp.server")
    if _BAD_REQUESTS not in logger.filters:
        logger.addFilter(_BAD_REQUESTS)
