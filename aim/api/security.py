"""Caller identification: bearer credentials, roles, API key scopes and the rate limit.

`Authorization: Bearer aim_...` is an API key; any other bearer token must be an access JWT from
/api/v1/auth/login or /refresh. Every failure is a problem with a `reason`:

- 401 `missing_credentials`, `invalid_token`, `expired_token`, `wrong_token_type`, `session_revoked`,
  `session_expired`, `invalid_credentials`, `invalid_api_key`, `revoked_api_key`, `expired_api_key`
- 403 `insufficient_role` (the role is too low) and `wrong_scope` (an agent-scoped API key used
  outside its agent)
- 429 `rate_limited`, with Retry-After

Roles: admin may do everything. Analyst acts on agents, MCP servers, alerts and capability
requests, and reads the audit log. Manager and viewer only read agents, MCP servers, alerts, trust
and the overview. API keys are managed by admins. A key scoped to an agent may verify, attest and
request capabilities for that agent, and read that agent and the MCP server list, and nothing else.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Callable

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from aim.api.problems import ProblemException
from aim.api.ratelimit import RateDecision, RateLimiter
from aim.runtime import Runtime
from aim.services import api_keys, sessions
from aim.services.actor import ROLES, WRITE_ROLES, Actor, ip_address_or_none
from aim.services.users import AuthenticationFailed

logger = logging.getLogger(__name__)

READ_ROLES = ROLES
AUDIT_ROLES = ("admin", "analyst")
ADMIN_ROLES = ("admin",)
# An API key's last_used_at is written at most this often per process, because it is a write per request.
TOUCH_INTERVAL_S = 60.0


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `agent_id` is set for an API key scoped to one agent."""

    kind: str  # "user" or "api_key"
    id: uuid.UUID
    organization_id: uuid.UUID
    role: str
    agent_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor(self.kind, str(self.id), role=self.role, ip_address=self.ip_address,
                     user_agent=self.user_agent, request_id=self.request_id)

    @property
    def subject(self) -> str:
        """The rate-limit subject, such as `api_key:<id>`."""
        return f"{self.kind}:{self.id}"

    def require_agent(self, agent_id: uuid.UUID | str, operation: str) -> None:
        """Raise 403 wrong_scope when this is an agent-scoped key of another agent."""
        if self.agent_id is not None and str(self.agent_id) != str(agent_id):
            raise forbidden(
                "wrong_scope",
                f"this API key is scoped to agent {self.agent_id}; it cannot {operation} for agent {agent_id}",
            )


def unauthorized(reason: str, detail: str) -> ProblemException:
    return ProblemException(401, "Unauthorized", detail, reason=reason,
                            headers={"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{reason}"'})


def forbidden(reason: str, detail: str) -> ProblemException:
    return ProblemException(403, "Forbidden", detail, reason=reason)


def get_runtime(request: Request) -> Runtime:
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None:
        from aim.runtime import get_runtime as build

        runtime = request.app.state.runtime = build()
    return runtime


def client_address(request: Request) -> str | None:
    """Return the peer's IP address, or None when the peer is not an IP socket (a test transport, a Unix socket)."""
    return ip_address_or_none(request.client.host if request.client else None)


def request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


_last_touch: dict[uuid.UUID, float] = {}
_touch_lock = threading.Lock()


def _touch_due(key_id: uuid.UUID, now: float) -> bool:
    return now - _last_touch.get(key_id, float("-inf")) >= TOUCH_INTERVAL_S


def _touch_key(runtime: Runtime, key_id: uuid.UUID) -> None:
    now = time.monotonic()
    with _touch_lock:
        if not _touch_due(key_id, now):
            return
        _last_touch[key_id] = now
    try:
        api_keys.touch_last_used(runtime.db, key_id)
    except Exception as exc:  # noqa: BLE001 - a failed bookkeeping write must not fail the request
        logger.warning("could not record last use of API key %s: %s", key_id, exc)


# Declares the scheme in the OpenAPI document. The header itself is parsed by _bearer_token, so a
# missing or malformed header gets a 401 problem with a reason instead of HTTPBearer's generic 403.
BEARER_SCHEME = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="An access token from /api/v1/auth/login or /refresh, or an API key (aim_...)",
)


def _bearer_token(request: Request) -> str:
    header = request.headers.get("authorization")
    if not header:
        raise unauthorized("missing_credentials",
                           "no credentials; send 'Authorization: Bearer <access token or aim_ API key>'")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("missing_credentials",
                           f"the Authorization scheme {scheme!r} is not supported; expected 'Bearer <token>'")
    return token


def _request_context(request: Request) -> dict[str, str | None]:
    return {"ip_address": client_address(request), "user_agent": request.headers.get("user-agent"),
            "request_id": request_id(request)}


def _principal_from_memory(request: Request, token: str) -> Principal | None:
    """Resolve `token` from this process's L1 cache alone, or return None when that needs Redis or
    PostgreSQL (a cold key or session, or a due last-used write)."""
    runtime = get_runtime(request)
    if api_keys.looks_like_api_key(token):
        key = api_keys.authenticate_api_key_from_memory(token)
        if key is None or _touch_due(key["id"], time.monotonic()):
            return None
        return _api_key_principal(request, key)
    claims = sessions.decode_token(runtime.secret_key, token, sessions.ACCESS)
    session = sessions.load_session_from_memory(claims["sid"])
    if session is None:
        return None
    return _user_principal(request, claims, session)


def _api_key_principal(request: Request, key: dict) -> Principal:
    return Principal("api_key", key["id"], key["organization_id"], key["role"], agent_id=key["agent_id"],
                     **_request_context(request))


def _user_principal(request: Request, claims: dict, session: sessions.SessionInfo) -> Principal:
    if session.user_id != claims["sub"]:
        raise AuthenticationFailed("invalid_token", "the access token does not match its session; sign in again")
    return Principal("user", session.user_id, session.organization_id, session.role,
                     session_id=session.session_id, **_request_context(request))


def _principal_from_stores(request: Request, token: str) -> Principal:
    """Resolve `token` through the two-level cache and PostgreSQL. Blocking: run it in the threadpool."""
    runtime = get_runtime(request)
    if api_keys.looks_like_api_key(token):
        key = api_keys.authenticate_api_key(runtime.db, token)
        _touch_key(runtime, key["id"])
        return _api_key_principal(request, key)
    claims = sessions.decode_token(runtime.secret_key, token, sessions.ACCESS)
    return _user_principal(request, claims, sessions.load_session(runtime.db, claims["sid"]))


def principal_from_memory(request: Request) -> Principal | None:
    """Resolve the request's bearer credential from this process's L1 cache alone, or return None.

    Raises the 401 ProblemException for a missing or malformed header and AuthenticationFailed for
    a credential that fails its check. None means the credential needs Redis or PostgreSQL.
    """
    return _principal_from_memory(request, _bearer_token(request))


def authenticate_blocking(request: Request) -> Principal:
    """Do what `authenticate` does, for a sync route that runs in the threadpool already."""
    token = _bearer_token(request)
    try:
        principal = _principal_from_stores(request, token)
    except AuthenticationFailed as failed:
        raise unauthorized(failed.reason, failed.message) from None
    enforce_rate_limit(request, principal.subject)
    request.state.principal = principal
    return principal


async def authenticate(
    request: Request, _credentials: HTTPAuthorizationCredentials | None = Security(BEARER_SCHEME),
) -> Principal:
    """Resolve the bearer credentials of `request` into a Principal and count it against the rate limit.

    A credential found in this process's L1 cache is checked on the event loop. Anything that needs
    Redis or PostgreSQL (a cold credential, the rate limit counter) runs in the threadpool, because
    the services use blocking clients.
    """
    token = _bearer_token(request)
    try:
        principal = _principal_from_memory(request, token)
        if principal is None:
            principal = await run_in_threadpool(_principal_from_stores, request, token)
    except AuthenticationFailed as failed:
        raise unauthorized(failed.reason, failed.message) from None
    await enforce_rate_limit_async(request, principal.subject)
    request.state.principal = principal
    return principal


def enforce_rate_limit(request: Request, subject: str) -> None:
    """Count a request by `subject`; raise 429 with Retry-After over the limit."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None or not limiter.enabled:
        return
    _raise_if_limited(limiter.hit(subject), subject)


async def enforce_rate_limit_async(request: Request, subject: str) -> None:
    """Do what `enforce_rate_limit` does, from async code (see RateLimiter.hit_async)."""
    limiter: RateLimiter | None = getattr(request.app.state, "rate_limiter", None)
    if limiter is None or not limiter.enabled:
        return
    _raise_if_limited(await limiter.hit_async(subject), subject)


def _raise_if_limited(decision: RateDecision, subject: str) -> None:
    if not decision.allowed:
        raise ProblemException(
            429, "Too many requests",
            f"more than {decision.limit} requests per minute by {subject}; retry after {decision.retry_after_s} s",
            reason="rate_limited", headers={"Retry-After": str(decision.retry_after_s)},
        )


def permit(roles: tuple[str, ...], *, agent_scoped: bool = False, operation: str = "do this") -> Callable[..., Principal]:
    """Build a dependency that authenticates and checks the role and, for agent-scoped keys, the scope.

    With `agent_scoped=False` an agent-scoped key is refused outright. With `agent_scoped=True` it
    passes here and the route calls `principal.require_agent(...)` on the agent it acts for.
    """

    # async: the check and the rate limit run on the event loop and cost no threadpool hop. It
    # calls `authenticate` itself instead of depending on it, because each dependency level costs
    # FastAPI a resolution step on every request.
    async def check(
        request: Request, credentials: HTTPAuthorizationCredentials | None = Security(BEARER_SCHEME),
    ) -> Principal:
        principal = await authenticate(request, credentials)
        if principal.agent_id is not None and not agent_scoped:
            raise forbidden(
                "wrong_scope",
                f"this API key is scoped to agent {principal.agent_id}; it may only verify, attest and request "
                f"capabilities for that agent, not {operation}",
            )
        if principal.role not in roles:
            raise forbidden(
                "insufficient_role",
                f"role {principal.role} may not {operation}; it requires the role {' or '.join(roles)}",
            )
        return principal

    return check


def read(operation: str, *, agent_scoped: bool = False) -> Callable[..., Principal]:
    return permit(READ_ROLES, agent_scoped=agent_scoped, operation=operation)


def write(operation: str, *, agent_scoped: bool = False) -> Callable[..., Principal]:
    return permit(WRITE_ROLES, agent_scoped=agent_scoped, operation=operation)
