"""Fast routes: verifications and audit-log pages served before routing, with the routes' responses kept."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from aim.api import create_app, fastroutes
from test_api_support import (  # noqa: F401 - admin and client are fixtures
    admin,
    assert_problem,
    bearer,
    client,
    make_key,
    register_agent,
    signed_verify,
)

pytestmark = pytest.mark.integration


def _verify_url(agent_id) -> str:
    return f"/api/v1/agents/{agent_id}/verify"


def _warm(client, headers) -> None:
    """Resolve the credential once through a normal route, so that it is in L1."""
    assert client.get("/api/v1/agents?limit=1", headers=headers).status_code == 200


def test_allowed_served_on_fast_path(client, admin):
    agent, key = register_agent(client, admin)
    _warm(client, admin)
    before = fastroutes.served("verify")

    response = client.post(_verify_url(agent["id"]), json=signed_verify(agent["id"], key), headers=admin)

    assert response.status_code == 200, response.text
    assert fastroutes.served("verify") == before + 1
    body = response.json()
    assert body["decision"] == "allowed"
    assert body["reason"] == "ok"
    assert body["agent_id"] == agent["id"]
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]


def test_replay_denied_on_fast_path(client, admin):
    agent, key = register_agent(client, admin)
    _warm(client, admin)
    request = signed_verify(agent["id"], key)
    before = fastroutes.served("verify")

    first = client.post(_verify_url(agent["id"]), json=request, headers=admin).json()
    second = client.post(_verify_url(agent["id"]), json=request, headers=admin).json()

    assert fastroutes.served("verify") == before + 2
    assert first["decision"] == "allowed"
    assert second["decision"] == "denied"
    assert second["reason"] == "replay"


def test_malformed_body_takes_normal_route(client, admin):
    agent, key = register_agent(client, admin)
    _warm(client, admin)
    request = signed_verify(agent["id"], key)
    del request["nonce"]
    before = fastroutes.served("verify")

    response = client.post(_verify_url(agent["id"]), json=request, headers=admin)

    body = assert_problem(response, 422)
    assert body["field"] == "nonce"
    assert fastroutes.served("verify") == before


def test_invalid_json_takes_normal_route(client, admin):
    agent, _ = register_agent(client, admin)
    _warm(client, admin)
    before = fastroutes.served("verify")

    response = client.post(_verify_url(agent["id"]), content=b'{"agent_id": ', headers={
        **admin, "content-type": "application/json"})

    assert_problem(response, 422)
    assert fastroutes.served("verify") == before


def test_query_string_takes_normal_route(client, admin):
    agent, key = register_agent(client, admin)
    _warm(client, admin)
    before = fastroutes.served("verify")

    response = client.post(_verify_url(agent["id"]) + "?debug=1", json=signed_verify(agent["id"], key), headers=admin)

    body = assert_problem(response, 422)
    assert body["field"] == "debug"
    assert fastroutes.served("verify") == before


def test_other_agent_scope_forbidden(client, db, org_id, admin):
    agent, key = register_agent(client, admin)
    other, _ = register_agent(client, admin)
    scoped = bearer(make_key(db, org_id, "admin", agent_id=uuid.UUID(other["id"])))
    # Resolves the scoped key through the normal route, so that it is in L1.
    assert client.post(_verify_url(other["id"]), json={}, headers=scoped).status_code == 422
    before = fastroutes.served("verify")

    response = client.post(_verify_url(agent["id"]), json=signed_verify(agent["id"], key), headers=scoped)

    assert_problem(response, 403, "wrong_scope")
    assert fastroutes.served("verify") == before


def test_viewer_role_forbidden(client, db, org_id, admin):
    agent, key = register_agent(client, admin)
    viewer = bearer(make_key(db, org_id, "viewer"))
    _warm(client, viewer)

    response = client.post(_verify_url(agent["id"]), json=signed_verify(agent["id"], key), headers=viewer)

    assert_problem(response, 403, "insufficient_role")


def test_agent_of_other_org_not_found(client, db, admin):
    agent, key = register_agent(client, admin)
    other_org = db.fetch_value(
        "test.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id", (f"org-{uuid.uuid4().hex[:10]}",)
    )
    stranger = bearer(make_key(db, other_org, "admin"))
    _warm(client, stranger)
    before = fastroutes.served("verify")

    response = client.post(_verify_url(agent["id"]), json=signed_verify(agent["id"], key), headers=stranger)

    assert_problem(response, 404)
    assert fastroutes.served("verify") == before + 1


def test_rate_limit_counted_once(runtime, db, org_id):
    app = create_app(runtime, background_jobs=False, rate_limit_per_minute=3)
    headers = bearer(make_key(db, org_id, "admin"))
    with TestClient(app, raise_server_exceptions=False) as limited:
        agent, key = register_agent(limited, headers)
        _warm(limited, headers)
        before = fastroutes.served("verify")
        allowed = limited.post(_verify_url(agent["id"]), json=signed_verify(agent["id"], key), headers=headers)
        over = limited.post(_verify_url(agent["id"]), json=signed_verify(agent["id"], key), headers=headers)

    assert allowed.status_code == 200, allowed.text
    assert fastroutes.served("verify") == before + 1
    problem = assert_problem(over, 429, "rate_limited")
    assert "requests per minute" in problem["detail"]
    assert int(over.headers["retry-after"]) >= 1


def test_fast_and_normal_bodies_match(client, db, org_id):
    headers = bearer(make_key(db, org_id, "admin"))
    agent, key = register_agent(client, headers)
    before = fastroutes.served("verify")

    # The key was resolved once, by the registration, so the first verification is on the fast path.
    fast = client.post(_verify_url(agent["id"]), json=signed_verify(agent["id"], key, "files:write"), headers=headers)
    cold = bearer(make_key(db, org_id, "admin"))
    normal = client.post(_verify_url(agent["id"]), json=signed_verify(agent["id"], key, "files:write"), headers=cold)

    assert fastroutes.served("verify") == before + 1
    assert fast.status_code == normal.status_code == 200
    assert set(fast.json()) == set(normal.json())
    assert fast.json()["reason"] == normal.json()["reason"] == "capability_not_granted"
    assert fast.headers["content-type"] == normal.headers["content-type"]


# --- audit-log pages ------------------------------------------------------------------------------

AUDIT = "/api/v1/audit-logs"


@pytest.fixture
def analyst(db, org_id):
    return bearer(make_key(db, org_id, "analyst"))


def test_audit_pages_served_on_fast_path(client, admin, analyst):
    for _ in range(3):
        register_agent(client, admin)
    first = client.get(AUDIT + "?limit=2", headers=analyst)
    assert first.status_code == 200, first.text
    before = fastroutes.served("audit")

    fast_first = client.get(AUDIT + "?limit=2", headers=analyst)
    cursor = fast_first.json()["next_cursor"]
    second = client.get(AUDIT, params={"cursor": cursor, "limit": 2}, headers=analyst)

    assert fastroutes.served("audit") == before + 2
    assert fast_first.status_code == 200, fast_first.text
    assert fast_first.json()["items"] == first.json()["items"]
    assert fast_first.headers["content-type"] == "application/json"
    assert second.status_code == 200, second.text
    assert len(second.json()["items"]) == 2
    assert {item["id"] for item in second.json()["items"]}.isdisjoint(item["id"] for item in first.json()["items"])


@pytest.mark.parametrize(("query", "status"), [
    ("?limit=0", 422), ("?limit=abc", 422), ("?limit=1001", 422), ("?limit=%C2%B2", 422), ("?debug=1", 422),
    ("?limit=2&limit=3", 200), ("?action=agent.register", 200), ("?cursor=", 400),
])
def test_audit_other_queries_take_normal_route(client, analyst, query, status):
    client.get(AUDIT + "?limit=1", headers=analyst)
    before = fastroutes.served("audit")

    response = client.get(AUDIT + query, headers=analyst)

    assert fastroutes.served("audit") == before
    assert response.status_code == status, response.text


def test_audit_tampered_cursor_rejected(client, analyst):
    client.get(AUDIT + "?limit=1", headers=analyst)
    before = fastroutes.served("audit")

    response = client.get(AUDIT + "?cursor=not-a-cursor", headers=analyst)

    assert_problem(response, 400)
    assert fastroutes.served("audit") == before + 1


def test_audit_viewer_forbidden(client, db, org_id):
    viewer = bearer(make_key(db, org_id, "viewer"))
    client.get("/api/v1/agents?limit=1", headers=viewer)
    before = fastroutes.served("audit")

    response = client.get(AUDIT, headers=viewer)

    assert_problem(response, 403, "insufficient_role")
    assert fastroutes.served("audit") == before


# --- registrations ------------------------------------------------------------------------------

AGENTS = "/api/v1/agents"
MCP_SERVERS = "/api/v1/mcp-servers"


def _agent_body(**extra) -> dict:
    return {"name": f"fast-{uuid.uuid4().hex[:10]}", "capabilities": ["db:read"], **extra}


def _server_body(**extra) -> dict:
    name = f"fast-{uuid.uuid4().hex[:10]}"
    return {"name": name, "url": f"https://{name}.example.com/mcp", "known_capabilities": ["tools/list"], **extra}


def test_register_agent_on_fast_path(client, admin):
    _warm(client, admin)
    before = fastroutes.served("register_agent")

    response = client.post(AGENTS, json=_agent_body(), headers=admin)

    assert response.status_code == 201, response.text
    assert fastroutes.served("register_agent") == before + 1
    body = response.json()
    assert body["agent"]["capabilities"] == ["db:read"]
    assert body["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    assert client.get(f"{AGENTS}/{body['agent']['id']}", headers=admin).json()["name"] == body["agent"]["name"]


def test_fast_and_normal_registrations_match(client, db, org_id):
    headers = bearer(make_key(db, org_id, "admin"))
    _warm(client, headers)
    before = fastroutes.served("register_agent")

    fast = client.post(AGENTS, json=_agent_body(description="fast"), headers=headers)
    cold = bearer(make_key(db, org_id, "admin"))
    normal = client.post(AGENTS, json=_agent_body(description="fast"), headers=cold)

    assert fastroutes.served("register_agent") == before + 1
    assert fast.status_code == normal.status_code == 201
    fast_agent, normal_agent = fast.json()["agent"], normal.json()["agent"]
    assert set(fast.json()) == set(normal.json())
    assert set(fast_agent) == set(normal_agent)
    different = {"id", "name", "public_key", "key_id", "created_by", "created_at", "updated_at", "key_created_at"}
    assert {name: value for name, value in fast_agent.items() if name not in different} == \
        {name: value for name, value in normal_agent.items() if name not in different}
    assert fast.headers["content-type"] == normal.headers["content-type"]


@pytest.mark.parametrize("body", [
    {"capabilities": ["db:read"]},                       # name missing
    {"name": "", "capabilities": []},                    # name too short
    {"name": "x", "unknown": 1},                         # unknown field
    {"name": "x", "status": "revoked"},                  # status not allowed for a new agent
])
def test_invalid_registration_takes_normal_route(client, admin, body):
    _warm(client, admin)
    before = fastroutes.served("register_agent")

    response = client.post(AGENTS, json=body, headers=admin)

    assert_problem(response, 422)
    assert fastroutes.served("register_agent") == before


def test_non_json_registration_takes_normal_route(client, admin):
    _warm(client, admin)
    before = fastroutes.served("register_agent")

    response = client.post(AGENTS, content=b'{"name": "plain-text"}', headers={**admin, "content-type": "text/plain"})

    assert_problem(response, 422)
    assert fastroutes.served("register_agent") == before


def test_duplicate_name_conflicts_on_fast_path(client, admin):
    _warm(client, admin)
    body = _agent_body()
    assert client.post(AGENTS, json=body, headers=admin).status_code == 201
    before = fastroutes.served("register_agent")

    response = client.post(AGENTS, json=body, headers=admin)

    assert_problem(response, 409)
    assert fastroutes.served("register_agent") == before + 1


def test_agent_scoped_key_cannot_register(client, db, org_id, admin):
    agent, _ = register_agent(client, admin)
    scoped = bearer(make_key(db, org_id, "admin", agent_id=uuid.UUID(agent["id"])))
    client.get(MCP_SERVERS + "?limit=1", headers=scoped)
    before = fastroutes.served("register_agent")

    response = client.post(AGENTS, json=_agent_body(), headers=scoped)

    assert_problem(response, 403, "wrong_scope")
    assert fastroutes.served("register_agent") == before


def test_viewer_cannot_register(client, db, org_id):
    viewer = bearer(make_key(db, org_id, "viewer"))
    _warm(client, viewer)

    agent = client.post(AGENTS, json=_agent_body(), headers=viewer)
    server = client.post(MCP_SERVERS, json=_server_body(), headers=viewer)

    assert_problem(agent, 403, "insufficient_role")
    assert_problem(server, 403, "insufficient_role")


def test_register_server_on_fast_path(client, admin):
    _warm(client, admin)
    before = fastroutes.served("register_server")
    body = _server_body()

    response = client.post(MCP_SERVERS, json=body, headers=admin)
    again = client.post(MCP_SERVERS, json=body, headers=admin)

    assert response.status_code == 201, response.text
    assert fastroutes.served("register_server") == before + 2
    created = response.json()
    assert created["url"] == body["url"]
    assert created["known_capabilities"] == ["tools/list"]
    assert created["source"] == "manual"
    assert_problem(again, 409)
    listed = client.get(MCP_SERVERS, params={"url": body["url"]}, headers=admin).json()["items"]
    assert [item["id"] for item in listed] == [created["id"]]


def test_invalid_servers_rejected_on_both_paths(client, admin):
    _warm(client, admin)
    before = fastroutes.served("register_server")

    missing = client.post(MCP_SERVERS, json={"name": "no-url"}, headers=admin)
    bad_scheme = client.post(MCP_SERVERS, json=_server_body(url="ftp://example.com/mcp"), headers=admin)

    assert_problem(missing, 422)
    assert fastroutes.served("register_server") == before + 1
    problem = assert_problem(bad_scheme, 422)
    assert problem["field"] == "url"
