"""Alerts page: actions act on the selected alert id while new alerts arrive, filters and role gating."""

from __future__ import annotations

import uuid

import pytest
from streamlit.testing.v1 import AppTest

from aim.services import alerts
from aim.services.actor import system
from aim.ui import auth

from ui_support import APP, make_user, navigation_mode  # noqa: F401 - navigation_mode is an autouse fixture

pytestmark = pytest.mark.integration


def raise_alert(db, org_id, title: str, severity: str = "high") -> uuid.UUID:
    with db.transaction() as conn:
        raised = alerts.raise_alert(
            db, conn, org_id, alert_type="invalid_signature", severity=severity, title=title,
            resource_type="agent", resource_id=str(uuid.uuid4()), dedup_key=f"test:{uuid.uuid4()}",
        )
    return raised.id


def status_of(db, org_id, alert_id) -> str:
    return alerts.get_alert(db, org_id, alert_id)["status"]


def alerts_page(user: dict, **params: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    auth.sign_in_session(at.session_state, user)
    at.run()
    at.switch_page("pages/alerts.py")
    for name, value in params.items():
        at.query_params[name] = value
    return at.run()


def titles(at: AppTest) -> list[str]:
    assert len(at.dataframe) >= 1, f"no table rendered; errors: {[e.value for e in at.error]}"
    return list(at.dataframe[0].value["title"])


def test_acknowledge_selected_while_alerts_arrive(db, org_id):
    ids = [raise_alert(db, org_id, f"alert {i}") for i in range(5)]
    selected = ids[2]
    at = alerts_page(make_user(db, org_id, "analyst"), alert=str(selected))
    position_before = titles(at).index("alert 2")

    # New alerts arrive at the top, and the live refresh re-renders the table.
    arrived = [raise_alert(db, org_id, f"new {i}", severity="critical") for i in range(3)]
    at.run()
    assert titles(at).index("alert 2") == position_before + 3
    assert at.query_params.get("alert") == str(selected)

    at.button(key="alert_acknowledge").click().run()
    assert status_of(db, org_id, selected) == "acknowledged"
    for other in [*ids[:2], *ids[3:], *arrived]:
        assert status_of(db, org_id, other) == "open"
    assert at.query_params.get("alert") == str(selected)
    assert any("acknowledged" in str(s.value) for s in at.success)


def test_resolve_acts_on_selected_id(db, org_id):
    ids = [raise_alert(db, org_id, f"alert {i}") for i in range(3)]
    at = alerts_page(make_user(db, org_id, "admin"), alert=str(ids[0]))
    raise_alert(db, org_id, "late arrival")
    at.run()
    at.text_input(key="alert_note").input("false positive")
    at.button(key="alert_resolve").click().run()

    assert status_of(db, org_id, ids[0]) == "resolved"
    assert status_of(db, org_id, ids[1]) == "open"
    assert status_of(db, org_id, ids[2]) == "open"
    assert "alert 0" not in titles(at), "resolved alerts leave the open list"


def test_acknowledge_disabled_unless_open(db, org_id):
    alert_id = raise_alert(db, org_id, "already seen")
    alerts.acknowledge(db, org_id, alert_id, system("test"))
    at = alerts_page(make_user(db, org_id, "analyst"), alert=str(alert_id), status="acknowledged")
    assert at.button(key="alert_acknowledge").disabled
    assert not at.button(key="alert_resolve").disabled
    assert titles(at) == ["already seen"]


def test_status_and_severity_filters_in_url(db, org_id):
    raise_alert(db, org_id, "crit", severity="critical")
    raise_alert(db, org_id, "low one", severity="low")
    resolved = raise_alert(db, org_id, "done", severity="critical")
    alerts.resolve(db, org_id, resolved, system("test"))

    at = alerts_page(make_user(db, org_id, "viewer"), severity="critical")
    assert titles(at) == ["crit"]

    at.query_params["status"] = "resolved"
    at.run()
    assert titles(at) == ["done"]


def test_unknown_selected_id_shows_message(db, org_id):
    raise_alert(db, org_id, "present")
    at = alerts_page(make_user(db, org_id, "analyst"), alert=str(uuid.uuid4()))
    assert any("no longer exists" in str(w.value) for w in at.warning)
    assert "alert_acknowledge" not in [b.key for b in at.button]


def test_viewer_and_manager_cannot_act(db, org_id):
    alert_id = raise_alert(db, org_id, "look only")
    for role in ("viewer", "manager"):
        at = alerts_page(make_user(db, org_id, role), alert=str(alert_id))
        assert titles(at) == ["look only"]
        assert "alert_acknowledge" not in [b.key for b in at.button]
        captions = [str(c.value) for c in at.caption]
        assert any("can view alerts but not change them" in text for text in captions), captions
    assert status_of(db, org_id, alert_id) == "open"


def test_counts_by_severity(db, org_id):
    raise_alert(db, org_id, "a", severity="critical")
    raise_alert(db, org_id, "b", severity="critical")
    raise_alert(db, org_id, "c", severity="medium")
    at = alerts_page(make_user(db, org_id, "viewer"))
    html = "\n".join(str(element.proto.body) for element in at.get("html"))
    assert "Open · critical</div><div class=\"aim-stat-value\" style=\"color:#f2495c\">2<" in html
    assert "Open · medium</div><div class=\"aim-stat-value\" style=\"color:#fade2a\">1<" in html


def column_width(element, column: str) -> str | None:
    import json

    return json.loads(element.proto.columns).get(column, {}).get("width")


def test_status_columns_fit_acknowledged(db, org_id):
    raise_alert(db, org_id, "status width check")
    user = make_user(db, org_id, "admin")

    at = alerts_page(user)
    overview = AppTest.from_file(APP, default_timeout=60)
    auth.sign_in_session(overview.session_state, user)
    overview.run()
    overview.switch_page("pages/overview.py").run()

    assert not at.exception
    assert not overview.exception
    # "small" cut "acknowledged" short in both tables.
    assert column_width(at.dataframe[0], "status") == "medium"
    # The latest-alerts table is the overview's only table.
    assert len(overview.dataframe) == 1
    assert column_width(overview.dataframe[0], "status") == "medium"
