"""The player's nudge preferences, kept in `users.settings`: "let the persona write first"
(`nudges`: True/False; absent: VITTE_NUDGE_DEFAULT) and the time zone (`timezone`: an IANA
name, sent by the Web App from the browser's Intl or chosen in its Settings)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from vitte.config import Settings
from vitte.db import Database, unavailable_as
from vitte.errors import StoreUnavailable, UnknownUser
from vitte.i18n import normalize_language
from vitte.initiative.rules import SETTING_NUDGES, SETTING_TIMEZONE, nudges_on, player_zone, zone_or_none
from vitte.models import User, table_of
from vitte.players import BadSetting

USERS = table_of(User)
ZONE_BY = "timezone_by"  # users.settings: who set the zone, "browser" or "player"


@dataclass(frozen=True, slots=True)
class NudgePrefs:
    on: bool  # the persona may write first
    timezone: str  # the zone in effect (the player's, else the default)
    chosen: bool  # the player (or their browser) set the zone

    def to_json(self) -> dict[str, object]:
        return {"nudges": self.on, "timezone": self.timezone, "timezone_set": self.chosen}


async def prefs_of(db: Database, settings: Settings, user_id: int) -> NudgePrefs:
    async with unavailable_as(StoreUnavailable), db.engine.connect() as conn:
        row = (
            await conn.execute(sa.select(USERS.c.settings, USERS.c.language).where(USERS.c.id == user_id))
        ).first()
    if row is None:
        raise UnknownUser(user_id)
    return _prefs(settings, row[0] if isinstance(row[0], dict) else {}, str(row[1]))


def _prefs(settings: Settings, stored: dict[str, object], language: str) -> NudgePrefs:
    zone = player_zone(stored, normalize_language(language), settings.default_timezone)
    return NudgePrefs(
        on=nudges_on(stored, settings.nudge_default),
        timezone=str(zone.key),
        chosen=zone_or_none(stored.get(SETTING_TIMEZONE)) is not None,  # type: ignore[arg-type]
    )


async def set_prefs(
    db: Database,
    settings: Settings,
    user_id: int,
    *,
    on: bool | None = None,
    timezone: str | None = None,
    from_browser: bool = False,
) -> NudgePrefs:
    """Change the switch and/or the zone (BadSetting for a zone that does not exist).
    `from_browser`: the zone the Web App read from the browser (Intl), kept only until the
    player chooses one in Settings."""
    if timezone is not None and zone_or_none(timezone) is None:
        raise BadSetting("timezone must be an IANA time zone such as Europe/Moscow")
    async with unavailable_as(StoreUnavailable), db.engine.begin() as conn:
        select = sa.select(USERS.c.settings, USERS.c.language).where(USERS.c.id == user_id)
        if db.engine.dialect.name != "sqlite":
            select = select.with_for_update()
        row = (await conn.execute(select)).first()
        if row is None:
            raise UnknownUser(user_id)
        stored = dict(row[0]) if isinstance(row[0], dict) else {}
        if on is not None:
            stored[SETTING_NUDGES] = on
        if timezone is not None and not (from_browser and stored.get(ZONE_BY) == "player"):
            stored[SETTING_TIMEZONE] = timezone
            stored[ZONE_BY] = "browser" if from_browser else "player"
        await conn.execute(sa.update(USERS).where(USERS.c.id == user_id).values(settings=stored))
    return _prefs(settings, stored, str(row[1]))
