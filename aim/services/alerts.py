"""Alerts: raise with de-duplication, then acknowledge and resolve by id. Every step is audited.

An alert moves `open` -> `acknowledged` -> `resolved` (or straight from `open` to `resolved`). While
an alert is unresolved, raising the same `dedup_key` again bumps `occurrences` instead of adding a
row, so a burst of replays shows as one alert with a count.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

import psycopg
from psycopg.types.json import Jsonb

from aim.db.pool import Database
from aim.errors import Conflict, NotFound, ValidationError
from aim.services import audit
from aim.services.actor import SYSTEM, Actor

logger = logging.getLogger(__name__)

SEVERITIES = ("info", "low", "medium", "high", "critical")
STATUSES = ("open", "acknowledged", "resolved")

ALERT_COLUMNS = """
    id, organization_id, alert_type, severity, status, title, description, resource_type, resource_id,
    related_agent_ids, details, dedup_key, occurrences, created_at, last_seen_at,
    acknowledged_by, acknowledged_at, resolved_by, resolved_at
"""


@dataclass(frozen=True)
class RaisedAlert:
    id: uuid.UUID
    created: bool
    occurrences: int


def raise_alert(
    db: Database,
    conn: psycopg.Connection,
    organization_id: uuid.UUID,
    *,
    alert_type: str,
    severity: str,
    title: str,
    resource_type: str,
    resource_id: str,
    description: str = "",
    related_agent_ids: Iterable[uuid.UUID] = (),
    details: dict[str, Any] | None = None,
    dedup_key: str | None = None,
    actor: Actor = SYSTEM,
) -> RaisedAlert:
    """Open an alert, or count a repeat of an unresolved one, inside the caller's transaction."""
    if severity not in SEVERITIES:
        raise ValidationError("severity", f"{severity!r} is invalid; expected one of {', '.join(SEVERITIES)}")
    dedup_key = dedup_key or f"{alert_type}:{resource_type}:{resource_id}"
    related = sorted({uuid.UUID(str(a)) for a in related_agent_ids})

    row = db.fetch_one(
        "alerts.raise",
        """
        INSERT INTO alerts (organization_id, alert_type, severity, title, description, resource_type,
                            resource_id, related_agent_ids, details, dedup_key)
        VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
        ON CONFLICT (organization_id, dedup_key) WHERE status <> 'resolved' DO UPDATE SET
            occurrences = alerts.occurrences + 1,
            last_seen_at = now(),
            details = EXCLUDED.details,
            related_agent_ids = ARRAY(
                SELECT DISTINCT unnest(alerts.related_agent_ids || EXCLUDED.related_agent_ids) ORDER BY 1
            )
        RETURNING id, occurrences, (xmax = 0) AS created
        """,
        (
            organization_id, alert_type, severity, title, description, resource_type, str(resource_id),
            related, Jsonb(details or {}), dedup_key,
        ),
        conn=conn,
    )
    assert row is not None
    if row["created"]:
        audit.record(
            conn, organization_id, actor, "alert.raised", "alert", str(row["id"]),
            details={"alert_type": alert_type, "severity": severity, "resource_type": resource_type,
                     "resource_id": str(resource_id)},
        )
        logger.info("alert %s raised: %s on %s %s", row["id"], alert_type, resource_type, resource_id)
    return RaisedAlert(row["id"], bool(row["created"]), row["occurrences"])


def get_alert(db: Database, organization_id: uuid.UUID, alert_id: uuid.UUID) -> dict[str, Any]:
    row = db.fetch_one(
        "alerts.get",
        f"SELECT {ALERT_COLUMNS} FROM alerts WHERE organization_id = %s AND id = %s",
        (organization_id, alert_id),
    )
    if row is None:
        raise NotFound("alert", alert_id)
    return row


def _transition(
    db: Database, organization_id: uuid.UUID, alert_id: uuid.UUID, actor: Actor, *, target: str,
    allowed_from: tuple[str, ...], note: str | None,
) -> dict[str, Any]:
    by_column, at_column = ("acknowledged_by", "acknowledged_at") if target == "acknowledged" else (
        "resolved_by", "resolved_at")
    with db.transaction() as conn:
        current = db.fetch_one(
            "alerts.lock",
            "SELECT status FROM alerts WHERE organization_id = %s AND id = %s FOR UPDATE",
            (organization_id, alert_id),
            conn=conn,
        )
        if current is None:
            raise NotFound("alert", alert_id)
        if current["status"] not in allowed_from:
            raise Conflict(
                f"alert {alert_id} is {current['status']}; it can be {target} only when "
                f"{' or '.join(allowed_from)}"
            )
        row = db.fetch_one(
            f"alerts.{target}",
            f"""
            UPDATE alerts SET status = %s, {by_column} = %s, {at_column} = now()
            WHERE organization_id = %s AND id = %s
            RETURNING {ALERT_COLUMNS}
            """,
            (target, actor.label, organization_id, alert_id),
            conn=conn,
        )
        verb = "acknowledge" if target == "acknowledged" else "resolve"
        audit.record(
            conn, organization_id, actor, f"alert.{verb}", "alert", str(alert_id),
            details={"from": current["status"], "note": note} if note else {"from": current["status"]},
        )
    logger.info("alert %s %s by %s", alert_id, target, actor.label)
    assert row is not None
    return row


def acknowledge(
    db: Database, organization_id: uuid.UUID, alert_id: uuid.UUID, actor: Actor, note: str | None = None
) -> dict[str, Any]:
    """Mark an open alert acknowledged. Raise NotFound, or Conflict when it is not open."""
    return _transition(db, organization_id, alert_id, actor, target="acknowledged", allowed_from=("open",), note=note)


def resolve(
    db: Database, organization_id: uuid.UUID, alert_id: uuid.UUID, actor: Actor, note: str | None = None
) -> dict[str, Any]:
    """Mark an open or acknowledged alert resolved. Raise NotFound, or Conflict when already resolved."""
    return _transition(
        db, organization_id, alert_id, actor, target="resolved", allowed_from=("open", "acknowledged"), note=note
    )
