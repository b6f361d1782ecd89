"""The cached-read fast path: repeated GETs served from L1 before routing, with auth and limits kept."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from aim.api import create_app, fastpath
from aim.services import api_keys
from test_api_support import (  # noqa: F401 - client is a fixture
    ADMIN_ACTOR,
    assert_problem,
    bearer,
    client,
    make_key,
    make_user,
    register_agent,
)

pytestmark = pytest.mark.integration


def _new_org(db) -> uuid.UUID:
    return db.fetch_value(
        "test.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id", (f"org-{uuid.uuid4().hex[:10]}",)
    )


def test_repeated_get_served_before_routing(client, db, org_id):
    headers = bearer(make_key(db, org_id, "viewer"))
    first = client.get("/api/v1/agents?limit=7", headers=headers)
    before = fastpath.served()

    second = client.get("/api/v1/agents?limit=7", headers=headers)

    assert second.status_code == 200, second.text
    assert fastpath.served() == before + 1
    assert second.content == first.content
    assert second.headers["content-type"] == "application/json"
    assert second.headers["x-request-id"]


def test_other_query_takes_normal_route(client, db, org_id):
    headers = bearer(make_key(db, org_id, "viewer"))
    client.get("/api/v1/agents?limit=7", headers=headers)
    before = fastpath.served()

    other = client.get("/api/v1/agents?limit=8", headers=headers)

    assert other.status_code == 200, other.text
    assert fastpath.served() == before


def test_revoked_key_rejected_after_fast_hit(client, db, org_id):
    key = api_keys.create_api_key(db, org_id, ADMIN_ACTOR, name=f"fast-{uuid.uuid4().hex[:6]}", role="viewer")
    headers = bearer(key.secret)
    client.get("/api/v1/mcp-servers?limit=5", headers=headers)
    assert client.get("/api/v1/mcp-servers?limit=5", headers=headers).status_code == 200

    api_keys.revoke_api_key(db, org_id, key.api_key["id"], ADMIN_ACTOR)

    assert_problem(client.get("/api/v1/mcp-servers?limit=5", headers=headers), 401, "revoked_api_key")


def test_other_organization_gets_own_page(client, db, org_id):
    admin = bearer(make_key(db, org_id, "admin"))
    agent, _ = register_agent(client, admin)
    other_org = _new_org(db)
    other = bearer(make_key(db, other_org, "admin"))
    client.get("/api/v1/agents?limit=50", headers=admin)
    client.get("/api/v1/agents?limit=50", headers=admin)

    first = client.get("/api/v1/agents?limit=50", headers=other)
    second = client.get("/api/v1/agents?limit=50", headers=other)

    assert [item["id"] for item in first.json()["items"]] == []
    assert [item["id"] for item in second.json()["items"]] == []
    assert agent["id"] in [item["id"] for item in client.get("/api/v1/agents?limit=50", headers=admin).json()["items"]]


def test_write_refreshes_remembered_page(client, db, org_id):
    admin = bearer(make_key(db, org_id, "admin"))
    client.get("/api/v1/agents?sort=name&limit=200", headers=admin)
    client.get("/api/v1/agents?sort=name&limit=200", headers=admin)

    agent, _ = register_agent(client, admin)
    before = fastpath.served()
    listed = client.get("/api/v1/agents?sort=name&limit=200", headers=admin)

    assert agent["id"] in [item["id"] for item in listed.json()["items"]]
    # Reloaded by the remembered loader, without FastAPI's routing.
    assert fastpath.served() == before + 1


def test_session_user_served_and_signed_out(client, db, org_id):
    user = make_user(db, org_id, "analyst")
    pair = client.post("/api/v1/auth/login", json={"email": user["email"], "password": "correct horse battery staple"})
    tokens = pair.json()
    headers = bearer(tokens["access_token"])
    client.get("/api/v1/agents?limit=3", headers=headers)
    before = fastpath.served()
    assert client.get("/api/v1/agents?limit=3", headers=headers).status_code == 200
    assert fastpath.served() == before + 1

    client.post("/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=headers)

    assert_problem(client.get("/api/v1/agents?limit=3", headers=headers), 401, "session_revoked")


def test_fast_path_counts_rate_limit(runtime, db, org_id):
    app = create_app(runtime, background_jobs=False, rate_limit_per_minute=3)
    headers = bearer(make_key(db, org_id, "viewer"))
    with TestClient(app, raise_server_exceptions=False) as limited:
        statuses = [limited.get("/api/v1/agents?limit=4", headers=headers).status_code for _ in range(3)]
        before = fastpath.served()
        over = limited.get("/api/v1/agents?limit=4", headers=headers)

    assert statuses == [200, 200, 200]
    assert fastpath.served() == before
    problem = assert_problem(over, 429, "rate_limited")
    assert "requests per minute" in problem["detail"]
    assert int(over.headers["retry-after"]) >= 1


def test_stats_rendered_on_fast_path(client, db, org_id):
    admin = bearer(make_key(db, org_id, "admin"))
    first = client.get("/api/v1/dashboard/stats", headers=admin)
    before = fastpath.served()

    second = client.get("/api/v1/dashboard/stats", headers=admin)
    served_second = fastpath.served()
    register_agent(client, admin)
    # The registration dropped the figures, so the fast path reloads them with the remembered loader.
    third = client.get("/api/v1/dashboard/stats", headers=admin)

    assert second.status_code == 200, second.text
    assert served_second == before + 1
    assert second.json() == first.json()
    assert fastpath.served() == before + 2
    assert third.json()["agents"]["total"] == first.json()["agents"]["total"] + 1
