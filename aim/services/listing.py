"""Keyset-paged lists shared by the API and the dashboard: agents, MCP servers, audit logs, alerts,
API keys and trust history.

Each list is a `ListSpec` served by an index named after it in the migrations. The functions here
check the filter values against their allowed sets, so a bad value is a ValidationError naming the
filter rather than an empty page. Totals are exact up to `COUNT_THRESHOLD` rows and a planner
estimate above, so a first page costs about the same on 10 million rows as on 10.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from datetime import datetime
from typing import Any, Mapping

import cachetools

from aim.db import keyset
from aim.db.pool import Database
from aim.errors import ValidationError
from aim.services import agents, alerts, mcp_servers
from aim.services.actor import ACTOR_TYPES, ROLES

# Counting up to 1,000 index entries takes well under a millisecond; beyond that the total is
# the planner's estimate and `total_is_estimate` is set.
COUNT_THRESHOLD = 1000
# A planner estimate is reused for this long by the same list and filters in this process, which
# spares the exact pass and the EXPLAIN on every page. Exact totals are never reused, so a small
# list's total counts a write at once.
ESTIMATE_TTL_S = 5.0
ESTIMATE_CACHE_SIZE = 4096

AUDIT_RESULTS = ("success", "failure", "denied")

# --- agents -----------------------------------------------------------------------------------

_AGENT_COLUMNS = (
    "id", "name", "agent_type", "description", "status", "trust_score", "key_id", "key_origin", "capabilities",
    "metadata", "last_seen_at", "created_by", "created_at", "updated_at",
)
_AGENT_FILTERS = {"status": "status", "agent_type": "agent_type"}
# Served by agents_list_by_created (and agents_list_by_status / _by_type when filtered),
# agents_list_by_trust and agents_list_by_name.
AGENTS_BY_CREATED = keyset.ListSpec(
    name="agents.list_by_created", table="agents", columns=_AGENT_COLUMNS, sort="created_at",
    sort_type="timestamptz", equality=_AGENT_FILTERS, prefix_column="name", time_column="created_at",
)
AGENTS_BY_TRUST = keyset.ListSpec(
    name="agents.list_by_trust", table="agents", columns=_AGENT_COLUMNS, sort="trust_score", sort_type="numeric",
    equality=_AGENT_FILTERS, prefix_column="name",
)
AGENTS_BY_NAME = keyset.ListSpec(
    name="agents.list_by_name", table="agents", columns=_AGENT_COLUMNS, sort="lower(name)", sort_type="text",
    descending=False, equality=_AGENT_FILTERS, prefix_column="name",
)
AGENT_SORTS = {"created": AGENTS_BY_CREATED, "trust": AGENTS_BY_TRUST, "name": AGENTS_BY_NAME}

# --- audit logs -------------------------------------------------------------------------------

AUDIT_LOGS = keyset.ListSpec(
    name="audit_logs.list", table="audit_logs",
    columns=("id", "occurred_at", "actor_type", "actor_id", "action", "resource_type", "resource_id", "result",
             "host(ip_address) AS ip_address", "user_agent", "request_id", "details"),
    sort="occurred_at", sort_type="timestamptz", id_type="bigint",
    equality={"actor": "actor_id", "actor_type": "actor_type", "action": "action", "resource_type": "resource_type",
              "resource_id": "resource_id", "result": "result"},
    time_column="occurred_at",
)

# --- alerts -----------------------------------------------------------------------------------

ALERTS = keyset.ListSpec(
    name="alerts.list", table="alerts",
    columns=("id", "alert_type", "severity", "status", "title", "description", "resource_type", "resource_id",
             "related_agent_ids", "details", "occurrences", "created_at", "last_seen_at", "acknowledged_by",
             "acknowledged_at", "resolved_by", "resolved_at"),
    sort="created_at", sort_type="timestamptz",
    equality={"status": "status", "severity": "severity", "alert_type": "alert_type",
              "resource_type": "resource_type", "resource_id": "resource_id"},
    time_column="created_at",
)

# --- API keys ---------------------------------------------------------------------------------

API_KEYS = keyset.ListSpec(
    name="api_keys.list", table="api_keys",
    columns=("id", "agent_id", "name", "prefix", "role", "created_by", "created_at", "last_used_at", "expires_at",
             "revoked_at"),
    sort="created_at", sort_type="timestamptz", equality={"agent_id": "agent_id", "role": "role"},
)

# --- trust history ----------------------------------------------------------------------------

# Served by trust_score_history_list_by_agent (agent_id, created_at DESC, id DESC).
TRUST_HISTORY = keyset.ListSpec(
    name="trust_score_history.list", table="trust_score_history",
    columns=("id", "score", "previous_score", "factors", "reason", "actor", "created_at"),
    sort="created_at", sort_type="timestamptz", scope=("organization_id", "agent_id"), time_column="created_at",
)


_estimates: cachetools.TTLCache = cachetools.TTLCache(maxsize=ESTIMATE_CACHE_SIZE, ttl=ESTIMATE_TTL_S,
                                                     timer=time.monotonic)
_estimates_lock = threading.Lock()


def _estimate_key(spec: keyset.ListSpec, scope: Mapping[str, Any], filters: Mapping[str, Any]) -> tuple:
    return (spec.name, tuple(sorted((name, str(value)) for name, value in scope.items())),
            tuple(sorted((name, str(value)) for name, value in filters.items() if value is not None and value != "")))


def _fetch_page(
    db: Database, spec: keyset.ListSpec, *, scope: Mapping[str, Any], filters: Mapping[str, Any] | None = None,
    cursor: str | None, limit: int, secret: bytes,
) -> keyset.Page:
    """Fetch one page and its total on one pooled connection, reusing a recent estimate of the total."""
    filters = filters or {}
    key = _estimate_key(spec, scope, filters)
    with _estimates_lock:
        estimate = _estimates.get(key)
    with db.pinned(stale_ok=True):
        page = keyset.fetch_page(db, spec, scope=scope, filters=filters, cursor=cursor, limit=limit, secret=secret,
                                 count=estimate is None, count_threshold=COUNT_THRESHOLD)
    if estimate is not None:
        return dataclasses.replace(page, total=estimate, total_is_estimate=True)
    if page.total_is_estimate:
        with _estimates_lock:
            _estimates[key] = page.total
    return page


def _one_of(field: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if value is not None and value not in allowed:
        raise ValidationError(field, f"{value!r} is invalid; expected one of {', '.join(allowed)}")
    return value


def _secret(secret: bytes | None) -> bytes:
    if secret is not None:
        return secret
    from aim.runtime import get_runtime

    return get_runtime().secret_key


def list_agents(
    db: Database, organization_id: uuid.UUID, *, sort: str = "created", status: str | None = None,
    agent_type: str | None = None, name_prefix: str | None = None, cursor: str | None = None,
    limit: int = keyset.DEFAULT_LIMIT, secret: bytes | None = None,
) -> keyset.Page:
    """Fetch one page of the organization's agents: newest first, highest trust first, or by name A to Z."""
    if sort not in AGENT_SORTS:
        raise ValidationError("sort", f"{sort!r} is invalid; expected one of {', '.join(AGENT_SORTS)}")
    _one_of("status", status, agents.STATUSES)
    if agent_type is not None:
        agents.validate_agent_type(agent_type)
    return _fetch_page(
        db, AGENT_SORTS[sort], scope={"organization_id": organization_id},
        filters={"status": status, "agent_type": agent_type, "prefix": name_prefix}, cursor=cursor, limit=limit,
        secret=_secret(secret),
    )


def list_mcp_servers(
    db: Database, organization_id: uuid.UUID, *, sort: str = "name", name_prefix: str | None = None,
    status: str | None = None, drift_detected: bool | None = None, source: str | None = None,
    cursor: str | None = None, limit: int = keyset.DEFAULT_LIMIT, secret: bytes | None = None,
    use_cache: bool = True,
) -> keyset.Page:
    """Fetch one page of MCP servers, from the `mcp_server_list` cache (see `mcp_servers.list_servers`).

    `use_cache=False` reads PostgreSQL, for a caller that caches what it makes of the page itself.
    """
    return mcp_servers.list_servers(
        db, organization_id, sort=sort, name_prefix=name_prefix, status=status, drift_detected=drift_detected,
        source=source, cursor=cursor, limit=limit, secret=_secret(secret), use_cache=use_cache,
    )


def find_mcp_server_by_url(db: Database, organization_id: uuid.UUID, url: str) -> dict[str, Any] | None:
    """Return the server registered at `url` (normalised as at registration), or None."""
    normalized = mcp_servers.normalize_url(url)
    row = db.fetch_one(
        "mcp_servers.by_url",
        "SELECT id FROM mcp_servers WHERE organization_id = %s AND url = %s",
        (organization_id, normalized),
    )
    return None if row is None else mcp_servers.get_server(db, organization_id, row["id"])


def list_audit_logs(
    db: Database, organization_id: uuid.UUID, *, start: datetime | None = None, end: datetime | None = None,
    actor: str | None = None, actor_type: str | None = None, action: str | None = None,
    resource_type: str | None = None, resource_id: str | None = None, result: str | None = None,
    cursor: str | None = None, limit: int = keyset.DEFAULT_LIMIT, secret: bytes | None = None,
) -> keyset.Page:
    """Fetch one page of audit events, newest first. `start` is inclusive and `end` exclusive."""
    _one_of("result", result, AUDIT_RESULTS)
    _one_of("actor_type", actor_type, ACTOR_TYPES)
    filters = {"start": start, "end": end, "actor": actor, "actor_type": actor_type, "action": action,
               "resource_type": resource_type, "resource_id": resource_id, "result": result}
    return _fetch_page(
        db, AUDIT_LOGS, scope={"organization_id": organization_id}, filters=filters, cursor=cursor, limit=limit,
        secret=_secret(secret),
    )


def list_alerts(
    db: Database, organization_id: uuid.UUID, *, status: str | None = None, severity: str | None = None,
    alert_type: str | None = None, resource_type: str | None = None, resource_id: str | None = None,
    start: datetime | None = None, end: datetime | None = None, cursor: str | None = None,
    limit: int = keyset.DEFAULT_LIMIT, secret: bytes | None = None,
) -> keyset.Page:
    """Fetch one page of alerts, newest first."""
    _one_of("status", status, alerts.STATUSES)
    _one_of("severity", severity, alerts.SEVERITIES)
    filters = {"status": status, "severity": severity, "alert_type": alert_type, "resource_type": resource_type,
               "resource_id": resource_id, "start": start, "end": end}
    return _fetch_page(
        db, ALERTS, scope={"organization_id": organization_id}, filters=filters, cursor=cursor, limit=limit,
        secret=_secret(secret),
    )


def list_api_keys(
    db: Database, organization_id: uuid.UUID, *, agent_id: uuid.UUID | None = None, role: str | None = None,
    cursor: str | None = None, limit: int = keyset.DEFAULT_LIMIT, secret: bytes | None = None,
) -> keyset.Page:
    """Fetch one page of API keys (without their hashes), newest first, revoked ones included."""
    _one_of("role", role, ROLES)
    return _fetch_page(
        db, API_KEYS, scope={"organization_id": organization_id}, filters={"agent_id": agent_id, "role": role},
        cursor=cursor, limit=limit, secret=_secret(secret),
    )


def list_trust_history(
    db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, *, cursor: str | None = None,
    limit: int = keyset.DEFAULT_LIMIT, secret: bytes | None = None,
) -> keyset.Page:
    """Fetch one page of an agent's trust score changes, newest first. Raises NotFound for another organization's agent."""
    agents.get_agent(db, organization_id, agent_id)
    return _fetch_page(
        db, TRUST_HISTORY, scope={"organization_id": organization_id, "agent_id": agent_id}, cursor=cursor,
        limit=limit, secret=_secret(secret),
    )
