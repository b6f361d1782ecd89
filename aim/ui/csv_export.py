"""CSV encoding of whole filtered lists, chunk by chunk, for the streamed export route.

`csv_chunks` turns an iterator of rows (normally `aim.db.keyset.iter_rows`, which reads 1,000 rows
per query) into encoded CSV chunks, so neither the rows nor the text of the whole export are ever
in memory at once. `aim.ui.export_route` sends those chunks as an HTTP response.

Timestamps are written as ISO 8601 with the UTC offset of the viewer's zone, so they show the same
wall-clock time as the table and the charts.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import uuid
from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping, Sequence

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
