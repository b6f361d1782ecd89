"""Reads the dashboard shell, Agents, MCP servers and Admin pages need beyond the shared services.

Every function is scoped by organization where the data is tenant data, reads one page or one
aggregate, and never a whole table.
"""

from __future__ import annotations

import logging
import uuid
from decimal import Decimal
from typing import Any

from aim.db import keyset
from aim.db.pool import Database
from aim.errors import ValidationError
from aim.services import agents as agents_service
from aim.services import users

logger = logging.getLogger(__name__)

# Served by users_list_by_created (organization_id, created_at DESC, id DESC).
USERS = keyset.ListSpec(
    name="users.list", table="users", columns=tuple(users.USER_COLUMNS.split(", ")), sort="created_at",
    sort_type="timestamptz", equality={"role": "role"},
)


def any_user_exists(db: Database) -> bool:
    """Return True when at least one user exists in any organization (the first-run check)."""
    return bool(db.fetch_value("users.any", "SELECT EXISTS (SELECT 1 FROM users)"))


def find_active_user_by_email(db: Database, email: str) -> dict[str, Any] | None:
    """Return the active user with this email (case-insensitive) with the organization name, or None."""
    return db.fetch_one(
        "users.active_by_email",
        f"""SELECT {', '.join('u.' + c for c in users.USER_COLUMNS.split(', '))}, o.name AS organization_name
            FROM users u JOIN organizations o ON o.id = u.organization_id
            WHERE lower(u.email) = lower(%s) AND u.is_active""",
        (email.strip(),),
    )


def list_users(
    db: Database, organization_id: uuid.UUID, *, role: str | None = None, cursor: str | None = None,
    limit: int = keyset.DEFAULT_LIMIT, secret: bytes,
) -> keyset.Page:
    """Fetch one keyset page of the organization's users, newest first, optionally with one role."""
    if role is not None:
        users.validate_role(role)
    return keyset.fetch_page(
        db, USERS, scope={"organization_id": organization_id}, filters={"role": role}, cursor=cursor, limit=limit,
        secret=secret, count_threshold=1000,
    )


# --- agents in a trust range --------------------------------------------------------------------

_AGENT_LIST_COLUMNS = (
    "id", "name", "agent_type", "description", "status", "trust_score", "key_id", "key_origin", "capabilities",
    "metadata", "last_seen_at", "created_by", "created_at", "updated_at",
)
# Served by agents_list_by_trust (organization_id, trust_score DESC, id DESC): the range bounds the
# index scan on trust_score, and the other filters are checked on the rows it reads.
AGENTS_BY_TRUST_RANGE = keyset.ListSpec(
    name="agents.list_by_trust_range", table="agents", columns=_AGENT_LIST_COLUMNS, sort="trust_score",
    sort_type="numeric", equality={"status": "status", "agent_type": "agent_type"}, prefix_column="name",
)


def _check_trust_bound(field: str, value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)) or not 0 <= value <= 1:
        raise ValidationError(field, f"{value!r} is invalid; expected a trust score from 0 to 1")
    return Decimal(str(value))


def list_agents_in_trust_range(
    db: Database, organization_id: uuid.UUID, *, min_trust: float, max_trust: float, status: str | None = None,
    agent_type: str | None = None, name_prefix: str | None = None, cursor: str | None = None,
    limit: int = keyset.DEFAULT_LIMIT, secret: bytes,
) -> keyset.Page:
    """Fetch one keyset page of agents with min_trust <= trust_score <= max_trust, highest trust first.

    The other filters work as in `listing.list_agents`. Cursors are bound to the range as well as the
    filters, so a cursor from another range raises InvalidCursor. Totals are exact up to 1,000 rows
    and `about` (planner estimate) above.
    """
    low = _check_trust_bound("trust_min", min_trust)
    high = _check_trust_bound("trust_max", max_trust)
    if low > high:
        raise ValidationError("trust_min", f"{low} is above trust_max {high}; expected trust_min <= trust_max")
    if status is not None and status not in agents_service.STATUSES:
        raise ValidationError("status", f"{status!r} is invalid; expected one of {', '.join(agents_service.STATUSES)}")
    if agent_type is not None:
        agents_service.validate_agent_type(agent_type)
    limit = keyset.validate_limit(limit)
    spec = AGENTS_BY_TRUST_RANGE
    filters = {"status": status, "agent_type": agent_type, "prefix": name_prefix or None}
    filters = {name: value for name, value in filters.items() if value is not None}
    # The bounds join the fingerprinted scope, which binds a cursor to this range.
    fingerprint_scope = {"organization_id": organization_id, "trust_min": str(low), "trust_max": str(high)}
    position = None
    if cursor is not None:
        position = keyset.decode_cursor(spec, cursor, scope=fingerprint_scope, filters=filters, secret=secret)

    conditions = ["organization_id = %s", "trust_score >= %s", "trust_score <= %s"]
    params: list[Any] = [organization_id, low, high]
    if status is not None:
        conditions.append("status = %s")
        params.append(status)
    if agent_type is not None:
        conditions.append("agent_type = %s")
        params.append(agent_type)
    if name_prefix:
        conditions.append("lower(name) LIKE lower(%s) ESCAPE '\\'")
        params.append(_escape_like(name_prefix) + "%")
    base_conditions, base_params = list(conditions), list(params)

    backward = position is not None and position.direction == keyset.PREVIOUS
    if position is not None:
        comparison = ">" if backward else "<"
        conditions.append(f"(trust_score, id) {comparison} (%s::numeric, %s::uuid)")
        params.extend((position.sort_value, position.row_id))
    order = "ASC" if backward else "DESC"
    rows = db.fetch_all(
        spec.name,
        f"""SELECT {', '.join(_AGENT_LIST_COLUMNS)} FROM agents WHERE {' AND '.join(conditions)}
            ORDER BY trust_score {order}, id {order} LIMIT %s""",
        [*params, limit + 1],
        stale_ok=True,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    if backward:
        rows.reverse()
    if not rows:
        has_next = has_previous = False
    elif backward:
        has_next, has_previous = True, more
    else:
        has_next, has_previous = more, position is not None

    def sign(row: dict[str, Any], direction: str) -> str:
        return keyset.encode_cursor(
            spec, keyset.CursorPosition(row["trust_score"], row["id"], direction), scope=fingerprint_scope,
            filters=filters, secret=secret,
        )

    total, estimated = _bounded_count(db, spec.name, base_conditions, base_params, 1000)
    return keyset.Page(
        items=rows,
        next_cursor=sign(rows[-1], keyset.NEXT) if has_next else None,
        prev_cursor=sign(rows[0], keyset.PREVIOUS) if has_previous else None,
        total=total,
        total_is_estimate=estimated,
    )


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _bounded_count(db: Database, name: str, conditions: list[str], params: list[Any], threshold: int) -> tuple[int, bool]:
    """Count up to `threshold` matching agents exactly; above that return the planner's estimate."""
    source = f"SELECT 1 FROM agents WHERE {' AND '.join(conditions)}"
    exact = db.fetch_value(f"{name}.count", f"SELECT count(*) FROM ({source} LIMIT %s) AS limited",
                           [*params, threshold + 1], stale_ok=True)
    if exact <= threshold:
        return int(exact), False
    plan = db.fetch_value(f"{name}.estimate", f"EXPLAIN (FORMAT JSON) {source}", params, stale_ok=True)
    return max(int(plan[0]["Plan"]["Plan Rows"]), threshold + 1), True


# --- agent detail ------------------------------------------------------------------------------


def recent_verifications(db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, limit: int = 20) -> list[dict[str, Any]]:
    """Return the agent's newest verification events (at most `limit`), served by verification_events_list_by_agent."""
    return db.fetch_all(
        "verification_events.recent_by_agent",
        """SELECT id, created_at, action, resource, risk_class, decision, reason, signature_valid, trust_score,
                  latency_ms
           FROM verification_events WHERE agent_id = %s AND organization_id = %s
           ORDER BY created_at DESC, id DESC LIMIT %s""",
        (agent_id, organization_id, _bounded(limit)),
        stale_ok=True,
    )


def agent_mcp_servers(db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, limit: int = 100) -> list[dict[str, Any]]:
    """Return the MCP servers the agent is connected to, most recently seen first (at most `limit`)."""
    return db.fetch_all(
        "agent_mcp_connections.by_agent",
        """SELECT s.id, s.name, s.url, s.confidence, s.drift_detected, s.status, c.first_seen_at, c.last_seen_at
           FROM agent_mcp_connections c JOIN mcp_servers s ON s.id = c.mcp_server_id
           WHERE c.agent_id = %s AND c.organization_id = %s
           ORDER BY c.last_seen_at DESC LIMIT %s""",
        (agent_id, organization_id, _bounded(limit)),
        stale_ok=True,
    )


def agent_alerts(db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, limit: int = 20) -> list[dict[str, Any]]:
    """Return the newest alerts about the agent: raised on it, or listing it among the related agents."""
    return db.fetch_all(
        "alerts.by_agent",
        """SELECT id, created_at, severity, status, alert_type, title, occurrences FROM alerts
           WHERE organization_id = %s
             AND (related_agent_ids @> ARRAY[%s]::uuid[] OR (resource_type = 'agent' AND resource_id = %s))
           ORDER BY created_at DESC, id DESC LIMIT %s""",
        (organization_id, agent_id, str(agent_id), _bounded(limit)),
        stale_ok=True,
    )


# --- overview ----------------------------------------------------------------------------------


def recent_denials(db: Database, organization_id: uuid.UUID, limit: int = 10) -> list[dict[str, Any]]:
    """Return the newest denied verifications with the agent's name, served by verification_events_list_by_decision."""
    return db.fetch_all(
        "verification_events.recent_denials",
        """SELECT v.id, v.created_at, v.agent_id, a.name AS agent_name, v.action, v.resource, v.risk_class, v.reason
           FROM verification_events v JOIN agents a ON a.id = v.agent_id
           WHERE v.organization_id = %s AND v.decision = 'denied'
           ORDER BY v.created_at DESC, v.id DESC LIMIT %s""",
        (organization_id, _bounded(limit)),
        stale_ok=True,
    )


def overview_series(db: Database, organization_id: uuid.UUID, days: int = 14, hours: int = 24) -> dict[str, list]:
    """Compute the daily and hourly aggregates behind the Overview sparklines, each a list of [bucket start, value].

    - `average_trust`: mean trust score of the score changes recorded per day (trust_score_history).
    - `new_agents`: agents registered per day.
    - `alerts_raised`: alerts created per day.
    - `mcp_confidence`: mean MCP server confidence of the recomputations recorded per day.
    - `verifications`: verification events per hour, and `denial_rate` per hour (None without events).

    Only buckets with data appear, so a sparkline never shows an invented zero for a day without
    trust changes. Verification and agent counts do show 0 for empty buckets, because a count of
    nothing is a measured 0.
    """
    scope = (organization_id, days)
    daily_trust = db.fetch_all(
        "overview.trust_per_day",
        """SELECT date_trunc('day', created_at) AS bucket, avg(score)::float AS value FROM trust_score_history
           WHERE organization_id = %s AND created_at >= date_trunc('day', now()) - make_interval(days => %s - 1)
           GROUP BY 1 ORDER BY 1""",
        scope, stale_ok=True,
    )
    daily_agents = db.fetch_all(
        "overview.agents_per_day",
        """SELECT d AS bucket, count(a.id)::float AS value
           FROM generate_series(date_trunc('day', now()) - make_interval(days => %s - 1), date_trunc('day', now()),
                                interval '1 day') AS d
           LEFT JOIN agents a ON a.organization_id = %s AND a.created_at >= d AND a.created_at < d + interval '1 day'
           GROUP BY d ORDER BY d""",
        (days, organization_id), stale_ok=True,
    )
    daily_alerts = db.fetch_all(
        "overview.alerts_per_day",
        """SELECT d AS bucket, count(al.id)::float AS value
           FROM generate_series(date_trunc('day', now()) - make_interval(days => %s - 1), date_trunc('day', now()),
                                interval '1 day') AS d
           LEFT JOIN alerts al ON al.organization_id = %s AND al.created_at >= d AND al.created_at < d + interval '1 day'
           GROUP BY d ORDER BY d""",
        (days, organization_id), stale_ok=True,
    )
    daily_confidence = db.fetch_all(
        "overview.mcp_confidence_per_day",
        """SELECT date_trunc('day', created_at) AS bucket, avg(confidence)::float AS value FROM mcp_confidence_history
           WHERE organization_id = %s AND created_at >= date_trunc('day', now()) - make_interval(days => %s - 1)
           GROUP BY 1 ORDER BY 1""",
        scope, stale_ok=True,
    )
    hourly = db.fetch_all(
        "overview.verifications_per_hour",
        """SELECT h AS bucket, count(v.id) AS total, count(v.id) FILTER (WHERE v.decision = 'denied') AS denied
           FROM generate_series(date_trunc('hour', now()) - make_interval(hours => %s - 1), date_trunc('hour', now()),
                                interval '1 hour') AS h
           LEFT JOIN verification_events v
             ON v.organization_id = %s AND v.created_at >= h AND v.created_at < h + interval '1 hour'
           GROUP BY h ORDER BY h""",
        (hours, organization_id), stale_ok=True,
    )
    return {
        "average_trust": [[row["bucket"], row["value"]] for row in daily_trust],
        "new_agents": [[row["bucket"], row["value"]] for row in daily_agents],
        "alerts_raised": [[row["bucket"], row["value"]] for row in daily_alerts],
        "mcp_confidence": [[row["bucket"], row["value"]] for row in daily_confidence],
        "verifications": [[row["bucket"], float(row["total"])] for row in hourly],
        "denial_rate": [[row["bucket"], row["denied"] / row["total"] if row["total"] else None] for row in hourly],
    }


# --- MCP server detail -------------------------------------------------------------------------


def server_attestations(db: Database, organization_id: uuid.UUID, server_id: uuid.UUID, limit: int = 100) -> list[dict[str, Any]]:
    """Return the server's newest attestations with the attesting agent's name (mcp_attestations_list_by_server)."""
    return db.fetch_all(
        "mcp_attestations.recent_by_server",
        """SELECT t.id, t.attested_at, t.agent_id, a.name AS agent_name, t.capabilities_found, t.latency_ms,
                  t.healthy, t.drift, t.expired, t.key_id
           FROM mcp_attestations t JOIN agents a ON a.id = t.agent_id
           WHERE t.mcp_server_id = %s AND t.organization_id = %s
           ORDER BY t.attested_at DESC, t.id DESC LIMIT %s""",
        (server_id, organization_id, _bounded(limit)),
        stale_ok=True,
    )


def server_agents(db: Database, organization_id: uuid.UUID, server_id: uuid.UUID, limit: int = 100) -> list[dict[str, Any]]:
    """Return the agents connected to the server (agent_mcp_connections_list_by_server), at most `limit`."""
    return db.fetch_all(
        "agent_mcp_connections.by_server",
        """SELECT a.id, a.name, a.status, a.trust_score, c.first_seen_at, c.last_seen_at
           FROM agent_mcp_connections c JOIN agents a ON a.id = c.agent_id
           WHERE c.mcp_server_id = %s AND c.organization_id = %s
           ORDER BY c.last_seen_at DESC LIMIT %s""",
        (server_id, organization_id, _bounded(limit)),
        stale_ok=True,
    )


def server_confidence_history(
    db: Database, organization_id: uuid.UUID, server_id: uuid.UUID, limit: int = 200
) -> list[dict[str, Any]]:
    """Return the server's newest confidence recomputations (at most `limit`), oldest first for charting."""
    rows = db.fetch_all(
        "mcp_confidence_history.recent_by_server",
        """SELECT created_at, confidence, reason FROM mcp_confidence_history
           WHERE mcp_server_id = %s AND organization_id = %s
           ORDER BY created_at DESC, id DESC LIMIT %s""",
        (server_id, organization_id, _bounded(limit)),
        stale_ok=True,
    )
    rows.reverse()
    return rows


def server_drift_alerts(db: Database, organization_id: uuid.UUID, server_id: uuid.UUID, limit: int = 50) -> list[dict[str, Any]]:
    """Return the newest alerts raised on the server (alerts_list_by_resource), drift alerts among them."""
    return db.fetch_all(
        "alerts.by_mcp_server",
        """SELECT id, created_at, last_seen_at, severity, status, alert_type, title, occurrences, details
           FROM alerts WHERE organization_id = %s AND resource_type = 'mcp_server' AND resource_id = %s
           ORDER BY created_at DESC, id DESC LIMIT %s""",
        (organization_id, str(server_id), _bounded(limit)),
        stale_ok=True,
    )


def _bounded(limit: int) -> int:
    return keyset.validate_limit(limit)


def agent_types(db: Database, organization_id: uuid.UUID, limit: int = 200) -> list[str]:
    """Return the distinct agent types of the organization, A to Z (at most `limit`).

    A recursive skip scan over agents_list_by_type reads one index entry per distinct type, so the
    cost follows the number of types, not the number of agents.
    """
    rows = db.fetch_all(
        "agents.distinct_types",
        """WITH RECURSIVE types AS (
               (SELECT agent_type FROM agents WHERE organization_id = %s ORDER BY agent_type LIMIT 1)
               UNION ALL
               SELECT (SELECT a.agent_type FROM agents a
                       WHERE a.organization_id = %s AND a.agent_type > types.agent_type
                       ORDER BY a.agent_type LIMIT 1)
               FROM types WHERE types.agent_type IS NOT NULL
           )
           SELECT agent_type FROM types WHERE agent_type IS NOT NULL LIMIT %s""",
        (organization_id, organization_id, _bounded(limit)),
        stale_ok=True,
    )
    return [row["agent_type"] for row in rows]
