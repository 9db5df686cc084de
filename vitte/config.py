"""Configuration: environment variables with the VITTE_ prefix, also read from `.env`."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

DEFAULT_SQLITE_URL = "sqlite+aiosqlite:///vitte.sqlite3"


class ConfigError(Exception):
    """A configuration value is missing or malformed; the message is one line for the operator."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VITTE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    bot_token: SecretStr | None = None
    telegram_api_url: str = "https://api.telegram.org"
    database_url: str = DEFAULT_SQLITE_URL
    database_pool_size: int = Field(default=5, ge=1, le=200)
    redis_url: str | None = None
    redis_prefix: str = "vitte:"

    llm_base_url: str | None = None
    llm_api_key: SecretStr | None = None
    llm_model: str = "gpt-4o-mini"
    llm_context_tokens: int = Field(default=3000, ge=256, le=1_000_000)
    llm_max_tokens: int = Field(default=400, ge=16, le=32_000)
    llm_temperature: float = Field(default=0.9, ge=0.0, le=2.0)
    llm_timeout: float = Field(default=60.0, gt=0)
    llm_connect_timeout: float = Field(default=5.0, gt=0)
    llm_retries: int = Field(default=2, ge=0, le=10)

    webapp_url: str | None = None
    webapp_host: str = "127.0.0.1"
    webapp_port: int = Field(default=8080, ge=1, le=65535)
    webapp_auth_max_age: int = Field(default=86400, ge=1)
    # deleting data and withdrawing the age confirmation want initData no older than this
    webapp_fresh_auth: int = Field(default=600, ge=1)
    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_host: str = "127.0.0.1"
    webhook_port: int = Field(default=8081, ge=1, le=65535)
    # Prometheus /metrics on the webhook and Web App servers; with a token, only to `Bearer <token>`
    metrics_token: SecretStr | None = None
    # serve the Web App inside the webhook server under this path (e.g. /app); unset = not mounted
    webapp_mount: str | None = None
    admin_ids: Annotated[frozenset[int], NoDecode] = frozenset()

    # payments (Telegram Stars, XTR) and the daily reply quota; see vitte/billing.py
    free_daily_replies: int = Field(default=30, ge=0, le=1_000_000)
    premium_daily_replies: int = Field(default=1000, ge=1, le=1_000_000)
    premium_stars_month: int = Field(default=250, ge=1, le=10_000)  # Telegram caps subscriptions at 10,000
    pack_stars: int = Field(default=100, ge=1, le=100_000)
    pack_replies: int = Field(default=200, ge=0, le=1_000_000)  # 0 = no reply pack on sale
    low_quota_threshold: int = Field(default=5, ge=0, le=1_000_000)
    payload_secret: SecretStr | None = None  # signs invoice payloads; default: derived from the bot token
    support_contact: str | None = None  # shown by /paysupport, e.g. @vitte_support or an e-mail

    max_message_chars: int = Field(default=2000, ge=1, le=100_000)
    recent_messages: int = Field(default=40, ge=2, le=1000)
    # memory (issue 16): one background LLM call extracts facts every this many player messages (0 = off)
    memory_facts_every: int = Field(default=8, ge=0, le=10_000)
    # recall (issue 16): earlier messages recalled into the prompt per reply (0 = off)
    memory_recall: int = Field(default=4, ge=0, le=50)
    # meaning-based recall: this model through the LLM API's /embeddings (unset = lexical only)
    embeddings_model: str | None = None
    # voice and pictures (issue 19), through the LLM API's base URL and key (vitte.llm.media)
    stt_model: str | None = None  # /audio/transcriptions (e.g. whisper-1); unset: voice is not heard
    voice_max_seconds: int = Field(default=120, ge=1, le=3600)  # longer voice messages are refused
    tts_model: str | None = None  # /audio/speech; unset: replies are text only
    tts_voice: str = "alloy"
    tts_max_chars: int = Field(default=1000, ge=1, le=4096)  # spoken at most; the rest comes as text
    image_model: str | None = None  # /images/generations; unset: no photos
    # the operator's image preamble, first in every picture's prompt; card text cannot override it
    image_preamble: str = (
        "A photograph of a fictional adult character (clearly over 21). Not a real or famous person. "
        "No minors. {nudity}"
    )
    image_allow_nudity: bool = False  # False: "No nudity, fully clothed." is part of the preamble
    # daily allowances per plan (vitte.media_allowance); 0 = none on that plan (a premium perk)
    free_daily_photos: int = Field(default=1, ge=0, le=10_000)
    photo_stars: int = Field(default=25, ge=0, le=10_000)  # one more photo for Stars (0 = not on sale)
    premium_daily_photos: int = Field(default=20, ge=0, le=10_000)
    free_daily_voice_replies: int = Field(default=5, ge=0, le=100_000)
    voice_stars: int = Field(default=10, ge=0, le=10_000)  # one more voice reply for Stars (0 = not on sale)
    premium_daily_voice_replies: int = Field(default=100, ge=0, le=100_000)
    media_timeout: float = Field(default=60.0, gt=0)  # seconds per transcription/synthesis/image
    media_dir: str | None = None  # keep received and made media here; unset: nothing is kept
    shutdown_grace: float = Field(default=20.0, ge=0)
    # the bot's spool (vitte.spool): messages that arrive while the database is away, kept
    # (in Redis, else this file) and answered in order when it returns; older ones are given up
    spool_max_age: float = Field(default=600.0, ge=0, le=7 * 86400)  # 0 = no spool
    spool_max_updates: int = Field(default=1000, ge=1, le=1_000_000)
    spool_path: str = "vitte-spool.jsonl"
    # a player's lock outlives a crashed holder by at most this (renewed every third of it while
    # held): the longest a crash blocks that player, and when crash recovery looks again
    lock_lease: float = Field(default=30.0, ge=3, le=600)

    # the persona writes first (issue 18, vitte.initiative): after this many seconds of the
    # player's silence (±20 % jitter; 0 = never), not in quiet hours ("23-9" in the player's
    # time zone; empty = none), at most this many unanswered in a row (each doubles the wait)
    nudge_after: int = Field(default=72_000, ge=0, le=365 * 86400)
    nudge_quiet_hours: str = "23-9"
    nudge_max_unanswered: int = Field(default=2, ge=0, le=100)
    nudge_default: bool = True  # players who never chose: on (VITTE_NUDGE_DEFAULT=off: opt-in)
    default_timezone: str | None = None  # unset: by language (ru: Europe/Moscow, en: UTC)
    online_window: int = Field(default=300, ge=1, le=86400)  # an update this recent: online
    nudge_rate: float = Field(default=30.0, ge=0)  # sends a second, all processes with Redis (0 = unpaced)
    nudge_batch: int = Field(default=200, ge=1, le=10_000)  # rows claimed at once
    nudge_lease: float = Field(default=300.0, ge=5, le=86400)  # a claim outlives a crashed holder by this
    nudge_poll: float = Field(default=30.0, gt=0, le=3600)  # seconds between looks at the schedule

    # trust and safety (vitte/safety): a file may name `{lang}` (ru, en); unset = the shipped defaults
    safety_preamble_file: str | None = None
    crisis_phrases_file: str | None = None
    crisis_resources_file: str | None = None
    rate_limit_per_minute: int = Field(default=20, ge=0, le=100_000)  # LLM replies per player; 0 = off

    @field_validator("safety_preamble_file", "crisis_phrases_file", "crisis_resources_file")
    @classmethod
    def _blank_file_is_unset(cls, value: str | None) -> str | None:
        return value.strip() if value and value.strip() else None

    @field_validator("webapp_mount")
    @classmethod
    def _check_mount(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = "/" + value.strip().strip("/")
        if value == "/" or any(c in value for c in " ?#{}"):
            raise ValueError("a path like /app (not the root)")
        return value

    @field_validator("nudge_quiet_hours")
    @classmethod
    def _check_quiet_hours(cls, value: str) -> str:
        from vitte.initiative.rules import parse_quiet_hours

        parse_quiet_hours(value)  # ValueError names the expected shape
        return value.strip()

    @field_validator("default_timezone")
    @classmethod
    def _check_timezone(cls, value: str | None) -> str | None:
        from vitte.initiative.rules import zone_or_none

        if value is None or not value.strip():
            return None
        if zone_or_none(value.strip()) is None:
            raise ValueError("an IANA time zone such as Europe/Moscow or UTC")
        return value.strip()

    @field_validator("admin_ids", mode="before")
    @classmethod
    def _parse_admin_ids(cls, value: object) -> object:
        if isinstance(value, str):
            parts = [p for p in value.replace(";", ",").replace(" ", ",").split(",") if p]
            try:
                return frozenset(int(p) for p in parts)
            except ValueError:
                raise ValueError("expected comma-separated Telegram ids") from None
        if isinstance(value, int):
            return frozenset({value})
        return value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("postgres://"):
            value = "postgresql+psycopg://" + value[len("postgres://"):]
        elif value.startswith("postgresql://"):
            value = "postgresql+psycopg://" + value[len("postgresql://"):]
        elif value.startswith("sqlite:///"):
            value = "sqlite+aiosqlite:///" + value[len("sqlite:///"):]
        if not value.startswith(("postgresql+psycopg://", "sqlite+aiosqlite://")):
            raise ValueError("use postgresql+psycopg://… or sqlite+aiosqlite:///path")
        return value

    @field_validator("stt_model", "tts_model", "image_model", "media_dir")
    @classmethod
    def _blank_model_is_unset(cls, value: str | None) -> str | None:
        return value.strip() if value and value.strip() else None

    @field_validator("redis_url", "llm_base_url", "webapp_url", "webhook_url", "support_contact")
    @classmethod
    def _blank_is_unset(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            return None
        return value.strip() if value else value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("use redis://host:port/db")
        return value

    @field_validator("llm_base_url", "telegram_api_url", "webapp_url", "webhook_url")
    @classmethod
    def _check_http_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/") if value else value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def uses_demo_writer(self) -> bool:
        return not self.llm_base_url

    def require_bot_token(self) -> str:
        """The bot token, checked for Telegram's shape (`<digits>:<secret>`)."""
        if self.bot_token is None or not self.bot_token.get_secret_value().strip():
            raise ConfigError("VITTE_BOT_TOKEN is not set (get one from @BotFather)")
        token = self.bot_token.get_secret_value().strip()
        head, sep, tail = token.partition(":")
        if not sep or not head.isdigit() or len(tail) < 20 or any(c.isspace() for c in tail):
            raise ConfigError("VITTE_BOT_TOKEN is malformed: expected <bot id>:<secret> from @BotFather")
        return token

    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        raw = self.database_url.split(":///", 1)[1] if ":///" in self.database_url else ""
        if not raw or raw.startswith(":memory:"):
            return None
        return Path(raw.split("?", 1)[0])


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first bad variable."""
    err = exc.errors()[0]
    loc = "_".join(str(p) for p in err.get("loc", ()))
    name = f"VITTE_{loc.upper()}" if loc else "configuration"
    msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{name}: {msg}"


def load_settings(**overrides: object) -> Settings:
    """Read settings; raise ConfigError with one clear line on a bad value."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
