"""Audit logs page: filters and paging state in the URL, CSV export, timezone agreement, role gating."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import pytest
from streamlit.testing.v1 import AppTest

from aim.db.audit_ingest import ingest_audit_rows
from aim.ui import auth, csv_export, export_route

from ui_support import APP, make_user, navigation_mode  # noqa: F401 - navigation_mode is an autouse fixture

pytestmark = pytest.mark.integration

ACTIONS = ("agent.verify", "agent.register", "alert.raised")
RESULTS = ("success", "success", "denied", "failure")


def seed_events(db, org_id, count: int, *, newest: datetime | None = None, actor: str = "agent-1") -> None:
    """`count` events one minute apart ending at `newest`, cycling through actions and results."""
    newest = newest or datetime.now(timezone.utc) - timedelta(minutes=1)
    rows = [{
        "organization_id": org_id, "occurred_at": newest - timedelta(minutes=i), "actor_type": "agent",
        "actor_id": actor, "action": ACTIONS[i % len(ACTIONS)], "resource_type": "agent",
        "resource_id": f"r-{i}", "result": RESULTS[i % len(RESULTS)], "details": {"n": i},
    } for i in range(count)]
    ingest_audit_rows(db, rows)


def audit_page(user: dict, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    auth.sign_in_session(at.session_state, user)
    at.run()
    at.switch_page("pages/audit_logs.py")
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def table(at: AppTest):
    assert len(at.dataframe) >= 1, f"no table rendered; errors: {[e.value for e in at.error]}"
    return at.dataframe[0].value


def button(at: AppTest, key: str):
    return at.button(key=key)


def test_paging_state_in_url(db, org_id):
    seed_events(db, org_id, 250)
    at = audit_page(make_user(db, org_id, "analyst"), size="100")

    first_page = table(at)
    first = list(first_page["id"])
    assert len(first) == 100
    assert at.query_params.get("at"), "the first page pins its window in the URL"

    button(at, "audit_table_next").click().run()
    second_page = table(at)
    second = list(second_page["id"])
    assert at.query_params.get("cursor")
    assert at.query_params.get("page") == "2"
    assert len(second) == 100
    assert not set(first) & set(second)
    assert second_page["occurred_at"].max() < first_page["occurred_at"].min(), "page 2 holds older events"

    button(at, "audit_table_prev").click().run()
    assert list(table(at)["id"]) == first


def test_paging_survives_new_rows_and_rerun(db, org_id):
    seed_events(db, org_id, 150)
    at = audit_page(make_user(db, org_id, "analyst"), size="100")
    first = list(table(at)["id"])
    button(at, "audit_table_next").click().run()
    second = list(table(at)["id"])

    # New events arrive and the page reruns, as an auto-refresh does: page 2 keeps its window.
    arrived = datetime.now(timezone.utc)
    ingest_audit_rows(db, [{
        "organization_id": org_id, "occurred_at": arrived + timedelta(milliseconds=i), "actor_type": "agent",
        "actor_id": "agent-new", "action": "agent.verify", "resource_type": "agent", "result": "success",
    } for i in range(5)])
    at.run()
    assert list(table(at)["id"]) == second

    # Previous returns the page the user saw, without the new events.
    button(at, "audit_table_prev").click().run()
    assert list(table(at)["id"]) == first

    # First follows the clock again: the new events on top, then the old first page.
    button(at, "audit_table_first").click().run()
    rows = table(at)
    assert list(rows["actor_id"][:5]) == ["agent-new"] * 5
    assert list(rows["id"][5:]) == first[:95]


def test_filters_in_url(db, org_id):
    seed_events(db, org_id, 60)
    seed_events(db, org_id, 7, actor="agent-2")
    at = audit_page(make_user(db, org_id, "viewer"), result="denied", range="now-24h")

    rows = table(at)
    assert len(rows) == 17  # every fourth event is denied: 15 of the first 60 and 2 of the next 7
    assert set(rows["result"]) == {"denied"}

    at.query_params["actor"] = "agent-2"
    at.query_params.pop("result")
    at.run()
    rows = table(at)
    assert len(rows) == 7
    assert set(rows["actor_id"]) == {"agent-2"}


def test_filter_change_drops_cursor(db, org_id):
    seed_events(db, org_id, 150)
    at = audit_page(make_user(db, org_id, "analyst"), size="100")
    button(at, "audit_table_next").click().run()
    assert at.query_params.get("cursor")

    at.selectbox(key="qp_result").set_value("success").run()
    assert at.query_params.get("result") == "success"
    assert at.query_params.get("cursor") is None
    assert set(table(at)["result"]) == {"success"}


def test_range_filters_rows(db, org_id):
    now = datetime.now(timezone.utc)
    seed_events(db, org_id, 3, newest=now - timedelta(minutes=2))
    seed_events(db, org_id, 4, newest=now - timedelta(hours=3), actor="agent-old")
    at = audit_page(make_user(db, org_id, "analyst"), range="now-1h")
    rows = table(at)
    assert list(rows["actor_id"]).count("agent-1") == 3
    assert "agent-old" not in set(rows["actor_id"])

    start = (now - timedelta(hours=4)).strftime("%Y-%m-%dT%H:%M:%SZ")
    end = (now - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    at.query_params.update({"range": "custom", "from": start, "to": end})
    at.run()
    rows = table(at)
    assert len(rows) == 4
    assert set(rows["actor_id"]) == {"agent-old"}


def test_export_link_carries_filters_and_timezone(db, org_id):
    seed_events(db, org_id, 6)
    user = make_user(db, org_id, "analyst")
    at = AppTest.from_file(APP, default_timeout=60)
    auth.sign_in_session(at.session_state, user)
    at.session_state["timezone"] = "Asia/Kolkata"
    at.run()
    at.switch_page("pages/audit_logs.py")
    at.query_params.update({"result": "denied", "actor": "agent-1"})
    at.run()

    assert not at.exception
    links = [element for element in at.get("link_button") if element.proto.label == "Export CSV"]
    assert len(links) == 1
    url = urlsplit(links[0].proto.url)
    query = parse_qs(url.query)
    assert url.path == export_route.AUDIT_EXPORT_PATH
    assert query["result"] == ["denied"]
    assert query["actor"] == ["agent-1"]
    assert query["tz"] == ["Asia/Kolkata"]
    assert datetime.fromisoformat(query["start"][0]) < datetime.fromisoformat(query["end"][0])
    assert links[0].proto.disabled is False


def test_csv_timestamps_match_table_timezone(db, runtime, org_id):
    moment = datetime(2026, 1, 15, 12, 30, 45, 123000, tzinfo=timezone.utc)
    seed_events(db, org_id, 1, newest=moment)
    filters = csv_export.audit_filters(start=moment - timedelta(hours=1), end=moment + timedelta(hours=1))
    rows = list(csv.DictReader(io.StringIO(b"".join(
        csv_export.csv_chunks(csv_export.iter_audit_rows(runtime.db, org_id, filters), csv_export.AUDIT_COLUMNS,
                              tz="Asia/Kolkata")
    ).decode("utf-8"))))
    row = rows[0]
    assert row["occurred_at"] == "2026-01-15T18:00:45.123000+05:30"

    user = make_user(db, org_id, "admin")
    at = AppTest.from_file(APP, default_timeout=60)
    auth.sign_in_session(at.session_state, user)
    at.session_state["timezone"] = "Asia/Kolkata"
    at.run()
    at.switch_page("pages/audit_logs.py")
    at.query_params.update({"range": "custom", "from": "2026-01-15T11:00:00Z", "to": "2026-01-15T13:00:00Z"})
    at.run()
    shown = table(at)["occurred_at"].iloc[0]
    assert shown.isoformat() == row["occurred_at"]
    chart = at.get("plotly_chart")[0].proto.spec
    # Plotly writes wall-clock times without the offset, so the bar sits at 18:00 India time.
    assert '"x":["2026-01-15T18:00:00"]' in chart, "the chart bucket starts at the local hour"


def test_csv_cells_neutralise_formulas():
    chunks = b"".join(csv_export.csv_chunks(
        [{"actor_id": "=HYPERLINK(1)", "action": "agent.verify", "id": 5}], ("actor_id", "action", "id")
    )).decode()
    assert chunks.splitlines()[1] == "'=HYPERLINK(1),agent.verify,5"


def test_csv_chunks_stream_in_batches():
    rows = ({"id": i} for i in range(2500))
    chunks = list(csv_export.csv_chunks(rows, ("id",), rows_per_chunk=1000))
    assert len(chunks) == 3
    assert sum(chunk.count(b"\r\n") for chunk in chunks) == 2501


def test_manager_cannot_open_audit_logs(db, org_id):
    at = audit_page(make_user(db, org_id, "manager"))
    assert any("cannot open Audit logs" in str(e.value) for e in at.error)
    assert len(at.dataframe) == 0


def test_viewer_sees_total_and_chart(db, org_id):
    seed_events(db, org_id, 20)
    at = audit_page(make_user(db, org_id, "viewer"), actor="agent-1")
    assert not at.exception
    captions = "\n".join(str(c.value) for c in at.caption)
    assert "20 events" in captions
    markdown = "\n".join(str(m.value) for m in at.markdown)
    assert "success 10" in markdown
    assert "denied 5" in markdown
    assert "failure 5" in markdown


def shown_cells(element):
    """Return the text a styled st.dataframe shows per cell (the Styler display values)."""
    from streamlit.dataframe_util import convert_arrow_bytes_to_pandas_df

    display = element.proto.arrow_data.styler.display_values
    assert display, "the table has no Styler display values"
    return convert_arrow_bytes_to_pandas_df(display)


def test_empty_cells_show_em_dash(db, org_id):
    seed_events(db, org_id, 3)
    at = audit_page(make_user(db, org_id, "analyst"))
    assert not at.exception

    # The browser draws the placeholder in a null cell; without one it draws a grey "None".
    assert at.dataframe[0].proto.placeholder == "—"
    cells = shown_cells(at.dataframe[0])
    seeded = cells[cells["actor_id"] == "agent-1"]

    assert len(seeded) == 3
    for column in ("ip_address", "request_id"):
        assert list(seeded[column]) == ["—"] * 3, f"{column} shows {list(seeded[column])}"
    assert not cells.isin(["None"]).any().any()
