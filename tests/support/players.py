"""Test helpers for players: an age-confirmed player (the engine refuses everyone else)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vitte.core import Core
    from vitte.players import PlayerView


async def adult(core: Core, user_id: int, **kw: Any) -> PlayerView:
    """`players.seen(user_id, **kw)` (first_name=, username=, language_code=) and then
    `players.confirm_adult(user_id)`: a player the dialogs engine lets in."""
    await core.players.seen(user_id, **kw)
    return await core.players.confirm_adult(user_id)
