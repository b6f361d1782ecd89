"""Agents: a keyset-paged, filterable list and a detail view per agent with its lifecycle actions.

URL state: `q` (name prefix), `status`, `type`, `trust` ("20-80" in percent), `sort`, `cursor`,
`page` and `agent` (the open detail view). A copied URL reproduces the view.
"""

from aim.ui.auth import require_page

user = require_page("agents")

import logging  # noqa: E402
import uuid  # noqa: E402
from datetime import timedelta  # noqa: E402

import pandas as pd  # noqa: E402
import plotly.graph_objects as go  # noqa: E402
import streamlit as st  # noqa: E402

from aim.errors import AIMError, ValidationError  # noqa: E402
from aim.runtime import get_runtime  # noqa: E402
from aim.services import agents, listing  # noqa: E402
from aim.services import dashboard_queries_shell as queries  # noqa: E402
from aim.trust import RISK_THRESHOLDS  # noqa: E402
from aim.trust import FACTOR_NAMES, WEIGHTS  # noqa: E402
from aim.ui import components as ui  # noqa: E402
from aim.ui.access import can_write  # noqa: E402
from aim.ui.auth import actor_for  # noqa: E402
from aim.ui.errors import error_message, page_guard  # noqa: E402
from aim.ui.timefmt import format_ts, localize_column, relative  # noqa: E402

logger = logging.getLogger("aim.ui.pages.agents")

PAGE_SIZE = 50
TABLE_KEY = "agents_table"
AGENT_PARAM = "agent"
NEW_KEY_STATE = "agents_new_private_key"
FLASH_STATE = "agents_flash"
SORTS = {"created": "Newest first", "trust": "Highest trust first", "name": "Name A to Z"}
TRUST_COLORS = ((0.0, 0.30, "#3a1f24"), (0.30, 0.50, "#3a2c1c"), (0.50, 0.70, "#343019"), (0.70, 1.0, "#1c3324"))

tz = st.session_state.get("timezone", "UTC")
writer = can_write(user["role"])
organization_id = user["organization_id"]


# --- cached loaders (short TTLs; every write below clears them) ----------------------------------


# max_entries bounds the memory of cached pages, one entry per filter set and cursor.
@st.cache_data(ttl=15, max_entries=200, show_spinner=False)
def load_page(org, sort, status, agent_type, prefix, trust_range, cursor):
    runtime = get_runtime()
    if trust_range != (0, 100):
        return queries.list_agents_in_trust_range(
            runtime.db, org, min_trust=trust_range[0] / 100, max_trust=trust_range[1] / 100, status=status,
            agent_type=agent_type, name_prefix=prefix, cursor=cursor, limit=PAGE_SIZE, secret=runtime.secret_key,
        )
    return listing.list_agents(runtime.db, org, sort=sort, status=status, agent_type=agent_type, name_prefix=prefix,
                               cursor=cursor, limit=PAGE_SIZE, secret=runtime.secret_key)


@st.cache_data(ttl=300, max_entries=100, show_spinner=False)
def load_types(org):
    return queries.agent_types(get_runtime().db, org)


@st.cache_data(ttl=15, max_entries=200, show_spinner=False)
def load_detail(org, agent_id):
    runtime = get_runtime()
    db = runtime.db
    return {
        "agent": agents.get_agent(db, org, agent_id),
        "keys": agents.list_keys(db, org, agent_id),
        "history": listing.list_trust_history(db, org, agent_id, limit=200, secret=runtime.secret_key).items,
        "verifications": queries.recent_verifications(db, org, agent_id, 25),
        "servers": queries.agent_mcp_servers(db, org, agent_id, 50),
        "alerts": queries.agent_alerts(db, org, agent_id, 20),
        "capabilities": agents.list_capabilities(db, org, agent_id),
        "requests": agents.list_capability_requests(db, org, agent_id=agent_id, status="pending", limit=50),
    }


def changed(message: str) -> None:
    """Drop cached reads after a write and keep a confirmation for the next run."""
    load_page.clear()
    load_detail.clear()
    load_types.clear()
    st.session_state[FLASH_STATE] = message


def show_flash() -> None:
    message = st.session_state.pop(FLASH_STATE, None)
    if message:
        st.success(message, icon=":material/check_circle:")


def run_action(action, success: str) -> bool:
    """Run a service call; show its AIMError (field named for ValidationError). Returns True on success."""
    try:
        action()
    except AIMError as exc:
        st.error(error_message(exc), icon=":material/error:")
        return False
    changed(success)
    return True


# --- private key shown once ------------------------------------------------------------------------


def remember_private_key(agent_id, name: str, pem: str | None, kind: str) -> None:
    if pem:
        st.session_state[NEW_KEY_STATE] = {"agent_id": str(agent_id), "name": name, "pem": pem, "kind": kind}


def show_private_key_once() -> None:
    """Offer a generated private key for download on this run only; any later run has dropped it."""
    pending = st.session_state.pop(NEW_KEY_STATE, None)
    if pending is None:
        return
    with st.container(border=True):
        st.markdown(f"#### :material/key: Private key of {pending['name']}")
        st.warning(
            f"AIM generated this key when the agent was {pending['kind']} and does not store it. It is shown only "
            "now: download it before you do anything else on this page.", icon=":material/warning:",
        )
        safe_name = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in pending["name"])[:80]
        st.download_button(
            "Download private key (PEM)", pending["pem"], file_name=f"{safe_name}-private-key.pem",
            mime="application/x-pem-file", key="download_private_key", on_click="ignore", type="primary",
            icon=":material/download:",
        )
        with st.expander("Show the key as text"):
            st.code(pending["pem"], language=None)


# --- list view ---------------------------------------------------------------------------------------


def parse_capabilities(text: str) -> list[str]:
    return [part.strip() for part in text.replace("\n", ",").split(",") if part.strip()]


def render_register_form() -> None:
    with st.expander("Register agent", icon=":material/add_circle:"):
        with st.form("register_agent", clear_on_submit=False, border=False):
            name_column, type_column, status_column = st.columns([2, 1, 1])
            name = name_column.text_input("Name", key="register_name", max_chars=200)
            agent_type = type_column.text_input("Type", value="generic", key="register_type",
                                                help="Lowercase letters, digits, '_' or '-', such as assistant.")
            status = status_column.selectbox("Initial status", ["verified", "pending"], key="register_status",
                                             help="Pending agents cannot act until an admin or analyst verifies them.")
            description = st.text_input("Description", key="register_description")
            capabilities = st.text_input("Capabilities", key="register_capabilities",
                                         placeholder="db:read, files:write, tools:*",
                                         help="Comma-separated. A capability ending in * matches a prefix.")
            public_key = st.text_area(
                "Public key (optional)", key="register_public_key", height=80,
                help="Ed25519 public key as base64 (32 bytes) or PEM. Leave empty to have AIM generate a key pair; "
                     "the private key is then shown once.",
            )
            submitted = st.form_submit_button("Register agent", type="primary")
        if submitted:
            try:
                result = agents.register_agent(
                    get_runtime().db, organization_id, actor_for(user), name=name, agent_type=agent_type.strip(),
                    description=description, public_key=public_key.strip() or None,
                    capabilities=parse_capabilities(capabilities), status=status,
                )
            except AIMError as exc:
                st.error(error_message(exc), icon=":material/error:")
                return
            agent = result.agent
            logger.info("agent %s registered from the dashboard by user %s", agent["id"], user["id"])
            changed(f"Agent {agent['name']} registered with key {agent['key_id']}.")
            remember_private_key(agent["id"], agent["name"], result.private_key_pem, "registered")
            st.query_params[AGENT_PARAM] = str(agent["id"])
            st.rerun()


def render_filters() -> dict:
    search, status_column, type_column, trust_column, sort_column = st.columns([2, 1, 1, 1.4, 1.2])
    with search:
        prefix = ui.bound_text_input("Search by name", "q", placeholder="Name starts with…")
    with status_column:
        status = ui.bound_selectbox("Status", agents.STATUSES, "status")
    with type_column:
        agent_type = ui.bound_selectbox("Type", load_types(organization_id), "type")
    with trust_column:
        trust_range = ui.bound_range_slider("Trust score (%)", "trust", 0, 100, format="%d%%")
    with sort_column:
        if trust_range != (0, 100):
            st.selectbox("Sort", ["Highest trust first"], disabled=True, key="sort_trust_range",
                         help="A trust range is always listed by trust score.")
            sort = "trust"
        else:
            chosen = ui.bound_selectbox("Sort", list(SORTS), "sort", format_func=lambda key: SORTS.get(key, key),
                                      include_any=False)
            sort = chosen
    return {"sort": sort, "status": status, "agent_type": agent_type, "prefix": prefix, "trust_range": trust_range}


def agents_frame(items: list[dict]) -> pd.DataFrame:
    df = pd.DataFrame(items, columns=["name", "status", "agent_type", "trust_score", "capabilities", "key_id",
                                      "last_seen_at", "created_at"])
    df["trust_score"] = df["trust_score"].astype(float)
    df["last_seen_at"] = localize_column(df["last_seen_at"], tz)
    df["created_at"] = localize_column(df["created_at"], tz)
    return df


def render_list() -> None:
    header, action = st.columns([4, 1], vertical_alignment="bottom")
    with header:
        ui.page_header("Agents", "AI agents with Ed25519 identities. Select a row to open the agent.",
                       ":material/smart_toy:")
    show_flash()
    if writer:
        render_register_form()
    filters = render_filters()
    page = ui.fetch_paged(lambda cursor: load_page(organization_id, cursor=cursor, **filters))
    if not page.items:
        ui.empty_state("No agent matches these filters." if any(
            value for key, value in filters.items() if key not in ("sort", "trust_range")
        ) or filters["trust_range"] != (0, 100) else "No agents yet. Register one, or connect agents through the API.")
        return
    ui.selectable_table(
        ui.style_columns(agents_frame(page.items), {"status": ui.STATUS_COLORS}),
        key=TABLE_KEY, ids=[item["id"] for item in page.items], select_param=AGENT_PARAM, width="stretch",
        height=ui.table_height(len(page.items)),
        column_config={
            "name": st.column_config.TextColumn("Name", width="medium"),
            "status": st.column_config.TextColumn("Status", width="small"),
            "agent_type": st.column_config.TextColumn("Type", width="small"),
            "trust_score": st.column_config.ProgressColumn("Trust", min_value=0.0, max_value=1.0, format="percent",
                                                           width="small"),
            "capabilities": st.column_config.ListColumn("Capabilities", width="medium"),
            "key_id": st.column_config.TextColumn("Key id", width="small"),
            "last_seen_at": st.column_config.DatetimeColumn("Last seen", format="YYYY-MM-DD HH:mm", width="small"),
            "created_at": st.column_config.DatetimeColumn("Registered", format="YYYY-MM-DD HH:mm", width="small"),
        },
    )
    ui.pager(page, key="agents_pager", noun="agents")


# --- detail view ------------------------------------------------------------------------------------


def back_to_list() -> None:
    ui.clear_params(AGENT_PARAM)
    ui.reset_selection(TABLE_KEY)


def trust_gauge(score: float) -> go.Figure:
    thresholds = RISK_THRESHOLDS
    fig = go.Figure(go.Indicator(
        mode="gauge+number", value=round(score * 100, 1), number={"suffix": " %", "font": {"size": 34}},
        gauge={
            "axis": {"range": [0, 100], "tickvals": [0, *[round(v * 100) for v in thresholds.values()], 100],
                     "tickfont": {"size": 10}},
            "bar": {"color": "#5794f2", "thickness": 0.28},
            "bgcolor": "rgba(0,0,0,0)",
            "borderwidth": 0,
            "steps": [{"range": [low * 100, high * 100], "color": color} for low, high, color in TRUST_COLORS],
        },
    ))
    fig.update_layout(height=190)
    return ui.style_figure(fig, 190)


def factors_frame(stored: dict) -> pd.DataFrame:
    rows = []
    for name in FACTOR_NAMES:
        factor = stored.get(name) or {}
        value = factor.get("value")
        measured = factor.get("provenance") == "measured" and value is not None
        rows.append({
            "factor": name.replace("_", " "),
            "weight": float(factor.get("weight", WEIGHTS[name])),
            "value": float(value) if measured else None,
            "provenance": "measured" if measured else "no data",
            "detail": factor.get("detail") or ("not scored yet" if not stored else ""),
        })
    return pd.DataFrame(rows)


def render_identity(agent: dict, keys: list[dict]) -> None:
    st.markdown("##### Identity")
    st.markdown(
        f"Key id `{agent['key_id']}` · {agent['key_origin']}  \n"
        f"Key created {format_ts(agent['key_created_at'], tz)}  \n"
        f"Registered {format_ts(agent['created_at'], tz)} by `{agent['created_by']}`  \n"
        f"Last seen {relative(agent['last_seen_at'])}"
    )
    if agent["previous_key_id"] and agent["previous_key_valid_until"]:
        st.caption(f"Previous key `{agent['previous_key_id']}` valid until "
                   f"{format_ts(agent['previous_key_valid_until'], tz)}")
    if keys:
        df = pd.DataFrame(keys)[["key_id", "key_origin", "created_at", "retired_at", "retire_reason"]]
        df["created_at"] = localize_column(df["created_at"], tz)
        df["retired_at"] = localize_column(df["retired_at"], tz)
        st.dataframe(df, hide_index=True, width="stretch", key="agent_keys", placeholder="—",
                     column_config={
                         "key_id": "Key id", "key_origin": "Origin",
                         "created_at": st.column_config.DatetimeColumn("Created", format="YYYY-MM-DD HH:mm"),
                         "retired_at": st.column_config.DatetimeColumn("Retired", format="YYYY-MM-DD HH:mm"),
                         "retire_reason": "Reason",
                     })


def render_trust_history(history: list[dict]) -> None:
    if not history:
        ui.empty_state("No trust score changes recorded yet.", icon=":material/show_chart:")
        return
    df = pd.DataFrame(history)[["created_at", "score", "reason", "actor"]].sort_values("created_at")
    df["created_at"] = localize_column(df["created_at"], tz)
    df["score"] = df["score"].astype(float) * 100
    fig = go.Figure(go.Scatter(
        x=df["created_at"], y=df["score"], mode="lines+markers", line={"shape": "hv", "color": "#5794f2", "width": 2},
        marker={"size": 5}, customdata=df[["reason", "actor"]], name="Trust",
        hovertemplate="%{x}<br>%{y:.1f} %<br>%{customdata[0]} (%{customdata[1]})<extra></extra>",
    ))
    for risk_class, threshold in RISK_THRESHOLDS.items():
        fig.add_hline(y=threshold * 100, line={"dash": "dot", "width": 1, "color": "#8e8e8e"},
                      annotation_text=risk_class, annotation_position="top left", annotation_font_size=10,
                      annotation_font_color="#8e8e8e")
    fig.update_yaxes(range=[0, 100], ticksuffix=" %")
    st.plotly_chart(ui.style_figure(fig, 280), width="stretch", key="agent_trust_history",
                    config={"displayModeBar": False})


def render_verifications(rows: list[dict]) -> None:
    if not rows:
        ui.empty_state("This agent has not asked for any verification yet.")
        return
    df = pd.DataFrame(rows)[["created_at", "action", "resource", "risk_class", "decision", "reason", "latency_ms"]]
    df["created_at"] = localize_column(df["created_at"], tz)
    st.dataframe(ui.style_columns(df, {"decision": ui.STATUS_COLORS}), hide_index=True, placeholder="—", width="stretch",
                 key="agent_verifications", column_config={
                     "created_at": st.column_config.DatetimeColumn("Time", format="YYYY-MM-DD HH:mm:ss"),
                     "action": "Action", "resource": "Resource", "risk_class": "Risk", "decision": "Decision",
                     "reason": "Reason", "latency_ms": st.column_config.NumberColumn("Latency", format="%.1f ms"),
                 })


def render_servers(rows: list[dict]) -> None:
    if not rows:
        ui.empty_state("No MCP server attested by this agent.", icon=":material/dns:")
        return
    df = pd.DataFrame(rows)[["name", "url", "confidence", "drift_detected", "status", "last_seen_at"]]
    df["confidence"] = df["confidence"].astype(float)
    df["last_seen_at"] = localize_column(df["last_seen_at"], tz)
    st.dataframe(df, hide_index=True, placeholder="—", width="stretch", key="agent_servers", column_config={
        "name": "Server", "url": st.column_config.LinkColumn("URL"),
        "confidence": st.column_config.ProgressColumn("Confidence", min_value=0.0, max_value=1.0, format="percent"),
        "drift_detected": st.column_config.CheckboxColumn("Drift"), "status": "Status",
        "last_seen_at": st.column_config.DatetimeColumn("Last seen", format="YYYY-MM-DD HH:mm"),
    })


def render_alerts(rows: list[dict]) -> None:
    if not rows:
        ui.empty_state("No alerts about this agent.", icon=":material/notifications_off:")
        return
    df = pd.DataFrame(rows)[["created_at", "severity", "status", "alert_type", "title", "occurrences"]]
    df["created_at"] = localize_column(df["created_at"], tz)
    st.dataframe(ui.style_columns(df, {"severity": ui.SEVERITY_COLORS, "status": ui.STATUS_COLORS}),
                 hide_index=True, placeholder="—", width="stretch", key="agent_alerts", column_config={
                     "created_at": st.column_config.DatetimeColumn("Raised", format="YYYY-MM-DD HH:mm"),
                     "severity": "Severity", "status": "Status", "alert_type": "Type", "title": "Title",
                     "occurrences": st.column_config.NumberColumn("Seen", format="%d"),
                 })


def render_capabilities(agent: dict, capabilities: list[dict], requests: list[dict]) -> None:
    if capabilities:
        df = pd.DataFrame(capabilities)
        df["granted_at"] = localize_column(df["granted_at"], tz)
        st.dataframe(df, hide_index=True, placeholder="—", width="stretch", key="agent_capabilities", column_config={
            "capability": "Capability", "granted_by": "Granted by",
            "granted_at": st.column_config.DatetimeColumn("Granted", format="YYYY-MM-DD HH:mm"),
        })
    else:
        ui.empty_state("No capabilities granted.", icon=":material/lock:")
    st.markdown("##### Pending capability requests")
    if not requests:
        st.caption("No pending requests.")
    for request in requests:
        text, approve, reject = st.columns([4, 1, 1], vertical_alignment="center")
        text.markdown(f"`{request['capability']}` requested {relative(request['requested_at'])} by "
                      f"`{request['requested_by']}`" + (f"  \n:gray[{request['justification']}]"
                                                       if request.get("justification") else ""))
        if writer:
            if approve.button("Approve", key=f"approve_request_{request['id']}", icon=":material/check:"):
                decide(request, True)
            if reject.button("Reject", key=f"reject_request_{request['id']}", icon=":material/close:"):
                decide(request, False)
    if writer and agent["status"] != "revoked":
        with st.form("grant_capability", border=False):
            capability_column, button_column = st.columns([4, 1], vertical_alignment="bottom")
            capability = capability_column.text_input("Grant capability", key="grant_capability_value",
                                                       placeholder="db:read")
            if button_column.form_submit_button("Grant", width="stretch"):
                if run_action(lambda: agents.grant_capability(get_runtime().db, organization_id, agent["id"],
                                                              capability, actor_for(user)),
                              f"Capability {capability.strip()} granted."):
                    st.rerun()


def decide(request: dict, approve: bool) -> None:
    verb = "approved" if approve else "rejected"
    if run_action(lambda: agents.decide_capability_request(get_runtime().db, organization_id, request["id"],
                                                           actor_for(user), approve=approve),
                  f"Request for {request['capability']} {verb}."):
        st.rerun()


def render_actions(agent: dict) -> None:
    """Lifecycle actions for admins and analysts; managers and viewers see none."""
    db = get_runtime().db
    agent_id = agent["id"]
    status = agent["status"]
    if status == "revoked":
        st.info("This agent is revoked. Revocation is permanent, so no further action applies.",
                icon=":material/block:")
        return
    reason = st.text_input("Reason (recorded in the audit log)", key="action_reason", max_chars=500)
    first, second = st.columns(2)
    if status in ("verified", "pending") and first.button("Suspend", key="suspend_agent", icon=":material/pause_circle:",
                                                          width="stretch"):
        if run_action(lambda: agents.suspend(db, organization_id, agent_id, actor_for(user), reason or None),
                      f"Agent {agent['name']} suspended."):
            st.rerun()
    if status in ("suspended", "pending"):
        label = "Verify" if status == "pending" else "Reactivate"
        if second.button(label, key="reactivate_agent", icon=":material/play_circle:", width="stretch"):
            if run_action(lambda: agents.reactivate(db, organization_id, agent_id, actor_for(user), reason or None),
                          f"Agent {agent['name']} is verified again."):
                st.rerun()

    with st.expander("Rotate key", icon=":material/autorenew:"):
        with st.form("rotate_key", border=False):
            public_key = st.text_area("New public key (optional)", key="rotate_public_key", height=70,
                                      help="Leave empty to have AIM generate a key pair; the private key is then "
                                           "shown once.")
            grace_hours = st.number_input("Grace period (hours)", min_value=0, max_value=720, value=24, step=1,
                                          key="rotate_grace_hours",
                                          help="The previous key keeps verifying for this long.")
            if st.form_submit_button("Rotate key", type="primary"):
                holder = {}

                def rotate() -> None:
                    holder["result"] = agents.rotate_key(db, organization_id, agent_id, actor_for(user),
                                                         public_key=public_key.strip() or None,
                                                         grace=timedelta(hours=int(grace_hours)))

                if run_action(rotate, f"Key of {agent['name']} rotated."):
                    result = holder["result"]
                    remember_private_key(agent_id, agent["name"], result.private_key_pem, "rotated")
                    st.rerun()

    with st.expander("Revoke agent", icon=":material/dangerous:"):
        st.caption("Revocation is permanent: the agent's keys stop verifying and it cannot be reactivated.")
        confirmed = st.checkbox(f"I want to revoke {agent['name']} permanently", key="revoke_confirm")
        if st.button("Revoke agent", key="revoke_agent", type="primary", disabled=not confirmed,
                     icon=":material/block:"):
            if run_action(lambda: agents.revoke(db, organization_id, agent_id, actor_for(user), reason or None),
                          f"Agent {agent['name']} revoked."):
                st.rerun()


def parse_agent_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise ValidationError(AGENT_PARAM, f"{text!r} is not an agent id; expected a UUID") from None


def render_detail(agent_text: str) -> None:
    st.button("Agents", key="back_to_agents", on_click=back_to_list, icon=":material/arrow_back:", type="tertiary")
    show_flash()
    show_private_key_once()
    detail = load_detail(organization_id, parse_agent_id(agent_text))
    agent = detail["agent"]
    st.markdown(f"## {agent['name']}")
    st.markdown(
        f"{ui.status_badge(agent['status'])} {ui.badge_markdown(agent['agent_type'], 'gray')} "
        f":gray[`{agent['id']}`]" + (f"  \n{agent['description']}" if agent["description"] else "")
    )
    gauge_column, factors_column, identity_column = st.columns([1, 1.6, 1.3])
    with gauge_column:
        with st.container(border=True):
            st.markdown("##### Trust score")
            st.plotly_chart(trust_gauge(float(agent["trust_score"])), width="stretch", key="trust_gauge",
                            config={"displayModeBar": False})
            st.caption("Bands: below low 30 %, medium 50 %, high 70 %, critical 85 %.")
    with factors_column:
        with st.container(border=True):
            st.markdown("##### Trust factors")
            factors = factors_frame(agent["trust_factors"])
            st.dataframe(ui.style_columns(factors, {"provenance": {"measured": "green", "no data": "gray"}}),
                         hide_index=True, placeholder="—", width="stretch", key="trust_factors", column_config={
                             "factor": "Factor",
                             "weight": st.column_config.NumberColumn("Weight", format="%.2f", width="small"),
                             "value": st.column_config.ProgressColumn("Value", min_value=0.0, max_value=1.0,
                                                                      format="percent", width="small"),
                             "provenance": st.column_config.TextColumn("Data", width="small"),
                             "detail": "Detail",
                         })
    with identity_column:
        with st.container(border=True):
            render_identity(agent, detail["keys"])

    tabs = st.tabs(["Trust history", "Verifications", "Capabilities", "MCP servers", "Alerts"]
                   + (["Actions"] if writer else []))
    with tabs[0]:
        render_trust_history(detail["history"])
    with tabs[1]:
        render_verifications(detail["verifications"])
    with tabs[2]:
        render_capabilities(agent, detail["capabilities"], detail["requests"])
    with tabs[3]:
        render_servers(detail["servers"])
    with tabs[4]:
        render_alerts(detail["alerts"])
    if writer:
        with tabs[5]:
            render_actions(agent)


with page_guard("agents"):
    selected = ui.query_value(AGENT_PARAM)
    if selected:
        render_detail(selected)
    else:
        render_list()
