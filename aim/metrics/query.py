"""Read `metric_rollups` for the dashboard: latency series, one-window summaries, counters, heatmaps.

Percentiles always come from bucket counts merged over the whole step (and over every process and
label set in it), never from averaged percentiles. A step with no observations is "no traffic": its
count is 0 and its rates and percentiles are None, never 0 or NaN.

Time handling: `start` is floored and `end` ceiled to whole minutes, because a roll-up row covers one
minute. Steps begin at the floored `start`; the last step ends at the ceiled `end` and may be short.
Rates per second divide by each step's own length, so the minute that is still being recorded (and
not yet flushed) reads low.

PostgreSQL merges the buckets: one GROUP BY sums `buckets[i]` for every index i per (step, group),
and only those sums travel to the client. So client memory grows with the number of points, not
with the number of rows. `bench/metrics_query_bench.py` compares this with fetching every row's
array and summing in numpy. Over 7 days of one-minute rows on a shared 2-core machine, the SQL
merge was 1.8 to 6 times faster at hourly steps, and at one-minute steps either one won by up to 2x
from run to run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Mapping, Sequence

import numpy as np
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from aim.db.pool import Database, timed_query
from aim.errors import ValidationError
from aim.metrics import histogram

MINUTE = timedelta(minutes=1)
# 7 days at one-minute steps; charts need far fewer points.
MAX_STEPS = 10_080
# Upper bound on (step, group) points per query, which bounds client memory (about 1.6 KB per point).
MAX_POINTS = 20_000
MAX_GROUP_LABELS = 4
QUANTILES = (0.50, 0.95, 0.99)
# The hash aggregate keeps BUCKET_COUNT sums per (step, group). With PostgreSQL's default of 4 MB it
# spilled to disk on a week of rows and ran 1.7 to 2.8 times slower at hourly and 15-minute steps.
MERGE_WORK_MEM = "64MB"

HTTP_METRIC = "aim_http_request_duration_seconds"
DB_METRIC = "aim_db_query_duration_seconds"
CACHE_METRIC = "aim_cache_request_duration_seconds"
CACHE_HIT_RESULTS = ("l1_hit", "l2_hit")
CACHE_MISS_RESULT = "miss"

GroupKey = tuple[str | None, ...]


@dataclass(frozen=True)
class ErrorRule:
    """Rule that marks a label set as an error: `label` is in `values`, or `label` as an integer is >= `min_value`."""

    label: str
    values: tuple[str, ...] = ()
    min_value: int | None = None

    def __post_init__(self) -> None:
        if not self.label:
            raise ValidationError("error_rule.label", "is empty; expected a label name such as 'status'")
        if bool(self.values) == (self.min_value is not None):
            raise ValidationError("error_rule", "sets both or neither of values and min_value; expected exactly one")


HTTP_SERVER_ERRORS = ErrorRule("status", min_value=500)
DB_ERRORS = ErrorRule("outcome", values=("error",))
DEFAULT_ERROR_RULES: dict[str, ErrorRule] = {HTTP_METRIC: HTTP_SERVER_ERRORS, DB_METRIC: DB_ERRORS}


@dataclass(frozen=True)
class LatencyPoint:
    """Merged latency of one step (and one group). Durations are in seconds; None means no traffic."""

    start: datetime
    end: datetime
    group: dict[str, str | None]
    count: int
    errors: int | None
    rate_per_s: float | None
    error_rate: float | None
    mean_s: float | None
    p50_s: float | None
    p95_s: float | None
    p99_s: float | None

    @property
    def no_traffic(self) -> bool:
        return self.count == 0


@dataclass(frozen=True)
class CounterPoint:
    """Event count of one step (and one group); `rate_per_s` is None when the count is 0."""

    start: datetime
    end: datetime
    group: dict[str, str | None]
    count: int
    rate_per_s: float | None


@dataclass(frozen=True)
class CacheHitRatePoint:
    """Cache lookups of one step for one cache; `hit_rate` ((L1 + L2 hits) / lookups) is None without lookups."""

    start: datetime
    end: datetime
    cache: str | None
    lookups: int
    l1_hits: int
    l2_hits: int
    misses: int
    hit_rate: float | None


@dataclass(frozen=True)
class Heatmap:
    """Observation counts per (step, bucket): `counts[i, j]` is step i, `lower_s[j]` < value <= `upper_s[j]`.

    Only the contiguous bucket range that contains observations is kept, so the bucket axis is empty
    when nothing was observed.
    """

    step_starts: list[datetime]
    lower_s: np.ndarray
    upper_s: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class _Window:
    start: datetime
    end: datetime
    step: timedelta

    @property
    def n_steps(self) -> int:
        return math.ceil((self.end - self.start) / self.step)

    def bounds(self, index: int) -> tuple[datetime, datetime]:
        begin = self.start + index * self.step
        return begin, min(begin + self.step, self.end)


@dataclass
class _Merged:
    """Totals of one group per step, and the merged buckets of its non-empty steps only."""

    counts: np.ndarray
    sums: np.ndarray
    errors: np.ndarray | None
    bucket_steps: list[int]
    bucket_rows: list[np.ndarray]

    @classmethod
    def empty(cls, n_steps: int, with_errors: bool) -> "_Merged":
        return cls(
            counts=np.zeros(n_steps, dtype=np.int64),
            sums=np.zeros(n_steps, dtype=np.float64),
            errors=np.zeros(n_steps, dtype=np.int64) if with_errors else None,
            bucket_steps=[],
            bucket_rows=[],
        )

    def step_quantiles(self, n_steps: int, qs: Sequence[float]) -> np.ndarray:
        """Return an (n_steps, len(qs)) array of quantiles in seconds; NaN where a step has no observations."""
        result = np.full((n_steps, len(qs)), np.nan)
        if self.bucket_rows:
            result[self.bucket_steps] = histogram.quantile_matrix(np.vstack(self.bucket_rows), qs)
        return result

    def dense_buckets(self, n_steps: int) -> np.ndarray:
        dense = np.zeros((n_steps, histogram.BUCKET_COUNT), dtype=np.int64)
        if self.bucket_rows:
            dense[self.bucket_steps] = np.vstack(self.bucket_rows)
        return dense


# --- input checks ----------------------------------------------------------------------------------


def _floor_minute(value: datetime) -> datetime:
    return value.replace(second=0, microsecond=0)


def _check_time(field: str, value: datetime) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValidationError(field, f"{value!r} is not an aware datetime; expected e.g. datetime.now(timezone.utc)")
    return value.astimezone(timezone.utc)


def _make_window(start: datetime, end: datetime, step: timedelta | None) -> _Window:
    """Round the window to minutes and check it; `step` None means one step over the whole window."""
    start = _floor_minute(_check_time("start", start))
    end = _check_time("end", end)
    if end != _floor_minute(end):
        end = _floor_minute(end) + MINUTE
    if end <= start:
        raise ValidationError("end", f"{end.isoformat()} is not after start {start.isoformat()}; expected end > start")
    if step is None:
        step = end - start
    if not isinstance(step, timedelta) or step < MINUTE or step % MINUTE:
        raise ValidationError("step", f"{step!r} is not a whole number of minutes; expected a timedelta >= 1 minute")
    window = _Window(start, end, step)
    if window.n_steps > MAX_STEPS:
        raise ValidationError(
            "step", f"{step} gives {window.n_steps} steps; expected at most {MAX_STEPS}, so use a longer step"
        )
    return window


def _check_labels(
    label_filter: Mapping[str, object] | None, group_by: Sequence[str] | None
) -> tuple[dict[str, str], list[str]]:
    filter_dict: dict[str, str] = {}
    if label_filter is not None:
        if not isinstance(label_filter, Mapping):
            raise ValidationError("label_filter", f"is a {type(label_filter).__name__}; expected a dict of label to value")
        filter_dict = {str(k): str(v) for k, v in label_filter.items()}
    if isinstance(group_by, str):
        raise ValidationError("group_by", f"{group_by!r} is a string; expected a list of label names")
    groups = list(group_by or [])
    if len(groups) > MAX_GROUP_LABELS:
        raise ValidationError("group_by", f"has {len(groups)} labels; expected at most {MAX_GROUP_LABELS}")
    if len(set(groups)) != len(groups) or not all(isinstance(g, str) and g for g in groups):
        raise ValidationError("group_by", f"{groups!r} is invalid; expected distinct non-empty label names")
    return filter_dict, groups


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValidationError("name", f"{name!r} is not a metric name; expected a non-empty string")


# --- the merge query -------------------------------------------------------------------------------


def _error_predicate(rule: ErrorRule) -> tuple[sql.Composable, dict[str, Any]]:
    label = sql.SQL("(labels ->> %(error_label)s)")
    if rule.values:
        predicate = sql.SQL("{} = ANY(%(error_values)s)").format(label)
        return predicate, {"error_label": rule.label, "error_values": list(rule.values)}
    # A value that is not an integer (or a missing label) is not an error; the regex guards the cast.
    predicate = sql.SQL("CASE WHEN {0} ~ '^[0-9]{{1,9}}$' THEN {0}::int >= %(error_min)s ELSE false END").format(label)
    return predicate, {"error_label": rule.label, "error_min": rule.min_value}


# Integer arithmetic on epoch seconds, because extract() returns numeric and numeric division
# measured about twice as slow on a week of rows.
STEP_INDEX = sql.SQL(
    "((extract(epoch FROM minute)::bigint - %(start_epoch)s) / %(step_s)s)::int"
)
# One sum per bucket index: an index past a trimmed array's end reads NULL, which sum() skips.
BUCKET_SUMS = sql.SQL("ARRAY[{}]::bigint[]").format(
    sql.SQL(", ").join(sql.SQL(f"coalesce(sum(buckets[{i + 1}]), 0)") for i in range(histogram.BUCKET_COUNT))
)


def _merge_query(
    name: str, window: _Window, filter_dict: dict[str, str], groups: list[str],
    error_rule: ErrorRule | None, with_buckets: bool,
) -> tuple[sql.Composable, dict[str, Any]]:
    params: dict[str, Any] = {
        "name": name,
        "start": window.start,
        "end": window.end,
        "start_epoch": int(window.start.timestamp()),
        "step_s": int(window.step.total_seconds()),
        "limit": MAX_POINTS + 1,
    }
    where = sql.SQL("name = %(name)s AND minute >= %(start)s AND minute < %(end)s")
    if filter_dict:
        where = sql.SQL("{} AND labels @> %(label_filter)s").format(where)
        params["label_filter"] = Jsonb(filter_dict)

    columns = [sql.SQL("{} AS step_index").format(STEP_INDEX)]
    group_refs = [sql.SQL("step_index")]
    for i, label in enumerate(groups):
        params[f"group_{i}"] = label
        columns.append(sql.SQL("labels ->> {} AS {}").format(sql.Placeholder(f"group_{i}"), sql.Identifier(f"g{i}")))
        group_refs.append(sql.Identifier(f"g{i}"))
    columns.append(sql.SQL("sum(count)::bigint AS count, sum(sum) AS sum"))
    if error_rule is not None:
        predicate, error_params = _error_predicate(error_rule)
        params.update(error_params)
        columns.append(sql.SQL("coalesce(sum(count) FILTER (WHERE {}), 0)::bigint AS errors").format(predicate))
    if with_buckets:
        columns.append(sql.SQL("{} AS buckets").format(BUCKET_SUMS))

    query = sql.SQL("SELECT {} FROM metric_rollups WHERE {} GROUP BY {} LIMIT %(limit)s").format(
        sql.SQL(", ").join(columns), where, sql.SQL(", ").join(group_refs)
    )
    return query, params


def _fetch_merged(
    db: Database, name: str, window: _Window, filter_dict: dict[str, str], groups: list[str],
    error_rule: ErrorRule | None, *, with_buckets: bool,
) -> dict[GroupKey, _Merged]:
    """Sum count, sum, errors and buckets per (step, group) in PostgreSQL and return them keyed by group."""
    query, params = _merge_query(name, window, filter_dict, groups, error_rule, with_buckets)
    with db.connection(stale_ok=True) as conn, conn.transaction():
        conn.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(MERGE_WORK_MEM)))
        with conn.cursor(row_factory=dict_row) as cur, timed_query("metrics.merge"):
            cur.execute(query, params)
            rows = cur.fetchall()
    if len(rows) > MAX_POINTS:
        raise ValidationError(
            "step", f"the query gives more than {MAX_POINTS} (step, group) points; use a longer step or fewer group_by labels"
        )

    merged: dict[GroupKey, _Merged] = {}
    for row in rows:
        key = tuple(row[f"g{i}"] for i in range(len(groups)))
        target = merged.get(key)
        if target is None:
            target = merged[key] = _Merged.empty(window.n_steps, error_rule is not None)
        step = row["step_index"]
        target.counts[step] = row["count"]
        target.sums[step] = row["sum"] or 0.0
        if target.errors is not None:
            target.errors[step] = row["errors"]
        buckets = row.get("buckets")
        if buckets is not None and any(buckets):
            target.bucket_steps.append(step)
            target.bucket_rows.append(np.asarray(buckets, dtype=np.int64))
    if len(merged) * window.n_steps > MAX_POINTS:
        raise ValidationError(
            "group_by", f"{len(merged)} groups x {window.n_steps} steps is over {MAX_POINTS} points; "
            "use a longer step, a label_filter or fewer group_by labels",
        )
    return merged


def _group_keys(merged: dict[GroupKey, _Merged], groups: list[str]) -> list[GroupKey]:
    """Return the groups to report, sorted; an ungrouped series is reported even with no rows."""
    if not merged and not groups:
        return [()]
    return sorted(merged, key=lambda key: tuple("" if v is None else v for v in key))


def _optional(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


# --- public queries --------------------------------------------------------------------------------


def latency_series(
    db: Database, name: str, start: datetime, end: datetime, step: timedelta, *,
    label_filter: Mapping[str, object] | None = None, group_by: Sequence[str] | None = None,
    error_rule: ErrorRule | None = None,
) -> list[LatencyPoint]:
    """Return one LatencyPoint per step (and per group) of histogram series `name` from `start` to `end`.

    `label_filter` keeps rows whose labels contain those pairs. `group_by` splits the series by those
    labels, and every group seen in the window gets every step. `error_rule` defaults to
    DEFAULT_ERROR_RULES[name] (HTTP status >= 500, DB outcome = error); without a rule the error
    count and rate are None. Points are ordered by group, then time. With `group_by` and no rows in
    the window there is no group to report, so the list is empty.
    """
    _check_name(name)
    window = _make_window(start, end, step)
    return _latency_points(db, name, window, label_filter, group_by, error_rule)


def summary(
    db: Database, name: str, start: datetime, end: datetime, *,
    label_filter: Mapping[str, object] | None = None, error_rule: ErrorRule | None = None,
) -> LatencyPoint:
    """Return one LatencyPoint for the whole window from `start` to `end`, merged over every label set."""
    _check_name(name)
    window = _make_window(start, end, None)
    return _latency_points(db, name, window, label_filter, None, error_rule)[0]


def _latency_points(
    db: Database, name: str, window: _Window, label_filter: Mapping[str, object] | None,
    group_by: Sequence[str] | None, error_rule: ErrorRule | None,
) -> list[LatencyPoint]:
    filter_dict, groups = _check_labels(label_filter, group_by)
    rule = error_rule if error_rule is not None else DEFAULT_ERROR_RULES.get(name)
    merged = _fetch_merged(db, name, window, filter_dict, groups, rule, with_buckets=True)

    points: list[LatencyPoint] = []
    for key in _group_keys(merged, groups):
        data = merged.get(key) or _Merged.empty(window.n_steps, rule is not None)
        percentiles = data.step_quantiles(window.n_steps, QUANTILES)
        group = dict(zip(groups, key))
        for i in range(window.n_steps):
            begin, finish = window.bounds(i)
            count = int(data.counts[i])
            errors = None if data.errors is None else int(data.errors[i])
            points.append(LatencyPoint(
                start=begin,
                end=finish,
                group=group,
                count=count,
                errors=errors,
                rate_per_s=count / (finish - begin).total_seconds() if count else None,
                error_rate=errors / count if count and errors is not None else None,
                mean_s=float(data.sums[i]) / count if count else None,
                p50_s=_optional(percentiles[i, 0]),
                p95_s=_optional(percentiles[i, 1]),
                p99_s=_optional(percentiles[i, 2]),
            ))
    return points


def counter_series(
    db: Database, name: str, start: datetime, end: datetime, step: timedelta, *,
    label_filter: Mapping[str, object] | None = None, group_by: Sequence[str] | None = None,
) -> list[CounterPoint]:
    """Return one CounterPoint per step (and per group) of series `name`, summing `count` only.

    Works for count-only series such as aim_trust_score_changes and for the counts of histogram series.
    """
    _check_name(name)
    window = _make_window(start, end, step)
    filter_dict, groups = _check_labels(label_filter, group_by)
    merged = _fetch_merged(db, name, window, filter_dict, groups, None, with_buckets=False)

    points: list[CounterPoint] = []
    for key in _group_keys(merged, groups):
        data = merged.get(key) or _Merged.empty(window.n_steps, False)
        group = dict(zip(groups, key))
        for i in range(window.n_steps):
            begin, finish = window.bounds(i)
            count = int(data.counts[i])
            rate = count / (finish - begin).total_seconds() if count else None
            points.append(CounterPoint(start=begin, end=finish, group=group, count=count, rate_per_s=rate))
    return points


def cache_hit_rates(
    db: Database, start: datetime, end: datetime, step: timedelta, *, name: str = CACHE_METRIC,
) -> list[CacheHitRatePoint]:
    """Return per step and per cache the hit rate (l1_hit + l2_hit) / lookups; None when there were no lookups.

    Points are ordered by cache, then time. Results other than l1_hit, l2_hit and miss are ignored.
    """
    counters = counter_series(db, name, start, end, step, group_by=["cache", "result"])
    cells: dict[tuple[str | None, datetime], dict[str, Any]] = {}
    for point in counters:
        cell = cells.setdefault(
            (point.group["cache"], point.start), {"end": point.end, "l1_hit": 0, "l2_hit": 0, "miss": 0}
        )
        result = point.group["result"]
        if result in cell:
            cell[result] += point.count

    points = []
    for (cache, begin), cell in sorted(cells.items(), key=lambda item: (item[0][0] or "", item[0][1])):
        hits = sum(cell[result] for result in CACHE_HIT_RESULTS)
        lookups = hits + cell[CACHE_MISS_RESULT]
        points.append(CacheHitRatePoint(
            start=begin,
            end=cell["end"],
            cache=cache,
            lookups=lookups,
            l1_hits=cell["l1_hit"],
            l2_hits=cell["l2_hit"],
            misses=cell[CACHE_MISS_RESULT],
            hit_rate=hits / lookups if lookups else None,
        ))
    return points


def heatmap(
    db: Database, name: str, start: datetime, end: datetime, step: timedelta, *,
    label_filter: Mapping[str, object] | None = None,
) -> Heatmap:
    """Return the latency heatmap of series `name`: observation counts per (step, bucket), merged over label sets."""
    _check_name(name)
    window = _make_window(start, end, step)
    filter_dict, _ = _check_labels(label_filter, None)
    merged = _fetch_merged(db, name, window, filter_dict, [], None, with_buckets=True)

    step_starts = [window.bounds(i)[0] for i in range(window.n_steps)]
    data = merged.get(()) or _Merged.empty(window.n_steps, False)
    dense = data.dense_buckets(window.n_steps)
    used = np.nonzero(dense.sum(axis=0))[0]
    if used.size == 0:
        empty = np.zeros(0)
        return Heatmap(step_starts, empty, empty, np.zeros((window.n_steps, 0), dtype=np.int64))

    first, last = int(used[0]), int(used[-1])
    lower = np.array([0.0, *histogram.BOUNDARIES])
    upper = np.array([*histogram.BOUNDARIES, math.inf])
    return Heatmap(step_starts, lower[first:last + 1], upper[first:last + 1], dense[:, first:last + 1])


def merged_buckets(
    db: Database, name: str, start: datetime, end: datetime, *, label_filter: Mapping[str, object] | None = None,
) -> np.ndarray:
    """Return the dense bucket counts of series `name` merged over the window and every label set.

    Pass the result to `histogram.quantiles` for quantiles other than p50, p95 and p99.
    """
    _check_name(name)
    window = _make_window(start, end, None)
    filter_dict, _ = _check_labels(label_filter, None)
    merged = _fetch_merged(db, name, window, filter_dict, [], None, with_buckets=True)
    data = merged.get(()) or _Merged.empty(1, False)
    return data.dense_buckets(1)[0]
