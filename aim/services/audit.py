"""Audit trail writes for services: one row per change, in the change's own transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Mapping

import psycopg

from aim.db.audit_ingest import insert_audit
from aim.services.actor import Actor


def record(
    conn: psycopg.Connection,
    organization_id: uuid.UUID,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str,
    *,
    result: str = "success",
    details: Mapping[str, Any] | None = None,
    occurred_at: datetime | None = None,
) -> int:
    """Append an audit row on `conn`, inside the caller's transaction, and return its id."""
    return insert_audit(
        conn,
        organization_id=organization_id,
        actor_type=actor.actor_type,
        actor_id=actor.actor_id,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        result=result,
        occurred_at=occurred_at,
        ip_address=actor.ip_address,
        user_agent=actor.user_agent,
        request_id=actor.request_id,
        details=details,
    )
