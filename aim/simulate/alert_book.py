"""Alerts in the past: raised, repeated, acknowledged and resolved as the alerts service would do it.

`alerts.raise_alert` stamps alerts with the current time, so the backfill keeps its own book with
the same rules. While an alert with a given dedup key is unresolved, a repeat raises its
`occurrences` and `last_seen_at` and adds related agents. Once it is resolved, the next repeat opens
a new alert. A simulated analyst acknowledges most alerts some hours after they open and resolves
most of those later. Steps that would fall after the end of the backfill do not happen, so the
newest alerts stay open.

`flush` writes each period's alerts and transitions and returns their audit rows. Alerts are
written in period order, so a trust snapshot at a period's end counts the alerts raised until then.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from aim.db.pool import Database
from aim.services.actor import SYSTEM, Actor
from aim.simulate.periodic import ANALYST

ACKNOWLEDGED_SHARE = 0.85
RESOLVED_SHARE = 0.8  # of acknowledged alerts
MEAN_TIME_TO_ACKNOWLEDGE = timedelta(hours=4)
MEAN_TIME_TO_RESOLVE = timedelta(hours=10)

_INSERT_SQL = """
INSERT INTO alerts (id, organization_id, alert_type, severity, status, title, description, resource_type,
                    resource_id, related_agent_ids, details, dedup_key, occurrences, created_at, last_seen_at,
                    acknowledged_by, acknowledged_at, resolved_by, resolved_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""
_UPDATE_SQL = """
UPDATE alerts SET status = %s, occurrences = %s, last_seen_at = %s, related_agent_ids = %s, details = %s,
                  acknowledged_by = %s, acknowledged_at = %s, resolved_by = %s, resolved_at = %s
WHERE id = %s
"""


@dataclass(eq=False)
class _Alert:
    id: uuid.UUID
    dedup_key: str
    alert_type: str
    severity: str
    title: str
    description: str
    resource_type: str
    resource_id: str
    related: set[uuid.UUID]
    details: dict[str, Any]
    raised_by: Actor
    created_at: datetime
    last_seen_at: datetime
    acknowledge_at: datetime | None
    resolve_at: datetime | None
    occurrences: int = 1
    status: str = "open"
    written: bool = False
    acknowledged_at: datetime | None = None
    resolved_at: datetime | None = None

    def open_at(self, moment: datetime) -> bool:
        return self.resolve_at is None or moment < self.resolve_at


@dataclass
class AlertBook:
    """The backfill's alerts of one organization. `blocked_keys` are dedup keys unresolved in the database.

    A new alert with a blocked key is written already resolved (within the window), because the
    unique index allows one unresolved alert per key and the existing one is newer.
    """

    organization_id: uuid.UUID
    now: datetime
    rng: random.Random
    blocked_keys: set[str] = field(default_factory=set)
    raised: int = 0
    _alerts: dict[str, _Alert] = field(default_factory=dict)
    _pending: dict[uuid.UUID, _Alert] = field(default_factory=dict)

    @classmethod
    def load(cls, db: Database, organization_id: uuid.UUID, now: datetime, rng: random.Random) -> "AlertBook":
        rows = db.fetch_all(
            "simulate.unresolved_alert_keys",
            "SELECT dedup_key FROM alerts WHERE organization_id = %s AND status <> 'resolved'",
            (organization_id,),
        )
        return cls(organization_id, now, rng, {row["dedup_key"] for row in rows})

    def raise_alert(
        self, at: datetime, *, alert_type: str, severity: str, title: str, description: str, resource_type: str,
        resource_id: str, related: set[uuid.UUID], details: dict[str, Any], dedup_key: str | None = None,
        raised_by: Actor = SYSTEM,
    ) -> uuid.UUID:
        """Raise or repeat an alert at `at` and return its id."""
        key = dedup_key or f"{alert_type}:{resource_type}:{resource_id}"
        current = self._alerts.get(key)
        if current is not None and current.open_at(at):
            current.occurrences += 1
            current.last_seen_at = max(current.last_seen_at, at)
            current.related |= related
            current.details = details
            self._queue(current)
            return current.id

        if current is not None:
            self._queue(current)  # its resolution, due by now, is written in the next flush
        acknowledge_at, resolve_at = self._schedule(at)
        if key in self.blocked_keys:
            # Resolve before the end of the window, so it never collides with the unresolved one.
            latest = max(at, self.now - timedelta(minutes=1))
            acknowledge_at = min(acknowledge_at or latest, latest)
            resolve_at = min(resolve_at or latest, latest)
        alert = _Alert(
            uuid.uuid4(), key, alert_type, severity, title, description,
            resource_type, resource_id, set(related), details, raised_by, at, at, acknowledge_at, resolve_at,
        )
        self._alerts[key] = alert
        self._queue(alert)
        self.raised += 1
        return alert.id

    def _schedule(self, at: datetime) -> tuple[datetime | None, datetime | None]:
        rng = self.rng
        if rng.random() >= ACKNOWLEDGED_SHARE:
            return None, None
        acknowledge_at = at + MEAN_TIME_TO_ACKNOWLEDGE * rng.expovariate(1.0)
        if rng.random() >= RESOLVED_SHARE:
            return acknowledge_at, None
        return acknowledge_at, acknowledge_at + MEAN_TIME_TO_RESOLVE * rng.expovariate(1.0)

    def _queue(self, alert: _Alert) -> None:
        self._pending[alert.id] = alert

    def flush(self, db: Database, conn: psycopg.Connection, until: datetime) -> list[tuple]:
        """Write the alerts raised or changed before `until`, and their due steps; return their audit rows.

        Steps due before `until` (and before the end of the window) are applied. Updates of
        alerts already written run before inserts, so a resolved alert leaves its dedup key free
        for the new one in the same period.
        """
        audit_rows: list[tuple] = []
        # Written alerts with steps still to come, including ones that a new alert of the same key
        # replaced in `_alerts` during this period.
        candidates = {
            alert.id: alert for alert in self._alerts.values() if alert.written and alert.status != "resolved"
        }
        candidates.update((alert.id, alert) for alert in self._pending.values() if alert.written)
        for alert in candidates.values():
            if self._advance(alert, until, audit_rows):
                self._queue(alert)
        updates = [alert for alert in self._pending.values() if alert.written]
        inserts = [alert for alert in self._pending.values() if not alert.written]
        for alert in inserts:
            audit_rows.append(self._audit(alert.created_at, alert.raised_by, "alert.raised", alert, {
                "alert_type": alert.alert_type, "severity": alert.severity, "resource_type": alert.resource_type,
                "resource_id": alert.resource_id,
            }))
            # An alert of a blocked key is written in its final state at once, see the class docstring.
            self._advance(alert, self.now if alert.dedup_key in self.blocked_keys else until, audit_rows)
        with conn.cursor() as cursor:
            if updates:
                cursor.executemany(_UPDATE_SQL, [self._update_params(alert) for alert in updates])
            if inserts:
                cursor.executemany(_INSERT_SQL, [self._insert_params(alert) for alert in inserts])
        for alert in self._pending.values():
            alert.written = True
        self._pending = {}
        return audit_rows

    def _advance(self, alert: _Alert, until: datetime, audit_rows: list[tuple]) -> bool:
        limit = min(until, self.now)
        changed = False
        if alert.status == "open" and alert.acknowledge_at is not None and alert.acknowledge_at < limit:
            alert.status = "acknowledged"
            alert.acknowledged_at = alert.acknowledge_at
            audit_rows.append(self._audit(alert.acknowledged_at, ANALYST, "alert.acknowledge", alert,
                                          {"from": "open", "note": "simulated triage"}))
            changed = True
        if alert.status == "acknowledged" and alert.resolve_at is not None and alert.resolve_at < limit:
            alert.status = "resolved"
            alert.resolved_at = alert.resolve_at
            audit_rows.append(self._audit(alert.resolved_at, ANALYST, "alert.resolve", alert,
                                          {"from": "acknowledged", "note": "simulated triage: handled"}))
            changed = True
        return changed

    def _audit(self, at: datetime, actor: Actor, action: str, alert: _Alert, details: dict[str, Any]) -> tuple:
        return (self.organization_id, at, actor.actor_type, actor.actor_id, action, "alert", str(alert.id), "success",
                None, None, None, details)

    def _insert_params(self, alert: _Alert) -> tuple:
        return (
            alert.id, self.organization_id, alert.alert_type, alert.severity, alert.status, alert.title,
            alert.description, alert.resource_type, alert.resource_id, sorted(alert.related),
            Jsonb(alert.details), alert.dedup_key, alert.occurrences, alert.created_at, alert.last_seen_at,
            ANALYST.label if alert.acknowledged_at else None, alert.acknowledged_at,
            ANALYST.label if alert.resolved_at else None, alert.resolved_at,
        )

    def _update_params(self, alert: _Alert) -> tuple:
        return (
            alert.status, alert.occurrences, alert.last_seen_at, sorted(alert.related), Jsonb(alert.details),
            ANALYST.label if alert.acknowledged_at else None, alert.acknowledged_at,
            ANALYST.label if alert.resolved_at else None, alert.resolved_at, alert.id,
        )
