"""aiogram's Telegram types built on first use instead of at import: ≈ 105 MB less per process.

`aiogram.types` ends its import by calling `model_rebuild()` on every one of its ~600 pydantic
models, so each gets a validator and a serializer at once, used or not. On aiogram 3.31 with
pydantic 2.13 that costs ≈ 150 MB of resident memory and ≈ 1.5 s of start-up: the bulk of a
bot process. A running bot validates a handful of them (Update, Message, the answers of the
few methods it calls), and pydantic already knows how to build a model lazily: a model left
incomplete carries stand-ins that rebuild it the first time it validates or serializes.

`install()` (called by the packages that use aiogram: `vitte.bot`, `vitte.localapi`,
`vitte.webapp`) turns those import-time rebuilds into deferrals: it records the namespace
aiogram passes, and gives aiogram's models a `model_rebuild` that supplies that namespace
when pydantic rebuilds one on first use. Nothing else changes: the models, their fields and
their validation are aiogram's own (tests/test_aiogram_models.py builds every one of them
this way and compares each schema with aiogram's eager build). Measured on this machine:
`import aiogram` 166 MB -> 59 MB, and ≈ 63 MB after the first Update is handled.

`install()` must run before anything imports aiogram; if aiogram is already imported it does
nothing (and says so by returning False). Set VITTE_AIOGRAM_EAGER=1 to keep aiogram's
eager build (e.g. to rule this out when chasing a bug).
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["install", "installed"]

_namespace: dict[str, Any] = {}
_state = {"installed": False}


def installed() -> bool:
    """True when aiogram's models in this process are built lazily."""
    return _state["installed"]


def install() -> bool:
    """Defer aiogram's model builds to first use; True if it is (now) in effect."""
    if _state["installed"]:
        return True
    if "aiogram" in sys.modules or os.environ.get("VITTE_AIOGRAM_EAGER", "") not in ("", "0"):
        return False

    from pydantic import BaseModel

    original = BaseModel.__dict__["model_rebuild"]
    build = original.__func__
    importing = [True]

    def model_rebuild(
        cls: type[BaseModel],
        *,
        force: bool = False,
        raise_errors: bool = True,
        _parent_namespace_depth: int = 2,
        _types_namespace: Any = None,
    ) -> bool | None:
        if cls.__module__.startswith("aiogram."):
            if importing[0] and _types_namespace is not None and not force:
                # aiogram.types' closing loop: remember its namespace, build nothing yet
                _namespace.update(_types_namespace)
                return None
            if _types_namespace is None:
                _types_namespace = _namespace  # a first use: pydantic rebuilds with it
        return build(
            cls,
            force=force,
            raise_errors=raise_errors,
            _parent_namespace_depth=_parent_namespace_depth + 1,  # this frame is one more
            _types_namespace=_types_namespace,
        )

    BaseModel.model_rebuild = classmethod(model_rebuild)  # type: ignore[assignment,method-assign]
    try:
        import aiogram  # noqa: F401  (runs aiogram.types' loop under the deferral)
        from aiogram.methods.base import Response, TelegramMethod
        from aiogram.types.base import TelegramObject
    finally:
        BaseModel.model_rebuild = original  # type: ignore[method-assign]
        importing[0] = False

    for base in (TelegramObject, TelegramMethod, Response):
        base.model_rebuild = classmethod(model_rebuild)  # type: ignore[assignment,method-assign]
    _state["installed"] = True
    return True
