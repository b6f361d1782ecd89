"""MCP server, audit log, alert and overview routes of the API."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from aim.services import alerts, organizations
from conftest import MCP_REGISTRY_FILE
from test_api_support import (  # noqa: F401 - client is a fixture
    assert_problem,
    bearer,
    client,
    make_key,
    register_agent,
    signed_attestation,
    signed_verify,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(db, org_id):
    return bearer(make_key(db, org_id, "admin"))


def _server(client, headers, **extra):
    body = {"name": f"tools-{uuid.uuid4().hex[:6]}", "url": f"https://{uuid.uuid4().hex[:8]}.example.com/sse", **extra}
    response = client.post("/api/v1/mcp-servers", json=body, headers=headers)
    assert response.status_code == 201, response.text
    return response.json()


def _raise_alert(db, org_id, severity="high"):
    with db.transaction() as conn:
        return alerts.raise_alert(db, conn, org_id, alert_type="test", severity=severity, title="test alert",
                                  resource_type="agent", resource_id=uuid.uuid4().hex).id


# --- MCP servers --------------------------------------------------------------------------------


def test_mcp_register_get_list(client, admin):
    server = _server(client, admin, known_capabilities=["search", "fetch"])
    assert server["known_capabilities"] == ["fetch", "search"]
    got = client.get(f"/api/v1/mcp-servers/{server['id']}", headers=admin)
    assert got.status_code == 200
    assert got.json()["url"] == server["url"]
    page = client.get("/api/v1/mcp-servers", headers=admin).json()
    assert [item["id"] for item in page["items"]] == [server["id"]]
    assert page["total"] == 1


def test_mcp_list_sees_new_server_despite_cache(client, admin):
    _server(client, admin)
    assert client.get("/api/v1/mcp-servers", headers=admin).json()["total"] == 1
    _server(client, admin)
    assert client.get("/api/v1/mcp-servers", headers=admin).json()["total"] == 2


def test_mcp_duplicate_url_conflict(client, admin):
    server = _server(client, admin)
    response = client.post("/api/v1/mcp-servers", json={"name": "again", "url": server["url"]}, headers=admin)
    assert_problem(response, 409)


def test_mcp_lookup_by_url(client, admin):
    server = _server(client, admin)
    page = client.get("/api/v1/mcp-servers", params={"url": server["url"].upper().replace("/SSE", "/sse")},
                      headers=admin).json()
    assert [item["id"] for item in page["items"]] == [server["id"]]
    missing = client.get("/api/v1/mcp-servers", params={"url": "https://nowhere.example"}, headers=admin).json()
    assert missing["items"] == []


def test_mcp_attest_baseline_then_drift(client, admin):
    agent, key = register_agent(client, admin)
    server = _server(client, admin)
    base = f"/api/v1/mcp-servers/{server['id']}/attest"
    first = client.post(base, json=signed_attestation(agent["id"], key, server["id"], ["fetch", "search"]), headers=admin)
    assert first.status_code == 200, first.text
    assert first.json()["baseline_set"] is True
    assert first.json()["drift"] is False
    drifted = client.post(base, json=signed_attestation(agent["id"], key, server["id"], ["fetch", "search", "exec"]),
                          headers=admin)
    assert drifted.status_code == 200, drifted.text
    assert drifted.json()["drift"] is True
    assert drifted.json()["added"] == ["exec"]
    assert drifted.json()["alert_id"]
    assert client.get(f"/api/v1/mcp-servers/{server['id']}", headers=admin).json()["drift_detected"] is True
    open_alerts = client.get("/api/v1/alerts", params={"alert_type": "capability_drift"}, headers=admin).json()
    assert open_alerts["total"] == 1


def test_mcp_attest_replay_rejected(client, admin):
    agent, key = register_agent(client, admin)
    server = _server(client, admin)
    attestation = signed_attestation(agent["id"], key, server["id"], ["search"])
    base = f"/api/v1/mcp-servers/{server['id']}/attest"
    assert client.post(base, json=attestation, headers=admin).status_code == 200
    assert_problem(client.post(base, json=attestation, headers=admin), 422, "replay")


def test_mcp_attest_suspended_agent_forbidden(client, admin):
    agent, key = register_agent(client, admin)
    server = _server(client, admin)
    client.post(f"/api/v1/agents/{agent['id']}/suspend", headers=admin)
    response = client.post(f"/api/v1/mcp-servers/{server['id']}/attest",
                           json=signed_attestation(agent["id"], key, server["id"], ["search"]), headers=admin)
    assert_problem(response, 403)


def test_mcp_import_registry_file(client, admin):
    document = json.loads(MCP_REGISTRY_FILE.read_text())
    first = client.post("/api/v1/mcp-servers/import", json=document, headers=admin)
    assert first.status_code == 200, first.text
    report = first.json()
    assert report["created"] > 400
    assert report["created"] + report["updated"] + report["unchanged"] + len(report["skipped"]) == len(document)
    again = client.post("/api/v1/mcp-servers/import", json={"servers": document[:50]}, headers=admin).json()
    assert again["created"] == 0
    assert again["updated"] == 0
    listed = client.get("/api/v1/mcp-servers", params={"source": "registry", "limit": 1}, headers=admin).json()
    assert listed["total"] == report["created"]


def test_mcp_import_bad_body(client, admin):
    assert_problem(client.post("/api/v1/mcp-servers/import", json={"servers": []}, headers=admin), 422)
    assert_problem(client.post("/api/v1/mcp-servers/import", json={"entries": []}, headers=admin), 422)
    skipped = client.post("/api/v1/mcp-servers/import", json=[{"name": "no-url"}], headers=admin)
    assert skipped.status_code == 200, skipped.text
    assert skipped.json()["skipped"][0]["index"] == 0


def test_mcp_cross_organization_not_found(client, db, admin):
    server = _server(client, admin)
    other_org = organizations.get_or_create(db, f"other-{uuid.uuid4().hex[:8]}")
    other = bearer(make_key(db, other_org["id"], "admin"))
    assert_problem(client.get(f"/api/v1/mcp-servers/{server['id']}", headers=other), 404)
    assert client.get("/api/v1/mcp-servers", headers=other).json()["items"] == []
    assert client.get("/api/v1/mcp-servers", params={"url": server["url"]}, headers=other).json()["items"] == []


# --- audit logs ---------------------------------------------------------------------------------


def test_audit_logs_filters(client, admin):
    agent, _ = register_agent(client, admin)
    client.post(f"/api/v1/agents/{agent['id']}/suspend", headers=admin)
    page = client.get("/api/v1/audit-logs", params={"resource_type": "agent", "resource_id": agent["id"]},
                      headers=admin).json()
    actions = [item["action"] for item in page["items"]]
    assert actions == ["agent.suspend", "agent.register"]
    suspended = client.get("/api/v1/audit-logs", params={"action": "agent.suspend"}, headers=admin).json()
    assert suspended["total"] == 1
    assert suspended["items"][0]["result"] == "success"
    by_actor = client.get("/api/v1/audit-logs", params={"actor": suspended["items"][0]["actor_id"]},
                          headers=admin).json()
    assert by_actor["total"] >= 2


def test_audit_logs_time_window(client, admin):
    register_agent(client, admin)
    now = datetime.now(timezone.utc)
    inside = client.get("/api/v1/audit-logs", params={"start": (now - timedelta(minutes=5)).isoformat(),
                                                       "end": (now + timedelta(minutes=5)).isoformat()},
                        headers=admin).json()
    assert inside["total"] >= 1
    before = client.get("/api/v1/audit-logs", params={"end": (now - timedelta(days=1)).isoformat()},
                        headers=admin).json()
    assert before["total"] == 0
    naive = assert_problem(client.get("/api/v1/audit-logs", params={"start": "2025-01-01T00:00:00"}, headers=admin), 422)
    assert naive["field"] == "start"
    reversed_window = assert_problem(
        client.get("/api/v1/audit-logs", params={"start": now.isoformat(), "end": (now - timedelta(hours=1)).isoformat()},
                   headers=admin), 422)
    assert reversed_window["field"] == "end"


def test_audit_logs_paging_and_tampered_cursor(client, admin):
    for _ in range(3):
        register_agent(client, admin)
    first = client.get("/api/v1/audit-logs", params={"limit": 2}, headers=admin).json()
    assert first["next_cursor"]
    second = client.get("/api/v1/audit-logs", params={"limit": 2, "cursor": first["next_cursor"]}, headers=admin).json()
    assert not {item["id"] for item in first["items"]} & {item["id"] for item in second["items"]}
    cursor = first["next_cursor"]
    tampered = cursor[:-2] + ("A" if cursor[-2] != "A" else "B") + cursor[-1]
    body = assert_problem(client.get("/api/v1/audit-logs", params={"cursor": tampered}, headers=admin), 400)
    assert body["field"] == "cursor"
    other_filters = client.get("/api/v1/audit-logs", params={"cursor": cursor, "action": "agent.register"},
                               headers=admin)
    assert_problem(other_filters, 400)
    assert_problem(client.get("/api/v1/audit-logs", params={"cursor": "not a cursor"}, headers=admin), 400)


def test_audit_cursor_from_other_organization(client, db, admin):
    for _ in range(2):
        register_agent(client, admin)
    cursor = client.get("/api/v1/audit-logs", params={"limit": 1}, headers=admin).json()["next_cursor"]
    other_org = organizations.get_or_create(db, f"other-{uuid.uuid4().hex[:8]}")
    other = bearer(make_key(db, other_org["id"], "admin"))
    assert_problem(client.get("/api/v1/audit-logs", params={"cursor": cursor}, headers=other), 400)


# --- alerts -------------------------------------------------------------------------------------


def test_alerts_list_acknowledge_resolve(client, db, org_id, admin):
    alert_id = _raise_alert(db, org_id, "critical")
    _raise_alert(db, org_id, "low")
    critical = client.get("/api/v1/alerts", params={"severity": "critical"}, headers=admin).json()
    assert [item["id"] for item in critical["items"]] == [str(alert_id)]
    acknowledged = client.post(f"/api/v1/alerts/{alert_id}/acknowledge", json={"note": "looking"}, headers=admin)
    assert acknowledged.status_code == 200, acknowledged.text
    assert acknowledged.json()["status"] == "acknowledged"
    assert_problem(client.post(f"/api/v1/alerts/{alert_id}/acknowledge", headers=admin), 409)
    resolved = client.post(f"/api/v1/alerts/{alert_id}/resolve", headers=admin)
    assert resolved.json()["status"] == "resolved"
    open_page = client.get("/api/v1/alerts", params={"status": "open"}, headers=admin).json()
    assert str(alert_id) not in [item["id"] for item in open_page["items"]]
    audit = client.get("/api/v1/audit-logs", params={"resource_type": "alert", "resource_id": str(alert_id)},
                       headers=admin).json()
    assert [item["action"] for item in audit["items"]][:2] == ["alert.resolve", "alert.acknowledge"]


def test_alerts_bad_filter_and_cross_org(client, db, org_id, admin):
    alert_id = _raise_alert(db, org_id)
    assert_problem(client.get("/api/v1/alerts", params={"severity": "urgent"}, headers=admin), 422)
    other_org = organizations.get_or_create(db, f"other-{uuid.uuid4().hex[:8]}")
    other = bearer(make_key(db, other_org["id"], "admin"))
    assert_problem(client.post(f"/api/v1/alerts/{alert_id}/resolve", headers=other), 404)


# --- overview -----------------------------------------------------------------------------------


def test_dashboard_stats(client, db, org_id, admin):
    agent, key = register_agent(client, admin)
    client.post(f"/api/v1/agents/{agent['id']}/verify", json=signed_verify(agent["id"], key), headers=admin)
    _raise_alert(db, org_id, "high")
    response = client.get("/api/v1/dashboard/stats", headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["agents"]["total"] == 1
    assert body["agents"]["verified"] == 1
    assert body["open_alerts"]["high"] == 1
    assert body["mcp_servers"]["total"] == 0
