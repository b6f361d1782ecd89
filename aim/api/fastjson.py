"""JSON responses rendered with orjson straight from service rows, for the hot read endpoints.

A route that returns a `Response` skips FastAPI's response_model step, which validates every row
into pydantic models and serializes them again. On a page of 50 agents that step cost about as
much CPU as fetching the page (py-spy profile of the API under wrk). The route keeps its
`response_model`, so the OpenAPI document is unchanged, and `project` emits exactly the model's
fields, in the model's JSON forms (the same bytes as pydantic for the list models):

- UUID as its canonical string, datetime as RFC 3339 with `Z` for UTC (pydantic's form),
- Decimal (numeric columns such as trust_score) as a JSON number,
- nested dicts and lists as they are.

NOTE: the rows are not validated against the model, so a row that breaks the model (a value out of
range, a wrong type) is sent as it is instead of failing with 500.
"""

from __future__ import annotations

import functools
import hashlib
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping

import orjson
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from aim.api import fastpath

_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


@functools.cache
def _field_names(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(model.model_fields)


def project(row: Mapping[str, Any], model: type[BaseModel]) -> dict[str, Any]:
    """Return the fields of `model` from `row`; a field missing from the row raises KeyError."""
    return {name: row[name] for name in _field_names(model)}


def model_json(body: Mapping[str, Any], model: type[BaseModel], status_code: int = 200) -> Response:
    """Return `body` (a dict with every field of `model`) as an application/json response."""
    return Response(orjson.dumps(project(body, model), default=_default, option=_OPTIONS), status_code=status_code,
                    media_type="application/json")


def render_page(items: Iterable[Mapping[str, Any]], item_model: type[BaseModel], *, next_cursor: str | None,
                prev_cursor: str | None, total: int, total_is_estimate: bool) -> bytes:
    """Return the JSON of a keyset page (the schemas.Page form) whose items carry the fields of `item_model`."""
    body = {
        "items": [project(item, item_model) for item in items],
        "next_cursor": next_cursor,
        "prev_cursor": prev_cursor,
        "total": total,
        "total_is_estimate": total_is_estimate,
    }
    return orjson.dumps(body, default=_default, option=_OPTIONS)


def _cache_key(scope: str, query: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(orjson.dumps(query, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    return f"{scope}:json:{digest}"


def cached_json(cache: str, scope: str, query: Mapping[str, Any], render: Callable[[], bytes]) -> Response:
    """Return a JSON response whose body comes from the named two-level cache, rendered once when cold.

    The key is `scope` (such as the organization id) and a digest of `query`, so each distinct
    request has its own entry. The body is stored as text, which the cache codec keeps as one JSON
    string, so a hit costs one string decode instead of rebuilding every row.
    """
    from aim.cache import get_cache

    body = get_cache().get_or_compute(cache, _cache_key(scope, query), lambda: render().decode("utf-8"))
    return Response(body, media_type="application/json")


async def cached_json_async(
    cache: str, scope: str, query: Mapping[str, Any], render: Callable[[], bytes], request: Request | None = None,
) -> Response:
    """Return `cached_json(...)` from an async route. An L1 hit is served on the event loop. A miss
    may call Redis or render from PostgreSQL, so it runs in the threadpool.

    With `request`, a GET is remembered so that the same caller's same request can be served
    before routing next time (see aim.api.fastpath).
    """
    from aim.cache import get_cache

    key = _cache_key(scope, query)
    body = get_cache().get_local(cache, key, shared=True)
    if body is not None:
        response = Response(body, media_type="application/json")
    else:
        response = await run_in_threadpool(cached_json, cache, scope, query, render)
    if request is not None:
        fastpath.remember(request, cache, key, load=functools.partial(cached_json, cache, scope, query, render))
    return response
