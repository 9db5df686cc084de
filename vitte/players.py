"""Players: profile, language and reply style, lookup by id or @username, the age gate,
blocking, exporting and deleting their data."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import delete, func, or_, select, update
from sqlmodel import col

from vitte.cache.base import Cache
from vitte.db import Database, insert_ignore, unavailable_as
from vitte.errors import StoreUnavailable, UnknownUser, VitteError
from vitte.i18n import LANGUAGES, normalize_language
from vitte.initiative.rules import SETTING_TIMEZONE, default_zone, zone_or_none
from vitte.models import (
    Dialog,
    Fact,
    Hold,
    Message,
    Nudge,
    Payment,
    SafetyEvent,
    Usage,
    User,
    table_of,
    utcnow,
)
from vitte.player_names import stored_name
from vitte.prompt import STYLES

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# A player's language is one of LANGUAGES (the catalogues', vitte/locales: the default first):
# Telegram's language_code on first sight ("en-US" -> "en", unknown -> the default), then theirs.
language_from_telegram = normalize_language


def insert_player_if_missing(s: Any, user_id: int, language_code: str | None, **fields: Any) -> Any:
    """INSERT the player's row unless it exists (first sight: language from Telegram).

    A block held after the player deleted their data (`Hold`) comes back in this very INSERT,
    whichever path creates the row: deleting cannot lift a block. Today's reply count comes
    back with `restore_hold` (the callers that create players on first sight run it)."""
    now = utcnow()
    held = table_of(Hold).c
    values = {
        "id": user_id,
        "language": language_from_telegram(language_code),
        "settings": {},
        "created_at": now,
        "last_seen_at": now,
        "blocked_at": select(held.blocked_at).where(held.user_id == user_id).scalar_subquery(),
        "blocked_reason": select(held.blocked_reason).where(held.user_id == user_id).scalar_subquery(),
        **fields,
    }
    return insert_ignore(s, User, values, ["id"])


async def restore_hold(s: Any, user_id: int, inserted: Any) -> None:
    """After `insert_player_if_missing` (its result: `inserted`) created the row: today's reply
    count held after a deletion comes back, and the hold is dropped (the row holds it now)."""
    if not getattr(inserted, "rowcount", 0):
        return  # the row was there: nothing to restore
    hold = await s.get(Hold, user_id)
    if hold is None:
        return
    if hold.usage_day is not None and hold.usage_day == utcnow().date() and hold.usage_replies > 0:
        await s.execute(
            insert_ignore(
                s, Usage, {"user_id": user_id, "day": hold.usage_day, "replies": hold.usage_replies}, ["user_id", "day"]
            )
        )
    await s.execute(delete(Hold).where(col(Hold.user_id) == user_id))


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
    voice_replies: str = "never"  # never | voice (to voice messages) | always (issue 19)
    timezone: str | None = None  # the zone the player (or their browser) set (issue 18; `zone_of`)
    name: str | None = None  # what the player asked to be called (vitte.player_names); None: not set

    @property
    def display_name(self) -> str:
        return self.first_name or (f"@{self.username}" if self.username else str(self.id))

    @property
    def called(self) -> str | None:
        """The player's name for {{user}} (card texts, the prompt, memory): the one they set,
        else their Telegram first name (None: neither)."""
        return self.name or self.first_name

    @property
    def is_premium(self) -> bool:
        return self.premium_until is not None and self.premium_until > utcnow()


def player_view(u: User) -> PlayerView:
    settings: dict[str, Any] = u.settings or {}
    style = settings.get("style", "normal")
    voice = settings.get("voice_replies")
    return PlayerView(
        id=u.id,
        username=u.username,
        first_name=u.first_name,
        language=normalize_language(u.language),
        style=style if style in STYLES else "normal",
        active_persona_id=u.active_persona_id,
        premium_until=u.premium_until,
        adult_confirmed_at=u.adult_confirmed_at,
        blocked_at=u.blocked_at,
        blocked_reason=u.blocked_reason,
        created_at=u.created_at,
        voice_replies=voice if isinstance(voice, str) and voice in VOICE_REPLIES else "never",
        timezone=zone.key if (zone := zone_or_none(settings.get(SETTING_TIMEZONE))) is not None else None,
        name=stored_name(settings),
    )


def zone_of(player: PlayerView, configured: str | None = None) -> ZoneInfo:
    """The player's time zone ({{time}}, {{date}} … in card texts; quiet hours): the one they
    (or their browser) set, else VITTE_DEFAULT_TIMEZONE (`configured`), else their language's."""
    return zone_or_none(player.timezone) or default_zone(player.language, configured)


# "Голосом отвечать: никогда / на голосовые / всегда"
VOICE_REPLIES = ("never", "voice", "always")


class BadSetting(VitteError):
    pass


@dataclass(frozen=True, slots=True)
class DeleteReport:
    dialogs: int
    payments_anonymised: int
    messages: int = 0


EXPORT_FORMAT = "vitte.player-export"
EXPORT_VERSION = 1
BLOCK_REASON_MAX = 500


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


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
            inserted = await s.execute(
                insert_player_if_missing(
                    s,
                    user_id,
                    language_code,
                    first_name=(first_name or None) and first_name[:128],
                    username=(username or None) and username[:64],
                )
            )
            await restore_hold(s, user_id, inserted)
            user = (await s.execute(select(User).where(col(User.id) == user_id))).scalar_one()
            changes: dict[str, Any] = {}
            if first_name and user.first_name != first_name[:128]:
                changes["first_name"] = first_name[:128]
            if username and user.username != username[:64]:
                changes["username"] = username[:64]
            if changes:
                changes["last_seen_at"] = utcnow()
                await s.execute(update(User).where(col(User.id) == user_id).values(**changes))
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

    async def resolve(self, ref: str | int, *, held: bool = False) -> int:
        """A Telegram id, or @username of a player seen before. `held`: an id whose player
        deleted their data but is still held (`Hold`: a block, today's count) counts too."""
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
                        await s.execute(select(col(User.id)).where(func.lower(col(User.username)) == name.lower()))
                    ).scalar_one_or_none()
                if found is None:
                    raise UnknownUser(ref)
                return int(found)
        async with self.db.session() as s:
            if await s.get(User, user_id) is None and not (held and await s.get(Hold, user_id) is not None):
                raise UnknownUser(ref)
        return user_id

    async def update_settings(
        self,
        user_id: int,
        *,
        language: str | None = None,
        style: str | None = None,
        voice_replies: str | None = None,
    ) -> PlayerView:
        if language is not None and language not in LANGUAGES:
            raise BadSetting(f"language must be one of {', '.join(LANGUAGES)}")
        if style is not None and style not in STYLES:
            raise BadSetting(f"style must be one of {', '.join(STYLES)}")
        if voice_replies is not None and voice_replies not in VOICE_REPLIES:
            raise BadSetting(f"voice_replies must be one of {', '.join(VOICE_REPLIES)}")
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            user = await s.get(User, user_id, with_for_update=cast("AsyncEngine | AsyncConnection", s.bind).dialect.name != "sqlite")
            if user is None:
                raise UnknownUser(user_id)
            if language is not None:
                user.language = language
            if style is not None:
                user.settings = {**(user.settings or {}), "style": style}
            if voice_replies is not None:
                user.settings = {**(user.settings or {}), "voice_replies": voice_replies}
            await s.commit()
            return player_view(user)

    # ------------------------------------------------------------------ the age gate
    async def confirm_adult(self, user_id: int, *, language_code: str | None = None) -> PlayerView:
        """The player confirmed being 18+: the time is stored once (a repeat changes nothing).

        Creates the player if unseen. The dialogs engine refuses choose/start over/reply/
        regenerate with AgeNotConfirmed until this is done.
        """
        now = utcnow()
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            inserted = await s.execute(insert_player_if_missing(s, user_id, language_code))
            await restore_hold(s, user_id, inserted)
            await s.execute(
                update(User)
                .where(col(User.id) == user_id, col(User.adult_confirmed_at).is_(None))
                .values(adult_confirmed_at=now)
            )
            user = (await s.execute(select(User).where(col(User.id) == user_id))).scalar_one()
            await s.commit()
            return player_view(user)

    async def decline_adult(self, user_id: int) -> None:
        """The player said they are under 18: nothing about it is stored, and an earlier
        confirmation (if any) is withdrawn, so the engine keeps refusing them."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            await s.execute(
                update(User)
                .where(col(User.id) == user_id, col(User.adult_confirmed_at).is_not(None))
                .values(adult_confirmed_at=None)
            )
            await s.commit()

    # ------------------------------------------------------------------ blocking
    async def block(self, user_id: int, reason: str | None = None) -> PlayerView:
        """Block a known player (UnknownUser otherwise): the engine refuses them with PlayerBlocked.

        Blocking again updates the reason and keeps the first time. Counted in safety_events
        (kind "block", the player's language).
        """
        reason = (reason or "").strip()[:BLOCK_REASON_MAX] or None
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            user = await s.get(User, user_id, with_for_update=cast("AsyncEngine | AsyncConnection", s.bind).dialect.name != "sqlite")
            if user is None:
                raise UnknownUser(user_id)
            newly = user.blocked_at is None
            if newly:
                user.blocked_at = utcnow()
                s.add(SafetyEvent(kind="block", language=player_view(user).language))
            user.blocked_reason = reason
            await s.commit()
            return player_view(user)

    async def unblock(self, user_id: int) -> PlayerView:
        """Lift a block (a player who was not blocked stays as they are). A player who deleted
        their data while blocked has only a `Hold`: its block is lifted (the hold goes when it
        keeps nothing else). UnknownUser if neither."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            user = await s.get(User, user_id, with_for_update=cast("AsyncEngine | AsyncConnection", s.bind).dialect.name != "sqlite")
            if user is None:
                hold = await s.get(Hold, user_id)
                if hold is None:
                    raise UnknownUser(user_id)
                if hold.usage_day == utcnow().date() and hold.usage_replies > 0:
                    hold.blocked_at = hold.blocked_reason = None
                else:
                    await s.delete(hold)
                await s.commit()
                return player_view(User(id=user_id))
            user.blocked_at = None
            user.blocked_reason = None
            await s.commit()
            return player_view(user)

    # ------------------------------------------------------------------ the player's data
    async def export(self, user_id: int) -> dict[str, Any]:
        """Everything stored about the player, JSON-serializable, with stable keys:
        format, version, exported_at, profile, settings, dialogs (each with its messages and facts,
        oldest first), payments, usage. UnknownUser if unseen."""
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            user = await s.get(User, user_id)
            if user is None:
                raise UnknownUser(user_id)
            dialogs = list(
                (await s.execute(select(Dialog).where(col(Dialog.user_id) == user_id).order_by(col(Dialog.id)))).scalars()
            )
            messages = list(
                (
                    await s.execute(
                        select(Message)
                        .join(Dialog, col(Dialog.id) == col(Message.dialog_id))
                        .where(col(Dialog.user_id) == user_id)
                        .order_by(col(Message.dialog_id), col(Message.id))
                    )
                ).scalars()
            )
            facts = list(
                (await s.execute(select(Fact).where(col(Fact.user_id) == user_id).order_by(col(Fact.id)))).scalars()
            )
            payments = list(
                (
                    await s.execute(select(Payment).where(col(Payment.user_id) == user_id).order_by(col(Payment.id)))
                ).scalars()
            )
            usage = list(
                (await s.execute(select(Usage).where(col(Usage.user_id) == user_id).order_by(col(Usage.day)))).scalars()
            )
        by_dialog: dict[int, list[dict[str, Any]]] = {int(d.id or 0): [] for d in dialogs}
        for m in messages:
            by_dialog.setdefault(m.dialog_id, []).append(
                {
                    "id": int(m.id or 0),
                    "role": m.role,
                    "text": m.text,
                    "status": m.status,
                    "created_at": _iso(m.created_at),
                }
            )
        facts_of: dict[int, list[dict[str, Any]]] = {}
        for f in facts:
            facts_of.setdefault(f.dialog_id, []).append(
                {
                    "id": int(f.id or 0),
                    "kind": f.kind,
                    "text": f.text,
                    "importance": f.importance,
                    "origin": f.origin,
                    "sources": list(f.sources or []),
                    "superseded_by": f.superseded_by,
                    "created_at": _iso(f.created_at),
                    "updated_at": _iso(f.updated_at),
                }
            )
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_at": _iso(utcnow()),
            "profile": {
                "id": user.id,
                "username": user.username,
                "first_name": user.first_name,
                "language": user.language,
                "active_persona_id": user.active_persona_id,
                "premium_until": _iso(user.premium_until),
                "subscription_state": user.subscription_state,
                "adult_confirmed_at": _iso(user.adult_confirmed_at),
                "blocked_at": _iso(user.blocked_at),  # the reason is the operator's note: never here
                "created_at": _iso(user.created_at),
                "last_seen_at": _iso(user.last_seen_at),
            },
            "settings": dict(user.settings or {}),
            "dialogs": [
                {
                    "id": int(d.id or 0),
                    "persona_id": d.persona_id,
                    "story_id": d.story_id,
                    "status": d.status,
                    "memory": d.summary,
                    "facts": facts_of.get(int(d.id or 0), []),
                    "created_at": _iso(d.created_at),
                    "ended_at": _iso(d.ended_at),
                    "messages": by_dialog.get(int(d.id or 0), []),
                }
                for d in dialogs
            ],
            "payments": [
                {
                    "telegram_payment_charge_id": p.telegram_payment_charge_id,
                    "amount": p.amount,
                    "currency": p.currency,
                    "plan": p.plan,
                    "is_recurring": p.is_recurring,
                    "extra_replies": p.extra_replies,
                    "expires_at": _iso(p.expires_at),
                    "refunded_at": _iso(p.refunded_at),
                    "created_at": _iso(p.created_at),
                }
                for p in payments
            ],
            "usage": [{"day": u.day.isoformat(), "replies": u.replies} for u in usage],
        }

    async def delete_data(self, user_id: int) -> DeleteReport:
        """Erase the player: profile, dialogs, messages, facts, the nudge schedule's rows, usage
        rows and cache entries (recent lists, online mark, rate counters). Payments are kept for accounting, anonymised:
        user_id NULL and the free-form invoice payload cleared.

        What enforcing a block and today's quota needs is kept as a `Hold` (the id, the block,
        its time and note, today's reply count; nothing else), only when there is one: it comes
        back when the player's row is created again. Holds of other players that hold nothing
        any more (no block, an earlier day's count) are removed here."""
        today = utcnow().date()
        async with unavailable_as(StoreUnavailable), self.db.session() as s:
            user = await s.get(User, user_id)
            if user is None:
                raise UnknownUser(user_id)
            used_today = (
                await s.execute(
                    select(col(Usage.replies)).where(col(Usage.user_id) == user_id, col(Usage.day) == today)
                )
            ).scalar_one_or_none() or 0
            await s.execute(
                delete(Hold).where(
                    col(Hold.blocked_at).is_(None),
                    (col(Hold.usage_day).is_(None)) | (col(Hold.usage_day) < today),
                )
            )
            if user.blocked_at is not None or used_today > 0:
                await s.execute(delete(Hold).where(col(Hold.user_id) == user_id))
                s.add(
                    Hold(
                        user_id=user_id,
                        blocked_at=user.blocked_at,
                        blocked_reason=user.blocked_reason if user.blocked_at is not None else None,
                        usage_day=today if used_today > 0 else None,
                        usage_replies=int(used_today),
                    )
                )
            dialog_ids = list(
                (await s.execute(select(col(Dialog.id)).where(col(Dialog.user_id) == user_id))).scalars()
            )
            # explicit deletes: nothing relies on foreign-key cascades being switched on
            erased = await s.execute(
                delete(Message).where(col(Message.dialog_id).in_(select(col(Dialog.id)).where(col(Dialog.user_id) == user_id)))
            )
            await s.execute(delete(Fact).where(col(Fact.user_id) == user_id))
            # the nudge schedule's rows: no persona writes first to a player who asked to be erased
            await s.execute(
                delete(Nudge).where(
                    or_(
                        col(Nudge.user_id) == user_id,
                        col(Nudge.dialog_id).in_(select(col(Dialog.id)).where(col(Dialog.user_id) == user_id)),
                    )
                )
            )
            await s.execute(delete(Dialog).where(col(Dialog.user_id) == user_id))
            await s.execute(delete(Usage).where(col(Usage.user_id) == user_id))
            paid = await s.execute(
                update(Payment).where(col(Payment.user_id) == user_id).values(user_id=None, payload="")
            )
            await s.execute(delete(User).where(col(User.id) == user_id))
            await s.commit()
        await self.cache.forget_user(user_id, [int(d) for d in dialog_ids if d is not None])
        return DeleteReport(
            dialogs=len(dialog_ids),
            payments_anonymised=int(paid.rowcount or 0),  # type: ignore[attr-defined]
            messages=int(erased.rowcount or 0),  # type: ignore[attr-defined]
        )
