"""MCP servers: registration, the cached list, signed attestations and registry imports."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from fastapi import APIRouter, Depends, Query, Request, Response, status
from starlette.concurrency import run_in_threadpool

from aim.api import fastroutes, schemas
from aim.api.fastjson import cached_json_async
from aim.api.paging import Cursor, Limit, page_json_bytes
from aim.api.security import Principal, client_address, get_runtime, read, request_id, write
from aim.db import keyset
from aim.errors import ValidationError
from aim.services import listing, mcp_registry, mcp_servers
from aim.services.actor import Actor
from aim.services.cache_hooks import MCP_SERVER_LIST

router = APIRouter(tags=["mcp-servers"])


@router.get("/mcp-servers", response_model=schemas.Page[schemas.McpServer], summary="List MCP servers")
async def list_servers(
    request: Request,
    cursor: Cursor = None,
    limit: Limit = keyset.DEFAULT_LIMIT,
    sort: Literal["name", "confidence"] = "name",
    name_prefix: str | None = Query(None, max_length=keyset.MAX_PREFIX_LENGTH),
    status_filter: Literal["active", "inactive", "deprecated"] | None = Query(None, alias="status"),
    drift_detected: bool | None = None,
    source: Literal["manual", "registry"] | None = None,
    url: str | None = Query(None, max_length=mcp_servers.MAX_URL_LENGTH,
                            description="Exact URL lookup: the page contains the server at this URL, or no item"),
    principal: Principal = Depends(read("list MCP servers", agent_scoped=True)),
) -> dict[str, Any] | Response:
    """By name A to Z or by confidence, highest first. Pages are cached for up to 10 minutes; writes refresh them."""
    runtime = get_runtime(request)
    if url is not None:
        server = await run_in_threadpool(listing.find_mcp_server_by_url, runtime.db, principal.organization_id, url)
        items = [server] if server is not None else []
        return {"items": items, "next_cursor": None, "prev_cursor": None, "total": len(items),
                "total_is_estimate": False}

    def render() -> bytes:
        page = listing.list_mcp_servers(
            runtime.db, principal.organization_id, sort=sort, name_prefix=name_prefix, status=status_filter,
            drift_detected=drift_detected, source=source, cursor=cursor, limit=limit, secret=runtime.secret_key,
            use_cache=False,
        )
        return page_json_bytes(page, schemas.McpServer)

    # The rendered page is cached in the mcp_server_list cache, where every server write drops it in
    # every process. The page under it is read from PostgreSQL, because caching it too would only add
    # a second lock and store to each cold read.
    query = {"organization_id": str(principal.organization_id), "sort": sort, "prefix": name_prefix,
             "status": status_filter, "drift_detected": drift_detected, "source": source, "cursor": cursor,
             "limit": limit}
    return await cached_json_async(MCP_SERVER_LIST, str(principal.organization_id), query, render, request)


@router.post("/mcp-servers", response_model=schemas.McpServerDetail, status_code=status.HTTP_201_CREATED,
             summary="Register an MCP server")
def register_server(
    request: Request, body: schemas.McpServerCreate, principal: Principal = Depends(write("register MCP servers")),
) -> Response:
    """Register a server by URL; 409 when the URL is already registered. Audited."""
    return fastroutes.respond_register_server(request, principal, body)


@router.post("/mcp-servers/import", response_model=schemas.ImportResult, summary="Import from the MCP Registry format")
def import_servers(
    request: Request, body: list[schemas.JsonObject] | schemas.RegistryDocument,
    principal: Principal = Depends(write("import MCP servers")),
) -> dict[str, Any]:
    """Create or update one server per registry entry: a list of entries or {"servers": [...]}.

    Importing the same entries again changes nothing. Entries without an id, name or usable URL are
    skipped and listed with their index and reason.
    """
    entries = body.servers if isinstance(body, schemas.RegistryDocument) else body
    if not entries:
        raise ValidationError("servers", "is empty; expected at least one registry entry")
    items = [mcp_registry.unwrap_server(item) for item in entries]
    report = mcp_registry.import_registry(get_runtime(request).db, principal.organization_id, principal.actor, items)
    return {"created": report.created, "updated": report.updated, "unchanged": report.unchanged,
            "skipped": [{"index": index, "reason": reason} for index, reason in report.skipped]}


@router.get("/mcp-servers/{server_id}", response_model=schemas.McpServerDetail, summary="Get an MCP server")
def get_server(
    request: Request, server_id: uuid.UUID,
    principal: Principal = Depends(read("read MCP servers", agent_scoped=True)),
) -> dict[str, Any]:
    return mcp_servers.get_server(get_runtime(request).db, principal.organization_id, server_id)


@router.post("/mcp-servers/{server_id}/attest", response_model=schemas.AttestResult, summary="Attest an MCP server")
def attest_server(
    request: Request, server_id: uuid.UUID, body: schemas.AttestRequest,
    principal: Principal = Depends(write("attest MCP servers", agent_scoped=True)),
) -> dict[str, Any]:
    """Store an agent's signed statement of the capabilities it found, its latency and health.

    Capabilities that differ from the server's known set are capability drift: the server is
    flagged and an alert is raised. A bad signature, a stale timestamp or a replayed nonce is a 422
    with `reason`; a suspended or revoked agent gets 403.
    """
    principal.require_agent(body.agent_id, "attest MCP servers")
    runtime = get_runtime(request)
    fields = body.model_dump(exclude_unset=True)
    actor = Actor("agent", str(body.agent_id), ip_address=client_address(request),
                  user_agent=request.headers.get("user-agent"), request_id=request_id(request))
    result = mcp_servers.attest(runtime.db, runtime.redis, runtime.settings.redis_prefix, principal.organization_id,
                                server_id, fields, actor=actor)
    return {
        "attestation_id": result.attestation_id, "server_id": result.server_id, "agent_id": result.agent_id,
        "capabilities": result.capabilities, "manifest_hash": result.manifest_hash,
        "baseline_set": result.baseline_set, "drift": result.drift, "added": result.added, "removed": result.removed,
        "alert_id": result.alert_id, "confidence": result.confidence, "key_id": result.key_id,
    }
