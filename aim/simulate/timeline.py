"""Time in the backfill: the window, its periods, daily traffic shape and registration dates.

The window starts at the UTC midnight `days` days before now and ends now. It is cut into periods
that never cross a midnight and hold at most `MAX_ACTIONS_PER_PERIOD` actions, so each period is
one bounded transaction and trust snapshots fall on midnights. Midnights are the same in every run
on the same day, so a rerun can tell which daily snapshots already exist.
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from aim.errors import ValidationError

MAX_DAYS = 365
MAX_ACTIONS_PER_PERIOD = 50_000
DAY = timedelta(days=1)
# Relative traffic per UTC hour: low at night, a peak in the afternoon.
HOURLY_WEIGHTS = tuple(0.35 + 0.65 * max(0.0, math.sin(math.pi * (hour - 6) / 16)) for hour in range(24))
# Agents registered before the window are spread over this many days before its start.
REGISTRATION_SPREAD_DAYS = 120
# Share of agents registered inside the window, in its first `JOIN_WINDOW_SHARE` part.
JOINED_SHARE = 0.2
JOIN_WINDOW_SHARE = 0.6


@dataclass(frozen=True)
class Period:
    """A stretch of the window with its share of the actions; `ends_day` is True when `end` is a midnight."""

    start: datetime
    end: datetime
    actions: int
    ends_day: bool


def validate_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise ValidationError("backfill", f"{days!r} is out of range; expected whole days from 1 to {MAX_DAYS}")
    return days


def midnight(moment: datetime) -> datetime:
    utc = moment.astimezone(timezone.utc)
    return datetime(utc.year, utc.month, utc.day, tzinfo=timezone.utc)


def window_start(now: datetime, days: int) -> datetime:
    """Return the UTC midnight that starts a `days`-day backfill ending at `now`."""
    return midnight(now - timedelta(days=days))


def day_weight(start: datetime, end: datetime) -> float:
    """Return the traffic weight of [start, end) inside one UTC day, in hourly-weight units."""
    total = 0.0
    cursor = start
    while cursor < end:
        hour_end = min(cursor.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1), end)
        total += HOURLY_WEIGHTS[cursor.hour] * (hour_end - cursor) / timedelta(hours=1)
        cursor = hour_end
    return total


def periods(start: datetime, now: datetime, total_actions: int) -> list[Period]:
    """Cut [start, now) into periods and share `total_actions` among them by the daily traffic shape."""
    days: list[tuple[datetime, datetime]] = []
    cursor = start
    while cursor < now:
        days.append((cursor, min(cursor + DAY, now)))
        cursor += DAY
    weights = [day_weight(a, b) for a, b in days]
    total_weight = sum(weights) or 1.0
    # Largest-remainder rounding, so the shares add up to exactly total_actions.
    raw = [total_actions * w / total_weight for w in weights]
    counts = [int(value) for value in raw]
    by_remainder = sorted(range(len(raw)), key=lambda i: raw[i] - counts[i], reverse=True)
    for i in by_remainder[: total_actions - sum(counts)]:
        counts[i] += 1

    result: list[Period] = []
    for (day_start, day_end), count in zip(days, counts):
        slices = max(1, math.ceil(count / MAX_ACTIONS_PER_PERIOD))
        step = (day_end - day_start) / slices
        for k in range(slices):
            a = day_start + step * k
            b = day_end if k == slices - 1 else day_start + step * (k + 1)
            share = count // slices + (1 if k < count % slices else 0)
            result.append(Period(a, b, share, ends_day=(b == day_end and b - day_start == DAY)))
    return result


def action_times(period: Period, rng: random.Random) -> list[datetime]:
    """Draw `period.actions` sorted times in the period, denser in busy hours."""
    if period.actions == 0:
        return []
    span = (period.end - period.start).total_seconds()
    if span <= 3600.0:
        offsets = [rng.random() * span for _ in range(period.actions)]
    else:
        offsets = []
        base_hour = period.start.replace(minute=0, second=0, microsecond=0)
        hours = [(base_hour + timedelta(hours=h)) for h in range(math.ceil(span / 3600.0) + 1)]
        weights = list(itertools.accumulate(HOURLY_WEIGHTS[h.hour] for h in hours))
        while len(offsets) < period.actions:
            index = bisect.bisect_right(weights, rng.random() * weights[-1])
            hour = hours[min(index, len(hours) - 1)]
            offset = (hour - period.start).total_seconds() + rng.random() * 3600.0
            if 0.0 <= offset < span:
                offsets.append(offset)
    offsets.sort()
    return [period.start + timedelta(seconds=offset) for offset in offsets]


def registration_times(start: datetime, now: datetime, seed: int) -> Callable[[int], datetime]:
    """Return index -> registration time for agents created by a backfill starting at `start`.

    Most agents are registered in the `REGISTRATION_SPREAD_DAYS` days before the window, so the age
    factor varies from new to mature. The rest join during the first part of the window.
    """
    window = now - start

    def registered_at(index: int) -> datetime:
        rng = random.Random(f"{seed}:registration:{index}")
        if rng.random() < JOINED_SHARE:
            return start + window * (rng.random() * JOIN_WINDOW_SHARE)
        return start - timedelta(days=rng.random() * REGISTRATION_SPREAD_DAYS)

    return registered_at
