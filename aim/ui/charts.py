"""Plotly figures for the dashboard panels, styled alike: compact, dark-friendly, times in the viewer's zone.

Figure builders are pure (they take data and return a `go.Figure`), so tests can inspect them.
`show()` renders one in Streamlit. Time axes receive tz-aware values already converted with
`aim.ui.timefmt`, so Plotly prints the same wall-clock times as the tables and CSV exports.
Semantic colours follow the Grafana palette: green is good, orange is a warning, red is bad.
"""

from __future__ import annotations

import contextlib
import html
import logging
import math
from datetime import datetime
from typing import Any, Iterable, Iterator, Mapping, Sequence

import pandas as pd
import plotly.graph_objects as go
import psycopg
import streamlit as st

from aim.ui import timefmt

logger = logging.getLogger(__name__)

GREEN = "#73bf69"
ORANGE = "#ff9830"
RED = "#f2495c"
BLUE = "#5794f2"
YELLOW = "#fade2a"
PURPLE = "#b877d9"
GREY = "#8e8e8e"
GRID = "rgba(204, 204, 220, 0.09)"
THRESHOLD = "rgba(242, 73, 92, 0.9)"

RESULT_COLORS = {"success": GREEN, "failure": ORANGE, "denied": RED}
SEVERITY_COLORS = {"critical": RED, "high": ORANGE, "medium": YELLOW, "low": BLUE, "info": GREY}
DIRECTION_COLORS = {"up": GREEN, "down": RED}
# A p95 above the target but within WARN_FACTOR times it is a warning (orange). Beyond that it is red.
WARN_FACTOR = 2.0
PANEL_HEIGHT = 260
CHART_CONFIG = {"displayModeBar": False, "responsive": True}


def status_color(value: float | None, target: float | None) -> str:
    """Return green when `value` <= `target`, orange up to WARN_FACTOR x target, red above, and grey without data."""
    if value is None or target is None:
        return GREY
    if value <= target:
        return GREEN
    if value <= target * WARN_FACTOR:
        return ORANGE
    return RED


def format_duration(seconds: float | None) -> str:
    """Format seconds as "850 µs", "12.3 ms" or "1.25 s", or "—" for no data."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds:.3g} s"


def _style(fig: go.Figure, *, height: int = PANEL_HEIGHT, y_title: str | None = None,
           y_format: str | None = None, legend: bool = True) -> go.Figure:
    fig.update_layout(
        height=height,
        margin=dict(l=8, r=8, t=8, b=8),
        paper_bgcolor="rgba(0,0,0,0)",
        plot_bgcolor="rgba(0,0,0,0)",
        hovermode="x unified",
        showlegend=legend,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, xanchor="left", x=0, title_text="", font=dict(size=11)),
        font=dict(size=11),
        bargap=0.15,
    )
    fig.update_xaxes(showgrid=True, gridcolor=GRID, zeroline=False, title_text="")
    fig.update_yaxes(showgrid=True, gridcolor=GRID, zeroline=False, title_text=y_title or "", rangemode="tozero")
    if y_format:
        fig.update_yaxes(tickformat=y_format)
    return fig


def show(fig: go.Figure, key: str) -> None:
    """Render `fig` at full panel width without the Plotly mode bar."""
    st.plotly_chart(fig, width="stretch", config=CHART_CONFIG, key=key, theme="streamlit")


def stacked_bars(
    df: pd.DataFrame, *, x: str, y: str, color: str, color_map: Mapping[str, str] | None = None,
    order: Sequence[str] | None = None, y_title: str | None = None, height: int = PANEL_HEIGHT,
    bar_width_ms: float | None = None,
) -> go.Figure:
    """Return stacked bars of `y` over `x`, one trace per value of `color` (in `order` when given)."""
    fig = go.Figure()
    groups = list(order) if order else sorted(df[color].dropna().unique())
    for group in groups:
        part = df[df[color] == group]
        if part.empty:
            continue
        fig.add_bar(
            x=part[x], y=part[y], name=str(group), marker_color=(color_map or {}).get(group),
            width=bar_width_ms, hovertemplate="%{y:,}",
        )
    fig.update_layout(barmode="stack")
    return _style(fig, height=height, y_title=y_title)


def time_lines(
    df: pd.DataFrame, *, x: str, ys: Sequence[str], names: Sequence[str] | None = None,
    colors: Sequence[str] | None = None, y_title: str | None = None, y_format: str | None = None,
    hover_format: str = ".3g", threshold: float | None = None, threshold_label: str = "target",
    height: int = PANEL_HEIGHT, dash: Sequence[str | None] | None = None, fill: bool = False,
    y_range: Sequence[float] | None = None,
) -> go.Figure:
    """Return one line per column in `ys` over time `x`. None values stay gaps, and `threshold` adds a dashed line."""
    fig = go.Figure()
    for i, column in enumerate(ys):
        fig.add_scatter(
            x=df[x], y=df[column], mode="lines+markers", name=(names or ys)[i], marker=dict(size=4),
            line=dict(color=colors[i] if colors else None, width=1.6, dash=(dash[i] if dash else None)),
            fill="tozeroy" if fill and i == 0 else None, connectgaps=False,
            hovertemplate=f"%{{y:{hover_format}}}",
        )
    if threshold is not None:
        fig.add_hline(
            y=threshold, line=dict(color=THRESHOLD, width=1.2, dash="dash"),
            annotation_text=threshold_label, annotation_position="top left", annotation_font_color=THRESHOLD,
        )
    _style(fig, height=height, y_title=y_title, y_format=y_format, legend=len(ys) > 1)
    if y_range is not None:
        fig.update_yaxes(range=list(y_range), rangemode=None)
    return fig


def series_by_group(
    df: pd.DataFrame, *, x: str, y: str, group: str, y_title: str | None = None, y_format: str | None = None,
    hover_format: str = ".3g", height: int = PANEL_HEIGHT, color_map: Mapping[str, str] | None = None,
    threshold: float | None = None, threshold_label: str = "target", y_range: Sequence[float] | None = None,
) -> go.Figure:
    """Return one line per value of `group`, for per-cache, per-endpoint or per-query series."""
    fig = go.Figure()
    for name, part in df.groupby(group, sort=True):
        fig.add_scatter(
            x=part[x], y=part[y], mode="lines+markers", name=str(name), connectgaps=False, marker=dict(size=4),
            line=dict(width=1.6, color=(color_map or {}).get(name)), hovertemplate=f"%{{y:{hover_format}}}",
        )
    if threshold is not None:
        fig.add_hline(
            y=threshold, line=dict(color=THRESHOLD, width=1.2, dash="dash"),
            annotation_text=threshold_label, annotation_position="top left", annotation_font_color=THRESHOLD,
        )
    _style(fig, height=height, y_title=y_title, y_format=y_format)
    if y_range is not None:
        fig.update_yaxes(range=list(y_range), rangemode=None)
    return fig


def latency_target_bars(
    rows: Sequence[Mapping[str, Any]], *, height: int | None = None, color_by_target: bool = True,
) -> go.Figure:
    """Return one horizontal p95 bar per row, with p50 and p99 markers and each row's target drawn.

    Each row has endpoint (the label), p50_s, p95_s, p99_s (None without traffic) and target_s (None
    when the row has no target). With `color_by_target`, a bar takes the colour of
    `status_color(p95, target)`, else blue. A red dotted marker across the row shows the target.
    Values are plotted in milliseconds.
    """
    labels = [row["endpoint"] for row in rows]

    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1e3

    p95 = [row["p95_s"] for row in rows]
    colors = [status_color(v, row["target_s"]) if color_by_target else BLUE for v, row in zip(p95, rows)]
    fig = go.Figure()
    fig.add_bar(
        y=labels, x=[ms(v) for v in p95], orientation="h", name="p95", marker_color=colors,
        text=[format_duration(v) if v is not None else "" for v in p95], textposition="outside",
        cliponaxis=False, textfont=dict(size=10), hovertemplate="p95 %{x:.3g} ms<extra>%{y}</extra>",
    )
    fig.add_scatter(
        y=labels, x=[ms(row["p50_s"]) for row in rows], mode="markers", name="p50",
        marker=dict(symbol="line-ns", size=14, line=dict(width=2, color="#c7d0d9")),
        hovertemplate="p50 %{x:.3g} ms<extra>%{y}</extra>",
    )
    fig.add_scatter(
        y=labels, x=[ms(row["p99_s"]) for row in rows], mode="markers", name="p99",
        marker=dict(symbol="diamond", size=8, color="#c7d0d9", line=dict(width=0)),
        hovertemplate="p99 %{x:.3g} ms<extra>%{y}</extra>",
    )
    has_target = False
    for index, row in enumerate(rows):
        if row.get("target_s") is None:
            continue
        has_target = True
        target_ms = row["target_s"] * 1e3
        fig.add_shape(
            type="line", x0=target_ms, x1=target_ms, y0=index - 0.42, y1=index + 0.42, xref="x", yref="y",
            line=dict(color=THRESHOLD, width=2, dash="dot"),
        )
    for index, value in enumerate(p95):
        if value is None:
            fig.add_annotation(x=0, y=index, xref="paper", yref="y", text="no traffic", showarrow=False,
                               xanchor="left", font=dict(size=10, color=GREY))
    if has_target:
        fig.add_scatter(  # legend entry for the target markers
            x=[None], y=[None], mode="lines", name="target p95", line=dict(color=THRESHOLD, width=2, dash="dot"),
        )
    _style(fig, height=height or max(180, 30 * len(rows) + 60), legend=True)
    fig.update_layout(hovermode="y unified", bargap=0.35)
    fig.update_xaxes(title_text="latency (ms)", rangemode="tozero")
    fig.update_yaxes(autorange="reversed", showgrid=False, type="category")
    return fig


def heatmap_figure(
    step_starts: Sequence[Any], upper_s: Sequence[float], counts: Any, *, height: int = PANEL_HEIGHT + 40
) -> go.Figure:
    """Return a latency heatmap: time on x, latency buckets (upper bounds) on y, observation counts as colour.

    Empty cells are left transparent, so only measured observations are coloured.
    """
    labels = [("> 100 s" if math.isinf(u) else f"≤ {format_duration(u)}") for u in upper_s]
    z = [[None if c == 0 else int(c) for c in row] for row in list(map(list, zip(*counts)))] if len(labels) else []
    fig = go.Figure(go.Heatmap(
        x=list(step_starts), y=labels, z=z, colorscale="Plasma", hoverongaps=False, xgap=1, ygap=1,
        colorbar=dict(title=dict(text="requests", side="right"), thickness=10),
        hovertemplate="%{x}<br>%{y}: %{z:,} requests<extra></extra>",
    ))
    _style(fig, height=height, legend=False)
    fig.update_layout(hovermode="closest")
    fig.update_yaxes(type="category", showgrid=False, rangemode=None, nticks=12)
    fig.update_xaxes(showgrid=False)
    return fig


def histogram_bars(
    lower: Sequence[float], upper: Sequence[float], counts: Sequence[int], *, height: int = PANEL_HEIGHT,
    color_for: Any = None, x_title: str = "trust score",
) -> go.Figure:
    """Return a histogram from precomputed bins (lower, upper, count), labelled as percentages."""
    centers = [(lo + hi) / 2 for lo, hi in zip(lower, upper)]
    widths = [hi - lo for lo, hi in zip(lower, upper)]
    colors = [color_for(c) for c in centers] if color_for else BLUE
    fig = go.Figure(go.Bar(
        x=centers, y=list(counts), width=[w * 0.92 for w in widths], marker_color=colors,
        customdata=[[lo * 100, hi * 100] for lo, hi in zip(lower, upper)],
        hovertemplate="%{customdata[0]:.0f}–%{customdata[1]:.0f} %: %{y:,} agents<extra></extra>",
    ))
    _style(fig, height=height, legend=False)
    fig.update_layout(hovermode="closest")
    fig.update_xaxes(range=[0, 1], tickformat=".0%", title_text=x_title)
    return fig


def box_by_group(rows: Sequence[Mapping[str, Any]], *, group: str, height: int = PANEL_HEIGHT) -> go.Figure:
    """Return one box per group from precomputed minimum, q1, median, q3, maximum and average (0..1)."""
    fig = go.Figure()
    fig.add_trace(go.Box(
        x=[row[group] for row in rows],
        lowerfence=[row["minimum"] for row in rows], q1=[row["q1"] for row in rows],
        median=[row["median"] for row in rows], q3=[row["q3"] for row in rows],
        upperfence=[row["maximum"] for row in rows], mean=[row["average"] for row in rows],
        marker_color=BLUE, line=dict(width=1.4), name="trust", boxpoints=False,
    ))
    _style(fig, height=height, legend=False, y_format=".0%")
    fig.update_layout(hovermode="closest")
    fig.update_yaxes(range=[0, 1.02], rangemode=None)
    return fig


def gauge(value: float | None, *, maximum: float, title: str, steps: Iterable[tuple[float, float, str]] = (),
          suffix: str = "", height: int = 170) -> go.Figure:
    """Return a Grafana-style gauge of `value` in [0, maximum], with coloured threshold `steps` (lower, upper, colour)."""
    fig = go.Figure(go.Indicator(
        mode="gauge+number", value=value if value is not None else 0,
        number=dict(suffix=suffix, font=dict(size=22)),
        title=dict(text=title, font=dict(size=12)),
        gauge=dict(
            axis=dict(range=[0, maximum], tickwidth=1, tickcolor=GREY),
            bar=dict(color=BLUE, thickness=0.3),
            bgcolor="rgba(0,0,0,0)", borderwidth=0,
            steps=[dict(range=[lo, hi], color=color) for lo, hi, color in steps],
        ),
    ))
    fig.update_layout(height=height, margin=dict(l=24, r=24, t=30, b=4), paper_bgcolor="rgba(0,0,0,0)")
    return fig


def stat_tiles(tiles: Sequence[Mapping[str, Any]]) -> None:
    """Render a row of Grafana-style stat tiles: a label, a big value in a status colour and a note.

    Each tile has `label`, `value` (text), optional `color` (default grey text) and `note`. Text is
    HTML-escaped, so labels and values from the database are shown literally.
    """
    cells = []
    for tile in tiles:
        color = tile.get("color") or "#d6dbe3"
        note = f'<div class="aim-stat-note">{html.escape(str(tile["note"]))}</div>' if tile.get("note") else ""
        help_text = html.escape(str(tile.get("help", "")), quote=True)
        cells.append(
            f'<div class="aim-stat" title="{help_text}">'
            f'<div class="aim-stat-label">{html.escape(str(tile["label"]))}</div>'
            f'<div class="aim-stat-value" style="color:{color}">{html.escape(str(tile["value"]))}</div>{note}</div>'
        )
    st.html(
        "<style>"
        ".aim-stats{display:flex;gap:8px;flex-wrap:wrap;margin:0 0 4px 0}"
        ".aim-stat{flex:1 1 120px;min-width:120px;background:#171b22;border:1px solid #262c36;border-radius:4px;"
        "padding:8px 12px}"
        ".aim-stat-label{font-size:12px;color:#9aa4b2;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}"
        ".aim-stat-value{font-size:24px;font-weight:600;line-height:1.3;font-variant-numeric:tabular-nums}"
        ".aim-stat-note{font-size:11px;color:#7d8796;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}"
        "</style>"
        f'<div class="aim-stats">{"".join(cells)}</div>'
    )


def pin_time_axis(fig: go.Figure, start: datetime, end: datetime, tz: str) -> go.Figure:
    """Set the x axis to the window [start, end) in zone `tz`, so every panel of a page lines up."""
    fig.update_xaxes(range=[timefmt.to_local(start, tz), timefmt.to_local(end, tz)])
    return fig


@contextlib.contextmanager
def slow_panel_guard(panel: str) -> Iterator[None]:
    """Show a notice in place of a panel whose aggregate query hit its statement timeout.

    The rest of the page keeps rendering, because a timeout of one aggregate does not mean the
    database is down (which `aim.ui.errors.page_guard` reports).
    """
    try:
        yield
    except psycopg.errors.QueryCanceled as exc:
        logger.warning("%s: aggregate query cancelled by its statement timeout: %s", panel, exc)
        st.warning(f"{panel}: the query took too long for this range. Choose a shorter time range or add a "
                   "filter.", icon=":material/timer_off:")
