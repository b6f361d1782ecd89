"""API keys, managed by admins. A key's secret is returned once, at creation."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, status

from aim.api import schemas
from aim.api.paging import Cursor, Limit, page_body
from aim.api.security import ADMIN_ROLES, Principal, get_runtime, permit
from aim.db import keyset
from aim.services import api_keys, listing

router = APIRouter(tags=["api-keys"])


@router.get("/api-keys", response_model=schemas.Page[schemas.ApiKey], summary="List API keys")
def list_api_keys(
    request: Request, agent_id: uuid.UUID | None = None,
    role: Literal["admin", "analyst", "manager", "viewer"] | None = None,
    cursor: Cursor = None, limit: Limit = keyset.DEFAULT_LIMIT,
    principal: Principal = Depends(permit(ADMIN_ROLES, operation="list API keys")),
) -> dict[str, Any]:
    """Newest first, revoked keys included. Secrets are never shown again; `prefix` distinguishes keys."""
    runtime = get_runtime(request)
    page = listing.list_api_keys(runtime.db, principal.organization_id, agent_id=agent_id, role=role, cursor=cursor,
                                 limit=limit, secret=runtime.secret_key)
    return page_body(page)


@router.post("/api-keys", response_model=schemas.ApiKeyCreated, status_code=status.HTTP_201_CREATED,
             summary="Create an API key")
def create_api_key(
    request: Request, body: schemas.ApiKeyCreate,
    principal: Principal = Depends(permit(ADMIN_ROLES, operation="create API keys")),
) -> dict[str, Any]:
    """Return the key's secret (`aim_...`) once; only its SHA-256 and prefix are stored. Audited.

    A key with `agent_id` may only verify, attest and request capabilities for that agent, and it
    still needs the role analyst or admin to do so.
    """
    created = api_keys.create_api_key(
        get_runtime(request).db, principal.organization_id, principal.actor, name=body.name, role=body.role,
        agent_id=body.agent_id, expires_at=body.expires_at,
    )
    return {"api_key": created.api_key, "key": created.secret}


@router.delete("/api-keys/{key_id}", response_model=schemas.ApiKey, summary="Revoke an API key")
def revoke_api_key(
    request: Request, key_id: uuid.UUID,
    principal: Principal = Depends(permit(ADMIN_ROLES, operation="revoke API keys")),
) -> dict[str, Any]:
    """Revoke the key in every API process at once. The row stays, with `revoked_at` set. Audited."""
    return api_keys.revoke_api_key(get_runtime(request).db, principal.organization_id, key_id, principal.actor)
