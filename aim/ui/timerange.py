"""Time range and auto-refresh pickers whose state lives in the URL, in the style of Grafana.

A range is either relative (`now-15m`, `now-1h`, `now-6h`, `now-24h`, `now-7d`, `now-30d`, ending now)
or custom, with absolute `from` and `to` instants. The query parameters are:

- `range`: a relative key or `custom`. A missing parameter means the page's default range.
- `from`, `to`: ISO 8601 instants in UTC, used when `range=custom`.
- `refresh`: `off`, `5s`, `10s`, `30s`, `1m` or `5m`.

So a copied URL reopens the same window, and a browser reload or an auto-refresh keeps it. The
widgets have the keys `qp_<parameter>`, like the filters of `aim.ui.components`.

`resolve_range` and the bucket helpers are pure and do the parsing and checks. The widget
functions only read and write the query parameters around them.

A relative range is resolved against `now`, rounded up to a `SNAP` step. Two reruns within one step
then ask for the same window, so cached loaders keyed by the window reuse their results.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence
from zoneinfo import ZoneInfo

import streamlit as st

from aim.errors import AIMError, ValidationError
from aim.ui import timefmt

logger = logging.getLogger(__name__)

RANGE_PARAM = "range"
FROM_PARAM = "from"
TO_PARAM = "to"
REFRESH_PARAM = "refresh"
CUSTOM = "custom"

RELATIVE_RANGES: dict[str, timedelta] = {
    "now-15m": timedelta(minutes=15),
    "now-1h": timedelta(hours=1),
    "now-6h": timedelta(hours=6),
    "now-24h": timedelta(hours=24),
    "now-7d": timedelta(days=7),
    "now-30d": timedelta(days=30),
}
RANGE_LABELS: dict[str, str] = {
    "now-15m": "Last 15 minutes",
    "now-1h": "Last 1 hour",
    "now-6h": "Last 6 hours",
    "now-24h": "Last 24 hours",
    "now-7d": "Last 7 days",
    "now-30d": "Last 30 days",
    CUSTOM: "Custom range",
}
REFRESH_INTERVALS: dict[str, int | None] = {"off": None, "5s": 5, "10s": 10, "30s": 30, "1m": 60, "5m": 300}
# Maximum length of a custom window, because every query behind the pages reads its whole time range.
MAX_RANGE = timedelta(days=400)
# Step to which "now" is rounded up for relative ranges, by range length.
SNAP_SHORT = timedelta(seconds=10)
SNAP_LONG = timedelta(minutes=1)
SHORT_RANGE_LIMIT = timedelta(hours=6)
# Metric roll-ups are per minute. With a target of 100 points, these steps give 50 to 100 points per chart.
NICE_STEPS = tuple(timedelta(minutes=m) for m in (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440))


@dataclass(frozen=True)
class TimeRange:
    """A resolved window [start, end) in UTC, with the key it came from (`now-1h` or `custom`)."""

    key: str
    start: datetime
    end: datetime

    @property
    def duration(self) -> timedelta:
        return self.end - self.start

    @property
    def is_relative(self) -> bool:
        return self.key != CUSTOM

    def describe(self, tz: str = timefmt.DEFAULT_TIMEZONE) -> str:
        """Return a caption such as "Last 1 hour · 2026-01-02 10:00 to 11:00 UTC"."""
        start = timefmt.to_local(self.start, tz)
        end = timefmt.to_local(self.end, tz)
        same_day = start.date() == end.date()
        end_text = end.strftime("%H:%M" if same_day else "%Y-%m-%d %H:%M")
        window = f"{start:%Y-%m-%d %H:%M} to {end_text} {tz}"
        return f"{RANGE_LABELS.get(self.key, self.key)} · {window}"


# --- pure helpers -----------------------------------------------------------------------------


def snap_up(moment: datetime, step: timedelta) -> datetime:
    """Round `moment` up to a whole multiple of `step` since the Unix epoch."""
    seconds = step.total_seconds()
    return datetime.fromtimestamp(math.ceil(moment.timestamp() / seconds) * seconds, tz=timezone.utc)


def snap_for(duration: timedelta) -> timedelta:
    """Return the rounding step for a relative range of `duration`."""
    return SNAP_SHORT if duration <= SHORT_RANGE_LIMIT else SNAP_LONG


def parse_instant(text: str, field: str) -> datetime:
    """Parse an ISO 8601 instant such as 2026-01-02T10:00:00Z. A value without an offset is read as UTC."""
    if not isinstance(text, str) or not text.strip():
        raise ValidationError(field, "is empty; expected an ISO 8601 time such as 2026-01-02T10:00:00Z")
    try:
        parsed = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise ValidationError(field, f"{text!r} is not an ISO 8601 time; expected e.g. 2026-01-02T10:00:00Z") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def format_instant(moment: datetime, *, microseconds: bool = False) -> str:
    """Return `moment` as the compact UTC form used in URLs, such as 2026-01-02T10:00:00Z.

    With `microseconds` the fraction is kept (2026-01-02T10:00:00.250000Z), for instants that must
    round-trip exactly.
    """
    pattern = "%Y-%m-%dT%H:%M:%S.%fZ" if microseconds else "%Y-%m-%dT%H:%M:%SZ"
    return moment.astimezone(timezone.utc).strftime(pattern)


def resolve_range(
    key: str, *, now: datetime, start_text: str | None = None, end_text: str | None = None,
    allowed: Sequence[str] | None = None, snap: bool = True,
) -> TimeRange:
    """Resolve a range key (and, for `custom`, its `from`/`to` texts) to a TimeRange.

    A relative range ends at `now` rounded up by `snap_for` when `snap`, else at `now` exactly.
    Raises ValidationError naming `range`, `from` or `to` when a value is unknown, malformed,
    reversed, or longer than MAX_RANGE.
    """
    options = tuple(allowed) if allowed is not None else (*RELATIVE_RANGES, CUSTOM)
    if key not in options:
        raise ValidationError(RANGE_PARAM, f"{key!r} is invalid; expected one of {', '.join(options)}")
    if key != CUSTOM:
        duration = RELATIVE_RANGES[key]
        end = snap_up(now, snap_for(duration)) if snap else now
        return TimeRange(key, end - duration, end)
    start = parse_instant(start_text or "", FROM_PARAM)
    end = parse_instant(end_text or "", TO_PARAM)
    if end <= start:
        raise ValidationError(TO_PARAM, f"{format_instant(end)} is not after from {format_instant(start)}; "
                                        "expected from < to")
    if end - start > MAX_RANGE:
        raise ValidationError(TO_PARAM, f"the range spans {(end - start).days} days; expected at most {MAX_RANGE.days}")
    return TimeRange(CUSTOM, start, end)


def pick_step(duration: timedelta, *, target_points: int = 100) -> timedelta:
    """Return the smallest nice step (1 minute to 1 day) that gives at most about `target_points` steps."""
    for step in NICE_STEPS:
        if duration / step <= target_points:
            return step
    days = math.ceil(duration / (NICE_STEPS[-1] * target_points))
    return timedelta(days=days)


def pick_bucket_unit(duration: timedelta) -> str:
    """Return the date_trunc unit for event-count charts: minute up to 1 h, hour up to 7 d, else day."""
    if duration <= timedelta(hours=1):
        return "minute"
    if duration <= timedelta(days=7):
        return "hour"
    return "day"


UNIT_STEPS = {"minute": timedelta(minutes=1), "hour": timedelta(hours=1), "day": timedelta(days=1)}


def floor_to_unit(moment: datetime, unit: str, tz: str) -> datetime:
    """Return the UTC instant at which the local `unit` (minute, hour or day in zone `tz`) containing `moment` starts."""
    local = moment.astimezone(ZoneInfo(tz))
    if unit == "minute":
        local = local.replace(second=0, microsecond=0)
    elif unit == "hour":
        local = local.replace(minute=0, second=0, microsecond=0)
    elif unit == "day":
        local = local.replace(hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValidationError("unit", f"{unit!r} is invalid; expected one of {', '.join(UNIT_STEPS)}")
    return local.astimezone(timezone.utc)


def next_unit_start(moment: datetime, unit: str, tz: str) -> datetime:
    """Return the UTC instant at which the local `unit` after the one containing `moment` starts."""
    start = floor_to_unit(moment, unit, tz).astimezone(ZoneInfo(tz))
    # Stepping in wall-clock time keeps days at local midnight across daylight-saving changes.
    following = (start.replace(tzinfo=None) + UNIT_STEPS[unit]).replace(tzinfo=ZoneInfo(tz))
    return following.astimezone(timezone.utc)


def split_closed(start: datetime, end: datetime, unit: str, tz: str) -> tuple[tuple[datetime, datetime] | None, ...]:
    """Split [start, end) into (head, closed, tail) at local `unit` boundaries. An empty part is None.

    `closed` covers whole units that ended before the unit containing `end`. Its boundaries only
    move when a new unit begins, so a count over it can be cached across reruns. `head` is the
    partial unit before it and `tail` the unit still being written.
    """
    first_whole = start if floor_to_unit(start, unit, tz) == start else next_unit_start(start, unit, tz)
    current = floor_to_unit(end, unit, tz)
    if first_whole >= current:
        return None, None, (start, end)
    head = (start, first_whole) if start < first_whole else None
    tail = (current, end) if current < end else None
    return head, (first_whole, current), tail


def local_wall_to_utc(wall: datetime, tz: str) -> datetime:
    """Read a naive wall-clock time (from st.datetime_input) in zone `tz` and return it in UTC."""
    return wall.replace(tzinfo=ZoneInfo(tz)).astimezone(timezone.utc)


# --- Streamlit widgets ------------------------------------------------------------------------


def viewer_timezone() -> str:
    """Return the viewer's IANA zone: the sidebar choice, else the `tz` query parameter, else UTC."""
    chosen = st.session_state.get("timezone") or st.query_params.get("tz") or timefmt.DEFAULT_TIMEZONE
    try:
        return timefmt.validate_timezone(chosen)
    except AIMError:
        return timefmt.DEFAULT_TIMEZONE


def _set_param(name: str, value: str | None) -> None:
    if value is None:
        st.query_params.pop(name, None)
    else:
        st.query_params[name] = value


def widget_key(param: str) -> str:
    """Return the widget key of the control bound to query parameter `param` (`qp_<param>`)."""
    return f"qp_{param}"


def param_choice(param: str, options: Sequence[str], default: str) -> str:
    """Return the query parameter's value when it is one of `options`, else `default`."""
    value = st.query_params.get(param)
    return value if value in options else default


def bound_choice(
    label: str, options: Sequence[str], param: str, *, default: str, format_func: Callable[[str], str] = str,
    on_change: Callable[[], None] | None = None, help: str | None = None, segmented: bool = False,
) -> str:
    """Render a single choice stored as `?<param>=<option>` (absent means `default`) and return it.

    The widget key is `qp_<param>`. It starts from the URL, and a change writes the URL before
    `on_change` runs. An unknown value in the URL falls back to `default`.
    """
    key = widget_key(param)
    # The URL wins over a value left in session state by another page that shares the key with
    # other options, so the widget and the panels always show the same choice.
    from_url = param_choice(param, options, default)
    if st.session_state.get(key) != from_url:
        st.session_state[key] = from_url

    def write_back() -> None:
        value = st.session_state.get(key)
        if value is None:  # a segmented control can be cleared; keep the previous choice
            st.session_state[key] = param_choice(param, options, default)
            return
        _set_param(param, None if value == default else value)
        if on_change is not None:
            on_change()

    if segmented:
        st.segmented_control(label, list(options), key=key, format_func=format_func, on_change=write_back, help=help)
    else:
        st.selectbox(label, list(options), key=key, format_func=format_func, on_change=write_back, help=help)
    return st.session_state[key] or default


def _apply_custom(tz: str, on_change: Callable[[], None] | None) -> None:
    start_wall = st.session_state.get(widget_key("custom_from"))
    end_wall = st.session_state.get(widget_key("custom_to"))
    if start_wall is None or end_wall is None:
        return
    _set_param(FROM_PARAM, format_instant(local_wall_to_utc(start_wall, tz)))
    _set_param(TO_PARAM, format_instant(local_wall_to_utc(end_wall, tz)))
    if on_change is not None:
        on_change()


def time_range_picker(
    *, options: Sequence[str] = tuple(RELATIVE_RANGES), default: str = "now-1h",
    on_change: Callable[[], None] | None = None,
) -> str:
    """Render the range picker (`?range=`) and return the range key.

    For `custom`, the page then calls `custom_range_inputs` where the inputs fit, usually below its
    toolbar. `on_change` runs whenever the window changes, so a page can drop its paging cursor.
    Resolve the window with `current_range`, inside the fragment that auto-refreshes, so a relative
    range moves with each refresh.
    """
    choices = [*options, CUSTOM]
    return bound_choice(
        "Time range", choices, RANGE_PARAM, default=default, format_func=lambda k: RANGE_LABELS.get(k, k),
        on_change=on_change, help="Relative ranges end now. A custom range is read in the viewer's timezone.",
    )


def current_range(
    *, options: Sequence[str] = tuple(RELATIVE_RANGES), default: str = "now-1h", now: datetime | None = None,
    snap: bool = True,
) -> TimeRange:
    """Resolve the window in the URL (`range`, `from`, `to`) at `now` (default: the current time).

    Pages that page through rows pass a pinned `now` and `snap=False`: the window then ends at
    that instant, not in the future, so rows written later cannot enter a window whose cursors are
    in use. An invalid or incomplete custom range shows a message and falls back to `default`.
    """
    choices = [*options, CUSTOM]
    selected = param_choice(RANGE_PARAM, choices, default)
    moment = now or datetime.now(timezone.utc)
    try:
        return resolve_range(
            selected, now=moment, start_text=st.query_params.get(FROM_PARAM),
            end_text=st.query_params.get(TO_PARAM), allowed=choices, snap=snap,
        )
    except ValidationError as exc:
        if selected == CUSTOM and st.query_params.get(FROM_PARAM) is None:
            st.info("Pick the start and end of the custom range, then press Apply. Until then the default "
                    f"range ({RANGE_LABELS[default].lower()}) is shown.", icon=":material/date_range:")
        else:
            st.error(f"Invalid {exc.field}: {exc.message}", icon=":material/error:")
        return resolve_range(default, now=moment, snap=snap)


def custom_range_inputs(on_change: Callable[[], None] | None = None) -> None:
    """Render the custom range inputs when `range=custom`: two date-time inputs and an Apply button.

    The inputs are read in the viewer's timezone and start from `from`/`to`, or from the last hour.
    Apply writes `from` and `to`, then runs `on_change`.
    """
    if st.query_params.get(RANGE_PARAM) != CUSTOM:
        return
    tz = viewer_timezone()
    zone = ZoneInfo(tz)
    try:
        start = parse_instant(st.query_params.get(FROM_PARAM, ""), FROM_PARAM)
        end = parse_instant(st.query_params.get(TO_PARAM, ""), TO_PARAM)
    except ValidationError:
        end = snap_up(datetime.now(timezone.utc), SNAP_LONG)
        start = end - timedelta(hours=1)
    from_key, to_key = widget_key("custom_from"), widget_key("custom_to")
    # The inputs keep their own state after the first run, so they are seeded only once per session.
    st.session_state.setdefault(from_key, start.astimezone(zone).replace(tzinfo=None, microsecond=0))
    st.session_state.setdefault(to_key, end.astimezone(zone).replace(tzinfo=None, microsecond=0))
    with st.container(horizontal=True, vertical_alignment="bottom", horizontal_alignment="right"):
        st.datetime_input(f"From ({tz})", key=from_key, step=timedelta(minutes=1), format="YYYY-MM-DD", width=260)
        st.datetime_input(f"To ({tz})", key=to_key, step=timedelta(minutes=1), format="YYYY-MM-DD", width=260)
        st.button("Apply", key="custom_range_apply", icon=":material/check:", on_click=_apply_custom,
                  args=(tz, on_change))


def refresh_picker(*, default: str = "off", on_change: Callable[[], None] | None = None) -> int | None:
    """Render the auto-refresh picker (`?refresh=`) and return its interval in seconds, or None for off."""
    choice = bound_choice(
        "Refresh", list(REFRESH_INTERVALS), REFRESH_PARAM, default=default, on_change=on_change,
        format_func=lambda k: "Off" if k == "off" else f"Every {k}",
        help="Reloads the data on this page at this interval. Filters, paging and the selection are kept.",
    )
    return REFRESH_INTERVALS[choice]
