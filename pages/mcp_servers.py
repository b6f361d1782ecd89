"""MCP servers: a paged list with confidence and drift flags, a detail view per server, and the
registry import for admins.

URL state: `q`, `status`, `drift`, `source`, `sort`, `cursor`, `page` and `server` (the open detail view).
"""

from aim.ui.auth import require_page

user = require_page("mcp_servers")

import logging  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402

import pandas as pd  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import streamlit as st  # noqa: E402

from aim.errors import AIMError, ValidationError  # noqa: E402
from aim.runtime import get_runtime  # noqa: E402
from aim.services import listing, mcp_registry, mcp_servers  # noqa: E402
from aim.services import dashboard_queries_shell as queries  # noqa: E402
from aim.ui import components as ui  # noqa: E402
from aim.ui.access import is_admin  # noqa: E402
from aim.ui.auth import actor_for  # noqa: E402
from aim.ui.errors import error_message, page_guard  # noqa: E402
from aim.ui.timefmt import format_ts, localize_column, relative  # noqa: E402

logger = logging.getLogger("aim.ui.pages.mcp_servers")

PAGE_SIZE = 50
TABLE_KEY = "mcp_servers_table"
SERVER_PARAM = "server"
SORTS = {"name": "Name A to Z", "confidence": "Highest confidence first"}
DRIFT_CHOICES = {"yes": "Drift detected", "no": "No drift"}
IMPORT_REPORT_STATE = "mcp_import_report"

tz = st.session_state.get("timezone", "UTC")
organization_id = user["organization_id"]


# max_entries bounds the memory of cached pages, one entry per filter set and cursor.
@st.cache_data(ttl=15, max_entries=200, show_spinner=False)
def load_page(org, sort, status, drift, source, prefix, cursor):
    runtime = get_runtime()
    drift_detected = None if drift is None else drift == "yes"
    return listing.list_mcp_servers(runtime.db, org, sort=sort, name_prefix=prefix, status=status,
                                    drift_detected=drift_detected, source=source, cursor=cursor, limit=PAGE_SIZE,
                                    secret=runtime.secret_key)


@st.cache_data(ttl=15, max_entries=200, show_spinner=False)
def load_detail(org, server_id):
    db = get_runtime().db
    return {
        "server": mcp_servers.get_server(db, org, server_id),
        "attestations": queries.server_attestations(db, org, server_id, 100),
        "agents": queries.server_agents(db, org, server_id, 100),
        "confidence": queries.server_confidence_history(db, org, server_id, 200),
        "alerts": queries.server_drift_alerts(db, org, server_id, 50),
    }


# --- registry import (admin) -------------------------------------------------------------------------


def import_uploaded_file(upload) -> None:
    """Import an uploaded registry export with a progress bar, then keep the report for the next run."""
    # load_registry_file reads a path, so the upload is spooled to a private temporary file.
    with tempfile.TemporaryDirectory(prefix="aim-registry-") as directory:
        path = Path(directory) / "registry.json"
        path.write_bytes(upload.getvalue())
        entries = mcp_registry.load_registry_file(path)
    bar = st.progress(0.0, text=f"Importing {len(entries):,} entries…")

    def progress(done: int, total: int) -> None:
        bar.progress(done / total if total else 1.0, text=f"Imported {done:,} of {total:,} entries")

    report = mcp_registry.import_registry(get_runtime().db, organization_id, actor_for(user), entries,
                                          progress=progress)
    bar.progress(1.0, text="Import finished")
    logger.info("registry file %r imported by user %s: %d created, %d updated, %d unchanged, %d skipped",
                upload.name, user["id"], report.created, report.updated, report.unchanged, len(report.skipped))
    load_page.clear()
    st.session_state[IMPORT_REPORT_STATE] = {
        "file": upload.name, "created": report.created, "updated": report.updated, "unchanged": report.unchanged,
        "skipped": report.skipped[:200], "skipped_total": len(report.skipped),
    }


def render_import() -> None:
    with st.expander("Import from an MCP Registry file", icon=":material/upload_file:"):
        st.caption("A JSON export of the official MCP Registry: a list of entries or {\"servers\": [...]}. "
                   "Entries are matched on their registry id, so importing the same file again changes nothing.")
        upload = st.file_uploader("Registry file", type=["json"], key="registry_file")
        if st.button("Import", key="registry_import", type="primary", disabled=upload is None,
                     icon=":material/upload:"):
            try:
                import_uploaded_file(upload)
            except AIMError as exc:
                st.error(error_message(exc), icon=":material/error:")
        report = st.session_state.get(IMPORT_REPORT_STATE)
        if report:
            st.success(f"{report['file']}: {report['created']:,} created, {report['updated']:,} updated, "
                       f"{report['unchanged']:,} unchanged, {report['skipped_total']:,} skipped.",
                       icon=":material/check_circle:")
            if report["skipped"]:
                st.dataframe(pd.DataFrame(report["skipped"], columns=["entry", "reason"]), hide_index=True, placeholder="—",
                             width="stretch", height=ui.table_height(len(report["skipped"]), 8), key="registry_skipped")


# --- list view ---------------------------------------------------------------------------------------


def render_list() -> None:
    ui.page_header("MCP servers", "Tool servers your agents connect to, with attestation confidence and drift.",
                   ":material/dns:")
    if is_admin(user["role"]):
        render_import()
    search, status_column, drift_column, source_column, sort_column = st.columns([2, 1, 1, 1, 1.2])
    with search:
        prefix = ui.bound_text_input("Search by name", "q", placeholder="Name starts with…")
    with status_column:
        status = ui.bound_selectbox("Status", mcp_servers.STATUSES, "status")
    with drift_column:
        drift = ui.bound_selectbox("Drift", list(DRIFT_CHOICES), "drift", format_func=lambda v: DRIFT_CHOICES.get(v, v))
    with source_column:
        source = ui.bound_selectbox("Source", mcp_servers.SOURCES, "source")
    with sort_column:
        sort = ui.bound_selectbox("Sort", list(SORTS), "sort", format_func=lambda v: SORTS.get(v, v),
                                 include_any=False)
    page = ui.fetch_paged(lambda cursor: load_page(organization_id, sort, status, drift, source, prefix, cursor))
    if not page.items:
        ui.empty_state("No MCP server matches these filters." if any((prefix, status, drift, source))
                       else "No MCP servers yet. Import a registry file or let agents attest the servers they use.")
        return
    df = pd.DataFrame(page.items)
    df = df.reindex(columns=["name", "url", "confidence", "drift_detected", "status", "source", "known_capabilities",
                             "last_attested_at"])
    df["confidence"] = df["confidence"].astype(float)
    df["last_attested_at"] = localize_column(df["last_attested_at"], tz)
    ui.selectable_table(
        ui.style_columns(df, {"status": ui.STATUS_COLORS}), key=TABLE_KEY, ids=[item["id"] for item in page.items],
        select_param=SERVER_PARAM, width="stretch", height=ui.table_height(len(df)),
        column_config={
            "name": st.column_config.TextColumn("Name", width="medium"),
            "url": st.column_config.TextColumn("URL", width="medium"),
            "confidence": st.column_config.ProgressColumn("Confidence", min_value=0.0, max_value=1.0,
                                                          format="percent", width="small"),
            "drift_detected": st.column_config.CheckboxColumn("Drift", width="small"),
            "status": st.column_config.TextColumn("Status", width="small"),
            "source": st.column_config.TextColumn("Source", width="small"),
            "known_capabilities": st.column_config.ListColumn("Capabilities", width="medium"),
            "last_attested_at": st.column_config.DatetimeColumn("Last attested", format="YYYY-MM-DD HH:mm",
                                                                width="small"),
        },
    )
    ui.pager(page, key="mcp_pager", noun="servers")


# --- detail view ---------------------------------------------------------------------------------------


def back_to_list() -> None:
    ui.clear_params(SERVER_PARAM)
    ui.reset_selection(TABLE_KEY)


def drift_timeline(attestations: list[dict], alerts: list[dict]) -> go.Figure | None:
    """Capabilities reported per attestation over time, drifted ones in red, drift alerts as markers."""
    if not attestations:
        return None
    df = pd.DataFrame(attestations).sort_values("attested_at")
    df["attested_at"] = localize_column(df["attested_at"], tz)
    df["found"] = df["capabilities_found"].map(len)
    df["listed"] = df["capabilities_found"].map(lambda caps: ", ".join(caps[:12]) + (" …" if len(caps) > 12 else ""))
    fig = go.Figure()
    for drifted, color, name in ((False, "#73bf69", "matches known set"), (True, "#f2495c", "drift")):
        part = df[df["drift"] == drifted]
        if part.empty:
            continue
        fig.add_trace(go.Scatter(
            x=part["attested_at"], y=part["found"], mode="markers", name=name,
            marker={"color": color, "size": 9, "symbol": "x" if drifted else "circle"},
            customdata=part[["agent_name", "listed"]],
            hovertemplate="%{x}<br>%{y} capabilities from %{customdata[0]}<br>%{customdata[1]}<extra></extra>",
        ))
    for alert in alerts:
        if alert["alert_type"].endswith("drift"):
            fig.add_vline(x=localize_column(pd.Series([alert["created_at"]]), tz).iloc[0],
                          line={"dash": "dot", "width": 1, "color": "#ff9830"})
    fig.update_yaxes(title_text="capabilities reported", rangemode="tozero")
    return ui.style_figure(fig, 260, legend=True)


def render_detail(server_text: str) -> None:
    st.button("MCP servers", key="back_to_servers", on_click=back_to_list, icon=":material/arrow_back:",
              type="tertiary")
    try:
        server_id = uuid.UUID(server_text)
    except ValueError:
        raise ValidationError(SERVER_PARAM, f"{server_text!r} is not a server id; expected a UUID") from None
    detail = load_detail(organization_id, server_id)
    server = detail["server"]
    st.markdown(f"## {server['name']}")
    drift_badge = ui.badge_markdown("capability drift", "red") if server["drift_detected"] else \
        ui.badge_markdown("no drift", "green")
    st.markdown(f"{ui.status_badge(server['status'])} {drift_badge} {ui.badge_markdown(server['source'], 'gray')} "
                f":gray[`{server['url']}`]" + (f"  \n{server['description']}" if server["description"] else ""))

    cards = st.columns(4)
    with cards[0]:
        ui.kpi_card("Confidence", ui.percent(float(server["confidence"])),
                    sparkline=[float(row["confidence"]) for row in detail["confidence"]],
                    help="From the distinct attesting agents, their trust and how recent the attestations are.")
    with cards[1]:
        ui.kpi_card("Known capabilities", len(server["known_capabilities"]))
    with cards[2]:
        ui.kpi_card("Attesting agents", len({row["agent_id"] for row in detail["attestations"]}),
                    help="Distinct agents among the newest 100 attestations.")
    with cards[3]:
        ui.kpi_card("Last attested", relative(server["last_attested_at"]),
                    help=format_ts(server["last_attested_at"], tz))

    tabs = st.tabs(["Capabilities and drift", "Attestations", "Connected agents", "Confidence history"])
    with tabs[0]:
        render_capabilities(server, detail)
    with tabs[1]:
        render_attestations(detail["attestations"])
    with tabs[2]:
        render_agents(detail["agents"])
    with tabs[3]:
        render_confidence(detail["confidence"])


def render_capabilities(server: dict, detail: dict) -> None:
    known = server["known_capabilities"]
    st.markdown("##### Known capability set")
    if known:
        st.markdown(" ".join(ui.badge_markdown(cap, "blue") for cap in known))
    else:
        st.caption("No capability set is known yet; the first attestation sets it.")
    if server["last_drift_at"]:
        st.caption(f"Last drift {format_ts(server['last_drift_at'], tz)} ({relative(server['last_drift_at'])}).")
    st.markdown("##### Drift timeline")
    fig = drift_timeline(detail["attestations"], detail["alerts"])
    if fig is None:
        ui.empty_state("No attestations yet, so there is no timeline.", icon=":material/timeline:")
    else:
        st.plotly_chart(fig, width="stretch", key="drift_timeline", config={"displayModeBar": False})
    if detail["alerts"]:
        df = pd.DataFrame(detail["alerts"])[["created_at", "severity", "status", "title", "occurrences"]]
        df["created_at"] = localize_column(df["created_at"], tz)
        st.dataframe(ui.style_columns(df, {"severity": ui.SEVERITY_COLORS, "status": ui.STATUS_COLORS}),
                     hide_index=True, placeholder="—", width="stretch", key="server_alerts", column_config={
                         "created_at": st.column_config.DatetimeColumn("Raised", format="YYYY-MM-DD HH:mm"),
                         "severity": "Severity", "status": "Status", "title": "Title",
                         "occurrences": st.column_config.NumberColumn("Seen", format="%d"),
                     })


def render_attestations(rows: list[dict]) -> None:
    if not rows:
        ui.empty_state("No agent has attested this server yet.")
        return
    df = pd.DataFrame(rows)[["attested_at", "agent_name", "capabilities_found", "latency_ms", "healthy", "drift",
                             "expired", "key_id"]]
    df["attested_at"] = localize_column(df["attested_at"], tz)
    st.dataframe(df, hide_index=True, placeholder="—", width="stretch", key="server_attestations", column_config={
        "attested_at": st.column_config.DatetimeColumn("Attested", format="YYYY-MM-DD HH:mm:ss"),
        "agent_name": "Agent", "capabilities_found": st.column_config.ListColumn("Capabilities found"),
        "latency_ms": st.column_config.NumberColumn("Latency", format="%.0f ms"),
        "healthy": st.column_config.CheckboxColumn("Healthy"), "drift": st.column_config.CheckboxColumn("Drift"),
        "expired": st.column_config.CheckboxColumn("Expired"), "key_id": "Key id",
    })


def render_agents(rows: list[dict]) -> None:
    if not rows:
        ui.empty_state("No agent is connected to this server.", icon=":material/smart_toy:")
        return
    df = pd.DataFrame(rows)[["name", "status", "trust_score", "first_seen_at", "last_seen_at"]]
    df["trust_score"] = df["trust_score"].astype(float)
    df["first_seen_at"] = localize_column(df["first_seen_at"], tz)
    df["last_seen_at"] = localize_column(df["last_seen_at"], tz)
    st.caption("Select an agent to open it.")
    event = st.dataframe(
        ui.style_columns(df, {"status": ui.STATUS_COLORS}), hide_index=True, placeholder="—", width="stretch", key="server_agents",
        on_select="rerun", selection_mode="single-row", column_config={
            "name": "Agent", "status": "Status",
            "trust_score": st.column_config.ProgressColumn("Trust", min_value=0.0, max_value=1.0, format="percent"),
            "first_seen_at": st.column_config.DatetimeColumn("First seen", format="YYYY-MM-DD HH:mm"),
            "last_seen_at": st.column_config.DatetimeColumn("Last seen", format="YYYY-MM-DD HH:mm"),
        },
    )
    if event.selection.rows:
        st.switch_page("pages/agents.py", query_params={"agent": str(rows[event.selection.rows[0]]["id"])})


def render_confidence(rows: list[dict]) -> None:
    if not rows:
        ui.empty_state("No confidence recomputation recorded yet.", icon=":material/show_chart:")
        return
    df = pd.DataFrame(rows)
    df["created_at"] = localize_column(df["created_at"], tz)
    df["confidence"] = df["confidence"].astype(float) * 100
    fig = go.Figure(go.Scatter(
        x=df["created_at"], y=df["confidence"], mode="lines+markers", line={"shape": "hv", "color": "#5794f2"},
        marker={"size": 5}, customdata=df[["reason"]],
        hovertemplate="%{x}<br>%{y:.1f} %<br>%{customdata[0]}<extra></extra>",
    ))
    fig.update_yaxes(range=[0, 100], ticksuffix=" %")
    st.plotly_chart(ui.style_figure(fig, 260), width="stretch", key="confidence_history",
                    config={"displayModeBar": False})


with page_guard("mcp_servers"):
    selected = ui.query_value(SERVER_PARAM)
    if selected:
        render_detail(selected)
    else:
        render_list()
