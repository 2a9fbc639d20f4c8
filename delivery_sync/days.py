"""Calendar days: windows of days, as `sync --days-back` and `query --days` take them, and the
weeks (Monday to Sunday) and months they fall in. The one home of calendar arithmetic, and of
the time format the replica writes.

Standard library only: the fast `query` path imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from .errors import UsageError

# Far wider than any delivery statistics, and far from the limits of date arithmetic.
FIRST_DAY = date(1900, 1, 1)
LAST_DAY = date(2999, 12, 31)


@dataclass(frozen=True)
class Window:
    """An inclusive range of calendar days."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def params(self) -> dict[str, str]:
        """`:start` and `:end` for SQL."""
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    def __str__(self) -> str:
        return f"{self.start}..{self.end}"


def resolve_window(
    today: date, days: int | None, start: date | None = None, end: date | None = None, *, flag: str, default: int
) -> Window:
    """`flag N` days ending today (N = `default` when not given), or `--from/--to` (`--to` defaults to today).

    "Today" is the caller's date in the source time zone; bad combinations are a UsageError.
    """
    if days is not None and (start is not None or end is not None):
        raise UsageError(f"use either {flag} or --from/--to, not both")
    if start is None and end is not None:
        raise UsageError(f"--to needs --from (or use {flag})")
    if start is not None:
        if end is not None and end > today:  # no remote has figures for days to come
            raise UsageError(f"--to {end} is after today ({today} in source.timezone)")
        if end is None and start > today:  # --to was not given: it is today
            raise UsageError(f"--from {start} is after today ({today} in source.timezone)")
        end = end or today
        if start > end:
            raise UsageError(f"--from {start} is after --to {end}")
        for name, day in (("--from", start), ("--to", end)):
            if not FIRST_DAY <= day <= LAST_DAY:
                raise UsageError(f"{name} {day} is outside {FIRST_DAY}..{LAST_DAY}")
        return Window(start, end)
    days = default if days is None else days
    if days < 1:
        raise UsageError(f"{flag} must be at least 1 (got {days})")
    if days > (today - FIRST_DAY).days + 1:
        raise UsageError(f"{flag} {days} reaches before {FIRST_DAY}")
    return Window(today - timedelta(days=days - 1), today)


COMPARISONS = ("previous", "year")


def base_window(window: Window, compare: str) -> Window:
    """The window to compare against: the same number of days just before (`previous`), or the
    same days a year earlier (`year`; 29 February falls back to the 28th)."""
    if compare == "previous":
        return Window(window.start - timedelta(days=window.days), window.start - timedelta(days=1))
    if compare == "year":
        return Window(*(_year_earlier(day) for day in (window.start, window.end)))
    raise UsageError(f"--compare: {compare!r} is not one of {', '.join(COMPARISONS)}")


def _year_earlier(day: date) -> date:
    return day.replace(year=day.year - 1, day=28 if (day.month, day.day) == (2, 29) else day.day)


def week_start(day: date) -> date:
    """The Monday of `day`'s week."""
    return day - timedelta(days=day.weekday())


def week_end(day: date) -> date:
    """The Sunday of `day`'s week."""
    return day + timedelta(days=6 - day.weekday())


def next_month(day: date) -> date:
    """The first day of the month after `day`'s."""
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


def month_end(day: date) -> date:
    """The last day of `day`'s month."""
    return next_month(day) - timedelta(days=1)


def utc_now() -> str:
    """Now as the replica writes times: `YYYY-MM-DDTHH:MM:SS+00:00`."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def utc_stamp(seconds: float) -> str:
    """A Unix time as the replica writes times (`YYYY-MM-DDTHH:MM:SS+00:00`)."""
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=0).isoformat()
