"""Writing audit rows: bulk ingest with COPY, and single rows inside a caller's transaction.

`audit_logs` is partitioned by month and a row whose month has no partition is rejected, so both
paths make sure the partitions exist first, using the SQL function `aim_ensure_audit_partitions`.
Rows are validated in Python before they reach PostgreSQL, so a bad row is reported by its index and
field instead of as a COPY error, and a failed call writes nothing.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import logging
import math
import re
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping, Sequence

import orjson
import psycopg
from psycopg import postgres, sql
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.rows import tuple_row
from psycopg.types.net import AddressBinaryDumper

from aim.db import partitions, staging
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

# Rows per COPY statement. bench/copy_ingest.py measured about 60,000 rows/s into audit_logs on a
# 2-core machine, so a batch takes about a sixth of a second.
DEFAULT_BATCH_SIZE = 10_000
# Minimum rows of one month in one call for the bulk path. Below it, the staging table, the index
# builds and the swap cost more than maintaining the indexes row by row (an estimate: a few tens of
# milliseconds of fixed cost against about 10 microseconds saved per row).
BULK_MIN_ROWS = 10_000
# statement_timeout in place of the pool's 5 s once an ingest call takes the bulk path, and for the
# simulator backfill's transactions. One index build covers a whole month of rows, and COPY batches
# slow down on a loaded machine. The bound still stops a statement that hangs.
BULK_STATEMENT_TIMEOUT = "10min"
MAX_BATCH_SIZE = 1_000_000
# Binary COPY, because psycopg's binary dumpers cost less than half the client CPU time of its text
# format: 1.3 against 3.0 microseconds per row in a 200,000-row trial with psycopg 3.3 and its C
# extension. PostgreSQL then parses no text either. Each value must have its column's Python type,
# which normalize_audit_row returns: UUID, datetime, str, EncodedInet and EncodedJson.
COPY_TEMPLATE = "COPY {table} ({columns}) FROM STDIN (FORMAT BINARY{freeze})"
# Staging tables are created in the ingest's own subtransaction, which COPY FREEZE requires. Their
# rows are then stored frozen and their pages all-visible, so the first read of a bulk-loaded month
# does not rewrite every page to set hint bits. A first count(*) of 500,000 loaded rows took 38 ms
# with FREEZE against 74 ms without (PostgreSQL 15).
STAGING_COPY_OPTIONS = ", FREEZE"
COPY_SQL = f"COPY audit_logs ({', '.join(AUDIT_COLUMNS)}) FROM STDIN (FORMAT BINARY)"
INSERT_SQL = (
    f"INSERT INTO audit_logs ({', '.join(AUDIT_COLUMNS)})"
    f" VALUES (%s, coalesce(%s, now()), {', '.join(['%s'] * (len(AUDIT_COLUMNS) - 2))}) RETURNING id"
)
_COPY_LINE = re.compile(r"COPY [^,]+, line (\d+)")

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


class EncodedInet(bytes):
    """An IP address already in inet's binary format, which COPY and INSERT send unchanged."""


class _EncodedInetBinaryDumper(Dumper):
    format = Format.BINARY
    oid = postgres.types["inet"].oid

    def dump(self, obj: bytes) -> bytes:
        return obj


_INET_DUMPER = AddressBinaryDumper(ipaddress.IPv4Address)


@functools.lru_cache(maxsize=4096)
def _parse_ip_address(text: str) -> EncodedInet | None:
    """Return `text` as an inet value, or None.

    Cached with the encoding done, because audit traffic repeats addresses and psycopg's inet
    dumper is pure Python (about a fifth of the client time per COPY row under cProfile).
    """
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    # PostgreSQL's inet has no IPv6 zone index such as %eth0.
    if getattr(parsed, "scope_id", None):
        return None
    return EncodedInet(_INET_DUMPER.dump(parsed))


def _ip_address(value: Any, field: str) -> EncodedInet | None:
    if value is None:
        return None
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        value = str(value)
    parsed = _parse_ip_address(value) if isinstance(value, str) else None
    if parsed is None:
        raise ValidationError(field, f"{value!r} is invalid; expected an IPv4 or IPv6 address")
    return parsed


class EncodedJson(bytes):
    """JSON already encoded as UTF-8, which COPY and INSERT send to a jsonb column unchanged."""


class _EncodedJsonBinaryDumper(Dumper):
    """Dump EncodedJson in jsonb's binary format: the format version 1, then the JSON text."""

    format = Format.BINARY
    oid = postgres.types["jsonb"].oid

    def dump(self, obj: bytes) -> bytes:
        return b"\x01" + obj


_EMPTY_JSON = EncodedJson(b"{}")


def _register_dumpers(cursor: psycopg.Cursor) -> None:
    """Let `cursor` send the pre-encoded values that normalize_audit_row returns."""
    cursor.adapters.register_dumper(EncodedJson, _EncodedJsonBinaryDumper)
    cursor.adapters.register_dumper(EncodedInet, _EncodedInetBinaryDumper)


# Datetimes and dataclasses are rejected as the json module rejects them, so that a row does not
# store a form that other writers of the same column would not.
_STRICT_TYPES = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _has_non_finite(value: Any) -> bool:
    if type(value) is float:
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, (list, tuple)):
        return any(_has_non_finite(item) for item in value)
    return isinstance(value, float) and not math.isfinite(value)


def _details(value: Any, field: str) -> EncodedJson:
    if value is None:
        return _EMPTY_JSON
    if type(value) is not dict:
        if not isinstance(value, Mapping):
            raise ValidationError(field, f"{type(value).__name__} is invalid; expected a dict of JSON values")
        value = dict(value)
    # orjson encodes about ten times faster than the json module, which mattered at COPY rates. It
    # writes NaN and infinities as null, so a null in the output is checked against the input.
    try:
        encoded = orjson.dumps(value, option=_STRICT_TYPES)
    except TypeError as exc:
        raise ValidationError(field, f"cannot be stored as JSON ({exc}); expected JSON values only") from None
    if b"null" in encoded and _has_non_finite(value):
        raise ValidationError(field, "contains NaN or Infinity; expected finite numbers, because JSON has neither")
    return EncodedJson(encoded)


_ACTOR_TYPE_SET = frozenset(ACTOR_TYPES)
_RESULT_SET = frozenset(RESULTS)


def _fast_row(values: Sequence[Any]) -> tuple[Any, ...] | None:
    """Return the normalized row when every value already has its column's usual type, else None.

    It accepts exactly what the per-field checks accept for such values, in fewer calls, because
    those calls were about half of the Python time per row under cProfile. On None, the row goes
    through the per-field checks, which also word the error.
    """
    (organization_id, occurred_at, actor_type, actor_id, action, resource_type, resource_id, result,
     ip_address, user_agent, request_id, details) = values
    if resource_id is None:
        resource_id = ""
    if not (
        type(organization_id) is uuid.UUID and type(occurred_at) is datetime and occurred_at.tzinfo is not None
        and type(actor_type) is str and actor_type in _ACTOR_TYPE_SET
        and type(result) is str and result in _RESULT_SET
        and type(actor_id) is str and type(action) is str and type(resource_type) is str
        and type(resource_id) is str and actor_id and action and resource_type
        and (user_agent is None or type(user_agent) is str) and (request_id is None or type(request_id) is str)
        and (details is None or type(details) is dict)
    ):
        return None
    texts = (actor_id, action, resource_type, resource_id, user_agent or "", request_id or "")
    if "\x00" in "".join(texts):
        return None
    if ip_address is not None:
        ip_address = _parse_ip_address(ip_address) if type(ip_address) is str else None
        if ip_address is None:
            return None
    return (
        organization_id, occurred_at, actor_type, actor_id, action, resource_type, resource_id, result,
        ip_address, user_agent, request_id, _details(details, "details"),
    )


def normalize_audit_row(row: Mapping[str, Any] | Sequence[Any]) -> tuple[Any, ...]:
    """Validate one audit row and return its values in `AUDIT_COLUMNS` order, ready for COPY.

    `row` is a dict keyed by column name, where the optional columns resource_id, ip_address,
    user_agent, request_id and details may be left out, or a tuple of all 12 columns in order.
    Raises ValidationError naming the column, or `row` when the shape is wrong. The inet and jsonb
    values come back pre-encoded (EncodedInet, EncodedJson), so a cursor that sends them needs
    this module's dumpers.
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

    fast = _fast_row(values)
    if fast is not None:
        return fast
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


def _month_bounds(when: datetime) -> tuple[datetime, datetime]:
    """Return the UTC month [start, end) that contains `when`, which is one audit partition's range."""
    utc = when.astimezone(timezone.utc)
    start = datetime(utc.year, utc.month, 1, tzinfo=timezone.utc)
    end = datetime(utc.year + utc.month // 12, utc.month % 12 + 1, 1, tzinfo=timezone.utc)
    return start, end


class _Month:
    """One UTC month that an ingest call writes to, and where its rows go."""

    __slots__ = ("start", "end", "partition", "pending", "staging", "helper", "freeze")

    def __init__(self, start: datetime, end: datetime, partition: str, bulk_candidate: bool) -> None:
        self.start = start
        self.end = end
        self.partition = partition
        # Rows held back while the month may still reach BULK_MIN_ROWS, as (row index, values).
        # None once the month's rows go straight to a COPY target.
        self.pending: list[tuple[int, tuple[Any, ...]]] | None = [] if bulk_candidate else None
        # Staging table of the bulk path, or None when rows go into audit_logs.
        self.staging: str | None = None
        # Whether a helper session of `aim.db.staging` loads the staging table, not the caller's transaction.
        self.helper = False
        # Whether COPY into the staging table may use FREEZE: only in the transaction that created it.
        self.freeze = True


class _CopyStream:
    """At most one open COPY statement on `conn`, into whichever table the next row needs.

    A statement ends when it contains `batch_size` rows, when the target table changes, or on
    `close()`, which callers use before any other query because none can run during a COPY.
    """

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.conn: psycopg.Connection | None = None
        self.table: str | None = None
        self.copy: psycopg.Copy | None = None
        self.stack = contextlib.ExitStack()
        # Row index in the caller's iterable of each line of the open statement, for error messages.
        self.indexes: list[int] = []

    def write(self, conn: psycopg.Connection, table: str, index: int, row: tuple[Any, ...], freeze: bool = False
              ) -> None:
        if self.copy is None or table != self.table or conn is not self.conn or len(self.indexes) >= self.batch_size:
            self.close()
            self._open(conn, table, freeze)
        self.indexes.append(index)
        try:
            self.copy.write_row(row)
        except psycopg.errors.DataError as exc:
            error = _copy_error(exc, self.indexes)
            self.abort(exc)
            raise error from None

    def _open(self, conn: psycopg.Connection, table: str, freeze: bool) -> None:
        statement = sql.SQL(COPY_TEMPLATE).format(
            table=sql.Identifier(table),
            freeze=sql.SQL(STAGING_COPY_OPTIONS if freeze else ""),
            columns=sql.SQL(", ").join(sql.Identifier(column) for column in AUDIT_COLUMNS),
        )
        self.stack.enter_context(timed_query("audit.copy"))
        cursor = self.stack.enter_context(conn.cursor())
        _register_dumpers(cursor)
        self.copy = self.stack.enter_context(cursor.copy(statement))
        self.conn = conn
        self.table = table

    def close(self) -> None:
        if self.copy is None:
            return
        try:
            self.stack.close()
        except psycopg.errors.DataError as exc:
            raise _copy_error(exc, self.indexes) from None
        finally:
            self.copy = None
            self.indexes = []

    def abort(self, exc: BaseException) -> None:
        """End the open statement because of `exc`, so psycopg cancels the COPY on the server.

        An error while ending it is logged, not raised, so that `exc` reaches the caller.
        """
        if self.copy is None:
            return
        self.copy = None
        try:
            self.stack.__exit__(type(exc), exc, exc.__traceback__)
        except psycopg.Error as end_error:
            logger.warning("ending an audit COPY after %s failed: %s", type(exc).__name__, end_error)


def _copy_error(exc: psycopg.errors.DataError, indexes: list[int]) -> ValidationError:
    # Python validation covers the schema's checks, so this is a value PostgreSQL parses
    # differently, such as \u0000 inside details. The COPY context names the line in the statement.
    match = _COPY_LINE.search(exc.diag.context or "")
    line = int(match.group(1)) - 1 if match else -1
    field = f"rows[{indexes[line]}]" if 0 <= line < len(indexes) else "rows"
    return ValidationError(
        field, f"PostgreSQL rejected the row ({exc.diag.message_primary}); nothing from this call was written"
    )


class _Ingest:
    """Route one call's validated rows: COPY into audit_logs, or the bulk path for empty months."""

    def __init__(self, db: Database, conn: psycopg.Connection, batch_size: int, bulk: bool,
                 cleanup: contextlib.ExitStack) -> None:
        self.db = db
        self.conn = conn
        self.bulk = bulk
        self.stream = _CopyStream(batch_size)
        self.months: dict[datetime, _Month] = {}
        # The month of the previous row, so most rows cost two comparisons.
        self.current: _Month | None = None
        self.bulk_months = 0
        # The caller's statement_timeout, saved when the bulk path first raises it.
        self.saved_timeout: str | None = None
        # Helper sessions of the bulk path, set up when the first month qualifies. `cleanup` closes
        # them after the caller's transaction ends.
        self.cleanup = cleanup
        self.parallel: staging.ParallelStaging | None = None

    def add(self, index: int, row: tuple[Any, ...]) -> None:
        month = self.current
        if month is None or not month.start <= row[1] < month.end:
            month = self._month(row[1])
        if month.pending is None:
            self._write(month, index, row)
            return
        month.pending.append((index, row))
        if len(month.pending) >= BULK_MIN_ROWS:
            self._stage(month)

    def _write(self, month: _Month, index: int, row: tuple[Any, ...]) -> None:
        if month.staging is None:
            self.stream.write(self.conn, "audit_logs", index, row)
        elif not month.helper:
            self.stream.write(self.conn, month.staging, index, row, freeze=True)
        else:
            if not self.parallel.is_loading(month.staging):
                # The month's table was committed when the ingest moved to another month, so COPY
                # runs without FREEZE from now on.
                self.stream.close()
                month.freeze = False
            self.stream.write(self.parallel.reopen(month.staging), month.staging, index, row, freeze=month.freeze)

    def _stage(self, month: _Month) -> None:
        """Move `month` to the bulk path: create its staging table and copy the rows held back."""
        self.stream.close()
        if self.saved_timeout is None:
            self.saved_timeout = partitions.set_local(self.db, self.conn, "statement_timeout", BULK_STATEMENT_TIMEOUT)
        month.helper = staging.can_use_helpers(self.db, self.conn)
        if not month.helper:
            month.staging = partitions.create_staging_table(self.db, self.conn, month.partition)
        else:
            if self.parallel is None:
                self.parallel = staging.ParallelStaging(self.db, self.conn, BULK_STATEMENT_TIMEOUT)
                self.cleanup.callback(self.parallel.close)
            month.staging = self.parallel.create(month.partition)
        pending, month.pending = month.pending, None
        for pending_index, pending_row in pending:
            self._write(month, pending_index, pending_row)

    def _month(self, when: datetime) -> _Month:
        start, end = _month_bounds(when)
        month = self.months.get(start)
        if month is None:
            # The catalog queries below cannot run while a COPY is in progress.
            self.stream.close()
            month = self._open_month(start, end, when)
            self.months[start] = month
        self.current = month
        return month

    def _open_month(self, start: datetime, end: datetime, when: datetime) -> _Month:
        """Make sure the month's partition exists, and decide whether the month may take the bulk path.

        aim_ensure_audit_partitions holds an advisory lock until the transaction ends, and creating a
        partition locks audit_logs exclusively. A long ingest that called it needlessly would block
        other writers that create partitions, so it runs only when to_regclass finds none.
        """
        partition = partitions.month_partition_name(start)
        exists = self.db.fetch_value(
            "audit.partition_exists", "SELECT to_regclass(%s) IS NOT NULL", (partition,), conn=self.conn
        )
        if not exists:
            self.db.fetch_value(
                "audit.ensure_partitions", "SELECT aim_ensure_audit_partitions(%s, %s)", (when, when), conn=self.conn
            )
            logger.info("created audit partition %s during an ingest", partition)
        candidate = self.bulk and partitions.partition_is_empty(self.db, self.conn, partition)
        return _Month(start, end, partition, candidate)

    def _build_indexes(self, staged: list[_Month]) -> list[list[tuple[str, str]]]:
        """Build the indexes of each staged month and return their renames, in the order of `staged`.

        Months loaded in the caller's transaction are indexed on its connection, meanwhile the
        helper sessions go on with theirs.
        """
        renames = {
            month.staging: partitions.build_staging_indexes(self.db, self.conn, month.partition, month.staging)
            for month in staged if not month.helper
        }
        if self.parallel is not None:
            renames.update(self.parallel.finish())
        return [renames[month.staging] for month in staged]

    def finish(self) -> None:
        """Write the rows held back, then build indexes and swap in each staged month."""
        for month in self.months.values():
            if month.pending:
                for index, row in month.pending:
                    self.stream.write(self.conn, "audit_logs", index, row)
            month.pending = None
        self.stream.close()
        staged = [month for month in self.months.values() if month.staging is not None]
        # Every index is built before the first swap, because a swap's ACCESS EXCLUSIVE lock on
        # audit_logs lasts until the transaction ends and would block all audit reads and writes
        # while later months were still being indexed.
        started = time.perf_counter()
        renames = self._build_indexes(staged)
        indexed = time.perf_counter()
        for month, month_renames in zip(staged, renames):
            if partitions.swap_in_staging(self.db, self.conn, month.partition, month.staging, month_renames):
                self.bulk_months += 1
            else:
                partitions.insert_from_staging(self.db, self.conn, month.staging, AUDIT_COLUMNS)
        if self.parallel is not None:
            self.parallel.handed_over = True
        if staged:
            logger.info("bulk-loaded %d of %d staged audit months: indexes took %.2f s, swaps %.3f s",
                        self.bulk_months, len(staged), indexed - started, time.perf_counter() - indexed)


def _ingest(db: Database, conn: psycopg.Connection, rows: Iterable[Any], batch_size: int, bulk: bool,
            cleanup: contextlib.ExitStack) -> int:
    """Stream `rows` into audit_logs and return how many were written.

    Rows are validated and written one at a time, so PostgreSQL stores rows while Python prepares
    the next ones, except for the first BULK_MIN_ROWS rows of a month whose partition is empty,
    which wait in memory until the month qualifies for the bulk path or the rows run out.
    """
    ingest = _Ingest(db, conn, batch_size, bulk, cleanup)
    written = 0
    try:
        for written, row in enumerate(rows, start=1):
            try:
                values = normalize_audit_row(row)
            except ValidationError as exc:
                # The error names the row by its index, as in `rows[12].actor_type`.
                raise ValidationError(f"rows[{written - 1}].{exc.field}", exc.message) from None
            ingest.add(written - 1, values)
        ingest.finish()
    except BaseException as exc:
        ingest.stream.abort(exc)
        raise
    if ingest.saved_timeout is not None:
        partitions.set_local(db, conn, "statement_timeout", ingest.saved_timeout)
    return written


def ingest_audit_rows(
    db: Database,
    rows: Iterable[Mapping[str, Any] | Sequence[Any]],
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    conn: psycopg.Connection | None = None,
    bulk: bool = True,
) -> int:
    """Insert audit rows in one transaction and return how many were written.

    `rows` may be any iterable, including a generator. Rows are validated and streamed, so memory
    stays bounded. Each row is a dict or a tuple as `normalize_audit_row()` accepts. Each COPY
    statement carries at most `batch_size` rows. Before the first row of a month is copied, that
    month's partition is created if missing.

    With `bulk`, a month whose partition is empty when the call first meets it and that gets at
    least BULK_MIN_ROWS rows is loaded into a staging table, indexed once and swapped in for the
    empty partition (see `aim.db.partitions.swap_in_staging`). The swap holds an ACCESS EXCLUSIVE
    lock on audit_logs until the transaction commits. If other sessions wrote to that month in the
    meantime, or the lock is not granted within a second, the staged rows are inserted normally.
    The bulk path runs its statements with statement_timeout BULK_STATEMENT_TIMEOUT and restores
    the previous value before returning.

    Under READ COMMITTED, and unless the transaction created a partition first, the staging tables
    are loaded and indexed on helper connections opened outside the pool (one loading and
    `aim.db.staging.INDEX_SESSIONS` indexing), so index builds use every core and overlap the
    loading of later months. Their rows commit before the swap but stay invisible to readers until
    the swap commits. If the caller's transaction then rolls back, the tables left over are dropped
    by a later bulk load.

    With `conn`, the rows are written in a savepoint of that connection's transaction, and the
    caller should commit soon after a bulk load. Otherwise a primary connection is borrowed and
    committed. NOTE: if that transaction holds row locks that another session waits for while it
    reads audit_logs, the swap's lock request can end in a deadlock error for that session.

    Raises ValidationError naming the row index and column of the first bad row, and then nothing
    from this call is written.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= MAX_BATCH_SIZE:
        raise ValidationError(
            "batch_size", f"{batch_size!r} is invalid; expected a whole number from 1 to {MAX_BATCH_SIZE}"
        )
    started = time.perf_counter()
    # Closes the bulk path's helper sessions once the transaction below has ended.
    with contextlib.ExitStack() as cleanup:
        if conn is None:
            with db.transaction() as own:
                total = _ingest(db, own, rows, batch_size, bulk, cleanup)
        else:
            with conn.transaction():
                total = _ingest(db, conn, rows, batch_size, bulk, cleanup)
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
        _register_dumpers(cursor)
        return cursor.execute(INSERT_SQL, values).fetchone()[0]
