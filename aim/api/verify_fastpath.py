"""Serve signed verification requests before FastAPI routes them.

POST /api/v1/agents/{id}/verify is the most frequent write. Under load, routing, dependency
resolution and body validation in FastAPI cost the API process about three times as much CPU as
the verification itself (py-spy of a worker at 150 requests per second). `VerifyFastPath` runs the
same checks itself for the common case:

- the bearer credential resolves from this process's L1 cache, with a role that may write, and an
  agent-scoped key is scoped to the agent in the path;
- the body has a Content-Length and `schemas.VerifyRequest` accepts it, with no query string;
- `aim.services.verification.validate_request` accepts the fields.

Anything else goes through the normal route, with the body replayed, and gets exactly the response
it got before. Those cases all leave before the rate limit counts the request, so it is never
counted twice. Errors raised during the verification itself go to the app's exception handlers,
as they do from the route.
"""

from __future__ import annotations

import inspect
import re
import threading
import uuid
from typing import Any, Callable

import pydantic
from fastapi import FastAPI, Request, Response
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aim.api import problems, schemas
from aim.api.fastjson import model_json
from aim.api.problems import ProblemException
from aim.api.security import (
    WRITE_ROLES, Principal, client_address, enforce_rate_limit_async, get_runtime, principal_from_memory, request_id,
)
from aim.errors import AIMError
from aim.services import verification
from aim.services.actor import Actor
from aim.services.users import AuthenticationFailed

PATH = re.compile(r"^/api/v1/agents/([0-9A-Fa-f-]{36})/verify$")

_served = 0
_served_lock = threading.Lock()


def served() -> int:
    """Return how many verification requests this process served on the fast path."""
    return _served


def respond(request: Request, principal: Principal, agent_id: uuid.UUID, fields: dict[str, Any]) -> Response:
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


def _exception_handler(app: FastAPI, exc: Exception) -> Callable[..., Any] | None:
    for kind in type(exc).__mro__:
        handler = app.exception_handlers.get(kind)
        if handler is not None:
            return handler
    return None


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


class VerifyFastPath:
    """Serve POST /api/v1/agents/{id}/verify without FastAPI routing (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = PATH.match(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        declared = match is not None and any(name == b"content-length" for name, _ in scope["headers"])
        if not declared or scope["query_string"]:
            await self.app(scope, receive, send)
            return

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
            # An error while reading, such as the body limit's, goes to the normal route, which turns
            # it into its response.
            await self.app(scope, _raising(exc), send)
            return

        replay = _replay(messages, receive)
        if not await self._serve(scope, replay, send, match.group(1), body):
            await self.app(scope, replay, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, agent_text: str, body: bytes) -> bool:
        """Verify and send the response, returning True, or return False with nothing sent or counted."""
        request = Request(scope, receive)
        try:
            principal = principal_from_memory(request)
        except (ProblemException, AuthenticationFailed):
            return False
        if principal is None or principal.role not in WRITE_ROLES:
            return False
        try:
            agent_id = uuid.UUID(agent_text)
        except ValueError:
            return False
        if principal.agent_id is not None and principal.agent_id != agent_id:
            return False
        try:
            fields = schemas.VerifyRequest.model_validate_json(body).model_dump(exclude_unset=True)
            verification.validate_request(fields, agent_id)
        except (pydantic.ValidationError, AIMError):
            return False

        try:
            await enforce_rate_limit_async(request, principal.subject)
        except ProblemException as exc:
            await problems.problem_exception_response(request, exc)(scope, receive, send)
            return True

        request.state.principal = principal
        try:
            response = await run_in_threadpool(respond, request, principal, agent_id, fields)
        except Exception as exc:
            handler = _exception_handler(request.app, exc)
            if handler is None:
                raise
            response = handler(request, exc)
            if inspect.isawaitable(response):
                response = await response

        global _served
        with _served_lock:
            _served += 1
        await response(scope, receive, send)
        return True
