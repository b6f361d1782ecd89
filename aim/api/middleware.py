"""Pure ASGI middleware: request ids, per-route metrics and the request body limit.

These are plain ASGI callables rather than Starlette's BaseHTTPMiddleware, which adds a task and a
memory stream to every request. `RequestMiddleware` does request ids and metrics in one layer,
because each layer wraps `send` once more and the API runs them outside FastAPI's own middleware
(see `aim.api.app`).
"""

from __future__ import annotations

import functools
import json
import logging
import re
import random
import time
from typing import Collection, Iterable

from starlette.requests import Request
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aim import metrics
from aim.api.problems import PROBLEM_JSON, TYPE_BASE, ProblemException, handled_response

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
REQUEST_ID_HEADER = b"x-request-id"
# A client-supplied request id is kept only if it is short and plain, since it lands in logs and audit rows.
_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,64}$")
UNMATCHED_ROUTE = "unmatched"
TEMPLATE_CACHE_SIZE = 4096


def _new_request_id() -> str:
    # Request ids correlate logs and audit rows and guard nothing, so they come from the process's
    # Mersenne Twister (seeded from os.urandom at import) instead of a urandom system call per request.
    return f"{random.getrandbits(64):016x}"


class RouteTemplates:
    """Map a request's method and path to its route template, such as /api/v1/agents/{agent_id}.

    Built from the routers' own path definitions with Starlette's `compile_path`, because how
    `scope["route"]` reflects a router prefix differs between FastAPI versions.
    """

    def __init__(self, routes: Iterable[tuple[str, Collection[str] | None]]) -> None:
        self._entries: list[tuple[re.Pattern[str], str, Collection[str] | None]] = []
        for path, methods in routes:
            regex, path_format, _ = compile_path(path)
            self._entries.append((regex, path_format, methods))
        # Matching tries every route's regex in turn; the hot paths repeat, so recent results are kept.
        self.match = functools.lru_cache(maxsize=TEMPLATE_CACHE_SIZE)(self._match)

    def _match(self, method: str, path: str) -> str:
        """Return the template of the route for `method` and `path`; a path match with another method
        (a 405) still names its route. Any other path is `unmatched`."""
        path_only = None
        for regex, template, methods in self._entries:
            if regex.match(path):
                if methods is None or method in methods or (method == "HEAD" and "GET" in methods):
                    return template
                path_only = path_only or template
        return path_only or UNMATCHED_ROUTE


class RequestMiddleware:
    """Give each HTTP request an id and time it by route template, method and status (aim.metrics.observe_http).

    The id is X-Request-ID from the request when it is short and plain, or a new one. It goes into
    `scope["state"]` and back in the response headers. Unmatched paths share one route label, so
    scanners cannot create unbounded label values. This is the outermost layer of the API, outside
    FastAPI's ServerErrorMiddleware, so it also turns an exception raised before any response
    started into the app's 500 problem response.
    """

    def __init__(self, app: ASGIApp, templates: RouteTemplates) -> None:
        self.app = app
        self.templates = templates

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        supplied = next((value for name, value in scope["headers"] if name == REQUEST_ID_HEADER), None)
        request_id = supplied.decode() if supplied and _REQUEST_ID.match(supplied) else _new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        id_header = (REQUEST_ID_HEADER, request_id.encode())
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            if status:
                raise  # FastAPI's ServerErrorMiddleware sent the 500 already, or the response broke off
            await self._respond_to_error(scope, receive, send_with_id, exc)
        finally:
            route = self.templates.match(scope["method"], scope["path"])
            metrics.observe_http(route, scope["method"], status or 500, time.perf_counter() - started)

    async def _respond_to_error(self, scope: Scope, receive: Receive, send: Send, exc: Exception) -> None:
        response = await handled_response(Request(scope, receive), exc)
        await response(scope, receive, send)


class BodyTooLarge(ProblemException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "Request body too large", f"the request body is over {limit} bytes; "
                                                        f"expected at most {limit} bytes (1 MiB)")


class BodyLimitMiddleware:
    """Reject request bodies over `limit` bytes with 413.

    A Content-Length over the limit is rejected before the body is read. A body without one (chunked)
    or with a false one is counted as it streams in, and the read that crosses the limit raises
    `BodyTooLarge`, which the problem handlers turn into 413.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((value for name, value in scope["headers"] if name == b"content-length"), None)
        if declared is not None:
            try:
                declared_length = int(declared)
            except ValueError:
                declared_length = -1
            if declared_length > self.limit:
                await self._reject(scope, send)
                return

        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counting_receive, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        request_id = scope.get("state", {}).get("request_id")
        body = {
            "type": TYPE_BASE + "request-body-too-large", "title": "Request body too large", "status": 413,
            "detail": f"Content-Length is over {self.limit} bytes; expected at most {self.limit} bytes (1 MiB)",
        }
        if request_id:
            body["request_id"] = request_id
        payload = json.dumps(body).encode()
        # The unread body stays on the connection, so ask the client to close it.
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", PROBLEM_JSON.encode()), (b"content-length", str(len(payload)).encode()),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": payload})
