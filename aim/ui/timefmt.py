"""Display times in the user's timezone.

The dashboard stores the chosen IANA zone in `st.session_state["timezone"]` (default UTC). Every table,
chart and CSV export converts with these functions, so all three show the same wall-clock time.
Naive datetimes are taken to be UTC, because PostgreSQL returns timestamptz as aware UTC values and
the only naive values come from code that already means UTC.
"""

from __future__ import annotations

import functools
from datetime import datetime, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import pandas as pd

from aim.errors import ValidationError

DEFAULT_TIMEZONE = "UTC"
DISPLAY_FORMAT = "%Y-%m-%d %H:%M:%S"
# Offered first in the picker; every other IANA zone follows alphabetically.
COMMON_TIMEZONES = (
    "UTC", "Europe/London", "Europe/Berlin", "Europe/Paris", "America/New_York", "America/Chicago",
    "America/Denver", "America/Los_Angeles", "Asia/Kolkata", "Asia/Singapore", "Asia/Tokyo", "Australia/Sydney",
)


@functools.cache
def timezone_names() -> tuple[str, ...]:
    """Return every IANA zone name known to this system, common zones first."""
    rest = sorted(available_timezones() - set(COMMON_TIMEZONES))
    return tuple(name for name in COMMON_TIMEZONES if name in available_timezones() or name == "UTC") + tuple(rest)


def validate_timezone(name: object, field: str = "tz") -> str:
    """Return `name` when it is an IANA zone such as Europe/Berlin, or raise ValidationError."""
    if not isinstance(name, str) or not name:
        raise ValidationError(field, "expected an IANA timezone name such as UTC or Europe/Berlin")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(field, f"{name!r} is not a known IANA timezone; expected a name such as Europe/Berlin") from None
    return name


def to_local(ts: datetime | None, tz: str = DEFAULT_TIMEZONE) -> datetime | None:
    """Convert `ts` to zone `tz`. None stays None; a naive value is read as UTC."""
    if ts is None:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(ZoneInfo(tz))


def format_ts(ts: datetime | None, tz: str = DEFAULT_TIMEZONE, fmt: str = DISPLAY_FORMAT) -> str:
    """Format `ts` in zone `tz`, or return an em dash for a missing time."""
    local = to_local(ts, tz)
    return "—" if local is None else local.strftime(fmt)


def localize_column(series: pd.Series, tz: str = DEFAULT_TIMEZONE) -> pd.Series:
    """Convert a column of timestamps to zone `tz` for st.dataframe, keeping missing values.

    The result keeps its timezone, so st.dataframe's DatetimeColumn and a CSV export show the same
    wall-clock time.
    """
    values = pd.to_datetime(series, utc=True)
    return values.dt.tz_convert(tz)


def relative(ts: datetime | None, now: datetime | None = None) -> str:
    """Return a short age such as "42 s ago", "5 min ago", "3 h ago" or "2 d ago"."""
    if ts is None:
        return "never"
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    seconds = ((now or datetime.now(timezone.utc)) - ts).total_seconds()
    if seconds < 0:
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"
