"""Dashboard statistics: one aggregate per organization, cached with the dashboard_stats TTL (5 min).

Agent, alert and MCP server writes invalidate the aggregate. Verification events do not, because
under live traffic that would recompute it on nearly every read; the verification figures are
therefore up to one TTL old, and `computed_at` is the time the aggregate was computed.

Agent and MCP server figures come from `organization_counters`, which triggers keep in the writing
transaction, so recomputing the aggregate after a write costs the same at any organization size.

Each process also keeps the verification figures for VERIFICATION_FIGURES_TTL_S on their own,
because counting the last hour of verification events costs time in proportion to the traffic,
and under frequent agent or MCP server writes the aggregate is recomputed many times a second.
They can therefore be up to that much older than `computed_at`.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any

import cachetools

from aim.db.pool import Database
from aim.services.cache_hooks import DASHBOARD_STATS

STATUSES = ("pending", "verified", "suspended", "revoked")
SEVERITIES = ("critical", "high", "medium", "low", "info")
RATE_WINDOW_MINUTES = 60
VERIFICATION_FIGURES_TTL_S = 60.0
EMPTY_COUNTERS: dict[str, Any] = {
    "agents_pending": 0, "agents_verified": 0, "agents_suspended": 0, "agents_revoked": 0,
    "agents_trust_sum": Decimal(0), "mcp_active": 0, "mcp_active_drifted": 0, "mcp_confidence_sum": Decimal(0),
}

_verification_figures: cachetools.TTLCache = cachetools.TTLCache(maxsize=4096, ttl=VERIFICATION_FIGURES_TTL_S,
                                                                 timer=time.monotonic)
_verification_lock = threading.Lock()


def _count_verifications(db: Database, organization_id: uuid.UUID) -> dict[str, Any]:
    """Return the last hour's verification count and denial count, reusing this process's recent count."""
    with _verification_lock:
        cached = _verification_figures.get(organization_id)
    if cached is not None:
        return cached
    row = db.fetch_one(
        "stats.verifications",
        """SELECT count(*) AS total, count(*) FILTER (WHERE decision = 'denied') AS denied
           FROM verification_events
           WHERE organization_id = %s AND created_at >= now() - make_interval(mins => %s)""",
        (organization_id, RATE_WINDOW_MINUTES),
        stale_ok=True,
    )
    assert row is not None
    with _verification_lock:
        _verification_figures[organization_id] = row
    return row


def compute_stats(db: Database, organization_id: uuid.UUID) -> dict[str, Any]:
    """Compute the aggregate from PostgreSQL (replica when configured), on one pooled connection."""
    with db.pinned(stale_ok=True):
        return _compute_stats(db, organization_id)


def _compute_stats(db: Database, organization_id: uuid.UUID) -> dict[str, Any]:
    # The triggers of migration 0006 keep these counters in each agent and MCP server write, so this
    # read costs the same at any number of agents. An organization without either has no row yet.
    counters = db.fetch_one(
        "stats.counters",
        """SELECT agents_pending, agents_verified, agents_suspended, agents_revoked, agents_trust_sum,
                  mcp_active, mcp_active_drifted, mcp_confidence_sum
           FROM organization_counters WHERE organization_id = %s""",
        (organization_id,),
        stale_ok=True,
    ) or EMPTY_COUNTERS
    verifications = _count_verifications(db, organization_id)
    alert_rows = db.fetch_all(
        "stats.open_alerts",
        """SELECT severity, count(*) AS open FROM alerts
           WHERE organization_id = %s AND status = 'open' GROUP BY severity""",
        (organization_id,),
        stale_ok=True,
    )
    # Aggregates without GROUP BY always return one row.
    assert verifications is not None

    open_alerts = {severity: 0 for severity in SEVERITIES}
    for row in alert_rows:
        open_alerts[row["severity"]] = int(row["open"])
    agents = {status: int(counters[f"agents_{status}"]) for status in STATUSES}
    total_agents = sum(agents.values())
    # The average over the agents that are not revoked, as avg(trust_score) FILTER (WHERE status <> 'revoked').
    unrevoked = total_agents - agents["revoked"]
    active_servers = int(counters["mcp_active"])
    total_verifications = int(verifications["total"])
    return {
        "agents": agents | {"total": total_agents},
        "average_trust": float(counters["agents_trust_sum"] / unrevoked) if unrevoked else None,
        "verifications_last_hour": total_verifications,
        "verifications_per_minute": total_verifications / RATE_WINDOW_MINUTES,
        # None, not 0 %, when there were no verifications to deny.
        "denial_rate": int(verifications["denied"]) / total_verifications if total_verifications else None,
        "open_alerts": open_alerts,
        "open_alerts_total": sum(open_alerts.values()),
        "mcp_servers": {
            "total": active_servers,
            "drifted": int(counters["mcp_active_drifted"]),
            "mean_confidence": float(counters["mcp_confidence_sum"] / active_servers) if active_servers else None,
        },
        "computed_at": datetime.now(timezone.utc),
    }


def dashboard_stats_from_memory(organization_id: uuid.UUID) -> dict[str, Any] | None:
    """Return the organization's aggregate when it is in this process's L1 cache, else None (no I/O).

    The dict is shared with other callers, so it must not be changed.
    """
    from aim.cache import get_cache

    return get_cache().get_local(DASHBOARD_STATS, str(organization_id), shared=True)


def dashboard_stats(db: Database, organization_id: uuid.UUID) -> dict[str, Any]:
    """Return the organization's aggregate from the two-level cache, computing it once when cold."""
    from aim.cache import get_cache

    return get_cache().get_or_compute(DASHBOARD_STATS, str(organization_id), lambda: compute_stats(db, organization_id))
