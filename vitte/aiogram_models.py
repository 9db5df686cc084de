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

The same `install()` also makes binding the bot to each object cheaper. Every aiogram object
carries the bot that received or sent it (a private `_bot`, set from the validation context by
`BotContextController.model_post_init`, so that `message.answer(...)` knows its bot). pydantic
wraps that method once per class level to initialise private attributes first, so a `Message`
ran four nested wrappers, a private-attribute default lookup and a `__setattr__` per object:
≈ 2 % of a bot's CPU (some 25 objects per chat message). `_bind_bot` does the same in one
step: the object's private attributes become exactly `{"_bot": context["bot"]}` (or None
without a bot), as before. It replaces `model_post_init` only on aiogram's classes whose sole
private attribute is `_bot` and whose post-init is aiogram's own (checked per class).

`install()` must run before anything imports aiogram; if aiogram is already imported it does
nothing (and says so by returning False). Set VITTE_AIOGRAM_EAGER=1 to keep aiogram's
eager build and post-init (e.g. to rule this out when chasing a bug).
"""

from __future__ import annotations

import os
import sys
from typing import Any

__all__ = ["install", "installed"]

_object_setattr = object.__setattr__

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
    _flatten_bot_binding()
    _state["installed"] = True
    return True


def _bind_bot(self: Any, context: Any, /) -> None:
    """aiogram's `BotContextController.model_post_init` with pydantic's private-attribute set-up, in one."""
    _object_setattr(self, "__pydantic_private__", {"_bot": context.get("bot") if context else None})


def _flatten_bot_binding() -> int:
    """Give aiogram's models `_bind_bot` as their post-init; returns how many classes."""
    from aiogram.client.context_controller import BotContextController

    original = BotContextController.__dict__["model_post_init"]
    while hasattr(original, "__wrapped__"):  # pydantic's wrapper around aiogram's method
        original = original.__wrapped__
    count = 0
    todo = [BotContextController]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        post_init: Any = cls.__dict__.get("model_post_init")
        while hasattr(post_init, "__wrapped__"):
            post_init = post_init.__wrapped__
        if post_init is original and set(cls.__private_attributes__) == {"_bot"}:
            cls.model_post_init = _bind_bot  # type: ignore[assignment,method-assign]
            count += 1
    return count
