"""The streamed CSV export route of the dashboard: session cookie, role, filters, timezone and audit."""

from __future__ import annotations

import csv
import io
import time
from datetime import datetime, timedelta, timezone

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from aim.services import sessions
from aim.ui import auth, export_route

from test_ui_audit import seed_events
from ui_support import PASSWORD, make_user

pytestmark = pytest.mark.integration


@pytest.fixture
def client(runtime):
    with TestClient(Starlette(routes=export_route.ROUTES)) as test_client:
        yield test_client


def signed_in(runtime, client: TestClient, user: dict) -> TestClient:
    pair = sessions.login(runtime.db, runtime.secret_key, user["email"], PASSWORD)
    cookie = auth.sign_session_cookie(runtime.secret_key, pair.session_id, int(time.time()) + 3600)
    client.cookies.set(auth.COOKIE_NAME, cookie)
    return client


def window(hours: int = 48) -> dict[str, str]:
    now = datetime.now(timezone.utc)
    return {"start": (now - timedelta(hours=hours)).isoformat(), "end": (now + timedelta(minutes=1)).isoformat()}


def exported_rows(response) -> list[dict]:
    assert response.status_code == 200, response.text
    return list(csv.DictReader(io.StringIO(response.text)))


def test_export_streams_every_filtered_row(runtime, db, org_id, client):
    seed_events(db, org_id, 1200)
    seed_events(db, org_id, 30, actor="agent-other")
    signed_in(runtime, client, make_user(db, org_id, "analyst"))

    response = client.get(export_route.AUDIT_EXPORT_PATH,
                          params={**window(), "actor": "agent-1", "result": "success", "tz": "UTC"})

    rows = exported_rows(response)
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith('attachment; filename="aim-audit-')
    assert len(rows) == 600
    assert {row["result"] for row in rows} == {"success"}
    assert {row["actor_id"] for row in rows} == {"agent-1"}
    assert len({row["id"] for row in rows}) == len(rows), "no row exported twice"


def test_export_uses_viewer_timezone(runtime, db, org_id, client):
    moment = datetime(2026, 1, 15, 12, 30, 45, 123000, tzinfo=timezone.utc)
    seed_events(db, org_id, 1, newest=moment)
    signed_in(runtime, client, make_user(db, org_id, "admin"))

    response = client.get(export_route.AUDIT_EXPORT_PATH, params={
        "start": (moment - timedelta(hours=1)).isoformat(), "end": (moment + timedelta(hours=1)).isoformat(),
        "tz": "Asia/Kolkata",
    })

    assert exported_rows(response)[0]["occurred_at"] == "2026-01-15T18:00:45.123000+05:30"


def test_export_is_audited(runtime, db, org_id, client):
    seed_events(db, org_id, 5)
    user = make_user(db, org_id, "analyst")
    signed_in(runtime, client, user)

    params = {**window(), "actor": "agent-1"}
    assert len(exported_rows(client.get(export_route.AUDIT_EXPORT_PATH, params=params))) == 5

    row = db.fetch_one(
        "test.export_audit",
        "SELECT actor_id, details FROM audit_logs WHERE organization_id = %s AND action = 'audit_log.export'",
        (org_id,),
    )
    assert row is not None
    assert row["actor_id"] == str(user["id"])
    assert row["details"]["rows"] == 5


def test_export_needs_a_session(runtime, db, org_id, client):
    assert client.get(export_route.AUDIT_EXPORT_PATH).status_code == 401

    client.cookies.set(auth.COOKIE_NAME, "forged.9999999999.0000")
    response = client.get(export_route.AUDIT_EXPORT_PATH)
    assert response.status_code == 401
    assert "sign in" in response.text


def test_export_rejects_signed_out_session(runtime, db, org_id, client):
    user = make_user(db, org_id, "analyst")
    pair = sessions.login(runtime.db, runtime.secret_key, user["email"], PASSWORD)
    client.cookies.set(auth.COOKIE_NAME, auth.sign_session_cookie(runtime.secret_key, pair.session_id,
                                                                  int(time.time()) + 3600))
    from aim.services.actor import Actor

    sessions.logout(runtime.db, runtime.secret_key, pair.session_id, user["organization_id"],
                    Actor("user", str(user["id"])))

    assert client.get(export_route.AUDIT_EXPORT_PATH).status_code == 401


def test_export_rejects_role_without_audit(runtime, db, org_id, client):
    # Managers see trust and agents but not the audit page.
    signed_in(runtime, client, make_user(db, org_id, "manager"))
    response = client.get(export_route.AUDIT_EXPORT_PATH)
    assert response.status_code == 403
    assert "manager" in response.text


def test_export_only_reads_own_organization(runtime, db, org_id, client):
    other = db.fetch_value("test.other_org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id",
                           (f"other-{time.time_ns()}",))
    seed_events(db, other, 7)
    seed_events(db, org_id, 2)
    signed_in(runtime, client, make_user(db, org_id, "admin"))

    params = {**window(), "actor": "agent-1"}
    assert len(exported_rows(client.get(export_route.AUDIT_EXPORT_PATH, params=params))) == 2


@pytest.mark.parametrize("params, field", [
    ({"start": "yesterday"}, "start"),
    ({"start": "2026-01-02T00:00:00"}, "start"),
    ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
    ({"tz": "Mars/Olympus"}, "tz"),
    ({"since": "2026-01-01T00:00:00Z"}, "since"),
    ({"actor": "x" * 201}, "actor"),
])
def test_export_bad_query_names_field(runtime, db, org_id, client, params, field):
    signed_in(runtime, client, make_user(db, org_id, "analyst"))
    response = client.get(export_route.AUDIT_EXPORT_PATH, params=params)
    assert response.status_code == 400
    assert f"{field}:" in response.text
