"""Dashboard statistics: one aggregate per organization, cached with the dashboard_stats TTL (5 min).

Agent, alert and MCP server writes invalidate the aggregate. Verification events do not, because
under live traffic that would recompute it on nearly every read; the verification figures are
therefore up to one TTL old, and `computed_at` is the time the aggregate was computed.

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
from typing import Any

import cachetools

from aim.db.pool import Database
from aim.services.cache_hooks import DASHBOARD_STATS

STATUSES = ("pending", "verified", "suspended", "revoked")
SEVERITIES = ("critical", "high", "medium", "low", "info")
RATE_WINDOW_MINUTES = 60
VERIFICATION_FIGURES_TTL_S = 60.0

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
    agents = db.fetch_one(
        "stats.agents",
        """SELECT count(*) AS total,
                  count(*) FILTER (WHERE status = 'pending') AS pending,
                  count(*) FILTER (WHERE status = 'verified') AS verified,
                  count(*) FILTER (WHERE status = 'suspended') AS suspended,
                  count(*) FILTER (WHERE status = 'revoked') AS revoked,
                  avg(trust_score) FILTER (WHERE status <> 'revoked') AS average_trust
           FROM agents WHERE organization_id = %s""",
        (organization_id,),
        stale_ok=True,
    )
    verifications = _count_verifications(db, organization_id)
    alert_rows = db.fetch_all(
        "stats.open_alerts",
        """SELECT severity, count(*) AS open FROM alerts
           WHERE organization_id = %s AND status = 'open' GROUP BY severity""",
        (organization_id,),
        stale_ok=True,
    )
    mcp = db.fetch_one(
        "stats.mcp_servers",
        """SELECT count(*) AS total, avg(confidence) AS mean_confidence,
                  count(*) FILTER (WHERE drift_detected) AS drifted
           FROM mcp_servers WHERE organization_id = %s AND status = 'active'""",
        (organization_id,),
        stale_ok=True,
    )
    # Aggregates without GROUP BY always return one row.
    assert agents is not None
    assert verifications is not None
    assert mcp is not None

    open_alerts = {severity: 0 for severity in SEVERITIES}
    for row in alert_rows:
        open_alerts[row["severity"]] = int(row["open"])
    total_verifications = int(verifications["total"])
    return {
        "agents": {status: int(agents[status]) for status in STATUSES} | {"total": int(agents["total"])},
        "average_trust": float(agents["average_trust"]) if agents["average_trust"] is not None else None,
        "verifications_last_hour": total_verifications,
        "verifications_per_minute": total_verifications / RATE_WINDOW_MINUTES,
        # None, not 0 %, when there were no verifications to deny.
        "denial_rate": int(verifications["denied"]) / total_verifications if total_verifications else None,
        "open_alerts": open_alerts,
        "open_alerts_total": sum(open_alerts.values()),
        "mcp_servers": {
            "total": int(mcp["total"]),
            "drifted": int(mcp["drifted"]),
            "mean_confidence": float(mcp["mean_confidence"]) if mcp["mean_confidence"] is not None else None,
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
