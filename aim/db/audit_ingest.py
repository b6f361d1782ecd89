"""Writing audit rows: bulk ingest with COPY, and single rows inside a caller's transaction.

`audit_logs` is partitioned by month and a row whose month has no partition is rejected, so both
paths make sure the partitions exist first, using the SQL function `aim_ensure_audit_partitions`.
Rows are validated in Python before they reach PostgreSQL, so a bad row is reported by its index and
field instead of as a COPY error, and a failed call writes nothing.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Mapping, Sequence

import psycopg
from psycopg.rows import tuple_row

from aim.db.pool import Database, timed_query
from aim.errors import ValidationError

logger = logging.getLogger(__name__)

AUDIT_COLUMNS = (
    "organization_id", "occurred_at", "actor_type", "actor_id", "action", "resource_type",
    "resource_id", "result", "ip_address", "user_agent", "request_id", "details",
)
REQUIRED_COLUMNS = frozenset(
    ("organization_id", "occurred_at", "actor_type", "actor_id", "action", "resource_type", "result")
)
# Same value sets as the CHECK constraints on audit_logs.
ACTOR_TYPES = ("agent", "api_key", "system", "user")
RESULTS = ("denied", "failure", "success")
_COLUMN_SET = frozenset(AUDIT_COLUMNS)

# Rows per COPY statement. bench/copy_ingest.py measured 25,000 to 50,000 rows/s on a 2-core machine,
# so a batch takes under half a second, far inside the default 5 s statement_timeout.
DEFAULT_BATCH_SIZE = 10_000
MAX_BATCH_SIZE = 1_000_000
COPY_SQL = f"COPY audit_logs ({', '.join(AUDIT_COLUMNS)}) FROM STDIN"
INSERT_SQL = (
    f"INSERT INTO audit_logs ({', '.join(AUDIT_COLUMNS)})"
    f" VALUES (%s, coalesce(%s, now()), {', '.join(['%s'] * (len(AUDIT_COLUMNS) - 2))}) RETURNING id"
)
_COPY_LINE = re.compile(r"COPY audit_logs, line (\d+)")

# (year, month) pairs whose partition this process has seen committed. Retention drops only months
# far older than the ones services write, so entries do not go stale in practice.
_months_ready: set[tuple[int, int]] = set()


def _text(value: Any, field: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and value == ""):
        expected = "non-empty text" if required else "text or None"
        raise ValidationError(field, f"{value!r} is invalid; expected {expected}")
    if "\x00" in value:
        raise ValidationError(field, f"{value!r} contains a NUL character, which PostgreSQL text cannot store")
    return value


def _organization_id(value: Any, field: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        raise ValidationError(field, f"{value!r} is invalid; expected a UUID") from None


def _occurred_at(value: Any, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise ValidationError(field, f"{value!r} is invalid; expected a timezone-aware datetime")
    return value


def _choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValidationError(field, f"{value!r} is invalid; expected one of {', '.join(choices)}")
    return value


@functools.lru_cache(maxsize=4096)
def _parse_ip_address(text: str) -> str | None:
    """Return `text` as a normalized IP address, or None. Cached because audit traffic repeats addresses."""
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    # PostgreSQL's inet has no IPv6 zone index such as %eth0.
    return None if getattr(parsed, "scope_id", None) else str(parsed)


def _ip_address(value: Any, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        value = str(value)
    parsed = _parse_ip_address(value) if isinstance(value, str) else None
    if parsed is None:
        raise ValidationError(field, f"{value!r} is invalid; expected an IPv4 or IPv6 address")
    return parsed


_encode_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


def _details(value: Any, field: str) -> str:
    if value is None:
        return "{}"
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ValidationError(field, f"{type(value).__name__} is invalid; expected a dict of JSON values")
    try:
        return _encode_json(value)
    except (TypeError, ValueError) as exc:
        raise ValidationError(field, f"cannot be stored as JSON ({exc}); expected JSON values only") from None


def normalize_audit_row(row: Mapping[str, Any] | Sequence[Any]) -> tuple[Any, ...]:
    """Validate one audit row and return its values in `AUDIT_COLUMNS` order, ready for COPY.

    `row` is a dict keyed by column name, where the optional columns resource_id, ip_address,
    user_agent, request_id and details may be left out, or a tuple of all 12 columns in order.
    Raises ValidationError naming the column, or `row` when the shape is wrong.
    """
    if type(row) is tuple and len(row) == len(AUDIT_COLUMNS):
        values = row
    elif isinstance(row, Mapping):
        unknown = row.keys() - _COLUMN_SET
        if unknown:
            raise ValidationError("row", f"unknown columns {sorted(unknown)}; expected only {', '.join(AUDIT_COLUMNS)}")
        missing = REQUIRED_COLUMNS - row.keys()
        if missing:
            raise ValidationError("row", f"missing required columns {sorted(missing)}")
        values = [row.get(column) for column in AUDIT_COLUMNS]
    elif isinstance(row, (tuple, list)) and len(row) == len(AUDIT_COLUMNS):
        values = row
    else:
        raise ValidationError(
            "row",
            f"{type(row).__name__} is invalid; expected a dict or a tuple of the {len(AUDIT_COLUMNS)} columns "
            f"{', '.join(AUDIT_COLUMNS)}",
        )

    (organization_id, occurred_at, actor_type, actor_id, action, resource_type, resource_id, result,
     ip_address, user_agent, request_id, details) = values
    return (
        _organization_id(organization_id, "organization_id"),
        _occurred_at(occurred_at, "occurred_at"),
        _choice(actor_type, "actor_type", ACTOR_TYPES),
        _text(actor_id, "actor_id", required=True),
        _text(action, "action", required=True),
        _text(resource_type, "resource_type", required=True),
        _text("" if resource_id is None else resource_id, "resource_id", required=False),
        _choice(result, "result", RESULTS),
        _ip_address(ip_address, "ip_address"),
        _text(user_agent, "user_agent", required=False),
        _text(request_id, "request_id", required=False),
        _details(details, "details"),
    )


def _normalized(rows: Iterable[Any]) -> Iterator[tuple[Any, ...]]:
    """Yield normalized rows. A ValidationError names the row index, as in `rows[12].actor_type`."""
    for index, row in enumerate(rows):
        try:
            yield normalize_audit_row(row)
        except ValidationError as exc:
            raise ValidationError(f"rows[{index}].{exc.field}", exc.message) from None


def _month_bounds(when: datetime) -> tuple[datetime, datetime]:
    """Return the UTC month [start, end) that contains `when`, which is one audit partition's range."""
    utc = when.astimezone(timezone.utc)
    start = datetime(utc.year, utc.month, 1, tzinfo=timezone.utc)
    end = datetime(utc.year + utc.month // 12, utc.month % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


class _PartitionTracker:
    """The months whose partitions one ingest call has confirmed or created."""

    def __init__(self) -> None:
        self.ready: set[datetime] = set()
        # Bounds of the month confirmed last, so most rows cost two comparisons.
        self.window: tuple[datetime, datetime] | None = None

    def covers(self, when: datetime) -> bool:
        if self.window is not None and self.window[0] <= when < self.window[1]:
            return True
        bounds = _month_bounds(when)
        if bounds[0] in self.ready:
            self.window = bounds
            return True
        return False

    def ensure(self, db: Database, conn: psycopg.Connection, when: datetime) -> None:
        """Make sure the partition for `when`'s month exists, inside the ingest transaction.

        aim_ensure_audit_partitions holds an advisory lock until the transaction ends, and creating a
        partition locks audit_logs exclusively. A long ingest that called it needlessly would block
        other writers that create partitions, so it runs only when to_regclass finds none.
        """
        bounds = _month_bounds(when)
        name = f"audit_logs_{bounds[0]:%Y_%m}"
        exists = db.fetch_value("audit.partition_exists", "SELECT to_regclass(%s) IS NOT NULL", (name,), conn=conn)
        if not exists:
            db.fetch_value(
                "audit.ensure_partitions", "SELECT aim_ensure_audit_partitions(%s, %s)", (when, when), conn=conn
            )
            logger.info("created audit partition %s during an ingest", name)
        self.ready.add(bounds[0])
        self.window = bounds


def _copy_error(exc: psycopg.errors.DataError, first_index: int) -> ValidationError:
    # Python validation covers the schema's checks, so this is a value PostgreSQL parses
    # differently, such as \u0000 inside details. The COPY context names the line in the statement.
    match = _COPY_LINE.search(exc.diag.context or "")
    field = f"rows[{first_index + int(match.group(1)) - 1}]" if match else "rows"
    return ValidationError(
        field, f"PostgreSQL rejected the row ({exc.diag.message_primary}); nothing from this call was written"
    )


def _ingest(db: Database, conn: psycopg.Connection, rows: Iterable[Any], batch_size: int) -> int:
    """Stream `rows` into audit_logs with one COPY statement per batch of at most `batch_size` rows.

    Rows are validated and written one at a time, so PostgreSQL stores rows while Python prepares
    the next ones. Batches keep each statement well inside statement_timeout. A batch also ends
    early before a row of a month not yet confirmed, because the partition check cannot run on the
    connection while a COPY is in progress.
    """
    values = _normalized(rows)
    partitions = _PartitionTracker()
    written = 0
    pending = next(values, None)
    while pending is not None:
        if not partitions.covers(pending[1]):
            partitions.ensure(db, conn, pending[1])
        first_index = written
        try:
            with timed_query("audit.copy"), conn.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
                while pending is not None:
                    copy.write_row(pending)
                    written += 1
                    pending = next(values, None)
                    if written - first_index >= batch_size:
                        break
                    if pending is not None and not partitions.covers(pending[1]):
                        break
        except psycopg.errors.DataError as exc:
            raise _copy_error(exc, first_index) from None
    return written


def ingest_audit_rows(
    db: Database,
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    conn: psycopg.Connection | None = None,
) -> int:
    """Insert audit rows with COPY in one transaction and return how many were written.

    `rows` may be any iterable, including a generator. Rows are validated and streamed one at a
    time, so memory stays bounded. Each row is a dict or a tuple as `normalize_audit_row()` accepts.
    Each COPY statement carries at most `batch_size` rows. Before the first row of a month is
    copied, that month's partition is created if missing. With `conn`, the rows are written in a
    savepoint of that connection's transaction. Otherwise a primary connection is borrowed and
    committed.

    Raises ValidationError naming the row index and column of the first bad row, and then nothing
    from this call is written.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValidationError(
            "batch_size", f"{batch_size!r} is invalid; expected a whole number from 1 to {MAX_BATCH_SIZE}"
        )
    started = time.perf_counter()
    if conn is None:
        with db.transaction() as own:
            total = _ingest(db, own, rows, batch_size)
    else:
        with conn.transaction():
            total = _ingest(db, conn, rows, batch_size)
    logger.info("ingested %d audit rows in %.2f s", total, time.perf_counter() - started)
    return total


def audit_month_ready(when: datetime) -> bool:
    """Return True when this process has seen the partition for the month of `when` committed."""
    utc = when.astimezone(timezone.utc)
    return (utc.year, utc.month) in _months_ready


def ensure_audit_month(conn: psycopg.Connection, when: datetime) -> None:
    """Make sure the partition for the month of `when` exists, calling the database once per process and month."""
    utc = when.astimezone(timezone.utc)
    month = (utc.year, utc.month)
    if month in _months_ready:
        return
    with timed_query("audit.ensure_partitions"), conn.cursor(row_factory=tuple_row) as cursor:
        created = cursor.execute("SELECT aim_ensure_audit_partitions(%s, %s)", (when, when)).fetchone()[0]
    # A partition created just now belongs to the caller's transaction, which may still roll back,
    # so the month is remembered only once it was found already committed.
    if created == 0:
        _months_ready.add(month)
    else:
        logger.info("created audit partition for %04d-%02d in the caller's transaction", *month)


def insert_audit(
    conn: psycopg.Connection,
    *,
    organization_id: uuid.UUID | str,
    actor_type: str,
    actor_id: str,
    action: str,
    resource_type: str,
    resource_id: str = "",
    result: str = "success",
    occurred_at: datetime | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    request_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> int:
    """Insert one audit row on `conn`, in the caller's open transaction, and return its id.

    Call it in the same transaction as the change it records, so both commit or neither does.
    Without `occurred_at` the row takes the transaction's start time, now(), like the change's own
    timestamps. Raises ValidationError for a bad value.
    """
    # The month to ensure comes from this host's clock when occurred_at is None. Near a month
    # boundary now() may fall in the next month, whose partition the schema creates in advance.
    when = occurred_at if occurred_at is not None else datetime.now(timezone.utc)
    values = list(
        normalize_audit_row(
            {
                "organization_id": organization_id, "occurred_at": when, "actor_type": actor_type,
                "actor_id": actor_id, "action": action, "resource_type": resource_type,
                "resource_id": resource_id, "result": result, "ip_address": ip_address,
                "user_agent": user_agent, "request_id": request_id, "details": details,
            }
        )
    )
    # None lets the INSERT fall back to now(), the transaction's start time.
    values[1] = occurred_at
    ensure_audit_month(conn, when)
    with timed_query("audit.insert"), conn.cursor(row_factory=tuple_row) as cursor:
        return cursor.execute(INSERT_SQL, values).fetchone()[0]
