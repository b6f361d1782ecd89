"""Alerts: list, acknowledge and resolve. Every action names the alert by id and is audited."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request

from aim.api import schemas
from aim.api.paging import Cursor, Limit, page_body
from aim.api.security import Principal, get_runtime, read, write
from aim.db import keyset
from aim.services import alerts, cache_hooks, listing

router = APIRouter(tags=["alerts"])

Severity = Literal["info", "low", "medium", "high", "critical"]


@router.get("/alerts", response_model=schemas.Page[schemas.Alert], summary="List alerts")
def list_alerts(
    request: Request,
    status_filter: Literal["open", "acknowledged", "resolved"] | None = Query(None, alias="status"),
    severity: Severity | None = None,
    alert_type: str | None = Query(None, max_length=200),
    resource_type: str | None = Query(None, max_length=200),
    resource_id: str | None = Query(None, max_length=200),
    cursor: Cursor = None,
    limit: Limit = keyset.DEFAULT_LIMIT,
    principal: Principal = Depends(read("list alerts")),
) -> dict[str, Any]:
    """Newest first."""
    runtime = get_runtime(request)
    page = listing.list_alerts(
        runtime.db, principal.organization_id, status=status_filter, severity=severity, alert_type=alert_type,
        resource_type=resource_type, resource_id=resource_id, cursor=cursor, limit=limit, secret=runtime.secret_key,
    )
    return page_body(page)


@router.post("/alerts/{alert_id}/acknowledge", response_model=schemas.Alert, summary="Acknowledge an alert")
def acknowledge_alert(
    request: Request, alert_id: uuid.UUID, body: schemas.AlertAction | None = Body(None),
    principal: Principal = Depends(write("acknowledge alerts")),
) -> dict[str, Any]:
    """Mark an open alert acknowledged; 409 when it is not open. Audited."""
    row = alerts.acknowledge(get_runtime(request).db, principal.organization_id, alert_id, principal.actor,
                             body.note if body else None)
    cache_hooks.stats_changed()
    return row


@router.post("/alerts/{alert_id}/resolve", response_model=schemas.Alert, summary="Resolve an alert")
def resolve_alert(
    request: Request, alert_id: uuid.UUID, body: schemas.AlertAction | None = Body(None),
    principal: Principal = Depends(write("resolve alerts")),
) -> dict[str, Any]:
    """Mark an open or acknowledged alert resolved; 409 when already resolved. Audited."""
    row = alerts.resolve(get_runtime(request).db, principal.organization_id, alert_id, principal.actor,
                         body.note if body else None)
    cache_hooks.stats_changed()
    return row
