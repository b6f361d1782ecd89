"""Read the counts behind the trust factors from PostgreSQL, for one agent or a batch.

Each source is one grouped aggregate query over the batch's agent ids, so a batch of agents costs
four queries whatever its size, and each query can walk the per-agent indexes
(`verification_events_list_by_agent`, `alerts_list_by_agent`, `agent_feedback_list_by_agent`,
the `agent_mcp_connections` primary key, `mcp_attestations_list_by_agent`). A single agent goes
through the same queries with a one-element list, so batch and single results agree.

Every query is scoped by organization and measured up to one scoring time, `as_of`, so all
factors of a batch describe the same moment.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, Sequence

import psycopg

from aim.db.pool import Database
from aim.trust import factors
from aim.trust.factors import EVENT_WINDOW_DAYS, UPTIME_WINDOW_SECONDS, UPTIME_WINDOWS
from aim.trust.inputs import FactorInputs

logger = logging.getLogger(__name__)

# Verification reasons of requests that reached the capability check. The check either failed
# (capability_not_granted) or passed, and then a later step decided (trust_below_threshold or ok).
CAPABILITY_CHECKED_REASONS = ("ok", "capability_not_granted", "trust_below_threshold")
CAPABILITY_DRIFT_ALERT = "capability_drift"

# Lowest possible keyset position, so the first page needs no special-cased query.
_START_CREATED_AT = "-infinity"
_START_ID = uuid.UUID(int=0)


@dataclass(frozen=True)
class AgentSnapshot:
    """An agent's stored trust state and the factor inputs read for it at `as_of`."""

    agent_id: uuid.UUID
    created_at: datetime
    trust_score: Decimal
    trust_factors: dict[str, Any]
    inputs: FactorInputs


def _window_index_sql(column: str) -> str:
    # Whole windows between the event and the scoring time: 0 for the most recent window.
    return f"floor(extract(epoch FROM %(as_of)s::timestamptz - {column}) / %(window_seconds)s)::int"


def _activity_mask_sql(column: str) -> str:
    return f"(1::bigint << {_window_index_sql(column)})"


_AGENT_COLUMNS = f"""
    id, created_at, trust_score, trust_factors,
    greatest(0, extract(epoch FROM %(as_of)s::timestamptz - created_at))::float8 AS age_seconds,
    CASE WHEN last_seen_at > %(uptime_since)s::timestamptz AND last_seen_at <= %(as_of)s::timestamptz
         THEN {_activity_mask_sql("last_seen_at")} ELSE 0 END AS heartbeat_mask
"""

_LOAD_AGENT_SQL = f"""
SELECT {_AGENT_COLUMNS}
FROM agents
WHERE organization_id = %(organization_id)s AND id = %(agent_id)s
"""

_PAGE_AGENTS_SQL = f"""
SELECT {_AGENT_COLUMNS}
FROM agents
WHERE organization_id = %(organization_id)s
  AND (created_at, id) > (%(after_created_at)s::timestamptz, %(after_id)s::uuid)
ORDER BY created_at, id
LIMIT %(limit)s
"""

_AGENTS_BY_ID_SQL = f"""
SELECT {_AGENT_COLUMNS}
FROM agents
WHERE organization_id = %(organization_id)s AND id = ANY(%(agent_ids)s::uuid[])
ORDER BY id
"""

_VERIFICATIONS_SQL = f"""
SELECT agent_id,
       count(*) AS signatures_total,
       count(*) FILTER (WHERE signature_valid) AS signatures_valid,
       count(*) FILTER (WHERE signature_valid AND reason <> 'trust_below_threshold') AS requests_attempted,
       count(*) FILTER (WHERE signature_valid AND reason <> 'trust_below_threshold'
                        AND decision = 'allowed') AS requests_allowed,
       count(*) FILTER (WHERE reason = ANY(%(checked_reasons)s::text[])) AS capability_checks,
       count(*) FILTER (WHERE reason = 'capability_not_granted') AS capability_violations,
       coalesce(bit_or({_activity_mask_sql("created_at")})
                FILTER (WHERE signature_valid AND created_at > %(uptime_since)s::timestamptz), 0) AS activity_mask
FROM verification_events
WHERE agent_id = ANY(%(agent_ids)s::uuid[])
  AND organization_id = %(organization_id)s
  AND created_at > %(events_since)s::timestamptz
  AND created_at <= %(as_of)s::timestamptz
GROUP BY agent_id
"""

# An alert concerns an agent when the agent is in related_agent_ids or is the alert's resource, and
# UNION drops the duplicate when both hold. Each agent id probes the GIN index with `@>` on its own:
# one `&&` against the whole batch array makes the planner pick a sequential scan whose overlap
# test costs (alerts x batch size) comparisons. Drift alerts count in the drift factor only, while
# unresolved or resolved within the event window; other alerts count while unresolved.
_ALERTS_SQL = """
WITH batch AS (
    SELECT DISTINCT unnest(%(agent_ids)s::uuid[]) AS agent_id
), linked AS (
    SELECT al.id, batch.agent_id, al.alert_type, al.severity, al.status
    FROM batch
    JOIN alerts al ON al.related_agent_ids @> ARRAY[batch.agent_id]
    WHERE al.organization_id = %(organization_id)s
      AND (al.status <> 'resolved'
           OR (al.alert_type = %(drift_alert)s AND al.resolved_at > %(events_since)s::timestamptz))
    UNION
    SELECT al.id, batch.agent_id, al.alert_type, al.severity, al.status
    FROM batch
    JOIN alerts al ON al.organization_id = %(organization_id)s
                  AND al.resource_type = 'agent'
                  AND al.resource_id = batch.agent_id::text
    WHERE al.status <> 'resolved'
       OR (al.alert_type = %(drift_alert)s AND al.resolved_at > %(events_since)s::timestamptz)
)
SELECT agent_id,
       count(*) FILTER (WHERE alert_type = %(drift_alert)s) AS drift_events,
       count(*) FILTER (WHERE alert_type <> %(drift_alert)s AND status <> 'resolved' AND severity = 'critical') AS critical,
       count(*) FILTER (WHERE alert_type <> %(drift_alert)s AND status <> 'resolved' AND severity = 'high') AS high,
       count(*) FILTER (WHERE alert_type <> %(drift_alert)s AND status <> 'resolved' AND severity = 'medium') AS medium,
       count(*) FILTER (WHERE alert_type <> %(drift_alert)s AND status <> 'resolved' AND severity = 'low') AS low,
       count(*) FILTER (WHERE alert_type <> %(drift_alert)s AND status <> 'resolved' AND severity = 'info') AS info
FROM linked
GROUP BY agent_id
"""

_FEEDBACK_SQL = """
SELECT agent_id, count(*) AS rating_count, sum(rating)::bigint AS rating_sum
FROM agent_feedback
WHERE agent_id = ANY(%(agent_ids)s::uuid[])
  AND organization_id = %(organization_id)s
  AND created_at <= %(as_of)s::timestamptz
GROUP BY agent_id
"""

# Correlated subqueries here are single index probes per agent, cheaper than aggregating every
# attestation an agent ever made just to learn whether one exists.
_MCP_SQL = f"""
SELECT a.agent_id,
       EXISTS (SELECT 1 FROM agent_mcp_connections c
               WHERE c.agent_id = a.agent_id AND c.organization_id = %(organization_id)s)
       OR EXISTS (SELECT 1 FROM mcp_attestations m
                  WHERE m.agent_id = a.agent_id AND m.organization_id = %(organization_id)s
                    AND m.attested_at <= %(as_of)s::timestamptz) AS mcp_connected,
       coalesce((SELECT bit_or({_activity_mask_sql("m.attested_at")})
                 FROM mcp_attestations m
                 WHERE m.agent_id = a.agent_id AND m.organization_id = %(organization_id)s
                   AND m.attested_at > %(uptime_since)s::timestamptz
                   AND m.attested_at <= %(as_of)s::timestamptz), 0) AS activity_mask
FROM unnest(%(agent_ids)s::uuid[]) AS a(agent_id)
"""


def database_now(db: Database, conn: psycopg.Connection | None = None) -> datetime:
    """Return the database's transaction time, the clock that stamps events' `created_at`."""
    return db.fetch_value("trust.clock", "SELECT now()", conn=conn)


def _time_params(as_of: datetime) -> dict[str, Any]:
    return {
        "as_of": as_of,
        "window_seconds": UPTIME_WINDOW_SECONDS,
        "uptime_since": as_of - timedelta(seconds=UPTIME_WINDOW_SECONDS * UPTIME_WINDOWS),
        "events_since": as_of - timedelta(days=EVENT_WINDOW_DAYS),
    }


def _snapshot_from_row(row: dict[str, Any]) -> AgentSnapshot:
    inputs = FactorInputs(age_seconds=float(row["age_seconds"]), activity_mask=int(row["heartbeat_mask"]))
    return AgentSnapshot(row["id"], row["created_at"], row["trust_score"], row["trust_factors"], inputs)


def load_agent(
    db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, *, as_of: datetime,
    conn: psycopg.Connection | None = None, lock: bool = False,
) -> AgentSnapshot | None:
    """Read one agent's trust state, or None when it is not in the organization.

    With `lock`, the row is held FOR NO KEY UPDATE until `conn`'s transaction ends, so concurrent
    recalculations of the same agent run one after the other. That lock mode still lets other
    transactions insert events that reference the agent.
    """
    query = _LOAD_AGENT_SQL + (" FOR NO KEY UPDATE" if lock else "")
    params = {"organization_id": organization_id, "agent_id": agent_id, **_time_params(as_of)}
    row = db.fetch_one("trust.load_agent", query, params, conn=conn)
    return None if row is None else _snapshot_from_row(row)


def load_agents(
    db: Database, organization_id: uuid.UUID, agent_ids: Sequence[uuid.UUID], *, as_of: datetime,
    conn: psycopg.Connection | None = None,
) -> list[AgentSnapshot]:
    """Read the agents of `agent_ids` that are in the organization, ordered by id, without locking.

    The returned snapshots carry only the agents' own columns; pass them to `gather_inputs`.
    """
    params = {"organization_id": organization_id, "agent_ids": list(agent_ids), **_time_params(as_of)}
    rows = db.fetch_all("trust.load_agents", _AGENTS_BY_ID_SQL, params, conn=conn)
    return [_snapshot_from_row(row) for row in rows]


def page_agents(
    db: Database, organization_id: uuid.UUID, *, as_of: datetime, limit: int,
    after: tuple[datetime, uuid.UUID] | None = None, conn: psycopg.Connection | None = None,
) -> list[AgentSnapshot]:
    """Read up to `limit` agents ordered by (created_at, id), starting after the keyset `after`.

    The returned snapshots carry only the agents' own columns; pass them to `gather_inputs`.
    """
    after_created_at, after_id = after if after is not None else (_START_CREATED_AT, _START_ID)
    params = {
        "organization_id": organization_id,
        "after_created_at": after_created_at,
        "after_id": after_id,
        "limit": limit,
        **_time_params(as_of),
    }
    rows = db.fetch_all("trust.page_agents", _PAGE_AGENTS_SQL, params, conn=conn)
    return [_snapshot_from_row(row) for row in rows]


def gather_inputs(
    db: Database, organization_id: uuid.UUID, agents: Sequence[AgentSnapshot], *, as_of: datetime,
    conn: psycopg.Connection | None = None,
) -> list[AgentSnapshot]:
    """Return `agents` with their factor inputs filled in from the event tables, in the same order.

    `agents` come from `load_agent` or `page_agents` with the same `as_of`.
    """
    if not agents:
        return []
    agent_ids = [agent.agent_id for agent in agents]
    params = {
        "organization_id": organization_id,
        "agent_ids": agent_ids,
        "checked_reasons": list(CAPABILITY_CHECKED_REASONS),
        "drift_alert": CAPABILITY_DRIFT_ALERT,
        **_time_params(as_of),
    }
    verifications = {
        row["agent_id"]: row
        for row in db.fetch_all("trust.gather_verifications", _VERIFICATIONS_SQL, params, conn=conn)
    }
    alerts = {row["agent_id"]: row for row in db.fetch_all("trust.gather_alerts", _ALERTS_SQL, params, conn=conn)}
    feedback = {row["agent_id"]: row for row in db.fetch_all("trust.gather_feedback", _FEEDBACK_SQL, params, conn=conn)}
    mcp = {row["agent_id"]: row for row in db.fetch_all("trust.gather_mcp", _MCP_SQL, params, conn=conn)}

    return [
        _merge(agent, verifications.get(agent.agent_id), alerts.get(agent.agent_id),
               feedback.get(agent.agent_id), mcp[agent.agent_id])
        for agent in agents
    ]


def _merge(
    agent: AgentSnapshot, verification: dict[str, Any] | None, alert: dict[str, Any] | None,
    rating: dict[str, Any] | None, mcp: dict[str, Any],
) -> AgentSnapshot:
    counts: dict[str, Any] = {}
    activity_mask = agent.inputs.activity_mask | int(mcp["activity_mask"])
    if verification is not None:
        activity_mask |= int(verification["activity_mask"])
        for key in (
            "signatures_total", "signatures_valid", "requests_attempted", "requests_allowed",
            "capability_checks", "capability_violations",
        ):
            counts[key] = int(verification[key])
    if alert is not None:
        counts["drift_events"] = int(alert["drift_events"])
        counts["open_alerts"] = {severity: int(alert[severity]) for severity in factors.ALERT_SEVERITY_PENALTIES}
    if rating is not None:
        counts["rating_count"] = int(rating["rating_count"])
        counts["rating_sum"] = int(rating["rating_sum"])
    inputs = replace(agent.inputs, activity_mask=activity_mask, mcp_connected=bool(mcp["mcp_connected"]), **counts)
    return replace(agent, inputs=inputs)


def gather_agent(
    db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, *, as_of: datetime | None = None,
    conn: psycopg.Connection | None = None,
) -> AgentSnapshot | None:
    """Read one agent's trust state and factor inputs without locking, or None when it is not found.

    `as_of` defaults to the database's current time.
    """
    if as_of is None:
        as_of = database_now(db, conn)
    agent = load_agent(db, organization_id, agent_id, as_of=as_of, conn=conn)
    if agent is None:
        return None
    return gather_inputs(db, organization_id, [agent], as_of=as_of, conn=conn)[0]
