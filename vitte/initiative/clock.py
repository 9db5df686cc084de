"""The time the nudge scheduler reads: the wall clock, movable forward (the console's
operator panel: "+1 h", "+1 day"; tests)."""

from __future__ import annotations

from datetime import datetime, timedelta

from vitte.models import utcnow


class Clock:
    """UTC now plus an offset that only moves forward."""

    def __init__(self, offset: timedelta = timedelta(0), *, ages_marks: bool = False) -> None:
        self.offset = offset
        # the console's clock: the cache's online marks (kept in wall time) age with it, so a
        # player who wrote a minute ago is not online an hour later on this clock
        self.ages_marks = ages_marks

    def now(self) -> datetime:
        return utcnow() + self.offset

    def advance(self, seconds: float) -> datetime:
        """Move the clock forward; the new now."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.offset += timedelta(seconds=seconds)
        return self.now()
