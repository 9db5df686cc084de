"""The pace of a player's actions that make the bot send something on their behalf: opening a
dialog from the Web App (the bot sends the opening), invoices (the bot asks Telegram for a link
or sends an invoice) and /paysupport (a message to every admin chat).

Telegram lets a bot send about 30 messages a second in all: one player's loop must not delay
everyone else. Each action is counted with the cache's fixed-window `hit` (shared by every
process with Redis; a cache that cannot answer lets the action through), under the player's
`user_key`, like the replies' rate limit (VITTE_RATE_LIMIT_PER_MINUTE).
"""

from __future__ import annotations

from dataclasses import dataclass

from vitte.cache.base import Cache, user_key, window_remaining
from vitte.errors import RateLimited


@dataclass(frozen=True, slots=True)
class Pace:
    """At most `limit` actions named `name` per player in a fixed window of `window` seconds."""

    name: str
    limit: int
    window: float


DIALOG_OPENINGS = Pace("dialog_openings", 10, 60.0)  # the Web App's story choice (a double click is fine)
INVOICES = Pace("invoices", 5, 60.0)  # invoice links and invoice messages
DELETE_CONFIRMATIONS = Pace("delete_confirmations", 2, 300.0)  # the Web App's "confirm in the chat"
PAYSUPPORT = Pace("paysupport", 1, 300.0)  # "/paysupport <problem>" forwarded to the admins


async def keep_pace(cache: Cache, user_id: int, pace: Pace) -> None:
    """Count one action of the player; RateLimited (seconds until the window ends) when it is
    one too many: the caller then does nothing else."""
    if await cache.hit(user_key(user_id, pace.name), pace.window) > pace.limit:
        raise RateLimited(window_remaining(pace.window))
