"""Agent routes of the API: registration, reads, lifecycle, keys, verification, trust and capabilities."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from aim import identity
from aim.services import organizations
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


def test_register_with_generated_key(client, admin):
    response = client.post("/api/v1/agents", json={"name": "billing-bot", "capabilities": ["db:read"]}, headers=admin)
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["agent"]["name"] == "billing-bot"
    assert body["agent"]["status"] == "verified"
    assert body["agent"]["capabilities"] == ["db:read"]
    assert body["private_key_pem"].startswith("-----BEGIN PRIVATE KEY-----")
    assert len(identity.decode_base64(body["agent"]["public_key"])) == 32


def test_register_with_supplied_key(client, admin):
    pair = identity.generate_keypair()
    response = client.post("/api/v1/agents", json={"name": "own-key", "public_key": pair.public_key_base64()},
                           headers=admin)
    assert response.status_code == 201, response.text
    assert response.json()["private_key_pem"] is None
    assert response.json()["agent"]["key_origin"] == "supplied"


def test_register_duplicate_name_conflict(client, admin):
    client.post("/api/v1/agents", json={"name": "twin"}, headers=admin)
    assert_problem(client.post("/api/v1/agents", json={"name": "twin"}, headers=admin), 409)


def test_register_unknown_field_rejected(client, admin):
    body = assert_problem(client.post("/api/v1/agents", json={"name": "x", "colour": "red"}, headers=admin), 422)
    assert body["field"] == "colour"
    assert body["errors"][0]["field"] == "colour"


def test_register_bad_public_key_names_field(client, admin):
    body = assert_problem(client.post("/api/v1/agents", json={"name": "bad-key", "public_key": "abc"}, headers=admin), 422)
    assert body["field"] == "public_key"
    assert "32" in body["detail"]


def test_list_agents_page_shape(client, admin):
    for _ in range(3):
        register_agent(client, admin)
    response = client.get("/api/v1/agents", params={"limit": 2}, headers=admin)
    assert response.status_code == 200, response.text
    page = response.json()
    assert len(page["items"]) == 2
    assert page["total"] == 3
    assert page["total_is_estimate"] is False
    assert page["next_cursor"]
    following = client.get("/api/v1/agents", params={"limit": 2, "cursor": page["next_cursor"]}, headers=admin).json()
    assert len(following["items"]) == 1
    assert following["next_cursor"] is None
    seen = {item["id"] for item in page["items"] + following["items"]}
    assert len(seen) == 3


def test_list_agents_served_from_cache(client, admin):
    from aim.cache import get_cache

    register_agent(client, admin)
    first = client.get("/api/v1/agents", params={"limit": 7}, headers=admin)
    hits_before = get_cache().stats()["agent_list"]["l1_hit"]
    second = client.get("/api/v1/agents", params={"limit": 7}, headers=admin)
    assert second.status_code == 200
    assert second.json() == first.json()
    assert get_cache().stats()["agent_list"]["l1_hit"] == hits_before + 1


def test_list_agents_cache_follows_writes(client, admin):
    agent, key = register_agent(client, admin)

    def listed() -> dict:
        items = client.get("/api/v1/agents", params={"limit": 1000}, headers=admin).json()["items"]
        return {item["id"]: item for item in items}

    assert listed()[agent["id"]]["last_seen_at"] is None
    verified = client.post(f"/api/v1/agents/{agent['id']}/verify", json=signed_verify(agent["id"], key), headers=admin)
    assert verified.json()["decision"] == "allowed"
    assert listed()[agent["id"]]["last_seen_at"] is not None

    client.patch(f"/api/v1/agents/{agent['id']}", json={"description": "reads invoices"}, headers=admin)
    assert listed()[agent["id"]]["description"] == "reads invoices"

    client.post(f"/api/v1/agents/{agent['id']}/suspend", headers=admin)
    assert listed()[agent["id"]]["status"] == "suspended"

    second, _ = register_agent(client, admin)
    assert second["id"] in listed()


def test_list_agents_filters(client, admin):
    agent, _ = register_agent(client, admin)
    client.post(f"/api/v1/agents/{agent['id']}/suspend", headers=admin)
    register_agent(client, admin)
    page = client.get("/api/v1/agents", params={"status": "suspended"}, headers=admin).json()
    assert [item["id"] for item in page["items"]] == [agent["id"]]
    by_name = client.get("/api/v1/agents", params={"name_prefix": agent["name"][:10], "sort": "name"}, headers=admin)
    assert agent["id"] in [item["id"] for item in by_name.json()["items"]]


def test_get_patch_agent(client, admin):
    agent, _ = register_agent(client, admin)
    got = client.get(f"/api/v1/agents/{agent['id']}", headers=admin)
    assert got.status_code == 200
    assert got.json()["trust_factors"]
    patched = client.patch(f"/api/v1/agents/{agent['id']}", json={"description": "reads invoices"}, headers=admin)
    assert patched.status_code == 200, patched.text
    assert patched.json()["description"] == "reads invoices"
    assert patched.json()["name"] == agent["name"]


def test_lifecycle_suspend_reactivate_revoke(client, admin):
    agent, _ = register_agent(client, admin)
    base = f"/api/v1/agents/{agent['id']}"
    assert client.post(f"{base}/suspend", json={"reason": "investigation"}, headers=admin).json()["status"] == "suspended"
    assert client.post(f"{base}/reactivate", headers=admin).json()["status"] == "verified"
    assert client.post(f"{base}/revoke", headers=admin).json()["status"] == "revoked"
    assert_problem(client.post(f"{base}/reactivate", headers=admin), 409)


def test_delete_revokes_and_audits(client, admin):
    agent, _ = register_agent(client, admin)
    response = client.delete(f"/api/v1/agents/{agent['id']}", headers=admin)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "revoked"
    audit = client.get("/api/v1/audit-logs", params={"action": "agent.revoke", "resource_id": agent["id"]},
                       headers=admin).json()
    assert audit["total"] == 1
    assert audit["items"][0]["actor_type"] == "api_key"


def test_delete_documented_as_revoke(client):
    operation = client.get("/openapi.json").json()["paths"]["/api/v1/agents/{agent_id}"]["delete"]
    assert "revoke" in operation["description"].lower()
    assert "audit" in operation["description"].lower()


def test_rotate_key_old_key_valid_in_grace(client, admin):
    agent, old_key = register_agent(client, admin)
    response = client.post(f"/api/v1/agents/{agent['id']}/rotate-key", json={"grace_hours": 1}, headers=admin)
    assert response.status_code == 200, response.text
    rotated = response.json()
    assert rotated["agent"]["key_id"] != agent["key_id"]
    assert rotated["agent"]["previous_key_id"] == agent["key_id"]
    new_key = identity.load_private_key(rotated["private_key_pem"])
    for key in (old_key, new_key):
        decision = client.post(f"/api/v1/agents/{agent['id']}/verify", json=signed_verify(agent["id"], key),
                               headers=admin).json()
        assert decision["decision"] == "allowed", decision


def test_verify_allowed(client, admin):
    agent, key = register_agent(client, admin, capabilities=("db:read",))
    response = client.post(f"/api/v1/agents/{agent['id']}/verify", json=signed_verify(agent["id"], key), headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["decision"] == "allowed"
    assert body["reason"] == "ok"
    assert body["risk_class"] == "low"
    assert uuid.UUID(body["verification_id"])
    assert 0 <= body["trust_score"] <= 1


def test_verify_replay_denied(client, admin):
    agent, key = register_agent(client, admin)
    request = signed_verify(agent["id"], key)
    first = client.post(f"/api/v1/agents/{agent['id']}/verify", json=request, headers=admin).json()
    second = client.post(f"/api/v1/agents/{agent['id']}/verify", json=request, headers=admin).json()
    assert first["decision"] == "allowed"
    assert second["decision"] == "denied"
    assert second["reason"] == "replay"


def test_verify_capability_not_granted(client, admin):
    agent, key = register_agent(client, admin, capabilities=("db:read",))
    body = client.post(f"/api/v1/agents/{agent['id']}/verify", json=signed_verify(agent["id"], key, "files:write"),
                       headers=admin).json()
    assert body["decision"] == "denied"
    assert body["reason"] == "capability_not_granted"


def test_verify_bad_signature_and_stale(client, admin):
    agent, key = register_agent(client, admin)
    other = identity.generate_keypair()
    forged = client.post(f"/api/v1/agents/{agent['id']}/verify",
                         json=signed_verify(agent["id"], identity.load_private_key(other.private_key_pem())),
                         headers=admin).json()
    assert forged["reason"] == "bad_signature"
    stale = signed_verify(agent["id"], key, when=datetime.now(timezone.utc) - timedelta(minutes=10))
    assert client.post(f"/api/v1/agents/{agent['id']}/verify", json=stale, headers=admin).json()["reason"] == "stale_timestamp"


def test_verify_malformed_request_422(client, admin):
    agent, key = register_agent(client, admin)
    request = signed_verify(agent["id"], key)
    del request["nonce"]
    body = assert_problem(client.post(f"/api/v1/agents/{agent['id']}/verify", json=request, headers=admin), 422)
    assert body["field"] == "nonce"


def test_verify_tampered_field_denied(client, admin):
    agent, key = register_agent(client, admin, capabilities=("db:*",))
    request = signed_verify(agent["id"], key, "db:read")
    request["action"] = "db:delete"
    body = client.post(f"/api/v1/agents/{agent['id']}/verify", json=request, headers=admin).json()
    assert body["decision"] == "denied"
    assert body["reason"] == "bad_signature"


def test_trust_factors_and_history(client, admin):
    agent, key = register_agent(client, admin)
    response = client.get(f"/api/v1/agents/{agent['id']}/trust", params={"limit": 5}, headers=admin)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body["factors"]) >= {"verification", "uptime", "age", "feedback"}
    for factor in body["factors"].values():
        assert factor["provenance"] in ("measured", "no data")
    assert body["history"]["total"] >= 1
    assert body["history"]["items"][0]["reason"] == "agent registered"


def test_capabilities_grant_list_withdraw(client, admin):
    agent, _ = register_agent(client, admin, capabilities=())
    base = f"/api/v1/agents/{agent['id']}/capabilities"
    granted = client.post(base, json={"capability": "files:*"}, headers=admin)
    assert granted.status_code == 200, granted.text
    assert [c["capability"] for c in granted.json()["items"]] == ["files:*"]
    assert [c["capability"] for c in client.get(base, headers=admin).json()["items"]] == ["files:*"]
    withdrawn = client.delete(f"{base}/files:*", headers=admin)
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["items"] == []
    assert_problem(client.delete(f"{base}/files:*", headers=admin), 404)


def test_capability_request_approve_grants(client, admin):
    agent, _ = register_agent(client, admin, capabilities=())
    created = client.post(f"/api/v1/agents/{agent['id']}/capability-requests",
                          json={"capability": "reports:read", "justification": "monthly report"}, headers=admin)
    assert created.status_code == 201, created.text
    request_id = created.json()["id"]
    pending = client.get("/api/v1/capability-requests", params={"agent_id": agent["id"]}, headers=admin).json()
    assert [item["id"] for item in pending["items"]] == [request_id]
    approved = client.post(f"/api/v1/capability-requests/{request_id}/approve", json={"note": "ok"}, headers=admin)
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "approved"
    capabilities = client.get(f"/api/v1/agents/{agent['id']}/capabilities", headers=admin).json()["items"]
    assert [c["capability"] for c in capabilities] == ["reports:read"]
    assert_problem(client.post(f"/api/v1/capability-requests/{request_id}/reject", headers=admin), 409)


def test_capability_request_reject(client, admin):
    agent, _ = register_agent(client, admin, capabilities=())
    request_id = client.post(f"/api/v1/agents/{agent['id']}/capability-requests", json={"capability": "db:write"},
                             headers=admin).json()["id"]
    rejected = client.post(f"/api/v1/capability-requests/{request_id}/reject", headers=admin)
    assert rejected.json()["status"] == "rejected"
    assert client.get(f"/api/v1/agents/{agent['id']}/capabilities", headers=admin).json()["items"] == []


def test_cross_organization_is_not_found(client, db, admin):
    agent, key = register_agent(client, admin)
    other_org = organizations.get_or_create(db, f"other-{uuid.uuid4().hex[:8]}")
    other = bearer(make_key(db, other_org["id"], "admin"))
    base = f"/api/v1/agents/{agent['id']}"
    assert_problem(client.get(base, headers=other), 404)
    assert_problem(client.patch(base, json={"description": "x"}, headers=other), 404)
    assert_problem(client.delete(base, headers=other), 404)
    assert_problem(client.post(f"{base}/suspend", headers=other), 404)
    assert_problem(client.post(f"{base}/rotate-key", headers=other), 404)
    assert_problem(client.get(f"{base}/trust", headers=other), 404)
    assert_problem(client.get(f"{base}/capabilities", headers=other), 404)
    assert_problem(client.post(f"{base}/capabilities", json={"capability": "x:y"}, headers=other), 404)
    assert_problem(client.post(f"{base}/verify", json=signed_verify(agent["id"], key), headers=other), 404)
    assert_problem(client.post(f"{base}/capability-requests", json={"capability": "x:y"}, headers=other), 404)
    listed = client.get("/api/v1/agents", headers=other).json()
    assert agent["id"] not in [item["id"] for item in listed["items"]]
    assert client.get(base, headers=admin).status_code == 200


def test_malformed_uuid_is_422(client, admin):
    body = assert_problem(client.get("/api/v1/agents/not-a-uuid", headers=admin), 422)
    assert body["field"] == "agent_id"
