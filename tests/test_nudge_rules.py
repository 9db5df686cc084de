"""The nudge rules (vitte.initiative.rules): pure functions, no store, no clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from vitte.config import ConfigError, load_settings
from vitte.initiative import rules as r

MOSCOW = ZoneInfo("Europe/Moscow")


def at(h: int, m: int = 0, day: int = 3) -> datetime:
    return datetime(2026, 12, day, h, m, tzinfo=UTC)


def test_quiet_hours_parse() -> None:
    assert r.parse_quiet_hours("23-9") == (23, 9)
    assert r.parse_quiet_hours(" 1 - 6 ") == (1, 6)
    assert r.parse_quiet_hours("") is None
    for bad in ("23", "25-9", "9-9", "a-b", "-1-3"):
        with pytest.raises(ValueError):
            r.parse_quiet_hours(bad)


def test_quiet_hours_honour_the_zone() -> None:
    quiet = (23, 9)
    # 21:00 UTC is midnight in Moscow (UTC+3): quiet there, not in UTC
    assert r.in_quiet_hours(at(21), MOSCOW, quiet)
    assert not r.in_quiet_hours(at(21), ZoneInfo("UTC"), quiet)
    # 07:00 UTC = 10:00 in Moscow: awake; 07:00 in UTC: still quiet
    assert not r.in_quiet_hours(at(7), MOSCOW, quiet)
    assert r.in_quiet_hours(at(7), ZoneInfo("UTC"), quiet)
    # a window that does not wrap midnight
    assert r.in_quiet_hours(at(2), ZoneInfo("UTC"), (1, 6)) and not r.in_quiet_hours(at(6), ZoneInfo("UTC"), (1, 6))
    assert not r.in_quiet_hours(at(3), MOSCOW, None)


def test_quiet_end_is_the_next_local_end() -> None:
    # midnight in Moscow → 09:00 Moscow the same night = 06:00 UTC next day
    assert r.quiet_end(at(21), MOSCOW, (23, 9)) == at(6, day=4)
    # 03:00 Moscow (00:00 UTC) → 09:00 Moscow today = 06:00 UTC
    assert r.quiet_end(at(0), MOSCOW, (23, 9)) == at(6)
    assert r.quiet_end(at(12), MOSCOW, (23, 9)) is None


def test_default_zone_by_language_and_override() -> None:
    assert r.default_zone("ru") == MOSCOW
    assert r.default_zone("en") == ZoneInfo("UTC")
    assert r.default_zone("ru", "Asia/Tokyo") == ZoneInfo("Asia/Tokyo")
    assert r.player_zone({"timezone": "America/New_York"}, "ru") == ZoneInfo("America/New_York")
    assert r.player_zone({"timezone": "Mars/Olympus"}, "ru") == MOSCOW  # garbage: the default
    assert r.player_zone({"timezone": "../../etc/passwd"}, "en") == ZoneInfo("UTC")
    assert r.zone_or_none("Not/AZone") is None


def test_settings_validate_zone_and_quiet_hours() -> None:
    assert load_settings(default_timezone="Europe/Berlin").default_timezone == "Europe/Berlin"
    with pytest.raises(ConfigError, match="VITTE_DEFAULT_TIMEZONE"):
        load_settings(default_timezone="Nowhere/City")
    with pytest.raises(ConfigError, match="VITTE_NUDGE_QUIET_HOURS"):
        load_settings(nudge_quiet_hours="late")
    assert load_settings(nudge_default="off").nudge_default is False


def test_switch_default_and_choice() -> None:
    assert r.nudges_on({}, True) and not r.nudges_on({}, False)
    assert not r.nudges_on({"nudges": False}, True)
    assert r.nudges_on({"nudges": True}, False)


def test_jitter_is_within_20_percent_deterministic_and_spread() -> None:
    values = [r.jitter(d, 0) for d in range(2000)]
    assert all(0.8 <= v < 1.2 for v in values)
    assert r.jitter(42, 3) == r.jitter(42, 3)
    assert r.jitter(42, 3) != r.jitter(42, 4)
    assert min(values) < 0.82 and max(values) > 1.18  # the whole range is used
    # thousands of players silent since the same moment do not fall due in the same minute
    base = at(12)
    minutes = {r.next_due(base, 72_000, 0, d, 0).replace(second=0, microsecond=0) for d in range(2000)}
    assert len(minutes) > 400


def test_unanswered_doubles_the_wait() -> None:
    base = at(12)
    for k in range(3):
        due = r.next_due(base, 1000, k, 7, 0)
        assert due - base == timedelta(seconds=1000 * 2**k * r.jitter(7, 0))


def test_online_window_is_capped_by_nudge_after() -> None:
    assert r.online_window(300, 72_000) == 300
    assert r.online_window(300, 5) == 5
    assert r.online_window(300, 0) == 300


RULES = r.Rules(after=1000, quiet=(23, 9), max_unanswered=2, online_window=300)


def cand(**kw: object) -> r.Candidate:
    base: dict[str, object] = {"dialog_id": 1, "now": at(12), "zone": MOSCOW}
    base.update(kw)
    return r.Candidate(**base)  # type: ignore[arg-type]


def test_decide_sends_when_nothing_stands_in_the_way() -> None:
    assert r.decide(cand(), RULES) == r.Decision(None)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"exists": False}, r.DELETED),
        ({"blocked": True}, r.BLOCKED),
        ({"adult": False}, r.NO_AGE),
        ({"on": False}, r.OFF),
        ({"unreachable": True}, r.UNREACHABLE),
        ({"unanswered": 2}, r.UNANSWERED),
        ({"now": at(21)}, r.QUIET),
        ({"online": True}, r.ONLINE),
        ({"in_flight": True}, r.IN_FLIGHT),
        ({"quota_left": False}, r.NO_QUOTA),
    ],
)
def test_decide_names_every_not_now(kw: dict[str, object], reason: str) -> None:
    d = r.decide(cand(**kw), RULES)
    assert d.reason == reason
    now = kw.get("now", at(12))
    assert isinstance(now, datetime)
    if reason == r.DELETED:
        assert d.retry_at is None
    else:
        assert d.retry_at is not None and d.retry_at > now


def test_decide_quiet_retries_after_the_night_spread_over_an_hour() -> None:
    d = r.decide(cand(now=at(21)), RULES)
    assert d.retry_at is not None and at(6, day=4) <= d.retry_at < at(7, day=4)
    assert r.decide(cand(unanswered=1), RULES).reason is None  # below the limit
    assert r.decide(cand(now=at(21)), r.Rules(after=1000, quiet=None)).reason is None
