import uuid
from datetime import timedelta

import pytest

from aim import identity
from aim.errors import Conflict, NotFound, ValidationError
from aim.services import agents, alerts
from aim.services.actor import Actor

pytestmark = pytest.mark.integration

ADMIN = Actor("user", "test-admin", role="admin")


def _name():
    return f"agent-{uuid.uuid4().hex[:8]}"


def _audit_actions(db, org_id, resource_id):
    rows = db.fetch_all(
        "test.audit_actions",
        "SELECT action FROM audit_logs WHERE organization_id = %s AND resource_id = %s ORDER BY id",
        (org_id, str(resource_id)),
    )
    return [row["action"] for row in rows]


def test_register_with_generated_key_returns_private_key_once(db, org_id):
    registered = agents.register_agent(db, org_id, ADMIN, name=_name(), capabilities=["db:read"])
    agent = registered.agent

    assert registered.private_key_pem.startswith("-----BEGIN PRIVATE KEY-----")
    private_key = identity.load_private_key(registered.private_key_pem)
    signature = identity.sign(private_key, b"hello")
    assert identity.verify_signature(bytes(agent["public_key"]), b"hello", signature)
    assert agent["key_origin"] == "generated"
    stored = db.fetch_one("test.agent_row", "SELECT encrypted_private_key FROM agents WHERE id = %s", (agent["id"],))
    assert stored["encrypted_private_key"] is None
    assert _audit_actions(db, org_id, agent["id"]) == ["agent.register"]


def test_register_with_supplied_key_stores_only_public_key(db, org_id):
    pair = identity.generate_keypair()
    registered = agents.register_agent(db, org_id, ADMIN, name=_name(), public_key=pair.public_key_base64())
    assert registered.private_key_pem is None
    assert bytes(registered.agent["public_key"]) == pair.public_key
    assert registered.agent["key_id"] == pair.key_id


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"agent_type": "Bad Type"}, "agent_type"),
        ({"capabilities": ["db read"]}, "capabilities[0]"),
        ({"public_key": "AAAA"}, "public_key"),
        ({"status": "revoked"}, "status"),
    ],
)
def test_register_rejects_bad_input(db, org_id, kwargs, field):
    arguments = {"name": _name()} | kwargs
    with pytest.raises(ValidationError) as info:
        agents.register_agent(db, org_id, ADMIN, **arguments)
    assert info.value.field == field


def test_duplicate_name_conflicts_and_writes_nothing(db, org_id):
    name = _name()
    agents.register_agent(db, org_id, ADMIN, name=name)
    with pytest.raises(Conflict):
        agents.register_agent(db, org_id, ADMIN, name=name)
    count = db.fetch_value("test.count", "SELECT count(*) FROM agents WHERE organization_id = %s AND name = %s",
                           (org_id, name))
    assert count == 1
    audited = db.fetch_value(
        "test.count_audit", "SELECT count(*) FROM audit_logs WHERE organization_id = %s AND action = 'agent.register' "
                            "AND details->>'name' = %s", (org_id, name))
    assert audited == 1


def test_lifecycle_moves_and_audit(db, org_id):
    agent = agents.register_agent(db, org_id, ADMIN, name=_name()).agent
    assert agents.suspend(db, org_id, agent["id"], ADMIN, "investigating")["status"] == "suspended"
    assert agents.reactivate(db, org_id, agent["id"], ADMIN)["status"] == "verified"
    assert agents.revoke(db, org_id, agent["id"], ADMIN, "compromised")["status"] == "revoked"
    with pytest.raises(Conflict, match="revoked"):
        agents.reactivate(db, org_id, agent["id"], ADMIN)
    assert _audit_actions(db, org_id, agent["id"]) == [
        "agent.register", "agent.suspend", "agent.reactivate", "agent.revoke",
    ]


def test_rotate_key_keeps_previous_for_grace(db, org_id):
    agent = agents.register_agent(db, org_id, ADMIN, name=_name()).agent
    rotated = agents.rotate_key(db, org_id, agent["id"], ADMIN, grace=timedelta(hours=2))

    assert rotated.private_key_pem is not None
    assert rotated.agent["key_id"] != agent["key_id"]
    assert rotated.agent["previous_key_id"] == agent["key_id"]
    assert bytes(rotated.agent["previous_public_key"]) == bytes(agent["public_key"])
    history = agents.list_keys(db, org_id, agent["id"])
    assert [row["key_id"] for row in history] == [rotated.agent["key_id"], agent["key_id"]]
    assert history[1]["retired_at"] is not None


def test_rotate_key_rejects_same_key(db, org_id):
    pair = identity.generate_keypair()
    agent = agents.register_agent(db, org_id, ADMIN, name=_name(), public_key=pair.public_key_base64()).agent
    with pytest.raises(Conflict, match="current key"):
        agents.rotate_key(db, org_id, agent["id"], ADMIN, public_key=pair.public_key_base64())


def test_capability_grant_revoke_and_requests(db, org_id):
    agent = agents.register_agent(db, org_id, ADMIN, name=_name(), capabilities=["db:read"]).agent
    assert agents.grant_capability(db, org_id, agent["id"], "files:*", ADMIN) == ["db:read", "files:*"]
    assert agents.revoke_capability(db, org_id, agent["id"], "db:read", ADMIN) == ["files:*"]
    with pytest.raises(NotFound):
        agents.revoke_capability(db, org_id, agent["id"], "db:read", ADMIN)

    request = agents.request_capability(db, org_id, agent["id"], "payments:refund", Actor("agent", str(agent["id"])),
                                        justification="refund flow")
    with pytest.raises(Conflict, match="pending"):
        agents.request_capability(db, org_id, agent["id"], "payments:refund", ADMIN)
    decided = agents.decide_capability_request(db, org_id, request["id"], ADMIN, approve=True)
    assert decided["status"] == "approved"
    assert "payments:refund" in agents.get_agent(db, org_id, agent["id"])["capabilities"]
    with pytest.raises(Conflict, match="already approved"):
        agents.decide_capability_request(db, org_id, request["id"], ADMIN, approve=False)

    rejected = agents.request_capability(db, org_id, agent["id"], "secrets:read", ADMIN)
    agents.decide_capability_request(db, org_id, rejected["id"], ADMIN, approve=False, note="no")
    assert "secrets:read" not in agents.get_agent(db, org_id, agent["id"])["capabilities"]
    actions = _audit_actions(db, org_id, request["id"]) + _audit_actions(db, org_id, rejected["id"])
    assert actions == [
        "capability_request.create", "capability_request.approve",
        "capability_request.create", "capability_request.reject",
    ]


def test_update_rejects_unknown_field(db, org_id):
    agent = agents.register_agent(db, org_id, ADMIN, name=_name()).agent
    with pytest.raises(ValidationError) as info:
        agents.update_agent(db, org_id, agent["id"], ADMIN, {"status": "verified"})
    assert info.value.field == "status"
    updated = agents.update_agent(db, org_id, agent["id"], ADMIN, {"description": "nightly ETL"})
    assert updated["description"] == "nightly ETL"


def test_other_organization_cannot_see_agent(db, org_id):
    agent = agents.register_agent(db, org_id, ADMIN, name=_name()).agent
    other = db.fetch_value("test.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id",
                           (f"other-{uuid.uuid4().hex[:8]}",))
    with pytest.raises(NotFound):
        agents.get_agent(db, other, agent["id"])
    with pytest.raises(NotFound):
        agents.suspend(db, other, agent["id"], ADMIN)


def test_alert_acknowledge_and_resolve_by_id(db, org_id):
    with db.transaction() as conn:
        first = alerts.raise_alert(db, conn, org_id, alert_type="test", severity="high", title="one",
                                   resource_type="agent", resource_id="a1")
        again = alerts.raise_alert(db, conn, org_id, alert_type="test", severity="high", title="one",
                                   resource_type="agent", resource_id="a1")
        second = alerts.raise_alert(db, conn, org_id, alert_type="test", severity="low", title="two",
                                    resource_type="agent", resource_id="a2")
    assert first.created
    assert not again.created
    assert again.id == first.id
    assert again.occurrences == 2

    acknowledged = alerts.acknowledge(db, org_id, first.id, ADMIN)
    assert acknowledged["status"] == "acknowledged"
    assert alerts.get_alert(db, org_id, second.id)["status"] == "open"
    with pytest.raises(Conflict):
        alerts.acknowledge(db, org_id, first.id, ADMIN)
    assert alerts.resolve(db, org_id, first.id, ADMIN)["status"] == "resolved"
    with pytest.raises(Conflict, match="resolved"):
        alerts.resolve(db, org_id, first.id, ADMIN)
    with pytest.raises(NotFound):
        alerts.resolve(db, org_id, uuid.uuid4(), ADMIN)
    assert _audit_actions(db, org_id, first.id) == ["alert.raised", "alert.acknowledge", "alert.resolve"]

    with db.transaction() as conn:
        reopened = alerts.raise_alert(db, conn, org_id, alert_type="test", severity="high", title="one",
                                      resource_type="agent", resource_id="a1")
    assert reopened.created
    assert reopened.id != first.id


def test_alert_rejects_unknown_severity(db, org_id):
    with pytest.raises(ValidationError) as info:
        with db.transaction() as conn:
            alerts.raise_alert(db, conn, org_id, alert_type="t", severity="urgent", title="x",
                               resource_type="agent", resource_id="a")
    assert info.value.field == "severity"
