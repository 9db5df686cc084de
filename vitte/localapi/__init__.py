"""A local, in-process Telegram Bot API for aiogram: the tests', console's and benchmark's
Telegram. ``LocalBotSession`` answers what the bot sends; ``LocalPlayer`` plays a user."""

from .player import (
    ButtonNotClickable,
    ButtonNotFound,
    LocalPlayer,
    LocalPlayerError,
    PaymentDeclined,
)
from .session import (
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
