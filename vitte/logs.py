"""Structured logs: every record carries the update and the player it was written for.

The bot's update middleware binds ``update_id`` and ``player_id`` (context variables, so the
values follow the update's task and the tasks it starts); a log record factory copies them
onto every record as ``record.update_id`` / ``record.player_id`` ("-" outside an update), for
any logger, any handler. `setup_logging()` installs it with a text format that shows them, or
one JSON object per line (``VITTE_LOG_FORMAT=json``) for a log collector.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

update_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("vitte_update_id", default=None)
player_id_var: contextvars.ContextVar[int | None] = contextvars.ContextVar("vitte_player_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [update=%(update_id)s player=%(player_id)s]: %(message)s"

_installed = False


@contextlib.contextmanager
def log_context(*, update_id: int | None = None, player_id: int | None = None) -> Iterator[None]:
    """Records logged inside carry these ids (unchanged where None is given)."""
    tokens: list[tuple[contextvars.ContextVar[int | None], contextvars.Token[int | None]]] = []
    if update_id is not None:
        tokens.append((update_id_var, update_id_var.set(update_id)))
    if player_id is not None:
        tokens.append((player_id_var, player_id_var.set(player_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


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
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root.addHandler(handler)
    root.setLevel(level)
