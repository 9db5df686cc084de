"""Database tables (SQLModel). PostgreSQL in production, SQLite for the embedded default.

The database is the truth: the cache may lose everything and nothing is lost.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any, ClassVar, TypeVar, cast

import sqlalchemy as sa
import sqlalchemy.orm
from sqlalchemy.types import TypeDecorator
from sqlmodel import Field, SQLModel

ACTIVE = "active"
ENDED = "ended"

# message roles and statuses
USER = "user"
ASSISTANT = "assistant"
SYSTEM = "system"
MSG_OK = "ok"  # a complete message
MSG_STREAMING = "streaming"  # a reply being written right now
MSG_INTERRUPTED = "interrupted"  # a reply cut by shutdown or a crash; never shown as complete
MSG_STOPPED = "stopped"  # the player pressed stop; what was written is kept
MSG_UNHEARD = "unheard"  # a voice message stored but not transcribed yet (issue 19)
KIND_NUDGE = "nudge"  # messages.kind: the persona's initiative (issue 18)


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on PostgreSQL and SQLite alike."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class User(SQLModel, table=True):
    __tablename__: ClassVar[str] = "users"

    id: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    username: str | None = Field(default=None, max_length=64, index=True)
    first_name: str | None = Field(default=None, max_length=128)
    language: str = Field(default="ru", max_length=8)
    active_persona_id: str | None = Field(
        default=None, foreign_key="personas.id", ondelete="SET NULL", max_length=64
    )
    settings: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)
    premium_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    adult_confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    blocked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    blocked_reason: str | None = Field(default=None, max_length=500)
    # the Stars subscription as Telegram last reported it: active | canceled | failed
    subscription_state: str | None = Field(default=None, max_length=16)
    # replies bought in packs, spent once the day's quota is used up (never expire)
    extra_replies: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    # photos bought for Stars (VITTE_PHOTO_STARS), spent once the day's allowance is used (issue 19)
    extra_photos: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    # voice replies bought for Stars (VITTE_VOICE_STARS), spent once the day's allowance is used
    extra_voice: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    last_seen_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    # the player blocked the bot (Telegram answered 403): no sends until they write again (issue 18)
    unreachable_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Persona(SQLModel, table=True):
    __tablename__: ClassVar[str] = "personas"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(max_length=128)
    tagline: str = Field(default="", max_length=300)
    description: str = Field(default="", sa_type=sa.Text)
    personality: str = Field(default="", sa_type=sa.Text)
    scenario: str = Field(default="", sa_type=sa.Text)
    first_mes: str = Field(default="", sa_type=sa.Text)
    mes_example: str = Field(default="", sa_type=sa.Text)
    system_prompt: str = Field(default="", sa_type=sa.Text)
    post_history_instructions: str = Field(default="", sa_type=sa.Text)
    alternate_greetings: list[str] = Field(default_factory=list, sa_type=sa.JSON, nullable=False)
    tags: list[str] = Field(default_factory=list, sa_type=sa.JSON, nullable=False)
    avatar: str | None = Field(default=None, max_length=500)
    creator: str = Field(default="", max_length=200)
    creator_notes: str = Field(default="", sa_type=sa.Text)
    # player-facing translations: {"en": {"name": …, "tagline": …, "description": …}}
    i18n: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)
    # the whole card as imported (unknown keys preserved)
    card: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)
    content_hash: str = Field(default="", max_length=64)
    # identity of an imported card: sha256 of its normalised name and creator (vitte.catalog.identity)
    card_key: str | None = Field(default=None, max_length=64)
    # content hash of the stored portrait (table portraits); None: the drawn initials
    portrait: str | None = Field(default=None, max_length=64)
    sort_order: int = Field(default=0)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class Portrait(SQLModel, table=True):
    """A persona's picture from its card, resized (one row per size), kept in the database."""

    __tablename__: ClassVar[str] = "portraits"

    persona_id: str = Field(foreign_key="personas.id", ondelete="CASCADE", primary_key=True, max_length=64)
    size: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})
    digest: str = Field(max_length=64)
    media_type: str = Field(max_length=32)
    data: bytes = Field(sa_type=sa.LargeBinary, nullable=False)


class WorldBook(SQLModel, table=True):
    """A standalone lorebook (`vitte seed` of a lorebook file); cards name the ones they use."""

    __tablename__: ClassVar[str] = "lorebooks"

    id: str = Field(primary_key=True, max_length=64)
    name: str = Field(default="", max_length=200)
    book: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)
    content_hash: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class Story(SQLModel, table=True):
    __tablename__: ClassVar[str] = "stories"

    id: str = Field(primary_key=True, max_length=130)
    persona_id: str = Field(foreign_key="personas.id", ondelete="CASCADE", index=True, max_length=64)
    title: str = Field(max_length=200)
    premise: str = Field(default="", sa_type=sa.Text)
    opening: str = Field(default="", sa_type=sa.Text)
    order: int = Field(default=0)
    i18n: dict[str, Any] = Field(default_factory=dict, sa_type=sa.JSON, nullable=False)


class Dialog(SQLModel, table=True):
    __tablename__: ClassVar[str] = "dialogs"
    __table_args__ = (
        # at most ONE active dialog per user, enforced by the database itself
        sa.Index(
            "uq_dialogs_one_active_per_user",
            "user_id",
            unique=True,
            postgresql_where=sa.text("status = 'active'"),
            sqlite_where=sa.text("status = 'active'"),
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True))
    user_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, index=True
        )
    )
    persona_id: str = Field(foreign_key="personas.id", ondelete="CASCADE", max_length=64)
    story_id: str | None = Field(default=None, foreign_key="stories.id", ondelete="SET NULL", max_length=130)
    status: str = Field(default=ACTIVE, max_length=16)
    summary: str = Field(default="", sa_type=sa.Text)
    # the id of the last message folded into `summary` (0 = nothing folded yet)
    summary_upto: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    # the id of the last message fact extraction has read (0 = none yet)
    facts_upto: int = Field(
        default=0, sa_column=sa.Column(sa.BigInteger, nullable=False, server_default="0")
    )
    # bumped by every change of the dialog's facts: the hot path's in-process cache key
    facts_version: int = Field(
        default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0")
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class Message(SQLModel, table=True):
    __tablename__: ClassVar[str] = "messages"
    __table_args__ = (
        sa.Index("ix_messages_dialog_id_id", "dialog_id", "id"),
        # recall (issue 16), PostgreSQL only: full-text indexes per language configuration
        *(
            sa.Index(
                f"ix_messages_search_{config}",
                sa.text(f"to_tsvector('{config}'::regconfig, text)"),
                postgresql_using="gin",
                # no pending list: searches never scan unmerged entries, inserts never flush them
                postgresql_with={"fastupdate": "off"},
            ).ddl_if(dialect="postgresql")
            for config in ("russian", "english")
        ),
    )

    id: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True))
    dialog_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("dialogs.id", ondelete="CASCADE"), nullable=False)
    )
    role: str = Field(max_length=16)
    text: str = Field(default="", sa_type=sa.Text)
    telegram_message_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    status: str = Field(default=MSG_OK, max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    # voice and pictures (issue 19): NULL for typed text; 'voice' | 'audio' | 'video_note' (the
    # player spoke: `text` is the transcript) or 'photo' (the persona's picture: `text` its caption)
    media_kind: str | None = Field(default=None, sa_column=sa.Column(sa.String(16), nullable=True))
    media_seconds: int | None = Field(default=None, sa_column=sa.Column(sa.Integer, nullable=True))
    # the Telegram file_id (heard again on [Повторить]); never a path
    media_ref: str | None = Field(default=None, sa_column=sa.Column(sa.String(255), nullable=True))
    # NULL: an ordinary message; KIND_NUDGE: the persona wrote first (issue 18), not an answer
    kind: str | None = Field(default=None, sa_column=sa.Column(sa.String(16), nullable=True))


# recall (issue 16): PostgreSQL's full-text indexes of messages (Message.__table_args__), one per
# language configuration (`vitte.textsearch.regconfig`); the recall query names the same
# expression. SQLite keeps an FTS5 table of stemmed text instead (`vitte.recall`).
SEARCH_CONFIGS = ("russian", "english")


def message_search_vector(config: str, text: Any = None) -> Any:
    """`to_tsvector('<config>'::regconfig, messages.text)`: the indexed expression."""
    column = table_of(Message).c.text if text is None else text
    return sa.func.to_tsvector(sa.literal_column(f"'{config}'::regconfig"), column)


class MessageVector(SQLModel, table=True):
    """A message's embedding for meaning-based recall: float32 values, little-endian, as bytes."""

    __tablename__: ClassVar[str] = "message_vectors"
    __table_args__ = (sa.Index("ix_message_vectors_dialog_id", "dialog_id", "message_id"),)

    message_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
        )
    )
    dialog_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("dialogs.id", ondelete="CASCADE"), nullable=False)
    )
    model: str = Field(default="", max_length=200)
    vector: bytes = Field(default=b"", sa_column=sa.Column(sa.LargeBinary, nullable=False))


class Fact(SQLModel, table=True):
    """A durable fact the persona knows in one dialog (extracted, or told by the player)."""

    __tablename__: ClassVar[str] = "facts"
    __table_args__ = (sa.Index("ix_facts_dialog_id_id", "dialog_id", "id"),)

    id: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True))
    dialog_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("dialogs.id", ondelete="CASCADE"), nullable=False)
    )
    user_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False, index=True))
    kind: str = Field(default="player", max_length=16)  # player | relationship | story
    text: str = Field(default="", sa_type=sa.Text)
    importance: int = Field(default=3)  # 1..5
    sources: list[int] = Field(default_factory=list, sa_type=sa.JSON, nullable=False)  # message ids
    origin: str = Field(default="extracted", max_length=16)  # extracted | player
    # the fact that replaced this one (kept, no longer used)
    superseded_by: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class Nudge(SQLModel, table=True):
    """The next time the persona of one active dialog writes first (issue 18): the durable schedule.

    Claimed in batches (`FOR UPDATE SKIP LOCKED` on PostgreSQL) under a token and a lease;
    `message_id` is the idempotency mark: the nudge's stored message, written before the
    Telegram call, so a crash after it is finished at the next claim and never sent twice."""

    __tablename__: ClassVar[str] = "nudges"

    dialog_id: int = Field(
        sa_column=sa.Column(
            sa.BigInteger, sa.ForeignKey("dialogs.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
        )
    )
    user_id: int = Field(sa_column=sa.Column(sa.BigInteger, nullable=False, index=True))
    due_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)
    # nudges sent in a row without the player's answer
    unanswered: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    last_nudge_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    claim_token: str | None = Field(default=None, max_length=32)
    lease_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    message_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class Payment(SQLModel, table=True):
    __tablename__: ClassVar[str] = "payments"

    id: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True))
    telegram_payment_charge_id: str = Field(max_length=255, unique=True)
    provider_payment_charge_id: str = Field(default="", max_length=255)
    # NULL once the player's data is deleted (the record itself is kept, anonymised)
    user_id: int | None = Field(default=None, sa_column=sa.Column(sa.BigInteger, nullable=True, index=True))
    amount: int = Field(default=0)
    currency: str = Field(default="XTR", max_length=8)
    payload: str = Field(default="", max_length=256)
    plan: str = Field(default="", max_length=64)
    is_recurring: bool = Field(default=False)
    is_first_recurring: bool = Field(default=False)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    # replies a pack granted (taken back on refund); 0 for the subscription
    extra_replies: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    refunded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class Usage(SQLModel, table=True):
    """Replies written for a player per UTC day (the free plan's daily quota)."""

    __tablename__: ClassVar[str] = "usage"

    user_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    )
    day: date = Field(sa_column=sa.Column(sa.Date, primary_key=True))
    replies: int = Field(default=0)


class PersonaLook(SQLModel, table=True):
    """A persona's appearance for photos, derived once by the LLM from its card (issue 19);
    `card_hash`: the card it was derived from (a changed card derives it again)."""

    __tablename__: ClassVar[str] = "persona_looks"

    persona_id: str = Field(
        sa_column=sa.Column(sa.String(64), sa.ForeignKey("personas.id", ondelete="CASCADE"), primary_key=True)
    )
    card_hash: str = Field(sa_column=sa.Column(sa.String(64), nullable=False))
    appearance: str = Field(sa_column=sa.Column(sa.Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class MediaUsage(SQLModel, table=True):
    """Voice replies and photos a player got per UTC day (their daily allowances, issue 19)."""

    __tablename__: ClassVar[str] = "media_usage"

    user_id: int = Field(
        sa_column=sa.Column(sa.BigInteger, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    )
    day: date = Field(sa_column=sa.Column(sa.Date, primary_key=True))
    kind: str = Field(sa_column=sa.Column(sa.String(16), primary_key=True))  # voice | photo
    count: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))


class Hold(SQLModel, table=True):
    """What is kept after a player deleted their data, so that deleting cannot lift a block or
    reset today's quota: the Telegram id, the block (its time and the operator's note, never
    shown to the player) and today's reply count. No names, no settings, no content.

    Written by `Players.delete_data` only when there is something to hold (a block, replies
    counted today); read back when the player's row is created again (the block at once, in the
    row's INSERT; today's count with it) and then dropped. A hold without a block is useless
    after its day and is removed by the next deletion."""

    __tablename__: ClassVar[str] = "holds"

    user_id: int = Field(sa_column=sa.Column(sa.BigInteger, primary_key=True, autoincrement=False))
    blocked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    blocked_reason: str | None = Field(default=None, max_length=500)
    usage_day: date | None = Field(default=None, sa_column=sa.Column(sa.Date, nullable=True))
    usage_replies: int = Field(default=0, sa_column=sa.Column(sa.Integer, nullable=False, server_default="0"))
    deleted_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


class SafetyEvent(SQLModel, table=True):
    """A counted event for the operator (a crisis signal, a block); never the player's text."""

    __tablename__: ClassVar[str] = "safety_events"

    id: int | None = Field(default=None, sa_column=sa.Column(BigId, primary_key=True, autoincrement=True))
    kind: str = Field(max_length=32, index=True)
    language: str = Field(default="ru", max_length=8)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


metadata = SQLModel.metadata


def table_of(model: type[SQLModel]) -> sa.Table:
    """The model's Core table (for statements built on columns, e.g. vitte/prepared.py)."""
    return cast("sa.Table", model.__table__)  # type: ignore[attr-defined]


M = TypeVar("M", bound=SQLModel)


def model_from_row(model: type[M], keys: Sequence[str], values: Sequence[Any]) -> M:
    """A table model instance from a row the database returned, as a Session loads one: no
    validation and no change tracking of the values set (they are the stored state). About
    ten times cheaper than the constructor, for the hot path (vitte/dialogs/store.py)."""
    obj = manager_of(model).new_instance()  # SQLModel.__new__ sets up pydantic's attributes
    loaded = dict(zip(keys, values, strict=True))
    obj.__dict__.update(loaded)
    object.__setattr__(obj, "__pydantic_fields_set__", set(loaded))
    return cast("M", obj)


def manager_of(model: type[SQLModel]) -> Any:
    """SQLAlchemy's class manager of a mapped model."""
    return sa.orm.instrumentation.manager_of_class(model)

