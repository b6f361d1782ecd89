"""Overview: fleet KPIs with sparklines, the latest alerts and the newest denials.

Every figure is measured: the KPI values come from `stats.dashboard_stats` (cached 5 min), the
sparklines from trust history, verification events, alerts and metric roll-ups. A panel without
data shows a message instead of drawing zeros.
"""

from aim.ui.auth import require_page

user = require_page("overview")

from datetime import datetime, timedelta, timezone  # noqa: E402

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from aim.cache import get_cache  # noqa: E402
from aim.metrics import query as metrics_query  # noqa: E402
from aim.runtime import get_runtime  # noqa: E402
from aim.services import cache_hooks, listing, stats  # noqa: E402
from aim.services import dashboard_queries_shell as queries  # noqa: E402
from aim.ui import components as ui  # noqa: E402
from aim.ui.errors import page_guard  # noqa: E402
from aim.ui.timefmt import format_ts, localize_column, relative  # noqa: E402

SPARK_DAYS = 14
SPARK_HOURS = 24
LATEST_ALERTS = 8
NEWEST_DENIALS = 8


# Process-local cache on purpose: the dashboard_stats cache is cleared on every agent write, and a
# day-by-day sparkline does not need that freshness. Aggregating 14 days of trust history reads every
# history row of those days, so it should run at most once per TTL.
@st.cache_data(ttl=300, max_entries=50, show_spinner=False)
def load_series(organization_id, history_version: int) -> dict:
    """Return the sparkline series of the organization (see `overview_series`), cached for 5 minutes
    or until a backfill bumps `history_version`."""
    return queries.overview_series(get_runtime().db, organization_id, days=SPARK_DAYS, hours=SPARK_HOURS)


EMPTY_SERIES = {name: [] for name in ("average_trust", "new_agents", "alerts_raised", "mcp_confidence",
                                      "verifications", "denial_rate")}


@st.cache_data(ttl=60, max_entries=10, show_spinner=False)
def load_cache_hit_rates(hours: int) -> dict:
    """Hourly cache hit rate over every cache and process, from the metric roll-ups."""
    end = datetime.now(timezone.utc)
    points = metrics_query.cache_hit_rates(get_runtime().db, end - timedelta(hours=hours), end, timedelta(hours=1))
    per_hour: dict[datetime, list[int]] = {}
    for point in points:
        hits_and_lookups = per_hour.setdefault(point.start, [0, 0])
        hits_and_lookups[0] += point.l1_hits + point.l2_hits
        hits_and_lookups[1] += point.lookups
    ordered = sorted(per_hour.items())
    last_hour = ordered[-1][1] if ordered else [0, 0]
    return {
        "series": [hits / lookups if lookups else None for _, (hits, lookups) in ordered],
        "last_hour": last_hour[0] / last_hour[1] if last_hour[1] else None,
        "lookups_last_hour": last_hour[1],
    }


def process_cache_hit_rate() -> tuple[float | None, int]:
    """Hit rate of this process's cache since it started, for a fresh install without roll-ups yet."""
    hits = lookups = 0
    for counters in get_cache().stats().values():
        hits += counters["l1_hit"] + counters["l2_hit"]
        lookups += counters["l1_hit"] + counters["l2_hit"] + counters["miss"]
    return (hits / lookups if lookups else None), lookups


def values(series: list) -> list:
    return [value for _, value in series]


def day_change(series: list) -> str | None:
    """Return the change between the last two daily means in percentage points, or None with fewer than two days."""
    points = [value for value in values(series) if value is not None]
    if len(points) < 2:
        return None
    return f"{(points[-1] - points[-2]) * 100:+.1f} pp vs previous day"


def render_kpis(summary: dict, series: dict) -> None:
    agents = summary["agents"]
    first = st.columns(4)
    with first[0]:
        ui.kpi_card(
            "Agents", f"{agents['total']:,}", sparkline=values(series["new_agents"]), chart_type="bar",
            help=f"Registered agents. Bars: agents registered per day over {SPARK_DAYS} days.",
        )
        st.markdown(" ".join(
            ui.badge_markdown(f"{status} {agents[status]:,}", ui.STATUS_COLORS[status]) for status in stats.STATUSES
        ))
    with first[1]:
        ui.kpi_card(
            "Average trust", ui.percent(summary["average_trust"]), sparkline=values(series["average_trust"]),
            delta=day_change(series["average_trust"]),
            help=f"Mean trust score of agents that are not revoked. Line: daily mean of recorded trust changes "
                 f"over {SPARK_DAYS} days.",
        )
    with first[2]:
        per_minute = summary["verifications_per_minute"]
        ui.kpi_card(
            "Verifications / min", f"{per_minute:,.1f}" if summary["verifications_last_hour"] else "no traffic",
            sparkline=values(series["verifications"]), chart_type="bar",
            help=f"Mean rate over the last {stats.RATE_WINDOW_MINUTES} minutes. Bars: verifications per hour "
                 f"over {SPARK_HOURS} hours.",
        )
    with first[3]:
        ui.kpi_card(
            "Denial rate", ui.percent(summary["denial_rate"]) if summary["denial_rate"] is not None else "no traffic",
            sparkline=values(series["denial_rate"]),
            help=f"Share of verifications denied in the last {stats.RATE_WINDOW_MINUTES} minutes. Line: hourly "
                 "denial rate; hours without verifications are left out.",
        )

    second = st.columns(4)
    open_alerts = summary["open_alerts"]
    with second[0]:
        ui.kpi_card(
            "Open alerts", f"{summary['open_alerts_total']:,}", sparkline=values(series["alerts_raised"]),
            chart_type="bar", help=f"Alerts not yet acknowledged. Bars: alerts raised per day over {SPARK_DAYS} days.",
        )
        st.markdown(" ".join(
            ui.badge_markdown(f"{severity} {open_alerts[severity]:,}", ui.SEVERITY_COLORS[severity])
            for severity in stats.SEVERITIES
        ))
    mcp = summary["mcp_servers"]
    with second[1]:
        ui.kpi_card("MCP servers", f"{mcp['total']:,}", help="Active MCP servers in the organization.")
        if mcp["drifted"]:
            st.markdown(ui.badge_markdown(f"{mcp['drifted']:,} with capability drift", "orange"))
        else:
            st.markdown(ui.badge_markdown("no capability drift", "green"))
    with second[2]:
        ui.kpi_card(
            "Mean MCP confidence", ui.percent(mcp["mean_confidence"]), sparkline=values(series["mcp_confidence"]),
            delta=day_change(series["mcp_confidence"]),
            help=f"Mean confidence of active MCP servers. Line: daily mean of confidence recomputations over "
                 f"{SPARK_DAYS} days.",
        )
    with second[3]:
        render_cache_card()


def render_cache_card() -> None:
    rates = load_cache_hit_rates(SPARK_HOURS)
    if rates["lookups_last_hour"]:
        ui.kpi_card(
            "Cache hit rate", ui.percent(rates["last_hour"]), sparkline=rates["series"],
            help="(L1 + L2 hits) / lookups over every cache and process in the last hour, from the metric "
                 f"roll-ups. Line: hourly hit rate over {SPARK_HOURS} hours.",
        )
        return
    rate, lookups = process_cache_hit_rate()
    ui.kpi_card(
        "Cache hit rate", ui.percent(rate) if lookups else "no traffic",
        help="No cache lookups were rolled up in the last hour, so this shows the dashboard process's own "
             "lookups since it started." if lookups else "No cache lookups were recorded in the last hour.",
    )


def render_latest_alerts(organization_id, tz: str) -> None:
    st.markdown("#### Latest alerts")
    page = listing.list_alerts(get_runtime().db, organization_id, limit=LATEST_ALERTS,
                               secret=get_runtime().secret_key)
    if not page.items:
        ui.empty_state("No alerts have been raised.", icon=":material/notifications_off:")
        return
    df = pd.DataFrame(page.items)[["created_at", "severity", "status", "title", "occurrences"]]
    df["created_at"] = localize_column(df["created_at"], tz)
    st.dataframe(
        ui.style_columns(df, {"severity": ui.SEVERITY_COLORS, "status": ui.STATUS_COLORS}),
        hide_index=True, placeholder="—", width="stretch", key="overview_alerts",
        column_config={
            "created_at": st.column_config.DatetimeColumn("Raised", format="YYYY-MM-DD HH:mm:ss", width="medium"),
            "severity": st.column_config.TextColumn("Severity", width="small"),
            # "medium" fits "acknowledged", the longest status, which "small" cut off.
            "status": st.column_config.TextColumn("Status", width="medium"),
            "title": st.column_config.TextColumn("Title", width="large"),
            "occurrences": st.column_config.NumberColumn("Seen", format="%d", width="small"),
        },
    )
    if st.session_state.get("aim_nav_pages") and "alerts" in st.session_state["aim_nav_pages"]:
        st.page_link("pages/alerts.py", label="All alerts", icon=":material/arrow_forward:")


def render_newest_denials(organization_id, tz: str) -> None:
    st.markdown("#### Newest denials")
    rows = queries.recent_denials(get_runtime().db, organization_id, NEWEST_DENIALS)
    if not rows:
        ui.empty_state("No verification has been denied.", icon=":material/task_alt:")
        return
    with st.container(border=True):
        for row in rows:
            when, agent, what = st.columns([1.1, 1.6, 2.6], vertical_alignment="center")
            when.caption(f"{format_ts(row['created_at'], tz, '%H:%M:%S')}  \n{relative(row['created_at'])}")
            agent.page_link("pages/agents.py", label=row["agent_name"], query_params={"agent": str(row["agent_id"])},
                            icon=":material/smart_toy:")
            what.markdown(f"`{row['action']}` {ui.badge_markdown(row['risk_class'], 'gray')}  \n"
                          f":gray[{row['reason']}]")


ui.page_header("Overview", f"{user['organization_name']} · fleet health at a glance", ":material/dashboard:")
with page_guard("overview"):
    runtime = get_runtime()
    organization_id = user["organization_id"]
    summary = stats.dashboard_stats(runtime.db, organization_id)
    # The KPI values and tables paint first; the sparklines fill the same cards once their
    # aggregates are loaded, so a cold series cache does not delay the first useful paint.
    kpis = st.empty()
    with kpis.container():
        render_kpis(summary, EMPTY_SERIES)
    st.caption(f"Figures measured {relative(summary['computed_at'])}; they refresh every 5 minutes or on changes.")
    tz = st.session_state.get("timezone", "UTC")
    left, right = st.columns([1.35, 1])
    with left:
        render_latest_alerts(organization_id, tz)
    with right:
        render_newest_denials(organization_id, tz)
    series = load_series(organization_id, cache_hooks.history_version())
    with kpis.container():
        render_kpis(summary, series)
