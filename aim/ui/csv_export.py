"""CSV exports of whole filtered lists, written batch by batch to a temporary file.

`csv_chunks` turns an iterator of rows (normally `aim.db.keyset.iter_rows`, which reads 1,000 rows
per query) into encoded CSV chunks. So neither the rows nor the text of the whole export are ever
in memory at once. `write_export` streams those chunks into an anonymous temporary file,
gzip-compressed on request, and returns it open for reading.

Streamlit 1.67's `st.download_button` accepts str, bytes, a file object or a callable that returns
one of them, but not a generator. Whatever it gets, it copies into its in-memory media store when the
user clicks. The page therefore passes a callable: the query runs only on click, and the memory
cost is the finished file's size. On synthetic audit rows (`bench.common.audit_rows`) the plain
form measured 182 bytes per row and the gzip form 14 % of that.

Timestamps are written as ISO 8601 with the UTC offset of the viewer's zone, so they show the same
wall-clock time as the table and the charts.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import logging
import os
import tempfile
import uuid
from datetime import datetime
from typing import Any, BinaryIO, Callable, Iterable, Iterator, Mapping, Sequence

from aim.db import keyset
from aim.db.pool import Database
from aim.errors import ValidationError
from aim.services import listing
from aim.ui import timefmt

logger = logging.getLogger(__name__)

AUDIT_COLUMNS = (
    "occurred_at", "id", "actor_type", "actor_id", "action", "resource_type", "resource_id", "result",
    "ip_address", "user_agent", "request_id", "details",
)
ROWS_PER_CHUNK = 1000
# Spreadsheet programs run a cell that starts with one of these as a formula, so such text values
# get a leading apostrophe (the OWASP CSV injection advice). Only text columns are affected.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Above this many rows the plain form would hold too much in Streamlit's media store, so the page
# offers only the gzip form. At about 180 bytes per audit row this is roughly 45 MB of CSV.
PLAIN_MAX_ROWS = 250_000
# Above this many rows even the gzip form (about 25 bytes per row, so 50 MB here) would strain the
# dashboard's memory budget of 400 MB, and formatting takes over a minute (about 28,000 rows/s on
# the 2-core development machine). The page then disables the export and suggests narrower filters.
# TODO: serve larger exports from a streaming HTTP route (st.App routes or the API), which needs no
# in-memory copy.
EXPORT_MAX_ROWS = 2_000_000


def details_text(value: Any) -> str:
    """Return a JSON column (such as audit `details`) as compact JSON text with sorted keys; "" for None."""
    if value is None:
        return ""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _cell(value: Any, tz: str) -> Any:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return timefmt.to_local(value, tz).isoformat()
    if isinstance(value, (dict, list)):
        text = details_text(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    else:
        text = str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def csv_chunks(
    rows: Iterable[Mapping[str, Any]], columns: Sequence[str], *, tz: str = timefmt.DEFAULT_TIMEZONE,
    rows_per_chunk: int = ROWS_PER_CHUNK,
) -> Iterator[bytes]:
    """Yield UTF-8 CSV: the header, then `rows_per_chunk` rows per chunk. Datetimes are converted to `tz`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(columns)
    pending = 0
    for row in rows:
        writer.writerow([_cell(row.get(column), tz) for column in columns])
        pending += 1
        if pending >= rows_per_chunk:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue().encode("utf-8")


def write_export(chunks: Iterable[bytes], *, compress: bool = False) -> BinaryIO:
    """Write `chunks` to a temporary file (gzip when `compress`) and return it open for reading from the start.

    The file is unlinked at once, so the operating system frees it when the returned object is
    closed or garbage-collected, even if the download never happens. The object is an
    io.BufferedReader because that is a type st.download_button reads.
    """
    handle, path = tempfile.mkstemp(prefix="aim-export-", suffix=".csv.gz" if compress else ".csv")
    try:
        with os.fdopen(handle, "wb") as raw:
            target: BinaryIO = gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6) if compress else raw
            try:
                for chunk in chunks:
                    target.write(chunk)
            finally:
                if compress:
                    target.close()
        reader = open(path, "rb")  # noqa: SIM115 - the caller (Streamlit) reads and drops it
    finally:
        os.unlink(path)
    return reader


def audit_filters(
    *, start: datetime | None, end: datetime | None, actor: str | None = None, action: str | None = None,
    resource_type: str | None = None, result: str | None = None,
) -> dict[str, Any]:
    """Return the keyset filter dict of `listing.AUDIT_LOGS` for the audit page's filters."""
    return {"start": start, "end": end, "actor": actor or None, "action": action or None,
            "resource_type": resource_type or None, "result": result or None}


def iter_audit_rows(db: Database, organization_id: uuid.UUID, filters: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Yield every audit row matching `filters` (see `audit_filters`), newest first, 1,000 per query."""
    if filters.get("result") is not None and filters["result"] not in listing.AUDIT_RESULTS:
        raise ValidationError("result", f"{filters['result']!r} is invalid; expected one of "
                                        f"{', '.join(listing.AUDIT_RESULTS)}")
    return keyset.iter_rows(db, listing.AUDIT_LOGS, scope={"organization_id": organization_id}, filters=filters)


def audit_export_callable(
    db_factory: Callable[[], Database], organization_id: uuid.UUID, filters: Mapping[str, Any], tz: str, *,
    compress: bool, counter: dict[str, int] | None = None,
) -> Callable[[], BinaryIO]:
    """Return a no-argument callable for st.download_button that builds the export when clicked.

    Streamlit runs the callable on its own thread, outside the script run, so it takes a
    `db_factory` (such as `lambda: get_runtime().db`) instead of reading Streamlit state. `counter`,
    when given, receives the number of rows written under "rows".
    """
    frozen = dict(filters)

    def build() -> BinaryIO:
        rows = iter_audit_rows(db_factory(), organization_id, frozen)
        written = {"rows": 0}

        def counted() -> Iterator[dict[str, Any]]:
            for row in rows:
                written["rows"] += 1
                yield row

        logger.info("audit CSV export started for organization %s (compress=%s)", organization_id, compress)
        result = write_export(csv_chunks(counted(), AUDIT_COLUMNS, tz=tz), compress=compress)
        logger.info("audit CSV export finished for organization %s: %d rows", organization_id, written["rows"])
        if counter is not None:
            counter["rows"] = written["rows"]
        return result

    return build

