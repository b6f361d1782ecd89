"""Periodic work beside in-process live traffic: trust recalculation, a simulated analyst, metric flushes.

An AIM API process runs trust recalculation in its scheduler (`aim.jobs`). When the simulator
calls the services in its own process there may be no API process, so it runs the organization's
recalculation itself, every `TRUST_INTERVAL_S`, and the scores move while traffic flows.
"""

from __future__ import annotations

import logging
import uuid
from datetime import timedelta

from aim import trust
from aim.metrics.rollup import RECORDER
from aim.runtime import Runtime
from aim.services import alerts, cache_hooks
from aim.services.actor import Actor, system
from aim.simulate.live import PeriodicTask

logger = logging.getLogger(__name__)

TRUST_INTERVAL_S = 30.0
ANALYST_INTERVAL_S = 30.0
# The simulated analyst acknowledges alerts open this long, and resolves alerts acknowledged this long.
ACKNOWLEDGE_AFTER = timedelta(minutes=1)
RESOLVE_AFTER = timedelta(minutes=3)
ALERTS_PER_ROUND = 5

ANALYST = Actor("system", "simulator-analyst", role="analyst")


def recalculate_trust(runtime: Runtime, organization_id: uuid.UUID) -> int:
    """Recalculate every agent of the organization and return how many scores changed."""
    try:
        return trust.recalculate_organization(
            runtime.db, organization_id, reason="periodic recalculation", actor=system("simulator").label
        )
    finally:
        cache_hooks.scores_recalculated()


def triage_alerts(runtime: Runtime, organization_id: uuid.UUID) -> tuple[int, int]:
    """Acknowledge the oldest open alerts and resolve the oldest acknowledged ones, a few per round.

    Goes through `aim.services.alerts`, so each step is audited. Return (acknowledged, resolved).
    """
    db = runtime.db
    to_acknowledge = db.fetch_all(
        "simulate.alerts_to_acknowledge",
        """SELECT id FROM alerts WHERE organization_id = %s AND status = 'open' AND created_at < now() - %s
           ORDER BY created_at, id LIMIT %s""",
        (organization_id, ACKNOWLEDGE_AFTER, ALERTS_PER_ROUND),
    )
    to_resolve = db.fetch_all(
        "simulate.alerts_to_resolve",
        """SELECT id FROM alerts WHERE organization_id = %s AND status = 'acknowledged'
             AND acknowledged_at < now() - %s
           ORDER BY acknowledged_at, id LIMIT %s""",
        (organization_id, RESOLVE_AFTER, ALERTS_PER_ROUND),
    )
    for row in to_acknowledge:
        alerts.acknowledge(db, organization_id, row["id"], ANALYST, note="simulated triage")
    for row in to_resolve:
        alerts.resolve(db, organization_id, row["id"], ANALYST, note="simulated triage: handled")
    return len(to_acknowledge), len(to_resolve)


def local_tasks(runtime: Runtime, organization_id: uuid.UUID) -> list[PeriodicTask]:
    """Return the periodic tasks for traffic sent to the services in this process.

    The metric flush writes the query timings this process measured into `metric_rollups`, as
    every AIM process does, so the performance page shows the load the simulator causes.
    """
    return [
        PeriodicTask("trust-recalculation", TRUST_INTERVAL_S, lambda: recalculate_trust(runtime, organization_id)),
        PeriodicTask("alert-triage", ANALYST_INTERVAL_S, lambda: triage_alerts(runtime, organization_id)),
        PeriodicTask("metrics-flush", runtime.settings.metrics_flush_interval_s, lambda: RECORDER.flush(runtime.db)),
    ]
