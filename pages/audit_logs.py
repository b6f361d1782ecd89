"""Audit logs: filter by time range, actor, action, resource type and result, page through the rows, export CSV.

The whole state is in the URL: `range`/`from`/`to`, `actor`, `action`, `resource_type`, `result`,
`size`, plus `cursor`, `page` and `at` while paging. The first page follows the clock, and `at`
records the instant its window ended. Later pages keep that window, because a keyset cursor is
valid only for the exact window it was issued under. So an auto-refresh keeps the position, and Next
then Previous return the same rows unless events arrived in between (page 1 then shows them on top).

The table shows one keyset page (100, 500 or 1,000 rows). The chart counts the same filtered rows per
time bucket, and the CSV export walks every matching row in pages of 1,000. All three print times in
the viewer's timezone.
"""

from aim.ui.auth import require_page

user = require_page("audit_logs")

import logging  # noqa: E402
from datetime import datetime, timezone  # noqa: E402

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from aim.errors import ValidationError  # noqa: E402
from aim.runtime import get_runtime  # noqa: E402
from aim.services import cache_hooks, listing  # noqa: E402
from aim.services import dashboard_queries_trends as trends  # noqa: E402
from aim.ui import charts, csv_export, export_route, timefmt  # noqa: E402
from aim.ui import components as ui  # noqa: E402
from aim.ui import timerange  # noqa: E402
from aim.ui.errors import page_guard  # noqa: E402

logger = logging.getLogger("aim.ui.pages.audit_logs")

RANGES = ("now-15m", "now-1h", "now-24h", "now-7d", "now-30d")
DEFAULT_RANGE = "now-24h"
PAGE_SIZES = ("100", "500", "1000")
ANCHOR_PARAM = "at"
FILTER_PARAMS = ("actor", "action", "resource_type", "result")
TABLE_KEY = "audit_table"
CLOSED_BUCKETS_TTL_S = 600


@st.cache_data(ttl=300, show_spinner=False)
def load_distinct(organization_id, column: str, history_version: int) -> list[str]:
    """Filter menu values. New actions appear within five minutes, or after the next history change."""
    return trends.audit_distinct_values(get_runtime().db, organization_id, column)


def _count_buckets(organization_id, start, end, unit: str, tz: str, filters: tuple) -> pd.DataFrame:
    rows = trends.audit_events_per_bucket(
        get_runtime().db, organization_id, start, end, unit=unit, tz=tz, filters=dict(filters)
    )
    return pd.DataFrame(rows, columns=["bucket", "result", "events"])


@st.cache_data(ttl=CLOSED_BUCKETS_TTL_S, show_spinner=False, max_entries=100)
def load_closed_buckets(
    organization_id, start, end, unit: str, tz: str, filters: tuple, history_version: int
) -> pd.DataFrame:
    """Counts of whole past buckets. The audit log is append-only, so these only change when events
    arrive with old timestamps. A backfill bumps `history_version` (see `cache_hooks.history_changed`),
    which retires the entries made before it. Other late events show after at most CLOSED_BUCKETS_TTL_S."""
    return _count_buckets(organization_id, start, end, unit, tz, filters)


@st.cache_data(ttl=30, show_spinner=False, max_entries=200)
def load_open_buckets(organization_id, start, end, unit: str, tz: str, filters: tuple) -> pd.DataFrame:
    return _count_buckets(organization_id, start, end, unit, tz, filters)


def load_buckets(organization_id, start, end, unit: str, tz: str, filters: tuple) -> pd.DataFrame:
    """Count events per bucket and result over [start, end), exactly.

    Whole past buckets are counted once and cached, because over 30 days of 10 million rows that
    count reads millions of rows. The partial bucket at each end of the window is counted live.
    """
    head, closed, tail = timerange.split_closed(start, end, unit, tz)
    parts = [load_open_buckets(organization_id, *part, unit, tz, filters) for part in (head, tail) if part]
    if closed:
        history = cache_hooks.history_version()
        parts.append(load_closed_buckets(organization_id, *closed, unit, tz, filters, history))
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=["bucket", "result", "events"])
    return pd.concat(parts, ignore_index=True).sort_values("bucket", kind="stable")


def load_page(organization_id, filters: dict, cursor: str | None, limit: int):
    """Fetch one keyset page. Pages are not cached, because the rows must be current."""
    runtime = get_runtime()
    return listing.list_audit_logs(
        runtime.db, organization_id, start=filters["start"], end=filters["end"], actor=filters["actor"],
        action=filters["action"], resource_type=filters["resource_type"], result=filters["result"],
        cursor=cursor, limit=limit,
    )


def reset_paging() -> None:
    ui.clear_params(*ui.PAGING_PARAMS, ANCHOR_PARAM)


def window_end() -> datetime:
    """Return the pinned "now" while a cursor is in the URL, else the current time.

    The window never ends in the future, so rows written after the first page was read stay out of
    the window its cursors belong to.
    """
    anchor = st.query_params.get(ANCHOR_PARAM)
    if anchor and st.query_params.get(ui.CURSOR_PARAM):
        try:
            return timerange.parse_instant(anchor, ANCHOR_PARAM)
        except ValidationError:
            logger.info("ignoring an invalid %s query parameter %r", ANCHOR_PARAM, anchor)
    return datetime.now(timezone.utc)


def render_controls() -> tuple[int | None, int]:
    """Render the toolbar and the filter row, and return (refresh seconds or None, page size)."""
    title, picker, refresh = st.columns([5, 2, 1.2], vertical_alignment="bottom")
    with title:
        ui.page_header("Audit logs", "Who did what to which resource, and when. Append-only.",
                       icon=":material/receipt_long:")
    with picker:
        timerange.time_range_picker(options=RANGES, default=DEFAULT_RANGE, on_change=reset_paging)
    with refresh:
        interval = timerange.refresh_picker(default="off")
    timerange.custom_range_inputs(on_change=reset_paging)

    history = cache_hooks.history_version()
    actor_col, action_col, resource_col, result_col, size_col = st.columns([2.2, 2, 2, 1.4, 1])
    with actor_col:
        ui.bound_text_input("Actor", "actor", placeholder="exact actor id, e.g. a user or agent UUID",
                            help="Matches the actor id exactly.", reset=(*ui.PAGING_PARAMS, ANCHOR_PARAM))
    with action_col:
        ui.bound_selectbox("Action", load_distinct(user["organization_id"], "action", history), "action",
                           reset=(*ui.PAGING_PARAMS, ANCHOR_PARAM))
    with resource_col:
        ui.bound_selectbox("Resource type", load_distinct(user["organization_id"], "resource_type", history),
                           "resource_type", reset=(*ui.PAGING_PARAMS, ANCHOR_PARAM))
    with result_col:
        ui.bound_selectbox("Result", listing.AUDIT_RESULTS, "result", reset=(*ui.PAGING_PARAMS, ANCHOR_PARAM))
    with size_col:
        size = timerange.bound_choice("Rows per page", PAGE_SIZES, "size", default=PAGE_SIZES[0],
                                      on_change=reset_paging)
    return interval, int(size)


def current_filters(window: timerange.TimeRange) -> dict:
    values = {name: ui.query_value(name) for name in FILTER_PARAMS}
    if values["result"] not in (None, *listing.AUDIT_RESULTS):
        values["result"] = None
    return csv_export.audit_filters(start=window.start, end=window.end, **values)


def render_chart(slot, filters: dict, window: timerange.TimeRange, tz: str) -> None:
    unit = timerange.pick_bucket_unit(window.duration)
    chart_filters = tuple(sorted((k, v) for k, v in filters.items() if k in FILTER_PARAMS and v))
    with slot.container(border=True), charts.slow_panel_guard(f"Events per {unit}"):
        df = load_buckets(user["organization_id"], window.start, window.end, unit, tz, chart_filters)
        totals = df.groupby("result")["events"].sum() if not df.empty else pd.Series(dtype="int64")
        summary = " · ".join(f"{result} {int(totals.get(result, 0)):,}" for result in listing.AUDIT_RESULTS)
        st.markdown(f"**Events per {unit} by result** &nbsp; :gray[{summary}]")
        if df.empty:
            st.caption("No audit events match these filters in this time range.")
            return
        df["bucket"] = timefmt.localize_column(df["bucket"], tz)
        width_ms = {"minute": 60e3, "hour": 3600e3, "day": 86400e3}[unit] * 0.85
        fig = charts.stacked_bars(df, x="bucket", y="events", color="result", color_map=charts.RESULT_COLORS,
                                  order=listing.AUDIT_RESULTS, height=220, bar_width_ms=width_ms)
        charts.show(charts.pin_time_axis(fig, window.start, window.end, tz), key="audit_events_chart")


def table_frame(items: list[dict], tz: str) -> pd.DataFrame:
    df = pd.DataFrame(items, columns=[
        "id", "occurred_at", "actor_type", "actor_id", "action", "resource_type", "resource_id", "result",
        "ip_address", "user_agent", "request_id", "details",
    ])
    df["occurred_at"] = timefmt.localize_column(df["occurred_at"], tz)
    df["details"] = [csv_export.details_text(value) for value in df["details"]]
    return df


def render_table(page, tz: str) -> None:
    df = table_frame(page.items, tz)
    styled = ui.style_columns(df, {"result": {"success": "green", "failure": "orange", "denied": "red"}})
    st.dataframe(
        styled, key=TABLE_KEY, hide_index=True, height=min(38 + 35 * max(len(df), 1), 560),
        placeholder=ui.EMPTY_CELL,
        column_order=("occurred_at", "actor_type", "actor_id", "action", "resource_type", "resource_id", "result",
                      "ip_address", "request_id", "details", "id"),
        column_config={
            "occurred_at": st.column_config.DatetimeColumn(f"Time ({tz})", format="YYYY-MM-DD HH:mm:ss.SSS",
                                                           width="medium"),
            "actor_type": st.column_config.TextColumn("Actor type", width="small"),
            "actor_id": st.column_config.TextColumn("Actor"),
            "action": st.column_config.TextColumn("Action"),
            "resource_type": st.column_config.TextColumn("Resource type", width="small"),
            "resource_id": st.column_config.TextColumn("Resource"),
            "result": st.column_config.TextColumn("Result", width="small"),
            "ip_address": st.column_config.TextColumn("IP", width="small"),
            "request_id": st.column_config.TextColumn("Request id", width="small"),
            "details": st.column_config.TextColumn("Details", width="large"),
            "id": st.column_config.NumberColumn("Event id", format="%d", width="small"),
        },
    )


def render_export(page, filters: dict, tz: str) -> None:
    """Render the CSV export link. The route streams every matching row, however many there are."""
    total = page.total or 0
    help_text = (f"Every matching row ({ui.count_label(page, 'rows')}), newest first, times in {tz}. "
                 "The file is streamed, so exports of any size work.")
    st.link_button("Export CSV", export_route.audit_export_url(filters, tz), icon=":material/download:",
                   help=help_text, disabled=total == 0, key="audit_export")


def render_live(interval: int | None, page_size: int) -> None:
    @st.fragment(run_every=interval)
    def live() -> None:
        with page_guard("audit logs"):
            tz = timerange.viewer_timezone()
            window = timerange.current_range(options=RANGES, default=DEFAULT_RANGE, now=window_end(), snap=False)
            filters = current_filters(window)
            chart_slot = st.empty()
            with st.container(border=True):
                page = ui.fetch_paged(lambda cursor: load_page(user["organization_id"], filters, cursor, page_size))
                if not st.query_params.get(ui.CURSOR_PARAM):
                    # The first page follows the clock; pin its window for the cursors it hands out.
                    st.query_params[ANCHOR_PARAM] = timerange.format_instant(window.end, microseconds=True)
                head, export = st.columns([6, 1], vertical_alignment="center")
                head.markdown(f"**Events** &nbsp; :gray[{window.describe(tz)}]")
                with export:
                    render_export(page, filters, tz)
                if page.items:
                    render_table(page, tz)
                else:
                    ui.empty_state("No audit events match these filters in this time range.")
                ui.pager(page, key=TABLE_KEY, noun="events")
            render_chart(chart_slot, filters, window, tz)

    live()


with page_guard("audit logs"):
    refresh_interval, rows_per_page = render_controls()
render_live(refresh_interval, rows_per_page)
