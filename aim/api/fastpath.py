"""Serve repeated cached GET requests before FastAPI routes them.

A GET that `aim.api.fastjson.cached_json_async` served is remembered by its path, its raw query
string and the caller's identity: kind, id, organization, role, agent scope and session. When the
same caller sends the same request again and the body is still in this process's L1 cache,
`CachedReadMiddleware` sends that body itself. The credential is still resolved and checked from
L1, and the rate limit still counts the request. Routing, dependency resolution and query
validation are skipped, because they passed for exactly these inputs before, and role and scope
checks depend only on the route and the identity.

When a write has dropped the body from L1, the middleware runs the route's remembered loader in
the threadpool instead. The loader makes the route's own cache lookup, which reads L2 or renders
the body from PostgreSQL once. Under a load test with 30 registrations per second, each dropping
the list and overview caches, such reloads were most of the requests that still went through
FastAPI's routing.

Anything else goes through the normal route: a credential that needs Redis or PostgreSQL or fails
its check, or an API key whose last-used time is due for a write.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Callable

from fastapi import Request, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from aim.api import problems
from aim.api.problems import ProblemException
from aim.api.security import Principal, enforce_rate_limit_async, principal_from_memory
from aim.services.users import AuthenticationFailed

# Maximum number of remembered (request, identity) pairs per process. Dropping them all when full
# costs one normal request per pair, so no finer eviction is needed.
MEMO_MAX = 8192

MemoKey = tuple[str, bytes, str, uuid.UUID, uuid.UUID, str, uuid.UUID | None, uuid.UUID | None]

# A function that builds the response from a cached value that is not a rendered body, such as a dict.
Render = Callable[[Any], Response]
# A blocking function that returns the response through the cache when L1 has no value.
Load = Callable[[], Response]

_memo: dict[MemoKey, tuple[str, str, Render | None, Load | None]] = {}
_paths: set[str] = set()
_served = 0
_served_lock = threading.Lock()


def _memo_key(path: str, query_string: bytes, principal: Principal) -> MemoKey:
    return (path, query_string, principal.kind, principal.id, principal.organization_id, principal.role,
            principal.agent_id, principal.session_id)


def remember(request: Request, cache: str, key: str, render: Render | None = None, load: Load | None = None) -> None:
    """Record that the authenticated GET `request` was served from cache entry (`cache`, `key`).

    Without `render` the entry is the JSON body itself. With it, `render(value)` builds the
    response from the entry's shared value, which it must not change. `load()` returns the
    response when L1 has no value. It may depend only on the request's path, query string and
    caller, because later identical requests of the same caller reuse it.
    """
    principal = getattr(request.state, "principal", None)
    if principal is None or request.method != "GET":
        return
    path = request.scope["path"]
    if len(_memo) >= MEMO_MAX:
        _memo.clear()
    _memo[_memo_key(path, request.scope["query_string"], principal)] = (cache, key, render, load)
    _paths.add(path)


def served() -> int:
    """Return how many requests this process served on the fast path."""
    return _served


class CachedReadMiddleware:
    """Serve a remembered GET from L1 before routing (see the module docstring)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in _paths:
            await self.app(scope, receive, send)
            return
        if not await self._serve(scope, receive, send):
            await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Send the remembered body and return True, or return False with nothing sent."""
        from aim.cache import get_cache

        request = Request(scope, receive)
        try:
            principal = principal_from_memory(request)
        except (ProblemException, AuthenticationFailed):
            # The normal route checks the credential again and responds with the reason.
            return False
        if principal is None:
            return False
        entry = _memo.get(_memo_key(scope["path"], scope["query_string"], principal))
        if entry is None:
            return False
        cache, key, render, load = entry
        value = get_cache().get_local(cache, key, shared=True)
        if value is None and load is None:
            return False

        try:
            await enforce_rate_limit_async(request, principal.subject)
        except ProblemException as exc:
            response = problems.problem_exception_response(request, exc)
            await response(scope, receive, send)
            return True

        global _served
        with _served_lock:
            _served += 1
        if value is None:
            request.state.principal = principal
            response = await problems.threadpool_response(request, load)
        else:
            response = Response(value, media_type="application/json") if render is None else render(value)
        await response(scope, receive, send)
        return True
