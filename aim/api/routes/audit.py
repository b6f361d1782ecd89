"""The audit log: who did what to which resource, when and from where."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from fastapi import APIRouter, Depends, Query, Request, Response

from aim.api import schemas
from aim.api.paging import Cursor, Limit, page_response
from aim.api.security import AUDIT_ROLES, Principal, get_runtime, permit
from aim.db import keyset
from aim.services import listing

router = APIRouter(tags=["audit"])


@router.get("/audit-logs", response_model=schemas.Page[schemas.AuditLog], summary="List audit events")
def list_audit_logs(
    request: Request,
    start: datetime | None = Query(None, description="Inclusive lower bound, RFC 3339 with a UTC offset"),
    end: datetime | None = Query(None, description="Exclusive upper bound, RFC 3339 with a UTC offset"),
    actor: str | None = Query(None, max_length=200, description="Actor id, such as a user or agent UUID"),
    actor_type: Literal["user", "agent", "api_key", "system"] | None = None,
    action: str | None = Query(None, max_length=200, description="Such as agent.register or alert.resolve"),
    resource_type: str | None = Query(None, max_length=200),
    resource_id: str | None = Query(None, max_length=200),
    result: Literal["success", "failure", "denied"] | None = None,
    cursor: Cursor = None,
    limit: Limit = keyset.DEFAULT_LIMIT,
    principal: Principal = Depends(permit(AUDIT_ROLES, operation="read the audit log")),
) -> Response:
    """Newest first. Every page costs the same at any depth (keyset paging on occurred_at, id)."""
    runtime = get_runtime(request)
    page = listing.list_audit_logs(
        runtime.db, principal.organization_id, start=start, end=end, actor=actor, actor_type=actor_type,
        action=action, resource_type=resource_type, resource_id=resource_id, result=result, cursor=cursor,
        limit=limit, secret=runtime.secret_key,
    )
    return page_response(page, schemas.AuditLog)
