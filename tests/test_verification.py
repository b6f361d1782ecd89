import uuid
from datetime import datetime, timedelta, timezone

import pytest

from aim import identity, trust
from aim.errors import NotFound, ValidationError
from aim.services import agents, verification
from aim.services.actor import Actor

pytestmark = pytest.mark.integration

ADMIN = Actor("user", "test-admin", role="admin")


def _register(db, org_id, capabilities=("db:read", "files:*"), status="verified"):
    registered = agents.register_agent(
        db, org_id, ADMIN, name=f"agent-{uuid.uuid4().hex[:8]}", agent_type="assistant",
        capabilities=list(capabilities), status=status,
    )
    return registered.agent, identity.load_private_key(registered.private_key_pem)


def _set_trust(db, agent_id, score):
    db.execute("test.set_trust", "UPDATE agents SET trust_score = %s WHERE id = %s", (score, agent_id))
    from aim.cache import get_cache

    get_cache().invalidate("trust_scores", str(agent_id))


def _request(agent, private_key, action="db:read", *, when=None, nonce=None, resource="customers/1", **extra):
    when = when or datetime.now(timezone.utc)
    fields = {
        "agent_id": str(agent["id"]),
        "action": action,
        "resource": resource,
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "nonce": nonce or identity.new_nonce(),
        **extra,
    }
    fields["signature"] = identity.sign_request(private_key, fields)
    return fields


def _verify(runtime, org_id, agent, request):
    return verification.verify(
        runtime.db, runtime.redis, runtime.settings.redis_prefix, org_id, agent["id"], request
    )


def _alerts(db, org_id, agent_id, alert_type):
    return db.fetch_all(
        "test.alerts",
        "SELECT * FROM alerts WHERE organization_id = %s AND %s = ANY(related_agent_ids) AND alert_type = %s",
        (org_id, agent_id, alert_type),
    )


def _audit_for(db, org_id, verification_id):
    return db.fetch_one(
        "test.audit_for",
        """SELECT * FROM audit_logs WHERE organization_id = %s AND action = 'agent.verify'
           AND details ->> 'verification_id' = %s""",
        (org_id, str(verification_id)),
    )


def _event(db, verification_id):
    return db.fetch_one("test.event", "SELECT * FROM verification_events WHERE id = %s", (verification_id,))


def test_allowed_request_writes_event_and_audit(runtime, org_id):
    agent, key = _register(runtime.db, org_id)
    _set_trust(runtime.db, agent["id"], 0.9)

    decision = _verify(runtime, org_id, agent, _request(agent, key))

    assert decision.decision == "allowed", decision.detail
    assert decision.reason == "ok"
    assert decision.risk_class == "low"
    event = _event(runtime.db, decision.verification_id)
    assert event["decision"] == "allowed"
    assert event["signature_valid"] is True
    audit_row = _audit_for(runtime.db, org_id, decision.verification_id)
    assert audit_row is not None
    assert audit_row["result"] == "success"


def test_prefix_capability_covers_action(runtime, org_id):
    agent, key = _register(runtime.db, org_id)
    _set_trust(runtime.db, agent["id"], 0.9)
    decision = _verify(runtime, org_id, agent, _request(agent, key, action="files:write"))
    assert decision.decision == "allowed", decision.detail


@pytest.mark.parametrize(
    ("case", "reason", "alert_type"),
    [
        ("wrong_key", "bad_signature", "invalid_signature"),
        ("tampered_body", "bad_signature", "invalid_signature"),
        ("malformed_signature", "bad_signature", "invalid_signature"),
        ("unknown_key_id", "unknown_key", None),
        ("stale_timestamp", "stale_timestamp", None),
        ("future_timestamp", "stale_timestamp", None),
        ("suspended", "agent_not_verified", None),
        ("missing_capability", "capability_not_granted", "capability_violation"),
        ("low_trust", "trust_below_threshold", None),
    ],
)
def test_denial_reasons(runtime, org_id, case, reason, alert_type):
    db = runtime.db
    agent, key = _register(db, org_id)
    _set_trust(db, agent["id"], 0.9)
    request = _request(agent, key)

    if case == "wrong_key":
        request = _request(agent, identity.load_private_key(identity.generate_keypair().private_key_pem()))
    elif case == "tampered_body":
        request["resource"] = "customers/2"
    elif case == "malformed_signature":
        request["signature"] = "not base64 at all!"
    elif case == "unknown_key_id":
        request = _request(agent, key, key_id="ed25519:AAAAAAAAAAAAAAAA")
    elif case == "stale_timestamp":
        request = _request(agent, key, when=datetime.now(timezone.utc) - timedelta(seconds=301))
    elif case == "future_timestamp":
        request = _request(agent, key, when=datetime.now(timezone.utc) + timedelta(seconds=301))
    elif case == "suspended":
        agents.suspend(db, org_id, agent["id"], ADMIN, reason="test")
    elif case == "missing_capability":
        request = _request(agent, key, action="db:write")
    elif case == "low_trust":
        request = _request(agent, key, action="files:delete")  # high risk: needs 0.70
        _set_trust(db, agent["id"], 0.6)

    decision = _verify(runtime, org_id, agent, request)

    assert decision.decision == "denied"
    assert decision.reason == reason, decision.detail
    event = _event(db, decision.verification_id)
    assert event["decision"] == "denied"
    assert event["reason"] == reason
    audit_row = _audit_for(db, org_id, decision.verification_id)
    assert audit_row is not None
    assert audit_row["result"] == "denied"
    assert audit_row["details"]["reason"] == reason
    if alert_type:
        assert len(_alerts(db, org_id, agent["id"], alert_type)) == 1
    else:
        for kind in ("invalid_signature", "replayed_nonce", "capability_violation"):
            assert _alerts(db, org_id, agent["id"], kind) == []


def test_replayed_nonce_is_denied_with_alert(runtime, org_id):
    agent, key = _register(runtime.db, org_id)
    _set_trust(runtime.db, agent["id"], 0.9)
    request = _request(agent, key)

    first = _verify(runtime, org_id, agent, request)
    second = _verify(runtime, org_id, agent, request)

    assert first.decision == "allowed"
    assert second.decision == "denied"
    assert second.reason == "replay"
    assert len(_alerts(runtime.db, org_id, agent["id"], "replayed_nonce")) == 1


def test_replay_is_caught_after_redis_loses_nonces(runtime, org_id):
    agent, key = _register(runtime.db, org_id)
    _set_trust(runtime.db, agent["id"], 0.9)
    request = _request(agent, key)
    assert _verify(runtime, org_id, agent, request).decision == "allowed"

    prefix = runtime.settings.redis_prefix
    nonce_keys = list(runtime.redis.scan_iter(match=f"{prefix}nonce:*"))
    assert nonce_keys
    runtime.redis.delete(*nonce_keys)

    decision = _verify(runtime, org_id, agent, request)
    assert decision.decision == "denied"
    assert decision.reason == "replay"
    assert len(_alerts(runtime.db, org_id, agent["id"], "replayed_nonce")) == 1


def test_repeated_bad_signatures_share_one_alert(runtime, org_id):
    agent, key = _register(runtime.db, org_id)
    for _ in range(3):
        request = _request(agent, key)
        request["resource"] = "tampered"
        assert _verify(runtime, org_id, agent, request).reason == "bad_signature"
    rows = _alerts(runtime.db, org_id, agent["id"], "invalid_signature")
    assert len(rows) == 1
    assert rows[0]["occurrences"] == 3
    assert rows[0]["title"].endswith(f"from agent {agent['name']}")


def test_bad_signature_lowers_trust(runtime, org_id):
    agent, key = _register(runtime.db, org_id)
    good = _verify(runtime, org_id, agent, _request(agent, key))
    trust.recalculate_agent(runtime.db, org_id, agent["id"], reason="test baseline", actor="test")
    before = runtime.db.fetch_value("test.trust", "SELECT trust_score FROM agents WHERE id = %s", (agent["id"],))
    request = _request(agent, key)
    request["action"] = "db:delete"
    _verify(runtime, org_id, agent, request)
    after = runtime.db.fetch_value("test.trust", "SELECT trust_score FROM agents WHERE id = %s", (agent["id"],))
    assert good.verification_id
    assert after < before


def test_previous_key_inside_and_after_grace(runtime, org_id):
    db = runtime.db
    agent, old_key = _register(db, org_id)
    _set_trust(db, agent["id"], 0.9)
    agents.rotate_key(db, org_id, agent["id"], ADMIN, grace=timedelta(hours=24))

    inside = _verify(runtime, org_id, agent, _request(agent, old_key))
    assert inside.decision == "allowed", inside.detail

    db.execute(
        "test.expire_grace",
        "UPDATE agents SET previous_key_valid_until = now() - interval '1 second' WHERE id = %s",
        (agent["id"],),
    )
    from aim.cache import get_cache

    get_cache().invalidate("agent_metadata", str(agent["id"]))
    after = _verify(runtime, org_id, agent, _request(agent, old_key))
    assert after.decision == "denied"
    assert after.reason == "bad_signature"


def test_every_risk_class_passable_by_trusted_agent(runtime, org_id):
    agent, key = _register(runtime.db, org_id, capabilities=("*",))
    _set_trust(runtime.db, agent["id"], 0.95)
    for action, risk_class in [("db:read", "low"), ("db:write", "medium"), ("db:delete", "high"),
                               ("secrets:read", "critical")]:
        decision = _verify(runtime, org_id, agent, _request(agent, key, action=action))
        assert decision.risk_class == risk_class
        assert decision.decision == "allowed", f"{action}: {decision.detail}"


def test_organization_override_changes_risk_class(runtime, org_id):
    runtime.db.execute(
        "test.override",
        """UPDATE organizations SET settings = jsonb_build_object('risk_classes', jsonb_build_object('db:read', 'critical'))
           WHERE id = %s""",
        (org_id,),
    )
    agent, key = _register(runtime.db, org_id)
    _set_trust(runtime.db, agent["id"], 0.6)
    decision = _verify(runtime, org_id, agent, _request(agent, key))
    assert decision.risk_class == "critical"
    assert decision.reason == "trust_below_threshold"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: r.pop("nonce"), "nonce"),
        (lambda r: r.update(timestamp="yesterday"), "timestamp"),
        (lambda r: r.update(extra=1), "extra"),
        (lambda r: r.update(agent_id=str(uuid.uuid4())), "agent_id"),
        (lambda r: r.update(nonce="short"), "nonce"),
        (lambda r: r.update(context=[1]), "context"),
    ],
)
def test_malformed_request_names_field(runtime, org_id, mutate, field):
    agent, key = _register(runtime.db, org_id)
    request = _request(agent, key)
    mutate(request)
    with pytest.raises(ValidationError) as info:
        _verify(runtime, org_id, agent, request)
    assert info.value.field == field


def test_other_organization_agent_is_not_found(runtime, org_id, db):
    agent, key = _register(db, org_id)
    other_org = db.fetch_value("test.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id",
                               (f"other-{uuid.uuid4().hex[:8]}",))
    with pytest.raises(NotFound):
        verification.verify(db, runtime.redis, runtime.settings.redis_prefix, other_org, agent["id"],
                            _request(agent, key))
