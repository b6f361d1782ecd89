"""Shared page building blocks: headers, KPI cards with sparklines, badges, query-parameter bound
filters, and a keyset-paged table whose position lives in the URL.

State that must survive a rerun or be shareable lives in `st.query_params`:

- Filter widgets made with `bound_selectbox`, `bound_text_input` and `bound_range_slider` start from
  their query parameter and write it back on change. A change also drops the page cursor, because
  a keyset cursor is only valid for the filters it was issued under.
- `fetch_paged` reads the `cursor` parameter and `pager` writes it, so a URL reproduces the page.
- `selectable_table` writes the selected row's id into a parameter such as `agent`.

Widget keys are `qp_<parameter>` and pager buttons `<table key>_first/_prev/_next`, stable for
end-to-end tests.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from aim.db.keyset import Page
from aim.errors import InvalidCursor

logger = logging.getLogger(__name__)

CURSOR_PARAM = "cursor"
PAGE_NUMBER_PARAM = "page"
PAGING_PARAMS = (CURSOR_PARAM, PAGE_NUMBER_PARAM)
ANY = "Any"

STATUS_COLORS = {
    "verified": "green", "pending": "blue", "suspended": "orange", "revoked": "red",
    "active": "green", "inactive": "gray", "deprecated": "orange",
    "open": "red", "acknowledged": "orange", "resolved": "green",
    "allowed": "green", "denied": "red", "approved": "green", "rejected": "red",
}
SEVERITY_COLORS = {"critical": "red", "high": "orange", "medium": "yellow", "low": "blue", "info": "gray"}
# Text colours for st.dataframe cells, matching the badge colours of the dark theme.
# Same palette as aim.ui.charts (Grafana's), so a table cell and a chart series agree.
CELL_COLORS = {
    "green": "#73bf69", "blue": "#5794f2", "orange": "#ff9830", "red": "#f2495c", "gray": "#8e8e8e",
    "yellow": "#fade2a", "violet": "#b877d9",
}
# Fixed card height, so cards with and without a sparkline line up in a row.
KPI_CARD_HEIGHT = 150
# Text of an empty (None or NaN) table cell, the same in styled and plain tables.
EMPTY_CELL = "—"
CHART_FONT_COLOR = "#c4cad4"
CHART_GRID_COLOR = "#262c36"


# --- headers and formatting ----------------------------------------------------------------------


def page_header(title: str, caption: str | None = None, icon: str | None = None) -> None:
    """Render the page title with an optional icon and one-line description."""
    st.markdown(f"## {icon + ' ' if icon else ''}{title}")
    if caption:
        st.caption(caption)


def percent(value: float | None, digits: int = 1) -> str:
    """Format a 0..1 share as a percentage, or an em dash when there is no value."""
    return "—" if value is None else f"{value * 100:.{digits}f} %"


def count_label(page: Page, noun: str) -> str:
    """Return "1,234 agents" or "about 120,000 agents" from a page's total."""
    if page.total is None:
        return noun
    return f"{'about ' if page.total_is_estimate else ''}{page.total:,} {noun}"


def badge_markdown(text: str, color: str) -> str:
    """Return Streamlit markdown for a coloured badge, for use inside st.markdown or st.caption."""
    safe = text.replace("[", "(").replace("]", ")")
    return f":{color}-badge[{safe}]"


def status_badge(status: str) -> str:
    return badge_markdown(status, STATUS_COLORS.get(status, "gray"))


def severity_badge(severity: str) -> str:
    return badge_markdown(severity, SEVERITY_COLORS.get(severity, "gray"))


def style_columns(df: pd.DataFrame, columns: dict[str, dict[str, str]]) -> Any:
    """Return a Styler that colours the text of each named column by value (e.g. status, severity).

    Empty cells show EMPTY_CELL.
    """

    def color_for(mapping: dict[str, str]) -> Callable[[Any], str]:
        def css(value: Any) -> str:
            color = mapping.get(str(value))
            return f"color: {CELL_COLORS[color]}; font-weight: 600" if color else ""
        return css

    # Streamlit sends a Styler's display text for every cell, and pandas writes "None" for a missing
    # value unless na_rep is set. The browser draws st.dataframe's `placeholder` in null cells, so
    # callers pass placeholder=EMPTY_CELL as well.
    styler = df.style.format(na_rep=EMPTY_CELL)
    for column, mapping in columns.items():
        if column in df.columns:
            styler = styler.map(color_for(mapping), subset=[column])
    return styler


# --- KPI cards -----------------------------------------------------------------------------------


def kpi_card(
    label: str, value: str | int | float | None, *, sparkline: Sequence[float | None] | None = None,
    help: str | None = None, delta: str | None = None, delta_color: str = "normal", chart_type: str = "area",
) -> None:
    """Render a bordered metric with an optional sparkline of real measurements.

    `value` None shows an em dash. Missing points in `sparkline` are dropped rather than drawn as
    zero. A sparkline with fewer than two points is left out, because one point draws no trend.
    """
    points = [float(p) for p in (sparkline or []) if p is not None]
    st.metric(
        label, "—" if value is None else value, delta=delta, delta_color=delta_color, help=help, border=True,
        chart_data=points if len(points) >= 2 else None, chart_type=chart_type, height=KPI_CARD_HEIGHT,
    )


def style_figure(fig: go.Figure, height: int = 260, *, legend: bool = False) -> go.Figure:
    """Apply the dashboard's dark, compact Plotly layout."""
    fig.update_layout(
        height=height, margin=dict(l=8, r=8, t=28, b=8), paper_bgcolor="rgba(0,0,0,0)", plot_bgcolor="rgba(0,0,0,0)",
        font=dict(color=CHART_FONT_COLOR, size=12), showlegend=legend,
        legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0),
    )
    fig.update_xaxes(gridcolor=CHART_GRID_COLOR, zeroline=False)
    fig.update_yaxes(gridcolor=CHART_GRID_COLOR, zeroline=False)
    return fig


# --- query-parameter bound filters ----------------------------------------------------------------


def query_value(param: str) -> str | None:
    """Return the query parameter's value, or None when it is missing or empty."""
    value = st.query_params.get(param)
    return value or None


def clear_params(*params: str) -> None:
    """Remove query parameters (e.g. the cursor when a filter changes)."""
    for param in params:
        if param in st.query_params:
            del st.query_params[param]


def _widget_key(param: str) -> str:
    return f"qp_{param}"


def _write_back(param: str, key: str, serialize: Callable[[Any], str | None], reset: Sequence[str]) -> None:
    text = serialize(st.session_state[key])
    if text:
        st.query_params[param] = text
    else:
        clear_params(param)
    clear_params(*reset)


def bound_selectbox(
    label: str, options: Sequence[str], param: str, *, format_func: Callable[[str], str] | None = None,
    help: str | None = None, reset: Sequence[str] = PAGING_PARAMS, include_any: bool = True,
) -> str | None:
    """Render a selectbox whose choice is stored as `?<param>=<option>`, and return the choice.

    With `include_any` the first choice is "Any" (no filter, returned as None); without it the first
    option is the default. The default removes the parameter, and an unknown value in the URL falls
    back to the default.
    """
    key = _widget_key(param)
    choices = [ANY, *options] if include_any else list(options)
    default = choices[0]
    if key not in st.session_state:
        current = query_value(param)
        st.session_state[key] = current if current in options else default
    st.selectbox(
        label, choices, key=key, help=help, format_func=format_func or str,
        on_change=_write_back, args=(param, key, lambda v: None if v == default else v, reset),
    )
    value = st.session_state[key]
    return None if value == ANY and include_any else value


def bound_text_input(
    label: str, param: str, *, placeholder: str = "", help: str | None = None, max_chars: int = 200,
    reset: Sequence[str] = PAGING_PARAMS,
) -> str | None:
    """Render a text input stored as `?<param>=<text>`. Return the stripped text, or None when empty."""
    key = _widget_key(param)
    if key not in st.session_state:
        st.session_state[key] = (query_value(param) or "")[:max_chars]
    st.text_input(
        label, key=key, placeholder=placeholder, help=help, max_chars=max_chars,
        on_change=_write_back, args=(param, key, lambda v: v.strip() or None, reset),
    )
    return st.session_state[key].strip() or None


def parse_range(text: str | None, low: int, high: int) -> tuple[int, int]:
    """Parse "20-80" into (20, 80) within [low, high]. Any other text gives the full range."""
    if not text:
        return low, high
    first, sep, second = text.partition("-")
    try:
        start, end = int(first), int(second)
    except ValueError:
        return low, high
    if not sep or not low <= start <= end <= high:
        return low, high
    return start, end


def bound_range_slider(
    label: str, param: str, low: int, high: int, *, step: int = 1, format: str = "%d", help: str | None = None,
    reset: Sequence[str] = PAGING_PARAMS,
) -> tuple[int, int]:
    """Render a range slider stored as `?<param>=<start>-<end>`. The full range removes the parameter."""
    key = _widget_key(param)
    if key not in st.session_state:
        st.session_state[key] = parse_range(query_value(param), low, high)

    def serialize(value: tuple[int, int]) -> str | None:
        start, end = value
        return None if (start, end) == (low, high) else f"{start}-{end}"

    st.slider(label, low, high, key=key, step=step, format=format, help=help,
              on_change=_write_back, args=(param, key, serialize, reset))
    start, end = st.session_state[key]
    return int(start), int(end)


# --- paged table ---------------------------------------------------------------------------------


def fetch_paged(fetch: Callable[[str | None], Page], *, param: str = CURSOR_PARAM) -> Page:
    """Call `fetch(cursor)` with the URL's cursor. A stale or altered cursor restarts at the first page."""
    cursor = query_value(param)
    if cursor is None:
        return fetch(None)
    try:
        return fetch(cursor)
    except InvalidCursor as exc:
        logger.info("dropping an invalid %s query parameter: %s", param, exc)
        clear_params(param, page_number_param(param))
        st.warning("The page position in this link is no longer valid, so the first page is shown.",
                   icon=":material/restart_alt:")
        return fetch(None)


def page_number_param(param: str) -> str:
    """Return the parameter holding the page number shown next to cursor parameter `param`."""
    return PAGE_NUMBER_PARAM if param == CURSOR_PARAM else f"{param}_page"


def _page_number(param: str) -> int:
    try:
        return max(int(query_value(page_number_param(param)) or 1), 1)
    except ValueError:
        return 1


def _go(param: str, cursor: str | None, number: int) -> None:
    # Only First clears the cursor. Previous back to page 1 keeps its cursor, so it shows the rows
    # the user saw there, not rows written since.
    if cursor is None:
        clear_params(param, page_number_param(param))
    else:
        st.query_params[param] = cursor
        st.query_params[page_number_param(param)] = str(max(number, 1))


def pager(page: Page, *, key: str, noun: str, param: str = CURSOR_PARAM) -> None:
    """Render "Page N · total" with First, Previous and Next buttons that move the URL cursor.

    Two paged tables on one page need different `param` names, such as `users_cursor`.
    """
    number = _page_number(param)
    shown = len(page.items)
    # One wrapping row of content-width buttons: in a narrow column, fixed-width button columns cut
    # the labels ("Prev…"), while a wrapping row moves the buttons below the caption instead.
    with st.container(horizontal=True, vertical_alignment="center", gap="small", key=f"{key}_pager"):
        st.caption(f"Page {number} · {shown} shown · {count_label(page, noun)}", width="stretch")
        st.button("First", key=f"{key}_first", disabled=number <= 1 and param not in st.query_params,
                  on_click=_go, args=(param, None, 1), width="content", icon=":material/first_page:")
        st.button("Previous", key=f"{key}_prev", disabled=page.prev_cursor is None,
                  on_click=_go, args=(param, page.prev_cursor, number - 1), width="content",
                  icon=":material/chevron_left:")
        st.button("Next", key=f"{key}_next", disabled=page.next_cursor is None,
                  on_click=_go, args=(param, page.next_cursor, number + 1), width="content",
                  icon=":material/chevron_right:")


def table_height(rows: int, max_rows: int = 20) -> int:
    """Return a st.dataframe height in pixels that shows `rows` rows (at most `max_rows`) without blank space."""
    # 35 px per row and for the header, plus 3 px of border, as st.dataframe draws them in Streamlit 1.67.
    return (min(max(rows, 1), max_rows) + 1) * 35 + 3


def selectable_table(
    data: pd.DataFrame | Any, *, key: str, ids: Sequence[Any], select_param: str, **dataframe_kwargs: Any
) -> None:
    """Render a single-row-select table; choosing a row writes its id to `?<select_param>=<id>`.

    `data` is a DataFrame or Styler whose rows line up with `ids`. The table key carries a version
    number so `reset_selection(key)` can present a fresh table without the old selection.
    """
    table_key = f"{key}_v{st.session_state.get(f'{key}_version', 0)}"
    row_ids = [str(row_id) for row_id in ids]

    def on_select() -> None:
        rows = st.session_state[table_key].selection.rows
        if rows and rows[0] < len(row_ids):
            st.query_params[select_param] = row_ids[rows[0]]

    dataframe_kwargs.setdefault("placeholder", EMPTY_CELL)
    st.dataframe(data, key=table_key, on_select=on_select, selection_mode="single-row", hide_index=True,
                 **dataframe_kwargs)


def reset_selection(key: str) -> None:
    """Forget the selection of `selectable_table(key=...)` by giving the next table a new key."""
    st.session_state[f"{key}_version"] = st.session_state.get(f"{key}_version", 0) + 1


def empty_state(message: str, icon: str = ":material/inbox:") -> None:
    """Render a quiet placeholder for a panel with no rows."""
    st.info(message, icon=icon)
