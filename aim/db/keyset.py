"""Keyset paging for every list in AIM: signed opaque cursors, filters and cheap totals.

A list is declared once in code as a `ListSpec`. `fetch_page()` returns one page ordered by
(sort key, id), using a row-value comparison such as `(created_at, id) < (%s, %s)` instead of OFFSET,
so an index on (organization_id, sort key DESC, id DESC) serves every page at the same cost.
Because the position is a key and not a row number, rows inserted or deleted elsewhere in the list
while a user pages never make the walk repeat or skip a row.

A cursor is base64url (no padding) of a small JSON payload followed by its HMAC-SHA256, keyed with
the instance secret. The payload contains the list name and a fingerprint of the scope and filters.
A cursor that was altered or truncated, or that was issued for another list, filter set or
organization, raises `InvalidCursor` instead of reading from someone else's position.

Only names declared in the spec reach the SQL text. Filter values, cursor positions and limits
are always bound as parameters.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import json
import logging
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterator, Mapping

import psycopg
import rfc8785

from aim.db.pool import Database
from aim.errors import InvalidCursor, ValidationError

logger = logging.getLogger(__name__)

MIN_LIMIT = 1
MAX_LIMIT = 1000
DEFAULT_LIMIT = 50
DEFAULT_COUNT_THRESHOLD = 10_000
# A cursor with a timestamp key is about 200 characters long. Text keys such as names of up to 300
# characters (4 bytes each in UTF-8) stay below 2,000, so a longer string is not one of AIM's.
MAX_CURSOR_LENGTH = 4096
CURSOR_VERSION = 1
# Domain separation: the instance secret also signs other tokens, so cursor MACs start with a label.
MAC_LABEL = b"aim.keyset.cursor.v1\n"
MAC_SIZE = hashlib.sha256().digest_size
# Distinct (order, scope, filters) fingerprints kept per process.
FINGERPRINT_CACHE_SIZE = 4096

NEXT = "next"
PREVIOUS = "prev"

# Filter names with a fixed meaning. Equality filter names must not reuse them.
START = "start"
END = "end"
PREFIX = "prefix"
RESERVED_FILTERS = frozenset({START, END, PREFIX})
MAX_PREFIX_LENGTH = 200

RESTART_HINT = "request the first page again without a cursor"

# Extra output columns that carry each row's position. They are removed from the returned items.
SORT_ALIAS = "keyset_sort"
ID_ALIAS = "keyset_id"

_NAME = re.compile(r"^[a-z][a-z0-9_.]*$")
_COLUMN = re.compile(r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$")
# A column, or one function applied to a column, such as lower(name).
_EXPRESSION = re.compile(r"^([a-z_][a-z0-9_]*\(([a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*\)|([a-z_][a-z0-9_]*\.)?[a-z_][a-z0-9_]*)$")
_BASE64URL = re.compile(r"^[A-Za-z0-9_-]+$")


@dataclass(frozen=True)
class _KeyType:
    """Cursor encoding and SQL cast of one sort key or id type."""

    sql_cast: str
    to_json: Callable[[Any], Any]
    from_json: Callable[[Any], Any]


def _parse_timestamp(value: Any) -> datetime:
    parsed = datetime.fromisoformat(value) if isinstance(value, str) else None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError(f"{value!r} is not a timezone-aware ISO 8601 timestamp")
    return parsed


def _parse_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not an integer")
    return value


def _parse_text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a string")
    return value


def _parse_decimal(value: Any) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a decimal string")
    return Decimal(value)


def _parse_uuid(value: Any) -> uuid.UUID:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a UUID string")
    return uuid.UUID(value)


# Timestamps keep microseconds in ISO 8601 and numerics keep every digit as strings, so a decoded
# position compares equal to the row it came from.
KEY_TYPES: dict[str, _KeyType] = {
    "timestamptz": _KeyType("timestamptz", lambda v: v.isoformat(), _parse_timestamp),
    "numeric": _KeyType("numeric", lambda v: str(v), _parse_decimal),
    "text": _KeyType("text", lambda v: v, _parse_text),
    "bigint": _KeyType("bigint", lambda v: int(v), _parse_int),
    "uuid": _KeyType("uuid", lambda v: str(v), _parse_uuid),
}
ID_TYPES = ("uuid", "bigint")


@dataclass(frozen=True)
class ListSpec:
    """A list that can be paged: its query name, source, columns, order and allowed filters.

    Every string here is SQL text written in code, never user input. `sort` and `time_column` may be
    a column or one function of a column, such as `lower(name)`. `prefix_column` is a plain column,
    searched case-insensitively as `lower(column) LIKE lower(prefix) || '%'`, which an index on
    lower(column) text_pattern_ops serves. The sort key and the id must be NOT NULL, because a
    row-value comparison with NULL is never true and such rows would be skipped. For each list, an
    index on (scope columns..., sort, id) in the same direction keeps every page cheap.
    """

    name: str
    table: str
    columns: tuple[str, ...]
    sort: str
    sort_type: str
    id_column: str = "id"
    id_type: str = "uuid"
    descending: bool = True
    scope: tuple[str, ...] = ("organization_id",)
    equality: Mapping[str, str] = field(default_factory=dict)
    time_column: str | None = None
    prefix_column: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"ListSpec name {self.name!r} is invalid; expected a dotted name such as 'agents.list'")
        if self.sort_type not in KEY_TYPES:
            raise ValueError(f"ListSpec {self.name}: sort_type {self.sort_type!r} is not supported; expected one of {sorted(KEY_TYPES)}")
        if self.id_type not in ID_TYPES:
            raise ValueError(f"ListSpec {self.name}: id_type {self.id_type!r} is not supported; expected one of {ID_TYPES}")
        if not self.scope:
            raise ValueError(f"ListSpec {self.name}: scope is empty; expected at least organization_id")
        if not self.columns:
            raise ValueError(f"ListSpec {self.name}: columns is empty; expected the columns to select")
        clash = RESERVED_FILTERS.intersection(self.equality)
        if clash:
            raise ValueError(f"ListSpec {self.name}: equality filter names {sorted(clash)} are reserved")
        columns = [self.id_column, *self.scope, *self.equality.values()]
        if self.prefix_column is not None:
            columns.append(self.prefix_column)
        for column in columns:
            if not _COLUMN.match(column):
                raise ValueError(f"ListSpec {self.name}: {column!r} is not a plain column name")
        for expression in (self.sort, self.time_column):
            if expression is not None and not _EXPRESSION.match(expression):
                raise ValueError(f"ListSpec {self.name}: {expression!r} is not a column or f(column)")
        for text in (self.table, *self.columns):
            # '%' would be read as a psycopg placeholder and ';' could end the statement.
            if "%" in text or ";" in text:
                raise ValueError(f"ListSpec {self.name}: {text!r} contains '%' or ';'")

    def filter_names(self) -> list[str]:
        """Return the filter names callers may pass, sorted."""
        names = set(self.equality)
        if self.time_column:
            names.update((START, END))
        if self.prefix_column:
            names.add(PREFIX)
        return sorted(names)


@dataclass(frozen=True)
class Page:
    """One page of a list.

    `items` are in list order. `next_cursor` and `prev_cursor` are None at the ends of the list.
    `total` counts the whole filtered list, not the page. It is None when counting was not
    requested, and a planner estimate when `total_is_estimate` is set (the UI shows "about").
    """

    items: list[dict[str, Any]]
    next_cursor: str | None
    prev_cursor: str | None
    total: int | None
    total_is_estimate: bool


@dataclass(frozen=True)
class CursorPosition:
    """A decoded cursor: the (sort key, id) of a boundary row and which way to read from it."""

    sort_value: Any
    row_id: Any
    direction: str


# --- validation -------------------------------------------------------------------------------


def validate_limit(limit: Any) -> int:
    """Return `limit` if it is a whole number from 1 to 1000, else raise ValidationError("limit")."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not MIN_LIMIT <= limit <= MAX_LIMIT:
        raise ValidationError(
            "limit", f"{limit!r} is invalid; expected a whole number from {MIN_LIMIT} to {MAX_LIMIT}"
        )
    return limit


def _check_scope(spec: ListSpec, scope: Mapping[str, Any]) -> None:
    # Scope values come from the caller's session, not from the request, so a gap here is a bug.
    if set(scope) != set(spec.scope):
        raise ValueError(f"list {spec.name} needs scope {sorted(spec.scope)}, got {sorted(scope)}")
    missing = [name for name, value in scope.items() if value is None]
    if missing:
        raise ValueError(f"list {spec.name}: scope values for {missing} are None")


def _clean_filters(spec: ListSpec, filters: Mapping[str, Any] | None) -> dict[str, Any]:
    """Drop filters set to None or "" and validate the rest against the spec."""
    cleaned = {name: value for name, value in (filters or {}).items() if value is not None and value != ""}
    allowed = spec.filter_names()
    for name, value in cleaned.items():
        if name not in allowed:
            expected = ", ".join(allowed) if allowed else "no filters"
            raise ValidationError("filters", f"unknown filter {name!r} for {spec.name}; expected one of: {expected}")
        if name in (START, END):
            if not isinstance(value, datetime) or value.tzinfo is None:
                raise ValidationError(name, f"{value!r} is invalid; expected a timezone-aware datetime")
        elif name == PREFIX:
            if not isinstance(value, str):
                raise ValidationError(PREFIX, f"{type(value).__name__} is invalid; expected text")
            if len(value) > MAX_PREFIX_LENGTH:
                raise ValidationError(
                    PREFIX, f"is {len(value)} characters long; expected at most {MAX_PREFIX_LENGTH} characters"
                )
        elif not isinstance(value, (str, int, float, Decimal, uuid.UUID, datetime)):
            raise ValidationError(name, f"{value!r} is invalid; expected a single value, not {type(value).__name__}")
    if START in cleaned and END in cleaned and cleaned[START] >= cleaned[END]:
        raise ValidationError(END, f"{cleaned[END].isoformat()} is not after start {cleaned[START].isoformat()}; "
                                   "expected start < end (start is inclusive, end exclusive)")
    return cleaned


# --- cursors ----------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    # Numbers become strings because RFC 8785 rejects NaN and integers beyond 2**53.
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def filter_fingerprint(spec: ListSpec, scope: Mapping[str, Any], filters: Mapping[str, Any]) -> str:
    """Return a short hash of the list order, scope and filters that a cursor is bound to."""
    # The hashed material is a function of these JSON values alone, so equal keys give equal hashes.
    return _fingerprint(
        "desc" if spec.descending else "asc",
        tuple((name, _jsonable(value)) for name, value in scope.items()),
        tuple((name, _jsonable(value)) for name, value in filters.items()),
    )


@functools.lru_cache(maxsize=FINGERPRINT_CACHE_SIZE)
def _fingerprint(order: str, scope: tuple[tuple[str, Any], ...], filters: tuple[tuple[str, Any], ...]) -> str:
    # Cached because a page checks its cursor and signs up to two more, each needing the fingerprint,
    # and the RFC 8785 serializer is pure Python.
    material = {"order": order, "scope": dict(scope), "filters": dict(filters)}
    return base64.urlsafe_b64encode(hashlib.sha256(rfc8785.dumps(material)).digest()[:16]).rstrip(b"=").decode()


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, MAC_LABEL + payload, hashlib.sha256).digest()


def _check_secret(secret: bytes) -> None:
    if not isinstance(secret, bytes) or not secret:
        raise ValueError("the cursor secret must be non-empty bytes (runtime.secret_key)")


def encode_cursor(
    spec: ListSpec, position: CursorPosition, *, scope: Mapping[str, Any], filters: Mapping[str, Any] | None,
    secret: bytes,
) -> str:
    """Return the signed opaque cursor for `position` within `spec` under `scope` and `filters`."""
    _check_secret(secret)
    cleaned = _clean_filters(spec, filters)
    payload = json.dumps(
        [
            CURSOR_VERSION,
            spec.name,
            filter_fingerprint(spec, scope, cleaned),
            position.direction,
            KEY_TYPES[spec.sort_type].to_json(position.sort_value),
            KEY_TYPES[spec.id_type].to_json(position.row_id),
        ],
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    return base64.urlsafe_b64encode(payload + _mac(secret, payload)).rstrip(b"=").decode()


def _invalid(problem: str) -> InvalidCursor:
    return InvalidCursor(f"{problem}; {RESTART_HINT}")


def _unpack(cursor: Any, secret: bytes) -> list[Any]:
    """Check the encoding and the MAC of `cursor` and return its payload list."""
    if not isinstance(cursor, str) or cursor == "":
        raise _invalid("cursor is empty or not a string")
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise _invalid(f"cursor is {len(cursor)} characters long, more than any cursor AIM issues")
    if not _BASE64URL.match(cursor):
        raise _invalid("cursor is not base64url text (expected only A-Z, a-z, 0-9, '-' and '_')")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raise _invalid("cursor is truncated: its base64url length is impossible") from None
    # A change to the unused low bits of the last character decodes to the same bytes. Requiring
    # the canonical spelling makes every altered character count as tampering.
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != cursor:
        raise _invalid("cursor was altered: it is not in canonical base64url form")
    if len(raw) <= MAC_SIZE:
        raise _invalid("cursor is truncated: it is shorter than its signature")
    payload, mac = raw[:-MAC_SIZE], raw[-MAC_SIZE:]
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise _invalid(
            "cursor signature does not match, so the cursor was truncated, altered or issued by another AIM instance"
        )
    try:
        fields = json.loads(payload)
    except ValueError:
        fields = None
    if not isinstance(fields, list) or len(fields) != 6 or fields[0] != CURSOR_VERSION:
        raise _invalid("cursor has a format this AIM version does not read")
    return fields


def decode_cursor(
    spec: ListSpec, cursor: str, *, scope: Mapping[str, Any], filters: Mapping[str, Any] | None, secret: bytes
) -> CursorPosition:
    """Verify `cursor` for this list, scope and filters and return its position.

    Raises InvalidCursor when the cursor is malformed, truncated, altered, signed with another
    secret, or was issued for another list, order, scope or filter set.
    """
    _check_secret(secret)
    _, name, fingerprint, direction, sort_json, id_json = _unpack(cursor, secret)
    if name != spec.name:
        raise _invalid(f"cursor was issued for list {name!r}, not {spec.name!r}")
    cleaned = _clean_filters(spec, filters)
    if fingerprint != filter_fingerprint(spec, scope, cleaned):
        raise _invalid(f"cursor was issued for other filters or another organization than this {spec.name} request")
    if direction not in (NEXT, PREVIOUS):
        raise _invalid(f"cursor direction {direction!r} is unknown")
    try:
        sort_value = KEY_TYPES[spec.sort_type].from_json(sort_json)
        row_id = KEY_TYPES[spec.id_type].from_json(id_json)
    except (ValueError, TypeError, InvalidOperation) as exc:
        raise _invalid(f"cursor position does not match the key types of {spec.name} ({exc})") from None
    return CursorPosition(sort_value, row_id, direction)


# --- SQL --------------------------------------------------------------------------------------


def _escape_like(text: str) -> str:
    """Escape LIKE metacharacters so user text matches literally (backslash is the escape)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(spec: ListSpec, scope: Mapping[str, Any], filters: Mapping[str, Any]) -> tuple[list[str], list[Any]]:
    """Return the WHERE conditions and their parameters for the scope and validated filters."""
    conditions: list[str] = []
    params: list[Any] = []
    for column in spec.scope:
        conditions.append(f"{column} = %s")
        params.append(scope[column])
    for name in sorted(filters):
        value = filters[name]
        if name == START:
            conditions.append(f"{spec.time_column} >= %s")
        elif name == END:
            conditions.append(f"{spec.time_column} < %s")
        elif name == PREFIX:
            # Prefix search is case-insensitive, so lower(column) indexes with text_pattern_ops serve it.
            conditions.append(f"lower({spec.prefix_column}) LIKE lower(%s) ESCAPE '\\'")
            value = _escape_like(value) + "%"
        else:
            conditions.append(f"{spec.equality[name]} = %s")
        params.append(value)
    return conditions, params


def _page_query(
    spec: ListSpec, conditions: list[str], params: list[Any], position: CursorPosition | None, limit: int
) -> tuple[str, list[Any]]:
    """Build the SELECT for `limit` rows read forward (NEXT) or backward (PREVIOUS) from `position`."""
    conditions = list(conditions)
    params = list(params)
    backward = position is not None and position.direction == PREVIOUS
    # Reading backward flips both the comparison and the order. The caller reverses the rows.
    read_descending = spec.descending != backward
    if position is not None:
        comparison = "<" if read_descending else ">"
        sort_cast = KEY_TYPES[spec.sort_type].sql_cast
        id_cast = KEY_TYPES[spec.id_type].sql_cast
        # The plain bound on the sort key is implied by the row comparison. It is there so the planner
        # can prune audit_logs partitions and start the index range scan at the right key.
        conditions.append(f"{spec.sort} {comparison}= %s::{sort_cast}")
        conditions.append(f"({spec.sort}, {spec.id_column}) {comparison} (%s::{sort_cast}, %s::{id_cast})")
        params.extend((position.sort_value, position.sort_value, position.row_id))
    order = "DESC" if read_descending else "ASC"
    query = (
        f"SELECT {', '.join(spec.columns)}, {spec.sort} AS {SORT_ALIAS}, {spec.id_column} AS {ID_ALIAS}"
        f" FROM {spec.table} WHERE {' AND '.join(conditions)}"
        f" ORDER BY {spec.sort} {order}, {spec.id_column} {order} LIMIT %s"
    )
    params.append(limit)
    return query, params


def _fetch_rows(
    db: Database, spec: ListSpec, conditions: list[str], params: list[Any], position: CursorPosition | None,
    limit: int,
) -> list[dict[str, Any]]:
    query, query_params = _page_query(spec, conditions, params, position, limit)
    try:
        return db.fetch_all(spec.name, query, query_params, stale_ok=True)
    except psycopg.errors.DataError as exc:
        # Only filter values come from the request unchecked, so a type error names them.
        raise ValidationError(
            "filters", f"a filter value does not fit its column ({exc.diag.message_primary}); "
                       "expected a value of the column's type, such as a UUID for an id"
        ) from None


def _count(
    db: Database, spec: ListSpec, conditions: list[str], params: list[Any], threshold: int
) -> tuple[int, bool]:
    """Return (total, is_estimate): an exact count up to `threshold`, else the planner's estimate."""
    source = f"SELECT 1 FROM {spec.table} WHERE {' AND '.join(conditions)}"
    # Counting stops at threshold + 1 rows, so a large list costs no more than a small one.
    exact = db.fetch_value(
        f"{spec.name}.count", f"SELECT count(*) FROM ({source} LIMIT %s) AS limited", [*params, threshold + 1],
        stale_ok=True,
    )
    if exact <= threshold:
        return int(exact), False
    plan = db.fetch_value(f"{spec.name}.estimate", f"EXPLAIN (FORMAT JSON) {source}", params, stale_ok=True)
    estimate = int(plan[0]["Plan"]["Plan Rows"])
    # The exact pass already saw more than `threshold` rows, so a lower estimate is known to be wrong.
    return max(estimate, threshold + 1), True


def _pop_position(row: dict[str, Any]) -> tuple[Any, Any]:
    """Remove the position columns from `row` and return its (sort value, id)."""
    return row.pop(SORT_ALIAS), row.pop(ID_ALIAS)


# --- public API -------------------------------------------------------------------------------


def fetch_page(
    db: Database,
    spec: ListSpec,
    *,
    scope: Mapping[str, Any],
    filters: Mapping[str, Any] | None = None,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
    secret: bytes,
    count: bool = True,
    count_threshold: int = DEFAULT_COUNT_THRESHOLD,
) -> Page:
    """Fetch one page of `spec` within `scope` (e.g. {"organization_id": org}) and `filters`.

    `filters` maps names from `spec.filter_names()` to values: equality filters, `start` (inclusive)
    and `end` (exclusive) on the time column, and a case-insensitive text `prefix`. None or "" means
    unset. `cursor` is a `next_cursor` or `prev_cursor` from an earlier page of the same request.
    The previous page of page N contains exactly page N-1's rows as long as no row between them was
    added or removed. Pass `count=False` to skip the total, for example on every page after the first.

    Raises ValidationError for a bad limit or filter and InvalidCursor for a bad cursor.
    """
    validate_limit(limit)
    if isinstance(count_threshold, bool) or not isinstance(count_threshold, int) or count_threshold < 0:
        raise ValueError(f"count_threshold {count_threshold!r} is invalid; expected a whole number >= 0")
    _check_secret(secret)
    _check_scope(spec, scope)
    cleaned = _clean_filters(spec, filters)
    position = None
    if cursor is not None:
        position = decode_cursor(spec, cursor, scope=scope, filters=cleaned, secret=secret)

    conditions, params = _where(spec, scope, cleaned)
    # One extra row tells whether another page follows in the reading direction.
    rows = _fetch_rows(db, spec, conditions, params, position, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    backward = position is not None and position.direction == PREVIOUS
    if backward:
        rows.reverse()

    positions = [_pop_position(row) for row in rows]
    # A page reached by a cursor always has rows on the side it came from. A page that came out empty
    # (its rows were removed after the cursor was issued) has no boundary row, so it offers no cursors.
    if not positions:
        has_next = has_previous = False
    elif backward:
        has_next, has_previous = True, more
    else:
        has_next, has_previous = more, position is not None

    def sign(boundary: tuple[Any, Any], direction: str) -> str:
        return encode_cursor(
            spec, CursorPosition(*boundary, direction), scope=scope, filters=cleaned, secret=secret
        )

    total, estimated = (None, False)
    if count:
        total, estimated = _count(db, spec, conditions, params, count_threshold)
    return Page(
        items=rows,
        next_cursor=sign(positions[-1], NEXT) if has_next else None,
        prev_cursor=sign(positions[0], PREVIOUS) if has_previous else None,
        total=total,
        total_is_estimate=estimated,
    )


def iter_rows(
    db: Database,
    spec: ListSpec,
    *,
    scope: Mapping[str, Any],
    filters: Mapping[str, Any] | None = None,
    batch: int = MAX_LIMIT,
) -> Iterator[dict[str, Any]]:
    """Yield every row of `spec` within `scope` and `filters`, in list order, `batch` rows per query.

    Meant for streaming exports: at most one batch is in memory, and no connection or transaction is
    held between batches. Each row appears once even if rows are added while the export runs.
    """
    validate_limit(batch)
    _check_scope(spec, scope)
    cleaned = _clean_filters(spec, filters)
    conditions, params = _where(spec, scope, cleaned)
    position = None
    while True:
        rows = _fetch_rows(db, spec, conditions, params, position, batch)
        for row in rows:
            position = CursorPosition(*_pop_position(row), NEXT)
            yield row
        if len(rows) < batch:
            return
