"""Shared query parameters and the list response of keyset-paged routes."""

from __future__ import annotations

from typing import Annotated, Any, Callable

from fastapi import Query
from pydantic import BaseModel
from starlette.responses import Response

from aim.api.fastjson import render_page
from aim.db import keyset

Cursor = Annotated[
    str | None,
    Query(max_length=keyset.MAX_CURSOR_LENGTH,
          description="next_cursor or prev_cursor of an earlier page of the same request"),
]
Limit = Annotated[int, Query(ge=keyset.MIN_LIMIT, le=keyset.MAX_LIMIT, description="Rows per page, 1 to 1000")]


def page_body(page: keyset.Page, convert: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> dict[str, Any]:
    """Return the JSON body of a list response: items, next_cursor, prev_cursor, total, total_is_estimate."""
    items = page.items if convert is None else [convert(item) for item in page.items]
    return {
        "items": items,
        "next_cursor": page.next_cursor,
        "prev_cursor": page.prev_cursor,
        "total": page.total if page.total is not None else len(items),
        "total_is_estimate": page.total_is_estimate,
    }


def page_json_bytes(page: keyset.Page, item_model: type[BaseModel]) -> bytes:
    """Return the JSON body of the list response of `page`, items as `item_model` (see aim.api.fastjson)."""
    return render_page(page.items, item_model, next_cursor=page.next_cursor, prev_cursor=page.prev_cursor,
                       total=page.total if page.total is not None else len(page.items),
                       total_is_estimate=page.total_is_estimate)


def page_response(page: keyset.Page, item_model: type[BaseModel]) -> Response:
    """Return the list response of `page` rendered with orjson (see aim.api.fastjson), items as `item_model`."""
    return Response(page_json_bytes(page, item_model), media_type="application/json")
