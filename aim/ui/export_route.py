"""The streamed CSV export of the audit log: an HTTP route of the dashboard's st.App.

`st.download_button` copies a whole file into Streamlit's in-memory media store, so an export of
millions of rows cannot go through it. This route streams instead: `keyset.iter_rows` reads 1,000
rows per query and `csv_export.csv_chunks` encodes them, so memory stays at one batch whatever the
size of the filtered set.

The route authenticates with the dashboard's own session cookie (`aim.ui.auth`), checks that the
session is live and that its role may open the audit page, and exports only the session's
organization. The cookie is SameSite=Strict, so another site cannot make the browser send it.
Every export is audited with its filters and row count.
"""

from __future__ import annotations

import logging
import zoneinfo
from datetime import datetime
from typing import Any, Iterator, Mapping
from urllib.parse import urlencode

import psycopg
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from aim.errors import AIMError, ValidationError
from aim.services import audit, sessions
from aim.services.actor import Actor, ip_address_or_none
from aim.services.users import AuthenticationFailed
from aim.ui import access, auth, csv_export, timefmt

logger = logging.getLogger(__name__)

AUDIT_EXPORT_PATH = "/export/audit.csv"
TEXT_FILTERS = ("actor", "action", "resource_type", "result")
MAX_FILTER_LENGTH = 200


def audit_export_url(filters: Mapping[str, Any], tz: str) -> str:
    """Return the export route's relative URL for the audit page's `filters` and viewer timezone `tz`."""
    query: dict[str, str] = {"tz": tz}
    for name in ("start", "end"):
        if filters.get(name) is not None:
            query[name] = filters[name].isoformat()
    for name in TEXT_FILTERS:
        if filters.get(name):
            query[name] = str(filters[name])
    return f"{AUDIT_EXPORT_PATH}?{urlencode(query)}"


def _timestamp(value: str | None, field: str) -> datetime | None:
    if value is None or value == "":
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValidationError(field, f"{value!r} is invalid; expected ISO 8601 with a UTC offset, "
                                     "such as 2026-01-31T12:00:00+00:00")
    return parsed


def parse_export_query(params: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """Return (audit filters, timezone) from the route's query parameters, or raise ValidationError."""
    unknown = sorted(set(params) - {"start", "end", "tz", *TEXT_FILTERS})
    if unknown:
        raise ValidationError(unknown[0], "is not a parameter of the export; expected start, end, tz, "
                                          f"{', '.join(TEXT_FILTERS)}")
    start = _timestamp(params.get("start"), "start")
    end = _timestamp(params.get("end"), "end")
    if start is not None and end is not None and start >= end:
        raise ValidationError("end", "is not after start; expected a later time than start")
    texts = {}
    for name in TEXT_FILTERS:
        value = params.get(name) or None
        if value is not None and len(value) > MAX_FILTER_LENGTH:
            raise ValidationError(name, f"has {len(value)} characters; expected at most {MAX_FILTER_LENGTH}")
        texts[name] = value
    tz = params.get("tz") or timefmt.DEFAULT_TIMEZONE
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError("tz", f"{tz!r} is not a known time zone; expected an IANA name such as "
                                    "Europe/Berlin or UTC") from None
    return csv_export.audit_filters(start=start, end=end, **texts), tz


def _session(runtime, request: Request) -> sessions.SessionInfo | Response:
    parsed = auth.read_session_cookie(runtime.secret_key, request.cookies.get(auth.COOKIE_NAME))
    if parsed is None:
        return PlainTextResponse("Not signed in: sign in to the dashboard, then export again.", status_code=401)
    try:
        return sessions.load_session(runtime.db, parsed[0])
    except AuthenticationFailed as failed:
        logger.info("audit CSV export rejected for session %s: %s", parsed[0], failed.reason)
        return PlainTextResponse(f"Not signed in: {failed.message}.", status_code=401)


def _prepare(request: Request) -> tuple[Any, sessions.SessionInfo, dict[str, Any], str] | Response:
    """Authenticate, authorize and validate on a worker thread, because every step may block."""
    from aim.runtime import get_runtime

    runtime = get_runtime()
    session = _session(runtime, request)
    if isinstance(session, Response):
        return session
    if not access.can_open(session.role, "audit_logs"):
        logger.info("audit CSV export rejected for user %s: role %s", session.user_id, session.role)
        return PlainTextResponse(f"Forbidden: role {session.role} may not read the audit log.", status_code=403)
    try:
        filters, tz = parse_export_query(request.query_params)
    except ValidationError as exc:
        logger.info("audit CSV export of user %s rejected: %s", session.user_id, exc)
        return PlainTextResponse(f"Invalid export request: {exc}", status_code=400)
    return runtime, session, filters, tz


def _audited_chunks(runtime, session: sessions.SessionInfo, filters: dict[str, Any], tz: str,
                    request: Request) -> Iterator[bytes]:
    written = 0

    def counted() -> Iterator[dict[str, Any]]:
        nonlocal written
        for row in csv_export.iter_audit_rows(runtime.db, session.organization_id, filters):
            written += 1
            yield row

    logger.info("audit CSV export started by user %s (session %s)", session.user_id, session.session_id)
    # NOTE: the audit row is written once the last chunk is sent, so a download the client aborts
    # leaves only the log lines above.
    yield from csv_export.csv_chunks(counted(), csv_export.AUDIT_COLUMNS, tz=tz)
    peer = request.client.host if request.client else None
    actor = Actor("user", str(session.user_id), role=session.role, ip_address=ip_address_or_none(peer),
                  user_agent=request.headers.get("user-agent"))
    details = {name: (value.isoformat() if isinstance(value, datetime) else value)
               for name, value in filters.items() if value is not None}
    try:
        with runtime.db.transaction() as conn:
            audit.record(conn, session.organization_id, actor, "audit_log.export", "audit_log", "",
                         details={"filters": details, "rows": written})
    except (AIMError, psycopg.Error) as exc:
        logger.warning("could not audit the CSV export of user %s (%d rows): %s", session.user_id, written, exc)
    logger.info("audit CSV export by user %s finished: %d rows", session.user_id, written)


async def audit_csv(request: Request) -> Response:
    """Stream every audit row that matches the query's filters as CSV, newest first."""
    prepared = await run_in_threadpool(_prepare, request)
    if isinstance(prepared, Response):
        return prepared
    runtime, session, filters, tz = prepared
    start, end = filters.get("start"), filters.get("end")
    window = f"-{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}" if start is not None and end is not None else ""
    # Starlette iterates a sync generator on worker threads, one chunk of 1,000 rows at a time.
    return StreamingResponse(
        _audited_chunks(runtime, session, filters, tz, request), media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="aim-audit{window}.csv"',
                 "Cache-Control": "no-store"},
    )


ROUTES = [Route(AUDIT_EXPORT_PATH, audit_csv, methods=["GET"])]
