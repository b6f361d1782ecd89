"""Trust and performance pages: trend queries against hand-computed values, "no traffic", role gating,
and the time range helpers they share."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest
from streamlit.testing.v1 import AppTest

from aim.errors import ValidationError
from aim.metrics.rollup import Recorder
from aim.services import agents, mcp_servers
from aim.services import dashboard_queries_trends as trends
from aim.services.actor import system
from aim.ui import auth, timerange

from ui_support import APP, make_user, navigation_mode  # noqa: F401 - navigation_mode is an autouse fixture

pytestmark = pytest.mark.integration

# A fixed window in the past, so rows written by other tests never fall inside it.
START = datetime(2026, 3, 1, tzinfo=timezone.utc)
DAY = timedelta(days=1)


def open_page(user: dict, page: str, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    auth.sign_in_session(at.session_state, user)
    at.run()
    at.switch_page(f"pages/{page}.py")
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def add_agent(db, org_id, name: str, created_at: datetime, current: float, agent_type: str = "assistant"):
    agent = agents.register_agent(db, org_id, system("test"), name=name, agent_type=agent_type,
                                  created_at=created_at).agent
    db.execute("test.set_trust", "UPDATE agents SET trust_score = %s WHERE id = %s", (current, agent["id"]))
    # Registration writes a history row dated now. The tests write their own history instead.
    db.execute("test.clear_history", "DELETE FROM trust_score_history WHERE agent_id = %s", (agent["id"],))
    return agent["id"]


def add_change(db, org_id, agent_id, at: datetime, before: float | None, after: float, reason: str = "recalc"):
    db.execute(
        "test.trust_change",
        """INSERT INTO trust_score_history (organization_id, agent_id, score, previous_score, factors, reason, actor,
                                            created_at)
           VALUES (%s, %s, %s, %s, '{}', %s, 'system:test', %s)""",
        (org_id, agent_id, after, before, reason, at),
    )


@pytest.fixture
def trust_history(db, org_id):
    """Four agents with known scores over three days from START (see the expected values in the tests)."""
    a = add_agent(db, org_id, "agent-a", START - 10 * DAY, 0.7)
    add_change(db, org_id, a, START + timedelta(hours=6), 0.5, 0.6, "verification rate rose")
    add_change(db, org_id, a, START + DAY + timedelta(hours=6), 0.6, 0.7, "alert resolved")
    b = add_agent(db, org_id, "agent-b", START - 10 * DAY, 0.4, agent_type="etl")
    add_change(db, org_id, b, START - DAY, 0.5, 0.4, "before the window")
    c = add_agent(db, org_id, "agent-c", START + DAY + timedelta(hours=12), 0.9)
    add_change(db, org_id, c, START + DAY + timedelta(hours=12), 0.5, 0.55, "agent registered")
    add_change(db, org_id, c, START + 2 * DAY + timedelta(hours=1), 0.55, 0.8, "uptime measured")
    add_change(db, org_id, c, START + 4 * DAY, 0.8, 0.9, "after the window")
    d = add_agent(db, org_id, "agent-d", START - 10 * DAY, 0.3, agent_type="etl")
    add_change(db, org_id, d, START + timedelta(hours=12), 0.9, 0.3, "bad signatures")
    return {"a": a, "b": b, "c": c, "d": d}


def test_trust_average_carries_scores_forward(db, org_id, trust_history):
    rows = trends.trust_average_series(db, org_id, START, START + 3 * DAY, unit="day", tz="UTC")
    assert [row["bucket"] for row in rows] == [START, START + DAY, START + 2 * DAY]
    # Day 1: a 0.6, b 0.4, d 0.3. Day 2: a 0.7, b 0.4, c 0.55, d 0.3. Day 3: c rises to 0.8.
    assert rows[0]["average"] == pytest.approx((0.6 + 0.4 + 0.3) / 3)
    assert rows[1]["average"] == pytest.approx((0.7 + 0.4 + 0.55 + 0.3) / 4)
    assert rows[2]["average"] == pytest.approx((0.7 + 0.4 + 0.8 + 0.3) / 4)
    assert [row["agents"] for row in rows] == [3, 4, 4]
    assert [row["changes"] for row in rows] == [2, 2, 1]


def test_trust_average_buckets_local_days(db, org_id, trust_history):
    rows = trends.trust_average_series(db, org_id, START, START + 2 * DAY, unit="day", tz="America/New_York")
    # 2026-03-01 00:00 UTC is 2026-02-28 19:00 in New York (UTC-5), so the first local day starts at 05:00 UTC.
    assert rows[0]["bucket"] == datetime(2026, 2, 28, 5, tzinfo=timezone.utc)
    assert len(rows) == 3
    assert rows[1]["bucket"] - rows[0]["bucket"] == DAY


def test_trust_movers_with_reasons(db, org_id, trust_history):
    movers = trends.trust_movers(db, org_id, START, START + 3 * DAY, limit=5)
    up = [row for row in movers if row["direction"] == "up"]
    down = [row for row in movers if row["direction"] == "down"]
    assert [row["name"] for row in up] == ["agent-c", "agent-a"]
    assert up[0]["net_change"] == pytest.approx(0.3)
    assert up[0]["largest_reason"] == "uptime measured"
    assert up[1]["latest_reason"] == "alert resolved"
    assert [row["name"] for row in down] == ["agent-d"]
    assert down[0]["largest_change"] == pytest.approx(-0.6)
    assert down[0]["largest_reason"] == "bad signatures"


def test_trust_distribution_bins(db, org_id):
    for index, score in enumerate((0.0, 0.049, 0.05, 0.5, 1.0)):
        add_agent(db, org_id, f"dist-{index}", START, score)
    bins = trends.trust_distribution(db, org_id, bins=20)
    counts = {row["bin"]: row["agents"] for row in bins}
    assert len(bins) == 20
    assert counts[1] == 2
    assert counts[2] == 1
    assert counts[11] == 1
    assert counts[20] == 1, "a score of exactly 1 counts in the last bin"
    assert sum(counts.values()) == 5


def test_trust_by_agent_type(db, org_id, trust_history):
    rows = {row["agent_type"]: row for row in trends.trust_by_agent_type(db, org_id)}
    assert rows["etl"]["agents"] == 2
    assert rows["etl"]["average"] == pytest.approx(0.35)
    assert rows["assistant"]["maximum"] == pytest.approx(0.9)


def test_mcp_confidence_series(db, org_id):
    actor = system("test")
    x = mcp_servers.register_server(db, org_id, actor, name="x", url="https://x.example.com/mcp")["id"]
    y = mcp_servers.register_server(db, org_id, actor, name="y", url="https://y.example.com/mcp")["id"]
    insert = """INSERT INTO mcp_confidence_history (organization_id, mcp_server_id, confidence, reason, created_at)
                VALUES (%s, %s, %s, 'test', %s)"""
    db.execute("test.confidence", insert, (org_id, x, 0.4, START - DAY))
    db.execute("test.confidence", insert, (org_id, x, 0.6, START + DAY + timedelta(hours=1)))
    db.execute("test.confidence", insert, (org_id, y, 0.8, START + 2 * DAY + timedelta(hours=2)))
    rows = trends.mcp_confidence_series(db, org_id, START, START + 3 * DAY, unit="day", tz="UTC")
    assert [row["average"] for row in rows] == pytest.approx([0.4, 0.6, 0.7])
    assert [row["servers"] for row in rows] == [1, 1, 2]
    assert [row["updates"] for row in rows] == [0, 1, 1]


def test_trust_page_for_manager(db, org_id):
    now = datetime.now(timezone.utc)
    riser = add_agent(db, org_id, "riser", now - 20 * DAY, 0.8)
    add_change(db, org_id, riser, now - 2 * DAY, 0.5, 0.8, "verification streak")
    at = open_page(make_user(db, org_id, "manager"), "trust", range="now-7d")
    assert not at.exception
    assert not at.error
    movers = at.dataframe[0].value
    assert list(movers["name"]) == ["riser"]
    assert list(movers["largest_reason"]) == ["verification streak"]
    html = "\n".join(str(element.proto.body) for element in at.get("html"))
    assert ">80.0 %<" in html, "average trust tile"


def test_trust_page_role_gating(db, org_id):
    at = open_page(make_user(db, org_id, "viewer"), "trust")
    assert any("cannot open Trust" in str(e.value) for e in at.error)
    at = open_page(make_user(db, org_id, "analyst"), "trust")
    assert not at.error


def test_performance_no_traffic_for_empty_window(db, org_id):
    at = open_page(make_user(db, org_id, "viewer"), "performance", range="custom",
                   **{"from": "2001-01-01T00:00:00Z", "to": "2001-01-01T01:00:00Z"})
    assert not at.exception
    assert not at.error
    html = "\n".join(str(element.proto.body) for element in at.get("html"))
    assert "Requests</div><div class=\"aim-stat-value\" style=\"color:#8e8e8e\">no traffic<" in html
    assert "Cache hit rate</div><div class=\"aim-stat-value\" style=\"color:#8e8e8e\">no traffic<" in html
    assert "NaN" not in html
    assert "0.0 %" not in html
    captions = [str(c.value) for c in at.caption]
    assert any("No traffic in this window." in text for text in captions)
    assert any("No cache lookups in this window." in text for text in captions)


def test_performance_shows_measured_requests(db, org_id):
    route = f"/api/v1/test-{uuid.uuid4().hex[:8]}"
    recorder = Recorder()
    moment = datetime.now(timezone.utc) - timedelta(minutes=2)
    for _ in range(40):
        recorder.observe("aim_http_request_duration_seconds", {"route": route, "method": "GET", "status": "200"},
                         0.004, at=moment)
    assert recorder.flush(db)
    at = open_page(make_user(db, org_id, "viewer"), "performance", range="now-15m")
    assert not at.exception
    table = next(frame.value for frame in at.dataframe if "endpoint" in frame.value.columns)
    row = table[table["endpoint"] == f"GET {route}"].iloc[0]
    assert row["requests"] == 40
    assert row["p95"] == pytest.approx(4.0, rel=0.05)
    assert row["status"] == "no target"


def test_performance_timezone_control_sets_shared_zone(db, org_id):
    at = open_page(make_user(db, org_id, "viewer"), "performance")
    at.selectbox(key="perf_timezone").set_value("Europe/Berlin").run()
    assert at.session_state["timezone"] == "Europe/Berlin"
    assert at.query_params.get("tz") == "Europe/Berlin"
    assert any("Europe/Berlin" in str(c.value) for c in at.caption), "the window caption uses the new zone"


def test_performance_role_gating(db, org_id):
    for role in ("manager", "analyst"):
        at = open_page(make_user(db, org_id, role), "performance")
        assert any("cannot open Performance" in str(e.value) for e in at.error)


# --- time range helpers ---------------------------------------------------------------------------


def test_relative_range_snaps_end():
    now = datetime(2026, 5, 1, 12, 0, 3, tzinfo=timezone.utc)
    short = timerange.resolve_range("now-1h", now=now)
    assert short.end == datetime(2026, 5, 1, 12, 0, 10, tzinfo=timezone.utc)
    assert short.duration == timedelta(hours=1)
    long = timerange.resolve_range("now-7d", now=now)
    assert long.end == datetime(2026, 5, 1, 12, 1, tzinfo=timezone.utc)
    exact = timerange.resolve_range("now-15m", now=now, snap=False)
    assert exact.end == now


def test_custom_range_parsing():
    window = timerange.resolve_range("custom", now=START, start_text="2026-01-02T10:00:00Z",
                                     end_text="2026-01-02T12:00:00+01:00")
    assert window.start == datetime(2026, 1, 2, 10, tzinfo=timezone.utc)
    assert window.end == datetime(2026, 1, 2, 11, tzinfo=timezone.utc)


@pytest.mark.parametrize(("key", "start", "end", "field"), [
    ("now-2h", None, None, "range"),
    ("custom", "2026-01-02T10:00:00Z", "2026-01-02T09:00:00Z", "to"),
    ("custom", "yesterday", "2026-01-02T09:00:00Z", "from"),
    ("custom", "2024-01-01T00:00:00Z", "2026-01-02T09:00:00Z", "to"),
])
def test_invalid_ranges_name_field(key, start, end, field):
    with pytest.raises(ValidationError) as caught:
        timerange.resolve_range(key, now=START, start_text=start, end_text=end)
    assert caught.value.field == field


def test_steps_and_bucket_units():
    assert timerange.pick_step(timedelta(hours=1)) == timedelta(minutes=1)
    assert timerange.pick_step(timedelta(hours=24)) == timedelta(minutes=15)
    assert timerange.pick_step(timedelta(days=7)) == timedelta(hours=2)
    assert timerange.pick_bucket_unit(timedelta(minutes=15)) == "minute"
    assert timerange.pick_bucket_unit(timedelta(days=7)) == "hour"
    assert timerange.pick_bucket_unit(timedelta(days=30)) == "day"


def test_split_closed_at_local_day_boundaries():
    start = datetime(2026, 3, 7, 22, 15, tzinfo=timezone.utc)
    end = datetime(2026, 3, 9, 10, 5, tzinfo=timezone.utc)
    head, closed, tail = timerange.split_closed(start, end, "day", "America/New_York")
    # New York moves to daylight time on 2026-03-08, so that day starts at 05:00 UTC and the next at 04:00.
    assert head == (start, datetime(2026, 3, 8, 5, tzinfo=timezone.utc))
    assert closed == (datetime(2026, 3, 8, 5, tzinfo=timezone.utc), datetime(2026, 3, 9, 4, tzinfo=timezone.utc))
    assert tail == (datetime(2026, 3, 9, 4, tzinfo=timezone.utc), end)


def test_split_closed_short_and_aligned_windows():
    start = datetime(2026, 3, 7, 22, 15, tzinfo=timezone.utc)
    assert timerange.split_closed(start, start + timedelta(minutes=20), "hour", "UTC") == (
        None, None, (start, start + timedelta(minutes=20)))
    aligned = datetime(2026, 3, 7, tzinfo=timezone.utc)
    head, closed, tail = timerange.split_closed(aligned, aligned + 2 * DAY, "day", "UTC")
    assert head is None
    assert closed == (aligned, aligned + 2 * DAY)
    assert tail is None
