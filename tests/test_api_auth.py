"""Authentication and authorization of the API: sign-in, token rotation, API keys, roles and scopes."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import jwt
import pytest

from aim.services import sessions, users
from test_api_support import (  # noqa: F401 - client is a fixture
    ADMIN_ACTOR,
    PASSWORD,
    assert_problem,
    bearer,
    client,
    make_key,
    make_user,
    register_agent,
    signed_attestation,
    signed_verify,
)

pytestmark = pytest.mark.integration


def login(client, email, password=PASSWORD):
    return client.post("/api/v1/auth/login", json={"email": email, "password": password})


@pytest.fixture
def admin(db, org_id):
    return bearer(make_key(db, org_id, "admin"))


# --- sign-in and tokens -------------------------------------------------------------------------


def test_login_returns_token_pair(client, db, org_id):
    user = make_user(db, org_id, "analyst")
    response = login(client, user["email"].upper())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    assert 800 < body["expires_in"] <= 900
    assert body["access_token"] != body["refresh_token"]
    listed = client.get("/api/v1/agents", headers=bearer(body["access_token"]))
    assert listed.status_code == 200, listed.text


def test_login_wrong_password_401(client, db, org_id):
    user = make_user(db, org_id)
    assert_problem(login(client, user["email"], "wrong password 123"), 401, "invalid_credentials")
    assert_problem(login(client, "nobody@example.com"), 401, "invalid_credentials")


def test_login_failure_audited(client, db, org_id, admin):
    user = make_user(db, org_id)
    login(client, user["email"], "wrong password 123")
    audit = client.get("/api/v1/audit-logs", params={"action": "user.login", "result": "failure"}, headers=admin)
    assert audit.json()["total"] == 1


def test_deactivated_user_cannot_login(client, db, org_id):
    user = make_user(db, org_id)
    users.set_active(db, org_id, user["id"], ADMIN_ACTOR, False)
    assert_problem(login(client, user["email"]), 401, "invalid_credentials")


def test_refresh_rotates_and_invalidates_old(client, db, org_id):
    user = make_user(db, org_id)
    first = login(client, user["email"]).json()
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200, second.text
    pair = second.json()
    assert pair["refresh_token"] != first["refresh_token"]
    assert pair["session_id"] == first["session_id"]
    third = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]})
    assert third.status_code == 200, third.text


def test_refresh_reuse_revokes_session(client, db, org_id):
    user = make_user(db, org_id)
    first = login(client, user["email"]).json()
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]}).json()
    reused = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_problem(reused, 401, "refresh_token_reused")
    # The whole family is gone: the newest refresh token and the access tokens stop working too.
    assert_problem(client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]}), 401,
                   "session_revoked")
    assert_problem(client.get("/api/v1/agents", headers=bearer(second["access_token"])), 401, "session_revoked")


def test_logout_with_refresh_token(client, db, org_id):
    user = make_user(db, org_id)
    pair = login(client, user["email"]).json()
    response = client.post("/api/v1/auth/logout", json={"refresh_token": pair["refresh_token"]})
    assert response.status_code == 204, response.text
    assert_problem(client.get("/api/v1/agents", headers=bearer(pair["access_token"])), 401, "session_revoked")
    assert_problem(client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}), 401,
                   "session_revoked")


def test_logout_with_access_token(client, db, org_id):
    user = make_user(db, org_id)
    pair = login(client, user["email"]).json()
    response = client.post("/api/v1/auth/logout", headers=bearer(pair["access_token"]))
    assert response.status_code == 204, response.text
    assert_problem(client.get("/api/v1/agents", headers=bearer(pair["access_token"])), 401, "session_revoked")


def test_refresh_token_refused_as_access(client, db, org_id):
    user = make_user(db, org_id)
    pair = login(client, user["email"]).json()
    body = assert_problem(client.get("/api/v1/agents", headers=bearer(pair["refresh_token"])), 401, "wrong_token_type")
    assert "access" in body["detail"]


def test_access_token_refused_as_refresh(client, db, org_id):
    user = make_user(db, org_id)
    pair = login(client, user["email"]).json()
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": pair["access_token"]})
    body = assert_problem(response, 401, "wrong_token_type")
    assert "refresh" in body["detail"]


def test_expired_access_token(client, runtime, db, org_id):
    user = make_user(db, org_id)
    pair = login(client, user["email"]).json()
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    claims.update(iat=past - timedelta(minutes=15), exp=past)
    expired = jwt.encode(claims, sessions.signing_key(runtime.secret_key), algorithm="HS256")
    body = assert_problem(client.get("/api/v1/agents", headers=bearer(expired)), 401, "expired_token")
    assert "refresh" in body["detail"]


def test_forged_token_invalid(client, db, org_id):
    user = make_user(db, org_id)
    pair = login(client, user["email"]).json()
    claims = jwt.decode(pair["access_token"], options={"verify_signature": False})
    claims["role"] = "admin"
    forged = jwt.encode(claims, b"not the instance secret, 32 bytes+", algorithm="HS256")
    assert_problem(client.get("/api/v1/agents", headers=bearer(forged)), 401, "invalid_token")
    assert_problem(client.get("/api/v1/agents", headers=bearer("garbage")), 401, "invalid_token")


def test_missing_credentials(client):
    response = client.get("/api/v1/agents")
    assert_problem(response, 401, "missing_credentials")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert_problem(client.get("/api/v1/agents", headers={"Authorization": "Basic dXNlcjpwdw=="}), 401,
                   "missing_credentials")


def test_role_change_applies_to_live_session(client, db, org_id):
    user = make_user(db, org_id, "analyst")
    token = bearer(login(client, user["email"]).json()["access_token"])
    assert client.post("/api/v1/agents", json={"name": f"a-{uuid.uuid4().hex[:6]}"}, headers=token).status_code == 201
    users.set_role(db, org_id, user["id"], ADMIN_ACTOR, "viewer")
    assert_problem(client.post("/api/v1/agents", json={"name": f"a-{uuid.uuid4().hex[:6]}"}, headers=token), 403,
                   "insufficient_role")


# --- API keys -----------------------------------------------------------------------------------


def test_api_key_create_list_revoke(client, admin, db):
    created = client.post("/api/v1/api-keys", json={"name": "ci", "role": "viewer"}, headers=admin)
    assert created.status_code == 201, created.text
    body = created.json()
    secret = body["key"]
    assert secret.startswith("aim_")
    assert body["api_key"]["prefix"] == secret[:12]
    stored = db.fetch_one("test.key_row", "SELECT key_hash, prefix FROM api_keys WHERE id = %s", (body["api_key"]["id"],))
    assert bytes(stored["key_hash"]) != secret.encode()
    assert len(bytes(stored["key_hash"])) == 32
    assert client.get("/api/v1/agents", headers=bearer(secret)).status_code == 200

    listed = client.get("/api/v1/api-keys", headers=admin).json()
    assert body["api_key"]["id"] in [item["id"] for item in listed["items"]]
    assert all("key" not in item and "key_hash" not in item for item in listed["items"])

    revoked = client.delete(f"/api/v1/api-keys/{body['api_key']['id']}", headers=admin)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None
    assert_problem(client.get("/api/v1/agents", headers=bearer(secret)), 401, "revoked_api_key")


def test_unknown_api_key(client):
    assert_problem(client.get("/api/v1/agents", headers=bearer("aim_" + "x" * 43)), 401, "invalid_api_key")


def test_expired_api_key(client, db, org_id):
    secret = make_key(db, org_id, "admin")
    db.execute("test.expire_key", "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE prefix = %s",
               (secret[:12],))
    from aim.cache import get_cache

    get_cache().invalidate_all("sessions")
    assert_problem(client.get("/api/v1/agents", headers=bearer(secret)), 401, "expired_api_key")


def test_api_keys_admin_only(client, db, org_id):
    analyst = bearer(make_key(db, org_id, "analyst"))
    body = assert_problem(client.get("/api/v1/api-keys", headers=analyst), 403, "insufficient_role")
    assert "admin" in body["detail"]
    assert_problem(client.post("/api/v1/api-keys", json={"name": "x"}, headers=analyst), 403, "insufficient_role")


# --- roles --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["manager", "viewer"])
def test_read_only_roles(client, db, org_id, admin, role):
    agent, _ = register_agent(client, admin)
    reader = bearer(make_key(db, org_id, role))
    assert client.get("/api/v1/agents", headers=reader).status_code == 200
    assert client.get(f"/api/v1/agents/{agent['id']}/trust", headers=reader).status_code == 200
    assert client.get("/api/v1/dashboard/stats", headers=reader).status_code == 200
    assert client.get("/api/v1/alerts", headers=reader).status_code == 200
    assert client.get("/api/v1/mcp-servers", headers=reader).status_code == 200
    assert_problem(client.post("/api/v1/agents", json={"name": "nope"}, headers=reader), 403, "insufficient_role")
    assert_problem(client.post(f"/api/v1/agents/{agent['id']}/suspend", headers=reader), 403, "insufficient_role")
    assert_problem(client.post("/api/v1/mcp-servers", json={"name": "n", "url": "https://x.example"}, headers=reader),
                   403, "insufficient_role")
    assert_problem(client.get("/api/v1/audit-logs", headers=reader), 403, "insufficient_role")


def test_analyst_acts_but_not_admin_things(client, db, org_id):
    analyst = bearer(make_key(db, org_id, "analyst"))
    agent, _ = register_agent(client, analyst)
    assert client.post(f"/api/v1/agents/{agent['id']}/suspend", headers=analyst).status_code == 200
    assert client.get("/api/v1/audit-logs", headers=analyst).status_code == 200
    assert_problem(client.post("/api/v1/api-keys", json={"name": "x"}, headers=analyst), 403, "insufficient_role")


# --- agent-scoped keys --------------------------------------------------------------------------


def test_agent_scoped_key(client, db, org_id, admin):
    agent, key = register_agent(client, admin)
    other, other_key = register_agent(client, admin)
    scoped = bearer(make_key(db, org_id, "analyst", agent_id=uuid.UUID(agent["id"])))

    own = client.post(f"/api/v1/agents/{agent['id']}/verify", json=signed_verify(agent["id"], key), headers=scoped)
    assert own.status_code == 200, own.text
    assert own.json()["decision"] == "allowed"
    requested = client.post(f"/api/v1/agents/{agent['id']}/capability-requests", json={"capability": "x:read"},
                            headers=scoped)
    assert requested.status_code == 201, requested.text

    foreign = client.post(f"/api/v1/agents/{other['id']}/verify", json=signed_verify(other["id"], other_key),
                          headers=scoped)
    body = assert_problem(foreign, 403, "wrong_scope")
    assert agent["id"] in body["detail"]
    assert_problem(client.post(f"/api/v1/agents/{other['id']}/capability-requests", json={"capability": "x:read"},
                               headers=scoped), 403, "wrong_scope")
    assert_problem(client.get("/api/v1/agents", headers=scoped), 403, "wrong_scope")
    assert_problem(client.post(f"/api/v1/agents/{agent['id']}/suspend", headers=scoped), 403, "wrong_scope")
    assert_problem(client.get("/api/v1/audit-logs", headers=scoped), 403, "wrong_scope")


def test_agent_scoped_key_attests_only_own_agent(client, db, org_id, admin):
    agent, key = register_agent(client, admin)
    other, other_key = register_agent(client, admin)
    server = client.post("/api/v1/mcp-servers", json={"name": "tools", "url": f"https://{uuid.uuid4().hex[:8]}.example/sse"},
                         headers=admin).json()
    scoped = bearer(make_key(db, org_id, "analyst", agent_id=uuid.UUID(agent["id"])))
    assert client.get("/api/v1/mcp-servers", headers=scoped).status_code == 200
    own = client.post(f"/api/v1/mcp-servers/{server['id']}/attest",
                      json=signed_attestation(agent["id"], key, server["id"], ["search"]), headers=scoped)
    assert own.status_code == 200, own.text
    foreign = client.post(f"/api/v1/mcp-servers/{server['id']}/attest",
                          json=signed_attestation(other["id"], other_key, server["id"], ["search"]), headers=scoped)
    assert_problem(foreign, 403, "wrong_scope")
