"""Trust trends: the organization's mean trust over time, the current distribution, movers and MCP confidence.

Every panel is an aggregate computed in PostgreSQL (see `aim.services.dashboard_queries_trends`)
and cached for a minute per window, so the page never loads every agent or history row. Times are
bucketed per hour or per day in the viewer's timezone. State in the URL: `range`/`from`/`to`,
`bucket` and the selected mover `agent`.
"""

from aim.ui.auth import require_page

user = require_page("trust")

import uuid  # noqa: E402
from datetime import datetime, timedelta, timezone  # noqa: E402

import pandas as pd  # noqa: E402
import streamlit as st  # noqa: E402

from aim.errors import NotFound  # noqa: E402
from aim.runtime import get_runtime  # noqa: E402
from aim.services import cache_hooks, listing  # noqa: E402
from aim.services import dashboard_queries_trends as trends  # noqa: E402
from aim.ui import charts, timefmt, timerange  # noqa: E402
from aim.ui import components as ui  # noqa: E402
from aim.ui.errors import page_guard  # noqa: E402

RANGES = ("now-24h", "now-7d", "now-30d")
DEFAULT_RANGE = "now-7d"
BUCKETS = ("auto", "hour", "day")
# Hourly points beyond this many days are too dense to read, so longer ranges use days.
MAX_HOURLY_DAYS = 31
HISTOGRAM_BINS = 20
MOVERS = 8
HISTORY_ROWS = 20
# Risk-class thresholds of verification: an agent below one cannot pass actions of that class.
RISK_THRESHOLDS = {"low": 0.30, "medium": 0.50, "high": 0.70, "critical": 0.85}
# Trends move slowly, so the window moves in 5-minute steps and each aggregate is cached as long.
WINDOW_STEP = timedelta(minutes=5)
CACHE_TTL_S = 300


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_series(organization_id, start, end, unit: str, tz: str, history_version: int) -> pd.DataFrame:
    rows = trends.trust_average_series(get_runtime().db, organization_id, start, end, unit=unit, tz=tz)
    return pd.DataFrame(rows, columns=["bucket", "average", "agents", "changes"])


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_confidence(organization_id, start, end, unit: str, tz: str, history_version: int) -> pd.DataFrame:
    rows = trends.mcp_confidence_series(get_runtime().db, organization_id, start, end, unit=unit, tz=tz)
    return pd.DataFrame(rows, columns=["bucket", "average", "servers", "updates"])


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_distribution(organization_id, history_version: int) -> list[dict]:
    return trends.trust_distribution(get_runtime().db, organization_id, bins=HISTOGRAM_BINS)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_summary(organization_id, history_version: int) -> dict:
    return trends.trust_summary(get_runtime().db, organization_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_by_type(organization_id, history_version: int) -> list[dict]:
    return trends.trust_by_agent_type(get_runtime().db, organization_id)


@st.cache_data(ttl=CACHE_TTL_S, show_spinner=False)
def load_movers(organization_id, start, end, history_version: int) -> list[dict]:
    return trends.trust_movers(get_runtime().db, organization_id, start, end, limit=MOVERS)


def bucket_unit(window: timerange.TimeRange) -> str:
    choice = timerange.param_choice("bucket", BUCKETS, "auto")
    if choice == "hour" and window.duration <= timedelta(days=MAX_HOURLY_DAYS):
        return "hour"
    if choice == "day" or window.duration > timedelta(days=2):
        return "day"
    return "hour"


def score_color(score: float) -> str:
    """Colour of a trust score by the highest risk class it passes."""
    if score >= RISK_THRESHOLDS["critical"]:
        return charts.GREEN
    if score >= RISK_THRESHOLDS["high"]:
        return charts.BLUE
    if score >= RISK_THRESHOLDS["medium"]:
        return charts.YELLOW
    if score >= RISK_THRESHOLDS["low"]:
        return charts.ORANGE
    return charts.RED


def render_controls() -> None:
    title, picker, bucket = st.columns([5, 2, 1.3], vertical_alignment="bottom")
    with title:
        ui.page_header("Trust trends", "How trust in the organization's agents and MCP servers changes over time.",
                       icon=":material/verified_user:")
    with picker:
        timerange.time_range_picker(options=RANGES, default=DEFAULT_RANGE)
    with bucket:
        timerange.bound_choice("Bucket", BUCKETS, "bucket", default="auto",
                               format_func=lambda b: {"auto": "Auto", "hour": "Per hour", "day": "Per day"}[b],
                               help=f"Hourly buckets are available for ranges up to {MAX_HOURLY_DAYS} days.")
    timerange.custom_range_inputs()


def render_kpis(summary: dict) -> None:
    """Render the current-state tiles, which need only the cheap summary query."""
    tiles = [
        {"label": "Average trust", "value": ui.percent(summary["average"]),
         "color": score_color(summary["average"]) if summary["average"] is not None else None,
         "note": "current scores"},
        {"label": "Median trust", "value": ui.percent(summary["median"])},
        {"label": "Agents", "value": f"{summary['agents']:,}"},
        {"label": "Below 50 %", "value": f"{summary['below_threshold']:,}",
         "color": charts.ORANGE if summary["below_threshold"] else None,
         "note": "cannot pass medium-risk actions"},
        {"label": "Critical-ready", "value": f"{summary['critical_ready']:,}",
         "color": charts.GREEN if summary["critical_ready"] else None,
         "note": f"at or above {RISK_THRESHOLDS['critical']:.0%}, pass every risk class"},
    ]
    charts.stat_tiles(tiles)


def render_average(series: pd.DataFrame, unit: str, tz: str) -> None:
    with st.container(border=True):
        averages = series["average"].dropna()
        changes = int(series["changes"].sum()) if not series.empty else 0
        trend = f"{(averages.iloc[-1] - averages.iloc[0]) * 100:+.1f} pp" if len(averages) >= 2 else "no trend yet"
        st.markdown(f"**Average trust score** &nbsp; :gray[mean over agents at the end of each {unit} · "
                    f"{trend} over the range · {changes:,} score changes]")
        if averages.empty:
            ui.empty_state("No agents had a trust score in this range.")
            return
        df = series.copy()
        df["bucket"] = timefmt.localize_column(df["bucket"], tz)
        fig = charts.time_lines(df, x="bucket", ys=["average"], names=["average trust"], colors=[charts.BLUE],
                                y_format=".0%", hover_format=".1%", fill=True, height=250)
        low = max(0.0, float(averages.min()) - 0.1)
        fig.update_yaxes(range=[low, min(1.0, float(averages.max()) + 0.05)], rangemode=None)
        charts.show(fig, key="trust_average_chart")


def render_distribution(bins: list[dict]) -> None:
    with st.container(border=True):
        st.markdown("**Current distribution** &nbsp; :gray[agents per 5-point band; lines: risk-class thresholds]")
        if sum(b["agents"] for b in bins) == 0:
            ui.empty_state("No agents yet.")
            return
        fig = charts.histogram_bars([b["lower"] for b in bins], [b["upper"] for b in bins],
                                    [b["agents"] for b in bins], color_for=score_color, height=250)
        for name, threshold in RISK_THRESHOLDS.items():
            fig.add_vline(x=threshold, line=dict(color=charts.GREY, width=1, dash="dot"),
                          annotation_text=name, annotation_position="top", annotation_font_size=10)
        fig.update_layout(margin=dict(t=26))
        charts.show(fig, key="trust_distribution_chart")


def render_by_type(rows: list[dict]) -> None:
    with st.container(border=True):
        st.markdown("**Trust by agent type** &nbsp; :gray[range, quartiles and mean]")
        if not rows:
            ui.empty_state("No agents yet.")
            return
        fig = charts.box_by_group(rows, group="agent_type", height=250)
        charts.show(fig, key="trust_by_type_chart")


def render_confidence(confidence: pd.DataFrame, unit: str, tz: str) -> None:
    with st.container(border=True):
        st.markdown(f"**MCP server confidence** &nbsp; :gray[mean over servers with a recorded confidence, "
                    f"per {unit}]")
        if confidence["average"].notna().sum() == 0:
            ui.empty_state("No MCP server confidence was recorded up to the end of this range.")
            return
        df = confidence.copy()
        df["bucket"] = timefmt.localize_column(df["bucket"], tz)
        fig = charts.time_lines(df, x="bucket", ys=["average"], names=["mean confidence"], colors=[charts.PURPLE],
                                y_format=".0%", hover_format=".1%", fill=True, height=250, y_range=(0, 1))
        charts.show(fig, key="mcp_confidence_chart")


def movers_frame(rows: list[dict], tz: str) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=[
        "agent_id", "name", "agent_type", "score_before", "score_after", "net_change", "changes", "largest_change",
        "largest_reason", "largest_at", "latest_reason",
    ])
    df["agent_id"] = df["agent_id"].astype(str)
    df["score_before"] = df["score_before"] * 100
    df["score_after"] = df["score_after"] * 100
    df["net_change"] = df["net_change"] * 100
    df["largest_change"] = df["largest_change"] * 100
    df["largest_at"] = timefmt.localize_column(df["largest_at"], tz)
    return df


def render_movers(rows: list[dict], direction: str, tz: str) -> None:
    label = "Biggest rises" if direction == "up" else "Biggest falls"
    chosen = [row for row in rows if row["direction"] == direction]
    with st.container(border=True):
        st.markdown(f"**{label}** &nbsp; :gray[net change over the range; reason of the largest single change]")
        if not chosen:
            ui.empty_state(f"No agent's trust {'rose' if direction == 'up' else 'fell'} in this range.",
                           icon=":material/trending_flat:")
            return
        df = movers_frame(chosen, tz)
        color = "green" if direction == "up" else "red"
        styled = ui.style_columns(df, {})
        styled = styled.map(lambda _: f"color: {ui.CELL_COLORS[color]}; font-weight: 600", subset=["net_change"])
        ui.selectable_table(
            styled, key=f"trust_movers_{direction}", ids=list(df["agent_id"]), select_param="agent",
            column_order=("name", "agent_type", "score_before", "score_after", "net_change", "largest_reason",
                          "largest_change", "largest_at", "latest_reason"),
            column_config={
                "name": st.column_config.TextColumn("Agent"),
                "agent_type": st.column_config.TextColumn("Type", width="small"),
                "score_before": st.column_config.ProgressColumn("Before", min_value=0, max_value=100,
                                                                format="%.1f %%", width="small"),
                "score_after": st.column_config.ProgressColumn("After", min_value=0, max_value=100,
                                                               format="%.1f %%", width="small"),
                "net_change": st.column_config.NumberColumn("Change", format="%+.1f pp", width="small"),
                "largest_reason": st.column_config.TextColumn("Reason of the largest change", width="large"),
                "largest_change": st.column_config.NumberColumn("Largest", format="%+.1f pp", width="small"),
                "largest_at": st.column_config.DatetimeColumn(f"At ({tz})", format="YYYY-MM-DD HH:mm"),
                "latest_reason": st.column_config.TextColumn("Latest reason", width="medium"),
            },
        )


def render_agent_history(tz: str) -> None:
    """Render the selected mover's latest score changes, each with its reason and actor."""
    text = ui.query_value("agent")
    if text is None:
        return
    try:
        agent_id = uuid.UUID(text)
        page = listing.list_trust_history(get_runtime().db, user["organization_id"], agent_id, limit=HISTORY_ROWS)
    except (ValueError, NotFound):
        ui.clear_params("agent")
        return
    with st.container(border=True):
        head, close = st.columns([8, 1], vertical_alignment="center")
        head.markdown(f"**Score history of the selected agent** &nbsp; :gray[latest {HISTORY_ROWS} changes · {text}]")
        close.button("Close", key="trust_history_close", on_click=ui.clear_params, args=("agent",),
                     icon=":material/close:", width="stretch")
        df = pd.DataFrame(page.items, columns=["created_at", "previous_score", "score", "reason", "actor"])
        df["created_at"] = timefmt.localize_column(df["created_at"], tz)
        df["change"] = [(float(s) - float(p)) * 100 if p is not None else None
                        for s, p in zip(df["score"], df["previous_score"])]
        st.dataframe(df, hide_index=True, key="trust_history_table", placeholder="—", column_config={
            "created_at": st.column_config.DatetimeColumn(f"Time ({tz})", format="YYYY-MM-DD HH:mm:ss"),
            "previous_score": st.column_config.NumberColumn("Before", format="percent"),
            "score": st.column_config.NumberColumn("After", format="percent"),
            "reason": st.column_config.TextColumn("Reason", width="large"),
            "actor": st.column_config.TextColumn("Actor"),
            "change": st.column_config.NumberColumn("Change", format="%+.1f pp"),
        }, column_order=("created_at", "previous_score", "score", "change", "reason", "actor"))


def render_page() -> None:
    render_controls()
    tz = timerange.viewer_timezone()
    now = timerange.snap_up(datetime.now(timezone.utc), WINDOW_STEP)
    window = timerange.current_range(options=RANGES, default=DEFAULT_RANGE, now=now)
    unit = bucket_unit(window)
    organization_id = user["organization_id"]
    # Part of every loader's cache key: a backfill bumps it, which retires the aggregates cached before.
    history = cache_hooks.history_version()
    st.caption(window.describe(tz))

    # Panels render in order of cost: the tiles and the distribution need one cheap query each,
    # and the history-based panels follow.
    render_kpis(load_summary(organization_id, history))
    left, right = st.columns([3, 2])
    with right:
        render_distribution(load_distribution(organization_id, history))
    with left, charts.slow_panel_guard("Average trust score"):
        render_average(load_series(organization_id, window.start, window.end, unit, tz, history), unit, tz)

    with charts.slow_panel_guard("Biggest movers"):
        movers = load_movers(organization_id, window.start, window.end, history)
        render_movers(movers, "up", tz)
        render_movers(movers, "down", tz)
    render_agent_history(tz)

    left, right = st.columns(2)
    with left:
        render_by_type(load_by_type(organization_id, history))
    with right, charts.slow_panel_guard("MCP server confidence"):
        render_confidence(load_confidence(organization_id, window.start, window.end, unit, tz, history), unit, tz)


with page_guard("trust"):
    render_page()
