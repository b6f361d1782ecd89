"""Alerts: open, acknowledged and resolved alerts, a severity filter, and acknowledge/resolve by alert id.

The URL contains the view (`status`, `severity`, `cursor`, `page`, `refresh`) and the selected alert
(`alert=<id>`). Actions always act on that id, never on a row position. Choosing a row writes its
id, and the buttons read the id when clicked. A live refresh (st.fragment with run_every) may
insert new alerts above the selected one, and the selection and the actions stay on the same alert.
"""

from aim.ui.auth import require_page

user = require_page("alerts")

import hashlib  # noqa: E402
import logging  # noqa: E402
import uuid  # noqa: E402

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from aim.errors import AIMError, NotFound  # noqa: E402
from aim.runtime import get_runtime  # noqa: E402
from aim.services import alerts as alerts_service  # noqa: E402
from aim.services import dashboard_queries_trends as trends  # noqa: E402
from aim.services import listing  # noqa: E402
from aim.ui import components as ui  # noqa: E402
from aim.ui import charts, csv_export, timefmt, timerange  # noqa: E402
from aim.ui.access import can_write  # noqa: E402
from aim.ui.auth import actor_for  # noqa: E402
from aim.ui.errors import error_message, page_guard  # noqa: E402

logger = logging.getLogger("aim.ui.pages.alerts")

SELECT_PARAM = "alert"
STATUS_PARAM = "status"
STATUSES = alerts_service.STATUSES
SEVERITIES = tuple(reversed(alerts_service.SEVERITIES))  # critical first
PAGE_SIZE = 50
TABLE_KEY = "alerts_table"
FLASH_KEY = "alerts_flash"
WRITABLE = can_write(user["role"])


@st.cache_data(ttl=10, show_spinner=False)
def load_counts(organization_id) -> dict:
    """Open and acknowledged alerts per severity; refreshed at most every 10 seconds."""
    counts: dict = {status: {severity: 0 for severity in SEVERITIES} for status in trends.OPEN_ALERT_STATUSES}
    for row in trends.alert_counts(get_runtime().db, organization_id):
        counts[row["status"]][row["severity"]] = int(row["alerts"])
    return counts


def reset_view() -> None:
    ui.clear_params(*ui.PAGING_PARAMS)


def selected_id() -> uuid.UUID | None:
    """Return the alert id in the URL, or None when it is missing or malformed."""
    text = ui.query_value(SELECT_PARAM)
    if text is None:
        return None
    try:
        return uuid.UUID(text)
    except ValueError:
        return None


def act(action: str) -> None:
    """Acknowledge or resolve the alert whose id is in the URL at the moment of the click."""
    alert_id = selected_id()
    if alert_id is None:
        st.session_state[FLASH_KEY] = ("warning", "Select an alert first.")
        return
    if not WRITABLE:
        st.session_state[FLASH_KEY] = ("error", f"Your role {user['role']} is read-only here.")
        return
    note = (st.session_state.get("alert_note") or "").strip() or None
    runtime = get_runtime()
    operation = alerts_service.acknowledge if action == "acknowledge" else alerts_service.resolve
    try:
        row = operation(runtime.db, user["organization_id"], alert_id, actor_for(user), note=note)
    except AIMError as exc:
        logger.info("user %s: %s of alert %s failed: %s", user["id"], action, alert_id, exc)
        st.session_state[FLASH_KEY] = ("error", error_message(exc))
        return
    st.session_state["alert_note"] = ""
    load_counts.clear()
    verb = "acknowledged" if action == "acknowledge" else "resolved"
    st.session_state[FLASH_KEY] = ("success", f"Alert “{row['title']}” {verb}.")


def render_controls() -> int | None:
    title, refresh = st.columns([6, 1.3], vertical_alignment="bottom")
    with title:
        ui.page_header("Alerts", "Security and integrity alerts raised by verification, attestation and drift checks.",
                       icon=":material/notifications_active:")
    with refresh:
        interval = timerange.refresh_picker(default="30s")
    status_col, severity_col, _ = st.columns([3, 2, 3], vertical_alignment="bottom")
    with status_col:
        timerange.bound_choice("Status", STATUSES, STATUS_PARAM, default="open", segmented=True,
                               format_func=str.capitalize, on_change=reset_view)
    with severity_col:
        ui.bound_selectbox("Severity", SEVERITIES, "severity", format_func=str.capitalize)
    return interval


def render_counts(counts: dict) -> None:
    open_counts = counts["open"]
    tiles = [
        {"label": f"Open · {severity}", "value": f"{open_counts[severity]:,}",
         "color": charts.SEVERITY_COLORS[severity] if open_counts[severity] else None,
         "help": f"Open {severity} alerts in this organization."}
        for severity in SEVERITIES
    ]
    acknowledged = sum(counts["acknowledged"].values())
    tiles.append({"label": "Acknowledged", "value": f"{acknowledged:,}", "note": "not resolved yet",
                  "help": "Acknowledged alerts that are not resolved yet."})
    charts.stat_tiles(tiles)


def alerts_frame(items: list[dict], tz: str) -> pd.DataFrame:
    df = pd.DataFrame(items, columns=[
        "id", "severity", "title", "alert_type", "resource_type", "resource_id", "occurrences", "created_at",
        "last_seen_at", "status", "acknowledged_by",
    ])
    df["resource"] = df["resource_type"] + " " + df["resource_id"].str.slice(0, 12)
    for column in ("created_at", "last_seen_at"):
        df[column] = timefmt.localize_column(df[column], tz)
    df["id"] = df["id"].astype(str)
    return df


def render_table(page, tz: str, current: uuid.UUID | None) -> None:
    df = alerts_frame(page.items, tz)
    ids = list(df["id"])
    # The table key follows the rows shown, so a refresh that brings new rows creates a fresh table
    # whose highlighted row is computed from the selected id, not kept from an old row position.
    digest = hashlib.sha1("|".join(ids).encode()).hexdigest()[:12]
    table_key = f"{TABLE_KEY}_{digest}"
    position = ids.index(str(current)) if current is not None and str(current) in ids else None

    def on_select() -> None:
        rows = st.session_state[table_key].selection.rows
        if rows and rows[0] < len(ids):
            st.query_params[SELECT_PARAM] = ids[rows[0]]
            st.session_state.pop(FLASH_KEY, None)

    styled = ui.style_columns(df, {"severity": ui.SEVERITY_COLORS, "status": ui.STATUS_COLORS})
    st.dataframe(
        styled, key=table_key, on_select=on_select, selection_mode="single-row", hide_index=True,
        selection_default={"selection": {"rows": [position]}} if position is not None else None,
        height=min(38 + 35 * max(len(df), 1), 600), placeholder="—",
        column_order=("severity", "title", "occurrences", "created_at", "last_seen_at", "alert_type", "resource",
                      "acknowledged_by"),
        column_config={
            "severity": st.column_config.TextColumn("Severity", width="small"),
            "title": st.column_config.TextColumn("Title", width="large"),
            "alert_type": st.column_config.TextColumn("Type"),
            "resource": st.column_config.TextColumn("Resource"),
            "occurrences": st.column_config.NumberColumn("Count", format="%d", width="small"),
            "created_at": st.column_config.DatetimeColumn(f"Raised ({tz})", format="YYYY-MM-DD HH:mm:ss"),
            "last_seen_at": st.column_config.DatetimeColumn("Last seen", format="YYYY-MM-DD HH:mm:ss"),
            # "medium" fits "acknowledged", the longest status, which "small" cut off.
            "status": st.column_config.TextColumn("Status", width="medium"),
            "acknowledged_by": st.column_config.TextColumn("Acknowledged by"),
        },
    )


def render_detail(alert_id: uuid.UUID | None, tz: str) -> None:
    with st.container(border=True):
        if alert_id is None:
            st.markdown("**Alert details**")
            st.caption("Select a row to see the alert and act on it.")
            return
        try:
            alert = alerts_service.get_alert(get_runtime().db, user["organization_id"], alert_id)
        except NotFound:
            st.markdown("**Alert details**")
            st.warning("The selected alert no longer exists in this organization.", icon=":material/help:")
            return
        st.markdown(f"**{alert['title']}**")
        st.markdown(f"{ui.severity_badge(alert['severity'])} {ui.status_badge(alert['status'])} "
                    f":gray[{alert['alert_type']} · seen {alert['occurrences']:,}×]")
        if alert["description"]:
            st.write(alert["description"])
        facts = {
            "Alert id": str(alert["id"]),
            "Resource": f"{alert['resource_type']} {alert['resource_id']}",
            "Related agents": f"{len(alert['related_agent_ids']):,}",
            "Raised": timefmt.format_ts(alert["created_at"], tz),
            "Last seen": timefmt.format_ts(alert["last_seen_at"], tz),
            "Acknowledged": (f"{timefmt.format_ts(alert['acknowledged_at'], tz)} by {alert['acknowledged_by']}"
                             if alert["acknowledged_at"] else "—"),
            "Resolved": (f"{timefmt.format_ts(alert['resolved_at'], tz)} by {alert['resolved_by']}"
                         if alert["resolved_at"] else "—"),
        }
        st.markdown("\n".join(f"- **{label}:** {value}" for label, value in facts.items()))
        if alert["details"]:
            with st.expander("Details", icon=":material/data_object:"):
                st.code(csv_export.details_text(alert["details"]), language="json", wrap_lines=True)
        render_actions(alert)


def render_actions(alert: dict) -> None:
    if not WRITABLE:
        st.caption(f"Your role {user['role']} can view alerts but not change them.")
        return
    st.text_input("Note (optional)", key="alert_note", max_chars=500, placeholder="Recorded in the audit log")
    acknowledge, resolve = st.columns(2)
    acknowledge.button("Acknowledge", key="alert_acknowledge", on_click=act, args=("acknowledge",),
                       disabled=alert["status"] != "open", icon=":material/visibility:", width="stretch")
    resolve.button("Resolve", key="alert_resolve", on_click=act, args=("resolve",), type="primary",
                   disabled=alert["status"] == "resolved", icon=":material/task_alt:", width="stretch")


def render_flash() -> None:
    flash = st.session_state.pop(FLASH_KEY, None)
    if flash is None:
        return
    kind, message = flash
    {"success": st.success, "warning": st.warning, "error": st.error}[kind](message)


def render_live(interval: int | None) -> None:
    @st.fragment(run_every=interval)
    def live() -> None:
        with page_guard("alerts"):
            tz = timerange.viewer_timezone()
            render_counts(load_counts(user["organization_id"]))
            render_flash()
            status = timerange.param_choice(STATUS_PARAM, STATUSES, "open")
            severity = ui.query_value("severity")
            severity = severity if severity in SEVERITIES else None
            current = selected_id()
            table_col, detail_col = st.columns([2.5, 1])
            with table_col, st.container(border=True):
                page = ui.fetch_paged(lambda cursor: listing.list_alerts(
                    get_runtime().db, user["organization_id"], status=status, severity=severity, cursor=cursor,
                    limit=PAGE_SIZE,
                ))
                st.markdown(f"**{status.capitalize()} alerts** &nbsp; :gray[{ui.count_label(page, 'alerts')}]")
                if page.items:
                    render_table(page, tz, current)
                else:
                    ui.empty_state(f"No {status} alerts{f' of severity {severity}' if severity else ''}.",
                                   icon=":material/check_circle:")
                ui.pager(page, key=TABLE_KEY, noun="alerts")
            with detail_col:
                render_detail(current, tz)

    live()


with page_guard("alerts"):
    refresh_interval = render_controls()
render_live(refresh_interval)
