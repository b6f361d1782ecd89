"""Serve the most frequent API requests before FastAPI routes them.

Under load, routing, dependency resolution and validation in FastAPI cost the API process more CPU
than the work of the two most frequent non-cached requests. In a py-spy profile of a worker at 150
verifications per second, the verification service was 23 % of the time the worker held the GIL.
`FastRoutes` runs the same checks itself for the common case of each:

- POST /api/v1/agents/{id}/verify: the credential resolves from this process's L1 cache with a
  role that may write, an agent-scoped key is scoped to the agent in the path, the body has a
  Content-Length, `schemas.VerifyRequest` and `verification.validate_request` accept it, and there
  is no query string.
- GET /api/v1/audit-logs: the credential resolves from L1 with a role that may read the audit log,
  it is not agent-scoped, and the query string contains at most `cursor` and `limit`, once each, with
  a limit from 1 to 1000.
- POST /api/v1/agents and POST /api/v1/mcp-servers: the credential resolves from L1 with a role
  that may write, it is not agent-scoped, there is no query string, the body is declared as
  `application/json` with a Content-Length, and `schemas.AgentCreate` or `schemas.McpServerCreate`
  accepts it. The route is a sync FastAPI endpoint, which costs a threadpool hop for the endpoint
  and another for the response model, so this path saves one hop and FastAPI's request handling.

Anything else goes through the normal route, with the body replayed, and gets exactly the response
it got before. Those cases all leave before the rate limit counts the request, so it is never
counted twice. Errors raised by the service itself go to the app's exception handlers, as they do
from the route.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections import Counter
from typing import Any, Callable
from urllib.parse import parse_qsl

import orjson
import pydantic
from fastapi import Request, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aim import identity
from aim.api import problems, schemas
from aim.api.fastjson import model_json
from aim.api.paging import page_response
from aim.api.problems import ProblemException
from aim.api.security import (
    AUDIT_ROLES, WRITE_ROLES, Principal, client_address, enforce_rate_limit_async, get_runtime, principal_from_memory,
    request_id,
)
from aim.db import keyset
from aim.errors import AIMError
from aim.services import agents, listing, mcp_servers, verification
from aim.services.actor import Actor
from aim.services.users import AuthenticationFailed

VERIFY_PATH = re.compile(r"^/api/v1/agents/([0-9A-Fa-f-]{36})/verify$")
AUDIT_PATH = "/api/v1/audit-logs"
AUDIT_PARAMS = frozenset(("cursor", "limit"))
AGENTS_PATH = "/api/v1/agents"
MCP_SERVERS_PATH = "/api/v1/mcp-servers"

_served: Counter[str] = Counter()
_served_lock = threading.Lock()


def served(route: str) -> int:
    """Return how many requests of `route` ("verify", "audit", "register_agent" or "register_server")
    this process served here."""
    return _served[route]


def respond_verify(request: Request, principal: Principal, agent_id: uuid.UUID, fields: dict[str, Any]) -> Response:
    """Verify `fields` for `agent_id`, record the decision and return the VerifyResult response.

    It blocks on Redis and PostgreSQL, so async callers run it in the threadpool.
    """
    runtime = get_runtime(request)
    actor = Actor("agent", str(agent_id), ip_address=client_address(request),
                  user_agent=request.headers.get("user-agent"), request_id=request_id(request))
    decision = verification.verify(runtime.db, runtime.redis, runtime.settings.redis_prefix,
                                   principal.organization_id, agent_id, fields, actor=actor)
    # Every value comes from the service in the model's types, so the body is rendered with orjson
    # instead of validated again (see aim.api.fastjson).
    return model_json({
        "decision": decision.decision, "reason": decision.reason, "detail": decision.detail,
        "verification_id": decision.verification_id, "agent_id": decision.agent_id,
        "risk_class": decision.risk_class, "trust_score": decision.trust_score, "latency_ms": decision.latency_ms,
    }, schemas.VerifyResult)


def agent_detail(row: dict[str, Any]) -> dict[str, Any]:
    """Return an agent row in the AgentDetail form (public key as standard base64)."""
    body = dict(row)
    body["public_key"] = identity.encode_base64(bytes(row["public_key"]))
    return body


def _created(model: type[pydantic.BaseModel], body: dict[str, Any]) -> Response:
    """Return `body`, validated and rendered by `model` as FastAPI's response_model step does, with status 201."""
    return Response(model.model_validate(body).model_dump_json(), status_code=201, media_type="application/json")


def respond_register_agent(request: Request, principal: Principal, body: schemas.AgentCreate) -> Response:
    """Register an agent for the caller's organization and return the AgentCreated response (201). It blocks."""
    registered = agents.register_agent(
        get_runtime(request).db, principal.organization_id, principal.actor, name=body.name,
        agent_type=body.agent_type, description=body.description, public_key=body.public_key,
        capabilities=body.capabilities, metadata=body.metadata, status=body.status,
    )
    # agents.register_agent already invalidates the overview counts (cache_hooks.stats_changed).
    return _created(schemas.AgentCreated,
                    {"agent": agent_detail(registered.agent), "private_key_pem": registered.private_key_pem})


def respond_register_server(request: Request, principal: Principal, body: schemas.McpServerCreate) -> Response:
    """Register an MCP server for the caller's organization and return the McpServerDetail response (201). It blocks."""
    server = mcp_servers.register_server(
        get_runtime(request).db, principal.organization_id, principal.actor, name=body.name, url=body.url,
        description=body.description, known_capabilities=body.known_capabilities, metadata=body.metadata,
    )
    return _created(schemas.McpServerDetail, server)


# POST path -> (served() name, request model, respond function) of the registrations served here.
CREATE_ROUTES: dict[str, tuple[str, type[pydantic.BaseModel], Callable[..., Response]]] = {
    AGENTS_PATH: ("register_agent", schemas.AgentCreate, respond_register_agent),
    MCP_SERVERS_PATH: ("register_server", schemas.McpServerCreate, respond_register_server),
}


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """Return a receive callable that yields `messages` first, then reads on from `receive`."""
    pending = list(messages)

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def _raising(exc: BaseException) -> Receive:
    async def receive() -> Message:
        raise exc

    return receive


def _audit_query(query_string: bytes) -> dict[str, Any] | None:
    """Return the cursor and limit of an audit-log query string, or None when the route must check it.

    The string is decoded as Starlette decodes it for the route, so both paths see the same values.
    """
    values: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name not in AUDIT_PARAMS or name in values:
            return None
        values[name] = value

    query: dict[str, Any] = {"cursor": None, "limit": keyset.DEFAULT_LIMIT}
    if "limit" in values:
        digits = values["limit"]
        if not (digits.isascii() and digits.isdigit()) or not keyset.MIN_LIMIT <= int(digits) <= keyset.MAX_LIMIT:
            return None
        query["limit"] = int(digits)
    if "cursor" in values:
        cursor = values["cursor"]
        if not cursor or len(cursor) > keyset.MAX_CURSOR_LENGTH:
            return None
        query["cursor"] = cursor
    return query


def respond_audit(request: Request, principal: Principal, query: dict[str, Any]) -> Response:
    """Return one page of the organization's audit log, newest first. It blocks on PostgreSQL."""
    runtime = get_runtime(request)
    page = listing.list_audit_logs(runtime.db, principal.organization_id, cursor=query["cursor"],
                                   limit=query["limit"], secret=runtime.secret_key)
    return page_response(page, schemas.AuditLog)


def _from_memory(request: Request, roles: tuple[str, ...]) -> Principal | None:
    """Return the caller if its credential is in L1 and its role is one of `roles`, else None."""
    try:
        principal = principal_from_memory(request)
    except (ProblemException, AuthenticationFailed):
        return None
    if principal is None or principal.role not in roles:
        return None
    return principal


class FastRoutes:
    """Serve verifications and audit-log pages without FastAPI routing (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if scope["method"] == "GET" and scope["path"] == AUDIT_PATH:
                if not await self._audit(scope, receive, send):
                    await self.app(scope, receive, send)
                return
            if scope["method"] == "POST":
                create = CREATE_ROUTES.get(scope["path"])
                if create is not None:
                    await self._create(scope, receive, send, *create)
                    return
                match = VERIFY_PATH.match(scope["path"])
                if match is not None:
                    await self._verify(scope, receive, send, match.group(1))
                    return
        await self.app(scope, receive, send)

    async def _audit(self, scope: Scope, receive: Receive, send: Send) -> bool:
        query = _audit_query(scope["query_string"])
        if query is None:
            return False
        request = Request(scope, receive)
        principal = _from_memory(request, AUDIT_ROLES)
        if principal is None or principal.agent_id is not None:
            return False
        await self._run(request, send, "audit", principal, respond_audit, request, principal, query)
        return True

    async def _read_body(self, scope: Scope, receive: Receive, send: Send) -> tuple[bytes, Request] | None:
        """Read the whole body and return it with a Request whose receive replays it for the normal route.

        Return None when reading failed. The request then went to the normal route, which turns the
        error (such as the body limit's) into its response.
        """
        messages: list[Message] = []
        body = b""
        try:
            while True:
                message = await receive()
                messages.append(message)
                if message["type"] != "http.request":
                    break
                body += message.get("body", b"")
                if not message.get("more_body", False):
                    break
        except Exception as exc:
            await self.app(scope, _raising(exc), send)
            return None
        return body, Request(scope, _replay(messages, receive))

    async def _create(self, scope: Scope, receive: Receive, send: Send, route: str,
                      model: type[pydantic.BaseModel], respond: Callable[..., Response]) -> None:
        if scope["query_string"] or not _json_body_declared(scope["headers"]):
            await self.app(scope, receive, send)
            return
        read = await self._read_body(scope, receive, send)
        if read is None:
            return

        body, request = read
        principal = _from_memory(request, WRITE_ROLES)
        fields = _parse_create(model, body) if principal is not None and principal.agent_id is None else None
        if fields is None:
            await self.app(scope, request.receive, send)
            return
        await self._run(request, send, route, principal, respond, request, principal, fields)

    async def _verify(self, scope: Scope, receive: Receive, send: Send, agent_text: str) -> None:
        declared = any(name == b"content-length" for name, _ in scope["headers"])
        if not declared or scope["query_string"]:
            await self.app(scope, receive, send)
            return
        read = await self._read_body(scope, receive, send)
        if read is None:
            return

        body, request = read
        fields = _verify_fields(request, agent_text, body)
        if fields is None:
            await self.app(scope, request.receive, send)
            return
        principal, agent_id, checked = fields
        await self._run(request, send, "verify", principal, respond_verify, request, principal, agent_id, checked)

    async def _run(self, request: Request, send: Send, route: str, principal: Principal,
                   respond: Callable[..., Response], *args: Any) -> None:
        """Count the request against the rate limit, run `respond(*args)` in the threadpool and send its response."""
        scope, receive = request.scope, request.receive
        try:
            await enforce_rate_limit_async(request, principal.subject)
        except ProblemException as exc:
            await problems.problem_exception_response(request, exc)(scope, receive, send)
            return

        request.state.principal = principal
        response = await problems.threadpool_response(request, respond, *args)

        with _served_lock:
            _served[route] += 1
        await response(scope, receive, send)


def _verify_fields(request: Request, agent_text: str, body: bytes
                   ) -> tuple[Principal, uuid.UUID, dict[str, Any]] | None:
    """Return the caller, agent id and fields of a verification the fast path may serve, or None."""
    principal = _from_memory(request, WRITE_ROLES)
    if principal is None:
        return None
    try:
        agent_id = uuid.UUID(agent_text)
    except ValueError:
        return None
    if principal.agent_id is not None and principal.agent_id != agent_id:
        return None
    try:
        fields = schemas.VerifyRequest.model_validate_json(body).model_dump(exclude_unset=True)
        verification.validate_request(fields, agent_id)
    except (pydantic.ValidationError, AIMError):
        return None
    return principal, agent_id, fields


def _json_body_declared(headers: list[tuple[bytes, bytes]]) -> bool:
    """Return True when the headers declare a Content-Length and the media type application/json."""
    length = media_type = None
    for name, value in headers:
        if name == b"content-length":
            length = value
        elif name == b"content-type":
            media_type = value.split(b";", 1)[0].strip().lower()
    return length is not None and media_type == b"application/json"


def _parse_create(model: type[pydantic.BaseModel], body: bytes) -> pydantic.BaseModel | None:
    """Return `body` validated by `model`, or None when the normal route must handle it.

    The body is decoded first and then validated as Python data, which is what FastAPI does with a
    JSON body, so both paths accept the same requests.
    """
    try:
        return model.model_validate(orjson.loads(body))
    except (orjson.JSONDecodeError, pydantic.ValidationError):
        return None
