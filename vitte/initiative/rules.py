"""The nudge rules as pure functions: quiet hours, time zones, jitter, waits and eligibility.

Nothing here reads a database, a cache or the clock: every input is passed in, so each rule
is unit-tested on its own and the scheduler (`vitte.initiative.nudger`) only gathers inputs.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

JITTER = 0.2  # ±20 % on every wait, so a crowd's nudges do not fall due in the same minute
LANGUAGE_ZONES = {"ru": "Europe/Moscow", "en": "UTC"}
UTC_ZONE = ZoneInfo("UTC")
QUIET_SPREAD = 3600.0  # nudges held by quiet hours go out over the hour after they end

# why a nudge is not sent now (`vitte nudge list`, the scheduler's counts)
QUIET = "quiet"
UNANSWERED = "unanswered"
OFF = "off"  # the player turned it off (or never on, with VITTE_NUDGE_DEFAULT=off)
NO_QUOTA = "no_quota"
UNREACHABLE = "unreachable"  # the player blocked the bot
ONLINE = "online"
IN_FLIGHT = "in_flight"  # a reply is being written
BLOCKED = "blocked"  # blocked by the operator
NO_AGE = "no_age"
DELETED = "deleted"  # the player's data is gone or the dialog ended
REASONS = (QUIET, UNANSWERED, OFF, NO_QUOTA, UNREACHABLE, ONLINE, IN_FLIGHT, BLOCKED, NO_AGE, DELETED)

SETTING_NUDGES = "nudges"  # users.settings key: True / False (absent: VITTE_NUDGE_DEFAULT)
SETTING_TIMEZONE = "timezone"  # users.settings key: an IANA zone name


def parse_quiet_hours(text: str | None) -> tuple[int, int] | None:
    """ "23-9" → (23, 9): quiet from 23:00 to 09:00 local time; "" → None (no quiet hours).
    ValueError for anything else."""
    text = (text or "").strip()
    if not text:
        return None
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError
        a, b = int(start.strip()), int(end.strip())
    except ValueError:
        raise ValueError("quiet hours like 23-9 (from-to, hours 0-23), or empty for none") from None
    if not (0 <= a <= 23 and 0 <= b <= 23) or a == b:
        raise ValueError("quiet hours like 23-9 (from-to, hours 0-23, different), or empty for none")
    return a, b


def zone_or_none(name: str | None) -> ZoneInfo | None:
    """The IANA zone of that name, or None when there is none."""
    if not name or not isinstance(name, str) or len(name) > 64 or name.startswith(("/", ".")):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def default_zone(language: str, configured: str | None = None) -> ZoneInfo:
    """VITTE_DEFAULT_TIMEZONE when set, else the language's (ru: Europe/Moscow, en: UTC)."""
    return zone_or_none(configured) or zone_or_none(LANGUAGE_ZONES.get(language)) or ZoneInfo("UTC")


def player_zone(settings: dict[str, Any] | None, language: str, configured: str | None = None) -> ZoneInfo:
    """The zone the player (or their browser) set, else the default (`default_zone`)."""
    chosen = (settings or {}).get(SETTING_TIMEZONE)
    return zone_or_none(chosen) or default_zone(language, configured)


def nudges_on(settings: dict[str, Any] | None, default: bool) -> bool:
    """The player's "let the persona write first" switch (absent: the operator's default)."""
    value = (settings or {}).get(SETTING_NUDGES)
    return value if isinstance(value, bool) else default


def in_quiet_hours(moment: datetime, zone: ZoneInfo, quiet: tuple[int, int] | None) -> bool:
    if quiet is None:
        return False
    start, end = quiet
    hour = moment.astimezone(zone).hour
    return start <= hour < end if start < end else hour >= start or hour < end


def quiet_end(moment: datetime, zone: ZoneInfo, quiet: tuple[int, int] | None) -> datetime | None:
    """When the quiet hours `moment` falls in end (UTC), or None when it is not in them."""
    if quiet is None or not in_quiet_hours(moment, zone, quiet):
        return None
    local = moment.astimezone(zone)
    end_today = datetime.combine(local.date(), time(quiet[1]), tzinfo=zone)
    end = (
        end_today
        if end_today > local
        else datetime.combine(local.date() + timedelta(days=1), time(quiet[1]), tzinfo=zone)
    )
    return end.astimezone(UTC)


def spread(dialog_id: int, round_: int) -> float:
    """A number in [0, 1) fixed by the dialog and the round: the same in every process and
    every run, different between dialogs (tests pin it by the dialog's id)."""
    digest = hashlib.blake2b(f"{dialog_id}:{round_}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def jitter(dialog_id: int, round_: int) -> float:
    """The wait's factor, in [1 - JITTER, 1 + JITTER)."""
    return 1.0 - JITTER + 2 * JITTER * spread(dialog_id, round_)


def wait_seconds(after: float, unanswered: int, dialog_id: int, round_: int) -> float:
    """The silence before the next nudge: VITTE_NUDGE_AFTER, doubled by every unanswered
    nudge, with the jitter."""
    return after * 2 ** max(unanswered, 0) * jitter(dialog_id, round_)


def next_due(base: datetime, after: float, unanswered: int, dialog_id: int, round_: int) -> datetime:
    return base + timedelta(seconds=wait_seconds(after, unanswered, dialog_id, round_))


def first_nudge(after: float) -> Callable[[int, datetime], datetime] | None:
    """A new dialog's first nudge time from its id and opening time (None: nudges off)."""
    if after <= 0:
        return None
    return lambda dialog_id, opened_at: next_due(opened_at, after, 0, dialog_id, 0)


def online_window(window: float, after: float) -> float:
    """Online = an update within this many seconds: VITTE_ONLINE_WINDOW, never longer than
    VITTE_NUDGE_AFTER (so a short VITTE_NUDGE_AFTER in a demo or a test works)."""
    return min(window, after) if after > 0 else window


@dataclass(frozen=True, slots=True)
class Candidate:
    """What the scheduler knows about one due nudge's player, gathered before deciding."""

    dialog_id: int
    now: datetime
    exists: bool = True  # the player and the active dialog are there
    blocked: bool = False
    adult: bool = True
    on: bool = True
    unreachable: bool = False
    unanswered: int = 0
    online: bool = False
    in_flight: bool = False
    quota_left: bool = True
    zone: ZoneInfo = UTC_ZONE


@dataclass(frozen=True, slots=True)
class Rules:
    """The operator's settings the decision reads (from `vitte.config.Settings`)."""

    after: float = 72_000.0
    quiet: tuple[int, int] | None = (23, 9)
    max_unanswered: int = 2
    online_window: float = 300.0

    @classmethod
    def of(cls, settings: Any) -> Rules:
        return cls(
            after=float(settings.nudge_after),
            quiet=parse_quiet_hours(settings.nudge_quiet_hours),
            max_unanswered=int(settings.nudge_max_unanswered),
            online_window=online_window(float(settings.online_window), float(settings.nudge_after)),
        )

    @property
    def enabled(self) -> bool:
        return self.after > 0


@dataclass(frozen=True, slots=True)
class Decision:
    """`reason` None: send now. Else why not, and when to look again (`retry_at` None: drop
    the schedule's row, the dialog is gone)."""

    reason: str | None
    retry_at: datetime | None = None


def decide(c: Candidate, rules: Rules) -> Decision:
    """Send now, or why not and when to look again. The checks, in order: gone, blocked,
    no age, off, unreachable, unanswered limit, quiet hours, online, a reply in flight, quota."""
    now, later = c.now, c.now + timedelta(seconds=max(rules.after, 60.0))
    if not c.exists:
        return Decision(DELETED)
    for reason, applies in (
        (BLOCKED, c.blocked),
        (NO_AGE, not c.adult),
        (OFF, not c.on),
        (UNREACHABLE, c.unreachable),
        (UNANSWERED, c.unanswered >= rules.max_unanswered),
    ):
        if applies:  # looked at again later: the player may write, or the state change
            return Decision(reason, later)
    end = quiet_end(now, c.zone, rules.quiet)
    if end is not None:
        return Decision(QUIET, end + timedelta(seconds=QUIET_SPREAD * spread(c.dialog_id, -1)))
    if c.online:
        return Decision(ONLINE, now + timedelta(seconds=rules.online_window))
    if c.in_flight:
        return Decision(IN_FLIGHT, now + timedelta(seconds=min(rules.online_window, 60.0)))
    if not c.quota_left:  # the free plan's quota comes back at the next UTC day
        tomorrow = datetime.combine(now.astimezone(UTC).date() + timedelta(days=1), time(0), tzinfo=UTC)
        return Decision(NO_QUOTA, tomorrow + timedelta(seconds=QUIET_SPREAD * spread(c.dialog_id, -2)))
    return Decision(None)
