"""Helpers shared by the API tests: the app under test, credentials and signed request bodies.

This module contains no tests. The test modules import its fixtures and helpers, so every API test
runs against the real app, PostgreSQL and Redis from conftest.py.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient

from aim import identity
from aim.api import create_app
from aim.services import api_keys, users
from aim.services.actor import system

ADMIN_ACTOR = system("tests")
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def client(runtime) -> TestClient:
    """A TestClient on a fresh app with its lifespan running, rate limiting and background jobs off."""
    app = create_app(runtime, background_jobs=False, rate_limit_per_minute=0)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def admin(db, org_id) -> dict[str, str]:
    """Authorization headers of a new admin API key of the test organization."""
    return bearer(make_key(db, org_id, "admin"))


def make_key(db, organization_id: uuid.UUID, role: str = "admin", agent_id: uuid.UUID | None = None) -> str:
    """Create an API key and return its secret."""
    name = f"test-{role}-{uuid.uuid4().hex[:6]}"
    return api_keys.create_api_key(db, organization_id, ADMIN_ACTOR, name=name, role=role, agent_id=agent_id).secret


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def make_user(db, organization_id: uuid.UUID, role: str = "admin") -> dict[str, Any]:
    email = f"user-{uuid.uuid4().hex[:10]}@example.com"
    return users.create_user(db, organization_id, ADMIN_ACTOR, email=email, password=PASSWORD, role=role)


def register_agent(client: TestClient, headers: dict[str, str], capabilities=("db:read",), **extra) -> tuple[dict, Any]:
    """Register an agent with a generated key through the API; return (agent, private key)."""
    body = {"name": f"agent-{uuid.uuid4().hex[:8]}", "agent_type": "assistant", "capabilities": list(capabilities),
            **extra}
    response = client.post("/api/v1/agents", json=body, headers=headers)
    assert response.status_code == 201, response.text
    created = response.json()
    return created["agent"], identity.load_private_key(created["private_key_pem"])


def signed_verify(agent_id, private_key, action: str = "db:read", *, resource: str = "customers/1",
                  nonce: str | None = None, when: datetime | None = None) -> dict[str, Any]:
    when = when or datetime.now(timezone.utc)
    fields = {
        "agent_id": str(agent_id), "action": action, "resource": resource,
        "timestamp": when.isoformat().replace("+00:00", "Z"), "nonce": nonce or identity.new_nonce(),
    }
    fields["signature"] = identity.sign_request(private_key, fields)
    return fields


def signed_attestation(agent_id, private_key, server_id, capabilities, *, healthy: bool = True,
                       latency_ms: float | None = 12.5) -> dict[str, Any]:
    fields = {
        "agent_id": str(agent_id), "mcp_server_id": str(server_id), "capabilities_found": list(capabilities),
        "healthy": healthy, "latency_ms": latency_ms,
        "timestamp": datetime.now(timezone.utc).isoformat().replace("+00:00", "Z"), "nonce": identity.new_nonce(),
    }
    fields["signature"] = identity.sign_request(private_key, fields)
    return fields


def assert_problem(response, status: int, reason: str | None = None) -> dict[str, Any]:
    """Check that `response` is a problem+json response with `status` (and `reason`); return its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body = response.json()
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    if reason is not None:
        assert body.get("reason") == reason, body
    return body
