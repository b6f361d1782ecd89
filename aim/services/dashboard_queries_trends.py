"""Aggregate reads for the audit, alerts and trust dashboard pages.

Every function runs one named query (the name labels the `aim_db_query_duration_seconds` roll-ups)
on the replica when there is one (`stale_ok=True`), and returns plain dicts. Each query is served by
an index from the migrations, noted at the query, and none returns more rows than its chart or
table shows. The dashboard caches the results for a short time with `st.cache_data`. These
functions cache nothing themselves, because services do not import Streamlit.

Time buckets are computed in the viewer's IANA timezone, so a "day" bucket starts at local midnight
and the dashboard's charts agree with its tables and CSV exports.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any

from psycopg import sql

from aim.db.pool import Database
from aim.errors import ValidationError
from aim.services.listing import AUDIT_RESULTS

logger = logging.getLogger(__name__)

BUCKET_UNITS = ("minute", "hour", "day")
# Columns of audit_logs whose distinct values the filter menus offer. Each is the leading column
# after organization_id of an index, which the loose index scan below walks.
AUDIT_DISTINCT_COLUMNS = {
    "action": "action",            # audit_logs_list_by_action
    "resource_type": "resource_type",  # audit_logs_list_by_resource
    "actor_type": "actor_type",    # no index of its own; four values, so the scan stops early
}
# Equality filters of the audit page, by filter name, mapped to their columns.
AUDIT_FILTER_COLUMNS = {"actor": "actor_id", "action": "action", "resource_type": "resource_type", "result": "result"}
MAX_DISTINCT_VALUES = 500
MAX_HISTOGRAM_BINS = 100
MAX_MOVERS = 100
OPEN_ALERT_STATUSES = ("open", "acknowledged")
# The aggregates below read up to millions of rows, so they get a longer statement timeout than the
# pool's default (AIM_DB_STATEMENT_TIMEOUT_MS, 5 s). The dashboard caches their results and shows
# its tables before them, so a slow aggregate delays only its own chart.
AGGREGATE_TIMEOUT = "15s"
# PostgreSQL estimates as many time buckets as rows (date_trunc of a nearly unique column), so it
# plans a sort-based aggregate in one process. These settings, for the bucket count only, let it
# hash the few real buckets while two workers scan the partitions. On 5 million rows (30 days of a
# 10-million-row log, 2-core machine under load) the query took 2.1 s instead of 6.1 s.
BUCKET_COUNT_SETTINGS = (
    f"SET LOCAL statement_timeout = '{AGGREGATE_TIMEOUT}'",
    "SET LOCAL parallel_setup_cost = 0",
    "SET LOCAL parallel_tuple_cost = 0",
    "SET LOCAL enable_sort = off",
)
# The trust queries sort a window of history rows by agent: about a million rows for 30 days of
# 100,000 agents. With PostgreSQL's default work_mem of 4 MB that sort spills to disk, and the movers
# query took 10.7 s instead of 2.6 s (2-core machine under load from other processes).
SORT_WORK_MEM = "64MB"


def _check_window(start: datetime, end: datetime) -> None:
    for field, value in (("start", start), ("end", end)):
        if not isinstance(value, datetime) or value.tzinfo is None:
            raise ValidationError(field, f"{value!r} is not an aware datetime; expected e.g. datetime.now(timezone.utc)")
    if end <= start:
        raise ValidationError("end", f"{end.isoformat()} is not after start {start.isoformat()}; expected start < end")


def _check_unit(unit: str) -> None:
    if unit not in BUCKET_UNITS:
        raise ValidationError("unit", f"{unit!r} is invalid; expected one of {', '.join(BUCKET_UNITS)}")


def _fetch_all_sorted(db: Database, name: str, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """Run a read that sorts many history rows, with SORT_WORK_MEM and AGGREGATE_TIMEOUT for this transaction only."""
    with db.connection(stale_ok=True) as conn, conn.transaction():
        conn.execute(sql.SQL("SET LOCAL work_mem = {}").format(sql.Literal(SORT_WORK_MEM)))
        conn.execute(sql.SQL("SET LOCAL statement_timeout = {}").format(sql.Literal(AGGREGATE_TIMEOUT)))
        return db.fetch_all(name, query, params, conn=conn)


# --- audit logs -------------------------------------------------------------------------------


def audit_events_per_bucket(
    db: Database, organization_id: uuid.UUID, start: datetime, end: datetime, *, unit: str = "hour",
    tz: str = "UTC", filters: dict[str, str | None] | None = None,
) -> list[dict[str, Any]]:
    """Count audit events per time bucket and result within [start, end) and the page's filters.

    Returns rows {bucket (aware datetime, bucket start in `tz`), result, events}, ordered by bucket.
    Buckets without events are absent. `filters` maps actor, action, resource_type and result to an
    exact value (None or "" means any), as in `listing.list_audit_logs`, so the chart counts the same
    rows as the table. With a result filter the query reads audit_logs_list_by_result; otherwise the
    planner picks the index of the other filter or audit_logs_list_by_time.
    """
    _check_window(start, end)
    _check_unit(unit)
    conditions = ["organization_id = %(org)s", "occurred_at >= %(start)s", "occurred_at < %(end)s"]
    params: dict[str, Any] = {"org": organization_id, "start": start, "end": end, "unit": unit, "tz": tz}
    for name, value in sorted((filters or {}).items()):
        if value in (None, ""):
            continue
        if name not in AUDIT_FILTER_COLUMNS:
            raise ValidationError(name, f"is not an audit filter; expected one of {', '.join(AUDIT_FILTER_COLUMNS)}")
        if name == "result" and value not in AUDIT_RESULTS:
            raise ValidationError("result", f"{value!r} is invalid; expected one of {', '.join(AUDIT_RESULTS)}")
        conditions.append(f"{AUDIT_FILTER_COLUMNS[name]} = %({name})s")
        params[name] = value
    # date_trunc with a zone argument returns the instant at which the local bucket starts, so
    # daylight-saving changes neither merge nor split buckets.
    query = f"""
        SELECT date_trunc(%(unit)s, occurred_at, %(tz)s) AS bucket, result, count(*) AS events
        FROM audit_logs
        WHERE {' AND '.join(conditions)}
        GROUP BY 1, 2
        ORDER BY 1, 2
    """
    with db.connection(stale_ok=True) as conn, conn.transaction():
        for setting in BUCKET_COUNT_SETTINGS:
            conn.execute(setting)
        return db.fetch_all("dashboard.audit_events_per_bucket", query, params, conn=conn)


def audit_distinct_values(
    db: Database, organization_id: uuid.UUID, column: str, *, limit: int = MAX_DISTINCT_VALUES
) -> list[str]:
    """Return up to `limit` distinct values of an audit_logs column, in order, for a filter menu.

    A loose index scan (one index probe per distinct value, in a recursive query) keeps the cost
    proportional to the number of distinct values rather than the number of rows.
    """
    if column not in AUDIT_DISTINCT_COLUMNS:
        raise ValidationError("column", f"{column!r} is invalid; expected one of {', '.join(AUDIT_DISTINCT_COLUMNS)}")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_DISTINCT_VALUES:
        raise ValidationError("limit", f"{limit!r} is invalid; expected a whole number from 1 to {MAX_DISTINCT_VALUES}")
    name = AUDIT_DISTINCT_COLUMNS[column]
    query = f"""
        WITH RECURSIVE walk AS (
            (SELECT {name} AS value FROM audit_logs WHERE organization_id = %(org)s ORDER BY {name} LIMIT 1)
            UNION ALL
            SELECT (SELECT {name} FROM audit_logs
                    WHERE organization_id = %(org)s AND {name} > walk.value ORDER BY {name} LIMIT 1)
            FROM walk WHERE walk.value IS NOT NULL
        )
        SELECT value FROM walk WHERE value IS NOT NULL LIMIT %(limit)s
    """
    rows = db.fetch_all(
        f"dashboard.audit_distinct_{column}", query, {"org": organization_id, "limit": limit}, stale_ok=True
    )
    return [row["value"] for row in rows]


# --- alerts -----------------------------------------------------------------------------------


def alert_counts(db: Database, organization_id: uuid.UUID) -> list[dict[str, Any]]:
    """Count open and acknowledged alerts per status and severity.

    Resolved alerts accumulate without bound, so they are not counted here; the alerts list gives
    their (possibly estimated) total. Served by alerts_list_by_status.
    """
    return db.fetch_all(
        "dashboard.alert_counts",
        """
        SELECT status, severity, count(*) AS alerts
        FROM alerts
        WHERE organization_id = %s AND status = ANY(%s)
        GROUP BY status, severity
        """,
        (organization_id, list(OPEN_ALERT_STATUSES)),
        stale_ok=True,
    )


# --- trust ------------------------------------------------------------------------------------


def _local_series_sql() -> str:
    """SQL for the bucket starts covering [start, end) in zone %(tz)s, as aware instants `bucket`.

    The series steps through local wall-clock time, so day buckets start at local midnight on both
    sides of a daylight-saving change.
    """
    return """
        SELECT local_start AT TIME ZONE %(tz)s AS bucket, local_start
        FROM generate_series(
            date_trunc(%(unit)s, %(start)s::timestamptz AT TIME ZONE %(tz)s),
            (%(end)s::timestamptz - interval '1 microsecond') AT TIME ZONE %(tz)s,
            ('1 ' || %(unit)s)::interval
        ) AS local_start
    """


def trust_average_series(
    db: Database, organization_id: uuid.UUID, start: datetime, end: datetime, *, unit: str = "day",
    tz: str = "UTC",
) -> list[dict[str, Any]]:
    """Return the organization's mean trust score at the end of each bucket in [start, end).

    Rows are {bucket, average (None before any agent had a score), agents, changes}, one per
    bucket. `agents` counts the agents that had a score by then and still exist now, `changes` the
    score changes recorded in the bucket.

    Each agent's score is carried forward from its last recorded history row. The score an agent
    had at `start` is the `previous_score` of its first row from `start` on, or its current score
    when nothing changed since. So no history before `start` is read. A first row without a
    previous score adds the agent at that row's time. The history rows from `start` to now are read
    once (trust_score_history_list_by_time) and sorted by agent to pair each row with the one before.
    """
    _check_window(start, end)
    _check_unit(unit)
    query = f"""
        WITH changes AS MATERIALIZED (
            SELECT agent_id, created_at, score, previous_score,
                   lag(score) OVER (PARTITION BY agent_id ORDER BY created_at, id) AS before
            FROM trust_score_history
            WHERE organization_id = %(org)s AND created_at >= %(start)s
        ),
        entries AS (
            SELECT CASE
                       WHEN f.agent_id IS NOT NULL AND f.previous_score IS NULL THEN f.created_at
                       ELSE least(greatest(a.created_at, %(start)s), coalesce(f.created_at, 'infinity'))
                   END AS at,
                   CASE
                       WHEN f.agent_id IS NULL THEN a.trust_score
                       ELSE coalesce(f.previous_score, f.score)
                   END AS score
            FROM agents a
            LEFT JOIN changes f ON f.agent_id = a.id AND f.before IS NULL
            WHERE a.organization_id = %(org)s
        ),
        events AS (
            SELECT at, score AS amount, 1 AS agents, 0 AS changes FROM entries WHERE at < %(end)s
            UNION ALL
            SELECT created_at, score - coalesce(before, previous_score, score), 0, 1
            FROM changes WHERE created_at < %(end)s
        ),
        per_bucket AS (
            SELECT date_trunc(%(unit)s, at AT TIME ZONE %(tz)s) AS local_start,
                   sum(amount) AS amount, sum(agents) AS agents, sum(changes) AS changes
            FROM events GROUP BY 1
        ),
        series AS ({_local_series_sql()})
        SELECT series.bucket,
               sum(coalesce(p.amount, 0)) OVER w / nullif(sum(coalesce(p.agents, 0)) OVER w, 0) AS average,
               sum(coalesce(p.agents, 0)) OVER w AS agents,
               coalesce(p.changes, 0) AS changes
        FROM series LEFT JOIN per_bucket p USING (local_start)
        WINDOW w AS (ORDER BY series.local_start)
        ORDER BY series.local_start
    """
    params = {"org": organization_id, "start": start, "end": end, "unit": unit, "tz": tz}
    rows = _fetch_all_sorted(db, "dashboard.trust_average_series", query, params)
    return [
        {
            "bucket": row["bucket"],
            "average": None if row["average"] is None else float(row["average"]),
            "agents": int(row["agents"]),
            "changes": int(row["changes"]),
        }
        for row in rows
    ]


def trust_distribution(
    db: Database, organization_id: uuid.UUID, *, bins: int = 20, status: str | None = None
) -> list[dict[str, Any]]:
    """Return the histogram of current agent trust scores: `bins` equal-width bins over [0, 1].

    Rows are {bin (1-based), lower, upper, agents} for every bin, including empty ones. A score of
    exactly 1 counts in the last bin. PostgreSQL's width_bucket bins the scores, so only `bins` rows
    leave the server. An index-only scan of agents_list_by_trust serves the unfiltered query.
    """
    if isinstance(bins, bool) or not isinstance(bins, int) or not 1 <= bins <= MAX_HISTOGRAM_BINS:
        raise ValidationError("bins", f"{bins!r} is invalid; expected a whole number from 1 to {MAX_HISTOGRAM_BINS}")
    status_condition = "AND status = %(status)s" if status else ""
    query = f"""
        SELECT least(width_bucket(trust_score, 0, 1, %(bins)s), %(bins)s) AS bin, count(*) AS agents
        FROM agents
        WHERE organization_id = %(org)s {status_condition}
        GROUP BY 1
    """
    rows = db.fetch_all(
        "dashboard.trust_distribution", query, {"org": organization_id, "bins": bins, "status": status},
        stale_ok=True,
    )
    counts = {int(row["bin"]): int(row["agents"]) for row in rows}
    return [
        {"bin": i, "lower": (i - 1) / bins, "upper": i / bins, "agents": counts.get(i, 0)}
        for i in range(1, bins + 1)
    ]


def trust_summary(db: Database, organization_id: uuid.UUID) -> dict[str, Any]:
    """Return {agents, average, median, below_threshold, critical_ready} over the current trust scores.

    `below_threshold` counts agents under 0.50, the medium risk-class threshold, so they cannot pass
    medium-risk actions. `critical_ready` counts agents at or above 0.85, the critical threshold.
    """
    row = db.fetch_one(
        "dashboard.trust_summary",
        """
        SELECT count(*) AS agents, avg(trust_score) AS average,
               percentile_cont(0.5) WITHIN GROUP (ORDER BY trust_score) AS median,
               count(*) FILTER (WHERE trust_score < 0.5) AS below_threshold,
               count(*) FILTER (WHERE trust_score >= 0.85) AS critical_ready
        FROM agents WHERE organization_id = %s
        """,
        (organization_id,),
        stale_ok=True,
    )
    assert row is not None
    return {
        "agents": int(row["agents"]),
        "average": None if row["average"] is None else float(row["average"]),
        "median": None if row["median"] is None else float(row["median"]),
        "below_threshold": int(row["below_threshold"]),
        "critical_ready": int(row["critical_ready"]),
    }


def trust_movers(
    db: Database, organization_id: uuid.UUID, start: datetime, end: datetime, *, limit: int = 10
) -> list[dict[str, Any]]:
    """Return the agents whose trust rose most and fell most within [start, end), with reasons.

    Rows are {direction ('up' or 'down'), agent_id, name, agent_type, current_score, score_before,
    score_after, net_change, changes, largest_change, largest_reason, largest_actor, largest_at,
    latest_reason}, up to `limit` per direction, biggest first. `score_before` is the score before
    the window's first change, `score_after` the score after its last, and `net_change` their
    difference. `largest_*` describe the single largest change in the window, measured from the row
    recorded before it. The window's rows are ranked per agent once. The reasons of each listed agent
    then come from trust_score_history_list_by_agent.
    """
    _check_window(start, end)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_MOVERS:
        raise ValidationError("limit", f"{limit!r} is invalid; expected a whole number from 1 to {MAX_MOVERS}")
    query = """
        WITH ranked_rows AS (
            SELECT agent_id, score, coalesce(previous_score, score) AS before,
                   row_number() OVER (PARTITION BY agent_id ORDER BY created_at, id) AS from_first,
                   row_number() OVER (PARTITION BY agent_id ORDER BY created_at DESC, id DESC) AS from_last
            FROM trust_score_history
            WHERE organization_id = %(org)s AND created_at >= %(start)s AND created_at < %(end)s
        ),
        window_changes AS MATERIALIZED (
            SELECT agent_id,
                   max(before) FILTER (WHERE from_first = 1) AS score_before,
                   max(score) FILTER (WHERE from_last = 1) AS score_after,
                   count(*) AS changes
            FROM ranked_rows GROUP BY agent_id
        ),
        ranked AS (
            (SELECT 'up' AS direction, * FROM window_changes WHERE score_after > score_before
             ORDER BY score_after - score_before DESC, agent_id LIMIT %(limit)s)
            UNION ALL
            (SELECT 'down' AS direction, * FROM window_changes WHERE score_after < score_before
             ORDER BY score_after - score_before ASC, agent_id LIMIT %(limit)s)
        )
        SELECT r.direction, r.agent_id, a.name, a.agent_type, a.trust_score AS current_score, r.score_before,
               r.score_after, r.score_after - r.score_before AS net_change, r.changes,
               largest.delta AS largest_change, largest.reason AS largest_reason, largest.actor AS largest_actor,
               largest.created_at AS largest_at, latest.reason AS latest_reason
        FROM ranked r
        JOIN agents a ON a.id = r.agent_id AND a.organization_id = %(org)s
        CROSS JOIN LATERAL (
            SELECT delta, reason, actor, created_at FROM (
                SELECT score - coalesce(lag(score) OVER (ORDER BY created_at, id), previous_score, score) AS delta,
                       reason, actor, created_at, id
                FROM trust_score_history h
                WHERE h.agent_id = r.agent_id AND h.created_at >= %(start)s AND h.created_at < %(end)s
            ) steps
            ORDER BY abs(delta) DESC, created_at DESC, id DESC
            LIMIT 1
        ) largest
        CROSS JOIN LATERAL (
            SELECT reason FROM trust_score_history h
            WHERE h.agent_id = r.agent_id AND h.created_at >= %(start)s AND h.created_at < %(end)s
            ORDER BY created_at DESC, id DESC
            LIMIT 1
        ) latest
        ORDER BY r.direction DESC, abs(r.score_after - r.score_before) DESC, r.agent_id
    """
    params = {"org": organization_id, "start": start, "end": end, "limit": limit}
    rows = _fetch_all_sorted(db, "dashboard.trust_movers", query, params)
    for row in rows:
        for key in ("current_score", "score_before", "score_after", "net_change", "largest_change"):
            row[key] = float(row[key])
    return rows


def trust_by_agent_type(db: Database, organization_id: uuid.UUID, *, limit: int = 50) -> list[dict[str, Any]]:
    """Return per agent type {agent_type, agents, average, minimum, q1, median, q3, maximum}, largest groups first.

    Reads each agent row of the organization once, through agents_list_by_type.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_DISTINCT_VALUES:
        raise ValidationError("limit", f"{limit!r} is invalid; expected a whole number from 1 to {MAX_DISTINCT_VALUES}")
    rows = db.fetch_all(
        "dashboard.trust_by_agent_type",
        """
        SELECT agent_type, count(*) AS agents, avg(trust_score) AS average, min(trust_score) AS minimum,
               max(trust_score) AS maximum,
               percentile_cont(ARRAY[0.25, 0.5, 0.75]) WITHIN GROUP (ORDER BY trust_score) AS quartiles
        FROM agents WHERE organization_id = %s
        GROUP BY agent_type
        ORDER BY agents DESC, agent_type
        LIMIT %s
        """,
        (organization_id, limit),
        stale_ok=True,
    )
    result = []
    for row in rows:
        q1, median, q3 = row["quartiles"]
        result.append({
            "agent_type": row["agent_type"],
            "agents": int(row["agents"]),
            "average": float(row["average"]),
            "minimum": float(row["minimum"]),
            "q1": float(q1),
            "median": float(median),
            "q3": float(q3),
            "maximum": float(row["maximum"]),
        })
    return result


# --- MCP confidence ---------------------------------------------------------------------------


def mcp_confidence_series(
    db: Database, organization_id: uuid.UUID, start: datetime, end: datetime, *, unit: str = "day",
    tz: str = "UTC",
) -> list[dict[str, Any]]:
    """Return the mean MCP server confidence at the end of each bucket in [start, end).

    Rows are {bucket, average (None before any server had a recorded confidence), servers, updates}.
    `servers` counts the servers with a recorded confidence by then, `updates` the history rows in
    the bucket. The history keeps no previous value, so each server's value before `start` comes
    from one probe of mcp_confidence_history_list_by_server. Each row in the window then counts as
    the difference from the server's previous row.
    """
    _check_window(start, end)
    _check_unit(unit)
    query = f"""
        WITH baseline AS (
            SELECT s.id AS server_id, b.confidence
            FROM mcp_servers s
            CROSS JOIN LATERAL (
                SELECT confidence FROM mcp_confidence_history h
                WHERE h.mcp_server_id = s.id AND h.created_at < %(start)s
                ORDER BY h.created_at DESC, h.id DESC
                LIMIT 1
            ) b
            WHERE s.organization_id = %(org)s
        ),
        recorded AS (
            SELECT mcp_server_id AS server_id, created_at, confidence,
                   lag(confidence) OVER (PARTITION BY mcp_server_id ORDER BY created_at, id) AS before
            FROM mcp_confidence_history
            WHERE organization_id = %(org)s AND created_at >= %(start)s AND created_at < %(end)s
        ),
        events AS (
            SELECT %(start)s::timestamptz AS at, confidence AS amount, 1 AS servers, 0 AS updates FROM baseline
            UNION ALL
            SELECT r.created_at, r.confidence - coalesce(r.before, b.confidence, 0),
                   CASE WHEN r.before IS NULL AND b.confidence IS NULL THEN 1 ELSE 0 END, 1
            FROM recorded r LEFT JOIN baseline b USING (server_id)
        ),
        per_bucket AS (
            SELECT date_trunc(%(unit)s, at AT TIME ZONE %(tz)s) AS local_start,
                   sum(amount) AS amount, sum(servers) AS servers, sum(updates) AS updates
            FROM events GROUP BY 1
        ),
        series AS ({_local_series_sql()})
        SELECT series.bucket,
               sum(coalesce(p.amount, 0)) OVER w / nullif(sum(coalesce(p.servers, 0)) OVER w, 0) AS average,
               sum(coalesce(p.servers, 0)) OVER w AS servers,
               coalesce(p.updates, 0) AS updates
        FROM series LEFT JOIN per_bucket p USING (local_start)
        WINDOW w AS (ORDER BY series.local_start)
        ORDER BY series.local_start
    """
    params = {"org": organization_id, "start": start, "end": end, "unit": unit, "tz": tz}
    rows = db.fetch_all("dashboard.mcp_confidence_series", query, params, stale_ok=True)
    return [
        {
            "bucket": row["bucket"],
            "average": None if row["average"] is None else float(row["average"]),
            "servers": int(row["servers"]),
            "updates": int(row["updates"]),
        }
        for row in rows
    ]
