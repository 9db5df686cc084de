"""A local, in-process Telegram Bot API for aiogram: the tests', console's and benchmark's
Telegram. ``LocalBotSession`` answers what the bot sends; ``LocalPlayer`` plays a user."""

from vitte.aiogram_models import install as _lazy_aiogram_models

_lazy_aiogram_models()  # before aiogram is imported: its models are built on first use

from .player import (  # noqa: E402
    ButtonNotClickable,
    ButtonNotFound,
    LocalPlayer,
    LocalPlayerError,
    PaymentDeclined,
)
from .session import (  # noqa: E402
    ApiCall,
    ChatLog,
    LocalBotSession,
    LocalDraft,
    LocalFile,
    LocalMessage,
    make_local_bot,
    parse_html,
)

__all__ = [
    "ApiCall",
    "ButtonNotClickable",
    "ButtonNotFound",
    "ChatLog",
    "LocalBotSession",
    "LocalDraft",
    "LocalFile",
    "LocalMessage",
    "LocalPlayer",
    "LocalPlayerError",
    "PaymentDeclined",
    "make_local_bot",
    "parse_html",
]
