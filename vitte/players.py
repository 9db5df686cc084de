"""Players: profile, language and reply style, lookup by id or @username, deleting their data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update

from vitte.cache.base import Cache
from vitte.db import Database, insert_ignore, unavailable_as
from vitte.errors import StoreUnavailable, UnknownUser, VitteError
from vitte.models import Dialog, Payment, User, utcnow
from vitte.prompt import STYLES

LANGUAGES = ("ru", "en")


def language_from_telegram(code: str | None) -> str:
    """Russian by default; English when Telegram says the player's client is in English."""
    return "en" if code and code.lower().startswith("en") else "ru"


@dataclass(frozen=True, slots=True)
class PlayerView:
    id: int
    username: str | None
    first_name: str | None
    language: str
    style: str
    active_persona_id: str | None
    premium_until: datetime | None
    adult_confirmed_at: datetime | None
    blocked_at: datetime | None
    blocked_reason: str | None
    created_at: datetime

    @property
    def display_name(self) -> str:
        return self.first_name or (f"@{self.username}" if self.username else str(self.id))

    @property
    def is_premium(self) -> bool:
        return self.premium_until is not None and self.premium_until > utcnow()


def player_view(u: User) -> PlayerView:
    settings: dict[str, Any] = u.settings or {}
    style = settings.get("style", "normal")
    return PlayerView(
        id=u.id,
        username=u.username,
        first_name=u.first_name,
        language=u.language if u.language in LANGUAGES else "ru",
        style=style if style in STYLES else "normal",
        active_persona_id=u.active_persona_id,
        premium_until=u.premium_until,
        adult_confirmed_at=u.adult_confirmed_at,
        blocked_at=u.blocked_at,
        blocked_reason=u.blocked_reason,
        created_at=u.created_at,
    )


class BadSetting(VitteError):
    pass


@dataclass(frozen=True, slots=True)
class DeleteReport:
    dialogs: int
    payments_anonymised: int


class Players:
    def __init__(self, db: Database, cache: Cache) -> None:
        self.db = db
        self.cache = cache

    async def seen(
        self,
        user_id: int,
        *,
        language_code: str | None = None,
        first_name: str | None = None,
        username: str | None = None,
    ) -> PlayerView:
        """Create the player on first sight; keep name and username current."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            await s.execute(
                insert_ignore(
                    s,
                    User,
                    {
                        "id": user_id,
                        "language": language_from_telegram(language_code),
                        "first_name": (first_name or None) and first_name[:128],
                        "username": (username or None) and username[:64],
                        "settings": {},
                        "created_at": utcnow(),
                        "last_seen_at": utcnow(),
                    },
                    ["id"],
                )
            )
            user = (await s.execute(select(User).where(User.id == user_id))).scalar_one()
            changes: dict[str, Any] = {}
            if first_name and user.first_name != first_name[:128]:
                changes["first_name"] = first_name[:128]
            if username and user.username != username[:64]:
                changes["username"] = username[:64]
            if changes:
                changes["last_seen_at"] = utcnow()
                await s.execute(update(User).where(User.id == user_id).values(**changes))
                for k, v in changes.items():
                    setattr(user, k, v)
            await s.commit()
            return player_view(user)

    async def get(self, user_id: int) -> PlayerView:
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            user = await s.get(User, user_id)
        if user is None:
            raise UnknownUser(user_id)
        return player_view(user)

    async def resolve(self, ref: str | int) -> int:
        """A Telegram id, or @username of a player seen before."""
        if isinstance(ref, int):
            user_id = ref
        else:
            text = ref.strip()
            if text.lstrip("-").isdigit():
                user_id = int(text)
            else:
                name = text.removeprefix("@")
                if not name:
                    raise UnknownUser(ref)
                async with self.db.session() as s:
                    found = (
                        await s.execute(select(User.id).where(func.lower(User.username) == name.lower()))
                    ).scalar_one_or_none()
                if found is None:
                    raise UnknownUser(ref)
                return int(found)
        async with self.db.session() as s:
            if await s.get(User, user_id) is None:
                raise UnknownUser(ref)
        return user_id

    async def update_settings(
        self, user_id: int, *, language: str | None = None, style: str | None = None
    ) -> PlayerView:
        if language is not None and language not in LANGUAGES:
            raise BadSetting(f"language must be one of {', '.join(LANGUAGES)}")
        if style is not None and style not in STYLES:
            raise BadSetting(f"style must be one of {', '.join(STYLES)}")
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            user = await s.get(User, user_id, with_for_update=s.bind.dialect.name != "sqlite")
            if user is None:
                raise UnknownUser(user_id)
            if language is not None:
                user.language = language
            if style is not None:
                user.settings = {**(user.settings or {}), "style": style}
            await s.commit()
            return player_view(user)

    async def delete_data(self, user_id: int) -> DeleteReport:
        """Erase the player's dialogs, messages and cache entries; keep payments, anonymised."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            user = await s.get(User, user_id)
            if user is None:
                raise UnknownUser(user_id)
            dialog_ids = list(
                (await s.execute(select(Dialog.id).where(Dialog.user_id == user_id))).scalars()
            )
            await s.execute(delete(Dialog).where(Dialog.user_id == user_id))
            paid = await s.execute(
                update(Payment).where(Payment.user_id == user_id).values(user_id=None)
            )
            await s.execute(delete(User).where(User.id == user_id))
            await s.commit()
        await self.cache.forget_user(user_id, [int(d) for d in dialog_ids if d is not None])
        return DeleteReport(dialogs=len(dialog_ids), payments_anonymised=int(paid.rowcount or 0))  # type: ignore[attr-defined]
