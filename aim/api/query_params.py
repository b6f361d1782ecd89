"""Rejection of query parameters that an operation does not declare.

FastAPI ignores undeclared query parameters, so a misspelled filter such as `since` for `start`
returns the unfiltered list. `reject_unknown_query_params` runs as a router dependency on every
`/api/v1` operation and turns such a parameter into a 422 validation problem.
"""

from __future__ import annotations

import weakref

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.dependencies.utils import get_flat_params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute

# Accepted query parameter names by id() of the route, in declaration order. APIRoute defines __eq__
# without __hash__, so the route itself cannot be a key. A finalizer drops the entry when the route
# of a discarded app (tests build many) is freed, before its id can be reused.
_ACCEPTED: dict[int, tuple[str, ...]] = {}


def accepted_query_params(route: APIRoute) -> tuple[str, ...]:
    """Return the query parameter names (aliases) that `route` and its dependencies declare.

    NOTE: `request.scope["route"]` is the route as declared on its APIRouter (FastAPI 0.165), so
    query parameters of dependencies added only by `include_router(dependencies=...)` are not
    counted. The one such dependency today, reject_unknown_query_params, declares none.
    """
    cached = _ACCEPTED.get(id(route))
    if cached is not None:
        return cached
    declared = []
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        declared.extend(dependant.query_params)
        pending.extend(reversed(dependant.dependencies))
    # get_flat_params expands a Pydantic model declared as a query parameter into its fields.
    names = tuple(dict.fromkeys(field.alias for field in get_flat_params(Dependant(query_params=declared))))
    _ACCEPTED[id(route)] = names
    weakref.finalize(route, _ACCEPTED.pop, id(route), None)
    return names


def _unknown_message(accepted: tuple[str, ...]) -> str:
    if not accepted:
        return "is not a parameter of this operation, which accepts no query parameters"
    return f"is not a parameter of this operation; accepted parameters: {', '.join(accepted)}"


async def reject_unknown_query_params(request: Request) -> None:
    """Raise a RequestValidationError naming every query parameter the matched operation does not declare.

    It is `async` so that FastAPI calls it on the event loop, without a threadpool hop. As a router
    dependency it runs before the authentication dependency, so a request with both an unknown
    parameter and bad credentials gets this 422 rather than a 401.
    """
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    accepted = accepted_query_params(route)
    unknown = [name for name in request.query_params.keys() if name not in accepted]
    if not unknown:
        return
    message = _unknown_message(accepted)
    raise RequestValidationError([
        {"type": "unknown_query_parameter", "loc": ("query", name), "msg": message,
         "input": request.query_params.get(name)}
        for name in dict.fromkeys(unknown)
    ])
