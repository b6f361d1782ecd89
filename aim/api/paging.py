"""Shared query parameters and the list response of keyset-paged routes."""

from __future__ import annotations

from typing import Annotated, Any, Callable

from fastapi import Query

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
