"""RFC 9457 problem details: every 4xx and 5xx response of the API is `application/problem+json`.

A problem has `type`, `title`, `status` and `detail`. Validation problems add `field` (the first
offending input) and `errors` (every offending input with its message). Authentication and
authorization problems add `reason`, a short code such as `expired_token` or `insufficient_role`.
Exception handlers here map the AIM exception tree, FastAPI's request validation and Starlette's
HTTP errors to that form.
"""

from __future__ import annotations

import inspect
import logging
from typing import Any, Callable

import psycopg
import psycopg_pool
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

from aim.errors import (
    AIMError,
    BackendUnavailable,
    Conflict,
    InvalidCursor,
    NotFound,
    PermissionDenied,
    ValidationError,
)
from aim.services.mcp_registry import RegistryError
from aim.services.mcp_servers import AttestationRejected
from aim.services.users import AuthenticationFailed

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
# Problem types are URNs (RFC 9457 allows any URI): AIM owns no domain whose pages could document
# them, and a URN cannot send a client that dereferences it to someone else's site.
TYPE_BASE = "urn:aim:problem:"
# Seconds a client should wait before retrying when a backend is unavailable.
UNAVAILABLE_RETRY_AFTER_S = 5


class FieldError(BaseModel):
    field: str
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem details object."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    field: str | None = None
    errors: list[FieldError] | None = None
    reason: str | None = None
    request_id: str | None = None


class ProblemException(HTTPException):
    """An HTTP error raised from API code that carries problem fields (reason, field, headers).

    It subclasses FastAPI's HTTPException, which FastAPI re-raises unchanged when body parsing
    fails, so a body limit error keeps its 413.
    """

    def __init__(
        self, status: int, title: str, detail: str, *, reason: str | None = None, field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(status_code=status, detail=detail, headers=headers)
        self.title = title
        self.reason = reason
        self.field = field


def _slug(title: str) -> str:
    return title.lower().replace(" ", "-")


def problem_response(
    status: int, title: str, detail: str, *, request: Request | None = None, headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """Build a problem+json response. `extra` adds members such as field, errors or reason (None ones are left out)."""
    body: dict[str, Any] = {"type": TYPE_BASE + _slug(title), "title": title, "status": status, "detail": detail}
    body.update({key: value for key, value in extra.items() if value is not None})
    request_id = getattr(request.state, "request_id", None) if request is not None else None
    if request_id:
        body["request_id"] = request_id
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers, media_type=PROBLEM_JSON)


# Common error responses, for the OpenAPI document of every operation.
PROBLEM_CONTENT = {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}}
STANDARD_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "content": PROBLEM_CONTENT, "model": Problem}
    for status, description in (
        (400, "Malformed request, such as a tampered cursor"),
        (401, "Missing, malformed, expired or revoked credentials; `reason` says which"),
        (403, "The role or the key's scope does not allow this operation; `reason` says which"),
        (404, "Not found in the caller's organization"),
        (409, "Conflicts with the current state"),
        (413, "Request body over 1 MiB"),
        (422, "Invalid input; `field` and `errors` name the inputs"),
        (429, "Rate limit exceeded; see Retry-After"),
        (500, "Internal error"),
        (503, "A backend is unavailable; see Retry-After"),
    )
}


def _field_name(location: tuple[Any, ...]) -> str:
    # ("body", "capabilities", 0) -> "capabilities[0]"; ("query", "limit") -> "limit".
    parts = [part for part in location if part not in ("body", "query", "path", "header", "cookie")]
    name = ""
    for part in parts:
        if isinstance(part, int):
            name += f"[{part}]"
        else:
            name += f".{part}" if name else str(part)
    return name or (str(location[0]) if location else "body")


UUID_EXAMPLE = "123e4567-e89b-12d3-a456-426614174000"
TIMESTAMP_FORM = "RFC 3339 with a UTC offset such as 2026-01-31T12:00:00Z"
# Messages for Pydantic error types whose own message lacks the expected form (Pydantic 2 type names).
# Types not listed, such as string_too_long or value_error, keep Pydantic's message, which already
# states the limit or the custom check.
_TYPE_MESSAGES = {
    "missing": "is required",
    "uuid_parsing": f"is not a valid UUID; expected the form {UUID_EXAMPLE}",
    "uuid_type": f"is not a valid UUID; expected the form {UUID_EXAMPLE}",
    "uuid_version": f"is not a valid UUID; expected the form {UUID_EXAMPLE}",
    "datetime_parsing": f"is not a valid timestamp; expected {TIMESTAMP_FORM}",
    "datetime_from_date_parsing": f"is not a valid timestamp; expected {TIMESTAMP_FORM}",
    "datetime_type": f"is not a valid timestamp; expected {TIMESTAMP_FORM}",
    "datetime_object_invalid": f"is not a valid timestamp; expected {TIMESTAMP_FORM}",
    "timezone_aware": f"has no UTC offset; expected {TIMESTAMP_FORM}",
    "date_parsing": "is not a valid date; expected the form 2026-01-31",
    "date_from_datetime_parsing": "is not a valid date; expected the form 2026-01-31",
    "date_type": "is not a valid date; expected the form 2026-01-31",
    "int_parsing": "is not a valid integer; expected a whole number such as 50",
    "int_type": "is not a valid integer; expected a whole number such as 50",
    "int_from_float": "is not a whole number; expected an integer such as 50",
    "float_parsing": "is not a valid number; expected a number such as 1.5",
    "float_type": "is not a valid number; expected a number such as 1.5",
    "bool_parsing": "is not a valid boolean; expected true or false",
    "bool_type": "is not a valid boolean; expected true or false",
    "string_type": "is not a string; expected a JSON string",
    "list_type": "is not a list; expected a JSON array",
    "dict_type": "is not an object; expected a JSON object",
    "model_attributes_type": "is not an object; expected a JSON object",
    "extra_forbidden": "is not an accepted field; remove it",
}


def _error_message(error: dict[str, Any]) -> str:
    error_type = error.get("type", "")
    context = error.get("ctx") or {}
    if error_type in ("literal_error", "enum") and "expected" in context:
        return f"is not an allowed value; expected {context['expected']}"
    return _TYPE_MESSAGES.get(error_type) or error.get("msg") or "is invalid"


def _field_error(error: dict[str, Any]) -> dict[str, str]:
    location = tuple(error.get("loc", ()))
    if error.get("type") == "json_invalid" and location[:1] == ("body",) and len(location) <= 2:
        # FastAPI reports a body that fails json.loads at ("body", character offset), with the reason in ctx.
        position = location[1] if len(location) == 2 else None
        reason = (error.get("ctx") or {}).get("error") or "parse error"
        where = f"{reason} at position {position}" if isinstance(position, int) else reason
        return {"field": "body", "message": f"is not valid JSON ({where}); expected a JSON object"}
    return {"field": _field_name(location), "message": _error_message(error)}


async def _validation_handler(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [_field_error(error) for error in exc.errors()]
    first = errors[0] if errors else {"field": "body", "message": "invalid"}
    detail = f"{first['field']}: {first['message']}"
    if len(errors) > 1:
        detail += f" (and {len(errors) - 1} more)"
    return problem_response(422, "Invalid input", detail, request=request, field=first["field"], errors=errors)


def problem_exception_response(request: Request, exc: ProblemException) -> JSONResponse:
    """Return the problem+json response for `exc`, as the app's exception handler sends it."""
    return problem_response(exc.status_code, exc.title, str(exc.detail), request=request, headers=exc.headers,
                            reason=exc.reason, field=exc.field)


async def _http_handler(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if isinstance(exc, ProblemException):
        return problem_exception_response(request, exc)
    titles = {404: "Not found", 405: "Method not allowed", 413: "Request body too large"}
    title = titles.get(exc.status_code, "HTTP error")
    detail = str(exc.detail)
    if exc.status_code == 404:
        detail = f"no route matches {request.method} {request.url.path}"
    return problem_response(exc.status_code, title, detail, request=request, headers=exc.headers)


async def _aim_handler(request: Request, exc: AIMError) -> JSONResponse:
    if isinstance(exc, AuthenticationFailed):
        return problem_response(401, "Unauthorized", exc.message, request=request, reason=exc.reason,
                                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    if isinstance(exc, InvalidCursor):
        return problem_response(400, "Invalid cursor", exc.message, request=request, field="cursor",
                                errors=[{"field": "cursor", "message": exc.message}])
    if isinstance(exc, AttestationRejected):
        return problem_response(422, "Attestation rejected", exc.message, request=request, field=exc.field,
                                reason=exc.reason, errors=[{"field": exc.field, "message": exc.message}])
    if isinstance(exc, ValidationError):
        return problem_response(422, "Invalid input", f"{exc.field}: {exc.message}", request=request, field=exc.field,
                                errors=[{"field": exc.field, "message": exc.message}])
    if isinstance(exc, NotFound):
        return problem_response(404, "Not found", str(exc), request=request)
    if isinstance(exc, Conflict):
        return problem_response(409, "Conflict", str(exc), request=request)
    if isinstance(exc, PermissionDenied):
        return problem_response(403, "Forbidden", str(exc), request=request, reason="not_allowed")
    if isinstance(exc, RegistryError):
        return problem_response(422, "Invalid input", str(exc), request=request, field="servers",
                                errors=[{"field": "servers", "message": str(exc)}])
    if isinstance(exc, BackendUnavailable):
        return _unavailable(request, str(exc))
    logger.error("unmapped AIM error on %s %s: %r", request.method, request.url.path, exc)
    return problem_response(500, "Internal error", "the server failed to handle the request", request=request)


def _unavailable(request: Request, detail: str) -> JSONResponse:
    return problem_response(503, "Service unavailable", detail, request=request,
                            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER_S)})


async def _database_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("database unavailable on %s %s (request %s): %s", request.method, request.url.path,
                   getattr(request.state, "request_id", None), exc)
    return _unavailable(request, "the database is unavailable or busy; retry shortly")


async def _unexpected_handler(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error on %s %s (request %s)", request.method, request.url.path,
                     getattr(request.state, "request_id", None))
    return problem_response(500, "Internal error", "the server failed to handle the request; the log has details",
                            request=request)


async def handled_response(request: Request, exc: Exception) -> Response:
    """Return the response of the app's exception handler for `exc`, or re-raise `exc` without one.

    The fast paths run a route's work before FastAPI routes the request (aim.api.fastpath and
    aim.api.fastroutes), and this gives their errors the route's responses.
    """
    for kind in type(exc).__mro__:
        handler = request.app.exception_handlers.get(kind)
        if handler is not None:
            response = handler(request, exc)
            return await response if inspect.isawaitable(response) else response
    raise exc


async def threadpool_response(request: Request, respond: Callable[..., Response], *args: Any) -> Response:
    """Run the blocking `respond(*args)` in the threadpool and return its response, or the error
    response of the app's handler for what it raised."""
    try:
        return await run_in_threadpool(respond, *args)
    except Exception as exc:
        return await handled_response(request, exc)


def install(app: FastAPI) -> None:
    """Register the problem+json exception handlers on `app`."""
    app.add_exception_handler(RequestValidationError, _validation_handler)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_handler)  # type: ignore[arg-type]
    app.add_exception_handler(AIMError, _aim_handler)  # type: ignore[arg-type]
    app.add_exception_handler(psycopg.OperationalError, _database_handler)
    app.add_exception_handler(psycopg_pool.PoolTimeout, _database_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
