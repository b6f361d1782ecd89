"""Capabilities of agents: grants, withdrawals, and requests that an admin or analyst decides."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request, status

from aim.api import schemas
from aim.api.security import Principal, get_runtime, read, write
from aim.services import agents

router = APIRouter(tags=["capabilities"])


def _capability_list(request: Request, principal: Principal, agent_id: uuid.UUID) -> dict[str, Any]:
    return {"items": agents.list_capabilities(get_runtime(request).db, principal.organization_id, agent_id)}


@router.get("/agents/{agent_id}/capabilities", response_model=schemas.CapabilityList, summary="List granted capabilities")
def list_capabilities(
    request: Request, agent_id: uuid.UUID,
    principal: Principal = Depends(read("read capabilities", agent_scoped=True)),
) -> dict[str, Any]:
    principal.require_agent(agent_id, "read capabilities")
    return _capability_list(request, principal, agent_id)


@router.post("/agents/{agent_id}/capabilities", response_model=schemas.CapabilityList, summary="Grant a capability")
def grant_capability(
    request: Request, agent_id: uuid.UUID, body: schemas.CapabilityGrant,
    principal: Principal = Depends(write("grant capabilities")),
) -> dict[str, Any]:
    """Grant a capability such as `db:read`, or a prefix such as `db:*`. Granting a held one changes nothing. Audited."""
    agents.grant_capability(get_runtime(request).db, principal.organization_id, agent_id, body.capability,
                            principal.actor)
    return _capability_list(request, principal, agent_id)


@router.delete("/agents/{agent_id}/capabilities/{capability:path}", response_model=schemas.CapabilityList,
               summary="Withdraw a capability")
def revoke_capability(
    request: Request, agent_id: uuid.UUID, capability: str,
    principal: Principal = Depends(write("withdraw capabilities")),
) -> dict[str, Any]:
    """Withdraw a granted capability; 404 when the agent does not hold it. Audited."""
    agents.revoke_capability(get_runtime(request).db, principal.organization_id, agent_id, capability,
                             principal.actor)
    return _capability_list(request, principal, agent_id)


@router.post("/agents/{agent_id}/capability-requests", response_model=schemas.CapabilityRequest,
             status_code=status.HTTP_201_CREATED, summary="Request a capability")
def request_capability(
    request: Request, agent_id: uuid.UUID, body: schemas.CapabilityRequestCreate,
    principal: Principal = Depends(write("request capabilities", agent_scoped=True)),
) -> dict[str, Any]:
    """File a request that an admin or analyst approves or rejects. One pending request per capability. Audited."""
    principal.require_agent(agent_id, "request capabilities")
    return agents.request_capability(get_runtime(request).db, principal.organization_id, agent_id, body.capability,
                                     principal.actor, body.justification)


@router.get("/capability-requests", response_model=schemas.CapabilityRequestList, summary="List capability requests")
def list_capability_requests(
    request: Request,
    status_filter: Literal["pending", "approved", "rejected"] | None = Query("pending", alias="status"),
    agent_id: uuid.UUID | None = None,
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(read("read capability requests")),
) -> dict[str, Any]:
    """Return the newest `limit` requests, pending ones by default."""
    rows = agents.list_capability_requests(get_runtime(request).db, principal.organization_id, agent_id=agent_id,
                                           status=status_filter, limit=limit)
    return {"items": rows}


def _decide(request: Request, request_id: uuid.UUID, body: schemas.CapabilityDecision | None, principal: Principal,
            approve: bool) -> dict[str, Any]:
    note = body.note if body is not None else ""
    return agents.decide_capability_request(get_runtime(request).db, principal.organization_id, request_id,
                                            principal.actor, approve=approve, note=note)


@router.post("/capability-requests/{request_id}/approve", response_model=schemas.CapabilityRequest,
             summary="Approve a capability request")
def approve_capability_request(
    request: Request, request_id: uuid.UUID, body: schemas.CapabilityDecision | None = Body(None),
    principal: Principal = Depends(write("approve capability requests")),
) -> dict[str, Any]:
    """Approve a pending request and grant the capability; 409 when it was already decided. Audited."""
    return _decide(request, request_id, body, principal, approve=True)


@router.post("/capability-requests/{request_id}/reject", response_model=schemas.CapabilityRequest,
             summary="Reject a capability request")
def reject_capability_request(
    request: Request, request_id: uuid.UUID, body: schemas.CapabilityDecision | None = Body(None),
    principal: Principal = Depends(write("reject capability requests")),
) -> dict[str, Any]:
    """Reject a pending request; 409 when it was already decided. Audited."""
    return _decide(request, request_id, body, principal, approve=False)
