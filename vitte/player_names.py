"""What the player asked to be called (issue 17: "the player's name: Telegram first name, or the
name they set"): kept in `users.settings` (`name`), set in the Web App's Settings, read with the
player's row (`vitte.players.PlayerView.called`: this name, else Telegram's first name) wherever
{{user}} is expanded — the prompt, the opening, memory, the Web App's card texts."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from vitte.db import Database, unavailable_as
from vitte.errors import StoreUnavailable, UnknownUser, VitteError
from vitte.models import User, table_of
from vitte.prompt import NAME_LIMIT, safe_name

__all__ = ["NAME_MAX", "SETTING_NAME", "BadName", "clean_name", "set_name", "stored_name"]

SETTING_NAME = "name"  # users.settings key
NAME_MAX = NAME_LIMIT  # characters: as many as the prompt keeps of a name
USERS = table_of(User)


class BadName(VitteError):
    """A name the player cannot be called by: `reason` is "too_long" or "unusable"."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"name must be at most {NAME_MAX} characters"
            if reason == "too_long"
            else "name must hold letters or digits (braces, brackets, quotes and control characters are dropped)"
        )
        self.reason = reason


def clean_name(name: str) -> str:
    """A name the player typed, as it is stored: `vitte.prompt.safe_name`'s rules (one line, no
    braces, brackets, angle brackets, quotes or invisible characters); "" (or only spaces)
    clears it: Telegram's first name again. BadName when it is longer than NAME_MAX or nothing
    usable is left."""
    name = name.strip()
    if not name:
        return ""
    if len(name) > NAME_MAX:
        raise BadName("too_long")
    clean = safe_name(name, NAME_MAX)
    if not clean:
        raise BadName("unusable")
    return clean


def stored_name(settings: dict[str, Any]) -> str | None:
    """The name kept in a player's settings, made safe again (a hand-edited row), or None."""
    value = settings.get(SETTING_NAME)
    return (safe_name(value, NAME_MAX) or None) if isinstance(value, str) and value else None


async def set_name(db: Database, user_id: int, name: str) -> str:
    """Keep what the player asked to be called ("" forgets it); the stored name. BadName before
    anything changes, UnknownUser for an unseen player."""
    name = clean_name(name)
    async with unavailable_as(StoreUnavailable), db.engine.begin() as conn:
        select = sa.select(USERS.c.settings).where(USERS.c.id == user_id)
        if db.engine.dialect.name != "sqlite":
            select = select.with_for_update()
        row = (await conn.execute(select)).first()
        if row is None:
            raise UnknownUser(user_id)
        stored = {k: v for k, v in (row[0] if isinstance(row[0], dict) else {}).items() if k != SETTING_NAME}
        if name:
            stored[SETTING_NAME] = name
        await conn.execute(sa.update(USERS).where(USERS.c.id == user_id).values(settings=stored))
    return name
