"""Test helpers for players: an age-confirmed player (the engine refuses everyone else)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vitte.core import Core
    from vitte.models import Message
    from vitte.players import PlayerView


async def adult(core: Core, user_id: int, **kw: Any) -> PlayerView:
    """`players.seen(user_id, **kw)` (first_name=, username=, language_code=) and then
    `players.confirm_adult(user_id)`: a player the dialogs engine lets in."""
    await core.players.seen(user_id, **kw)
    return await core.players.confirm_adult(user_id)


async def chatting(
    core: Core,
    user_id: int,
    *,
    language_code: str = "en",
    first_name: str = "Ann",
    persona_id: str | None = None,
    story_id: str | None = None,
) -> None:
    """An adult player (`adult`) with a dialog open: `persona_id` and `story_id`, else the
    first persona of the catalog that has a story, and its first story."""
    await adult(core, user_id, language_code=language_code, first_name=first_name)
    if persona_id is None:
        persona = next(p for p in await core.catalog.personas() if p.stories)
        persona_id, story_id = persona.id, persona.stories[0].id
    assert story_id is not None, "a persona_id goes with its story_id"
    await core.dialogs.choose(user_id, persona_id, story_id, language_code=language_code)


async def messages_of(core: Core, user_id: int) -> list[Message]:
    """Every stored message of the player's dialogs, oldest first."""
    from sqlalchemy import select
    from sqlmodel import col

    from vitte.models import Dialog, Message

    async with core.db.session() as s:
        found = await s.execute(
            select(Message)
            .join(Dialog, col(Dialog.id) == col(Message.dialog_id))
            .where(col(Dialog.user_id) == user_id)
            .order_by(col(Message.id))
        )
        return list(found.scalars())
