"""Agents: registration, reads, lifecycle, key rotation, signed verification and trust."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, Response, status

from aim.api import fastroutes, schemas
from aim.api.fastroutes import agent_detail
from aim.api.fastjson import cached_json_async
from aim.api.paging import Cursor, Limit, page_body, page_json_bytes
from aim.api.security import Principal, get_runtime, read, write
from aim.db import keyset
from aim.services import agents, listing
from aim.services.cache_hooks import AGENT_LIST

router = APIRouter(tags=["agents"])


@router.get("/agents", response_model=schemas.Page[schemas.AgentSummary], summary="List agents")
async def list_agents(
    request: Request,
    cursor: Cursor = None,
    limit: Limit = keyset.DEFAULT_LIMIT,
    sort: Literal["created", "trust", "name"] = "created",
    status_filter: Literal["pending", "verified", "suspended", "revoked"] | None = Query(None, alias="status"),
    agent_type: str | None = Query(None, max_length=50),
    name_prefix: str | None = Query(None, max_length=keyset.MAX_PREFIX_LENGTH),
    principal: Principal = Depends(read("list agents")),
) -> Response:
    """Newest first (`sort=created`), highest trust first (`trust`) or by name A to Z (`name`). Pages are cached
    for up to a minute; every agent write refreshes them. `last_seen_at` is updated at most once a minute."""
    runtime = get_runtime(request)

    def render() -> bytes:
        page = listing.list_agents(
            runtime.db, principal.organization_id, sort=sort, status=status_filter, agent_type=agent_type,
            name_prefix=name_prefix, cursor=cursor, limit=limit, secret=runtime.secret_key,
        )
        return page_json_bytes(page, schemas.AgentSummary)

    query = {"organization_id": str(principal.organization_id), "sort": sort, "status": status_filter,
             "agent_type": agent_type, "prefix": name_prefix, "cursor": cursor, "limit": limit}
    return await cached_json_async(AGENT_LIST, str(principal.organization_id), query, render, request)


@router.post("/agents", response_model=schemas.AgentCreated, status_code=status.HTTP_201_CREATED,
             summary="Register an agent")
def register_agent(
    request: Request, body: schemas.AgentCreate, principal: Principal = Depends(write("register agents")),
) -> Response:
    """Register with a supplied public key, or let AIM generate a key pair and return the private key once."""
    return fastroutes.respond_register_agent(request, principal, body)


@router.get("/agents/{agent_id}", response_model=schemas.AgentDetail, summary="Get an agent")
def get_agent(
    request: Request, agent_id: uuid.UUID, principal: Principal = Depends(read("read agents", agent_scoped=True)),
) -> dict[str, Any]:
    principal.require_agent(agent_id, "read agents")
    return agent_detail(agents.get_agent(get_runtime(request).db, principal.organization_id, agent_id))


@router.patch("/agents/{agent_id}", response_model=schemas.AgentDetail, summary="Change an agent")
def update_agent(
    request: Request, agent_id: uuid.UUID, body: schemas.AgentUpdate,
    principal: Principal = Depends(write("change agents")),
) -> dict[str, Any]:
    """Change name, description, agent_type or metadata. Audited."""
    changes = body.model_dump(exclude_unset=True)
    row = agents.update_agent(get_runtime(request).db, principal.organization_id, agent_id, principal.actor, changes)
    return agent_detail(row)


@router.delete(
    "/agents/{agent_id}", response_model=schemas.AgentDetail, summary="Revoke an agent",
    description="Revokes the agent: it stays in the list with status `revoked`, every later verification "
                "is denied, and the revocation is final and written to the audit log. Same as POST "
                "/agents/{agent_id}/revoke.",
)
def delete_agent(
    request: Request, agent_id: uuid.UUID, body: schemas.StatusChange | None = Body(None),
    principal: Principal = Depends(write("revoke agents")),
) -> dict[str, Any]:
    return _set_status(request, agent_id, "revoked", body, principal)


def _set_status(request: Request, agent_id: uuid.UUID, target: str, body: schemas.StatusChange | None,
                principal: Principal) -> dict[str, Any]:
    reason = body.reason if body is not None else None
    row = agents.set_status(get_runtime(request).db, principal.organization_id, agent_id, principal.actor, target,
                            reason)
    return agent_detail(row)


@router.post("/agents/{agent_id}/suspend", response_model=schemas.AgentDetail, summary="Suspend an agent")
def suspend_agent(
    request: Request, agent_id: uuid.UUID, body: schemas.StatusChange | None = Body(None),
    principal: Principal = Depends(write("suspend agents")),
) -> dict[str, Any]:
    """Suspend the agent: its verifications are denied until it is reactivated. Audited."""
    return _set_status(request, agent_id, "suspended", body, principal)


@router.post("/agents/{agent_id}/reactivate", response_model=schemas.AgentDetail, summary="Reactivate an agent")
def reactivate_agent(
    request: Request, agent_id: uuid.UUID, body: schemas.StatusChange | None = Body(None),
    principal: Principal = Depends(write("reactivate agents")),
) -> dict[str, Any]:
    """Move a pending or suspended agent to verified. A revoked agent cannot come back. Audited."""
    return _set_status(request, agent_id, "verified", body, principal)


@router.post("/agents/{agent_id}/revoke", response_model=schemas.AgentDetail, summary="Revoke an agent")
def revoke_agent(
    request: Request, agent_id: uuid.UUID, body: schemas.StatusChange | None = Body(None),
    principal: Principal = Depends(write("revoke agents")),
) -> dict[str, Any]:
    """Revoke the agent for good. Audited."""
    return _set_status(request, agent_id, "revoked", body, principal)


@router.post("/agents/{agent_id}/rotate-key", response_model=schemas.RotatedKey, summary="Rotate an agent's key")
def rotate_key(
    request: Request, agent_id: uuid.UUID, body: schemas.RotateKeyRequest | None = Body(None),
    principal: Principal = Depends(write("rotate agent keys")),
) -> dict[str, Any]:
    """Replace the key; the previous one keeps verifying for `grace_hours` (default 24). Audited."""
    body = body or schemas.RotateKeyRequest()
    rotated = agents.rotate_key(
        get_runtime(request).db, principal.organization_id, agent_id, principal.actor,
        public_key=body.public_key, grace=timedelta(hours=body.grace_hours),
    )
    return {"agent": agent_detail(rotated.agent), "private_key_pem": rotated.private_key_pem,
            "previous_key_valid_until": rotated.previous_key_valid_until}


@router.post("/agents/{agent_id}/verify", response_model=schemas.VerifyResult, summary="Verify a signed action")
def verify_action(
    request: Request, agent_id: uuid.UUID, body: schemas.VerifyRequest,
    principal: Principal = Depends(write("verify actions", agent_scoped=True)),
) -> Response:
    """Decide whether the agent may do `action` on `resource` now.

    A denial is a 200 response with `decision: denied` and a `reason`; a request that is not shaped
    like a signed request is a 422. Every decision is recorded and audited.
    """
    principal.require_agent(agent_id, "verify actions")
    # The signature covers the fields as sent, so the service gets exactly the fields the client set.
    return fastroutes.respond_verify(request, principal, agent_id, body.model_dump(exclude_unset=True))


@router.get("/agents/{agent_id}/trust", response_model=schemas.TrustReport, summary="Trust factors and history")
def agent_trust(
    request: Request, agent_id: uuid.UUID, cursor: Cursor = None, limit: Limit = keyset.DEFAULT_LIMIT,
    principal: Principal = Depends(read("read trust")),
) -> dict[str, Any]:
    """Return the current score, each factor with its provenance (`measured` or `no data`), and a page of history."""
    runtime = get_runtime(request)
    agent = agents.get_agent(runtime.db, principal.organization_id, agent_id)
    history = listing.list_trust_history(runtime.db, principal.organization_id, agent_id, cursor=cursor, limit=limit,
                                         secret=runtime.secret_key)
    return {"agent_id": agent_id, "trust_score": agent["trust_score"], "factors": agent["trust_factors"],
            "history": page_body(history)}
