"""Daily allowances of voice replies and photos (issue 19, item 4), per plan:
VITTE_FREE_DAILY_PHOTOS / VITTE_PREMIUM_DAILY_PHOTOS, VITTE_FREE_DAILY_VOICE_REPLIES /
VITTE_PREMIUM_DAILY_VOICE_REPLIES (0: none on that plan, a premium perk).

`take(user_id, kind)` counts one for the UTC day in ONE conditional UPSERT on `media_usage`
(check and count at once, race-free across processes) or raises MediaQuotaExceeded;
`give_back` undoes it when nothing was delivered (as the reply quota does). Past the day's
photos (voice replies), one bought for Stars (VITTE_PHOTO_STARS, `users.extra_photos`;
VITTE_VOICE_STARS, `users.extra_voice`) is spent."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Integer, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col

from vitte.config import Settings
from vitte.db import Database, unavailable_as
from vitte.errors import MediaQuotaExceeded, StoreUnavailable, UnknownUser
from vitte.models import MediaUsage, User, utcnow

log = logging.getLogger("vitte.billing")

PHOTO = "photo"
VOICE = "voice"


def _bought_column(kind: str) -> Any:
    """users.extra_photos for a photo, users.extra_voice for a voice reply."""
    return col(User.extra_photos) if kind == PHOTO else col(User.extra_voice)


@dataclass(frozen=True, slots=True)
class Taken:
    user_id: int
    day: date
    kind: str
    used: int  # today's count, this one included
    limit: int
    bought: bool = False  # one bought for Stars (users.extra_photos / extra_voice), not today's


class MediaAllowance:
    """See the module docstring."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def limit(self, kind: str, premium: bool) -> int:
        s = self.settings
        if kind == PHOTO:
            return s.premium_daily_photos if premium else s.free_daily_photos
        return s.premium_daily_voice_replies if premium else s.free_daily_voice_replies

    async def take(self, user_id: int, kind: str) -> Taken:
        now = utcnow()
        day = now.date()
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            user = await s.get(User, user_id)
            if user is None:
                raise UnknownUser(user_id)
            premium = user.premium_until is not None and user.premium_until > now
            limit = self.limit(kind, premium)
            if limit <= 0:
                if await self._spend_bought(s, user_id, kind):
                    return Taken(user_id, day, kind, 0, 0, bought=True)
                raise MediaQuotaExceeded(kind, 0, premium, self.limit(kind, True))
            dialect = self.db.engine.dialect.name
            insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
            stmt = (
                insert(MediaUsage)
                .values(user_id=user_id, day=day, kind=kind, count=1)
                .on_conflict_do_update(
                    index_elements=["user_id", "day", "kind"],
                    set_={"count": col(MediaUsage.count) + 1},
                    where=col(MediaUsage.count) < bindparam("limit", type_=Integer()),
                )
                .returning(col(MediaUsage.count))
            )
            row = (await s.execute(stmt, {"limit": limit})).first()
            await s.commit()
            if row is None and await self._spend_bought(s, user_id, kind):
                return Taken(user_id, day, kind, limit, limit, bought=True)
        if row is None:
            raise MediaQuotaExceeded(kind, limit, premium, self.limit(kind, True))
        return Taken(user_id, day, kind, int(row[0]), limit)

    @staticmethod
    async def _spend_bought(s: Any, user_id: int, kind: str) -> bool:
        """One photo / voice reply bought for Stars spent (one statement); False when none is left."""
        bought = _bought_column(kind)
        spent = (
            await s.execute(
                update(User)
                .where(col(User.id) == user_id, col(bought) > 0)
                .values({bought: col(bought) - 1})
                .returning(col(bought))
            )
        ).first()
        await s.commit()
        return spent is not None

    async def give_back(self, taken: Taken | None) -> None:
        """Nothing was delivered: the one taken is not counted. Never raises."""
        if taken is None:
            return
        try:
            async with self.db.session() as s:
                if taken.bought:
                    bought = _bought_column(taken.kind)
                    await s.execute(
                        update(User).where(col(User.id) == taken.user_id).values({bought: col(bought) + 1})
                    )
                    await s.commit()
                    return
                await s.execute(
                    update(MediaUsage)
                    .where(
                        col(MediaUsage.user_id) == taken.user_id,
                        col(MediaUsage.day) == taken.day,
                        col(MediaUsage.kind) == taken.kind,
                        col(MediaUsage.count) > 0,
                    )
                    .values(count=col(MediaUsage.count) - 1)
                )
                await s.commit()
        except Exception as exc:
            log.warning("could not give back a %s to user %s: %s", taken.kind, taken.user_id, exc)

    async def used_today(self, user_id: int, kind: str) -> int:
        async with self.db.session() as s:
            row = await s.get(MediaUsage, (user_id, utcnow().date(), kind))
            return int(row.count) if row is not None else 0
