"""MCP servers against real PostgreSQL and Redis: registration, listing, attestations, drift, confidence."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from aim import identity, trust
from aim.errors import Conflict, NotFound, PermissionDenied, ValidationError
from aim.services import agents, mcp_servers
from aim.services.actor import Actor
from aim.services.mcp_servers import AttestationRejected, ConfidenceSample, compute_confidence

pytestmark = pytest.mark.integration

ANALYST = Actor("user", "analyst-1", role="analyst")
BASELINE = ["files:read", "files:write", "search"]


def _server(db, org_id, **kwargs) -> dict:
    kwargs.setdefault("name", f"server-{uuid.uuid4().hex[:8]}")
    kwargs.setdefault("url", f"https://mcp.example.com/{uuid.uuid4().hex}/sse")
    return mcp_servers.register_server(db, org_id, ANALYST, **kwargs)


def _agent(db, org_id) -> tuple[uuid.UUID, object]:
    registered = agents.register_agent(db, org_id, ANALYST, name=f"agent-{uuid.uuid4().hex[:8]}",
                                       capabilities=["mcp:attest"])
    return registered.agent["id"], identity.load_private_key(registered.private_key_pem)


def _signed(agent_id, key, server, capabilities, *, healthy=True, timestamp=None, nonce=None) -> dict:
    when = timestamp or datetime.now(timezone.utc)
    fields = {
        "agent_id": str(agent_id),
        "mcp_server_id": str(server["id"]),
        "capabilities_found": list(capabilities),
        "latency_ms": 12.5,
        "healthy": healthy,
        "timestamp": when.isoformat().replace("+00:00", "Z"),
        "nonce": nonce or identity.new_nonce(),
    }
    fields["signature"] = identity.sign_request(key, fields)
    return fields


def _attest(runtime, org_id, server, request):
    return mcp_servers.attest(runtime.db, runtime.redis, runtime.settings.redis_prefix, org_id, server["id"], request)


def _attestation_count(db, server_id) -> int:
    return db.fetch_value("test.count", "SELECT count(*) FROM mcp_attestations WHERE mcp_server_id = %s", (server_id,))


def _audit_actions(db, org_id, resource_id) -> list[tuple[str, str]]:
    rows = db.fetch_all(
        "test.audit",
        "SELECT action, result FROM audit_logs WHERE organization_id = %s AND resource_id = %s ORDER BY id",
        (org_id, str(resource_id)),
    )
    return [(row["action"], row["result"]) for row in rows]


def _trust(db, agent_id) -> Decimal:
    return db.fetch_value("test.trust", "SELECT trust_score FROM agents WHERE id = %s", (agent_id,))


# --- registration -----------------------------------------------------------------------------


def test_register_stores_and_audits(db, org_id):
    server = _server(db, org_id, name="GitHub tools", url="HTTPS://MCP.Example.com/GitHub", description="issues",
                     known_capabilities=["search", "files:read", "search"])

    assert server["url"] == "https://mcp.example.com/GitHub"
    assert server["known_capabilities"] == ["files:read", "search"]
    assert server["manifest_hash"] == mcp_servers.manifest_hash(["search", "files:read"])
    assert server["source"] == "manual"
    assert server["confidence"] == Decimal("0")
    assert mcp_servers.get_server(db, org_id, server["id"])["name"] == "GitHub tools"
    assert _audit_actions(db, org_id, server["id"]) == [("mcp_server.register", "success")]


def test_register_duplicate_url_conflict(db, org_id):
    _server(db, org_id, url="https://mcp.example.com/dup")

    with pytest.raises(Conflict):
        _server(db, org_id, url="https://mcp.example.com/dup")
    # Scheme and host are case-insensitive, so this is the same URL.
    with pytest.raises(Conflict):
        _server(db, org_id, url="HTTPS://mcp.EXAMPLE.com/dup")


def test_register_same_url_in_other_org(db, org_id):
    other_org = db.fetch_value("test.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id",
                               (f"org-{uuid.uuid4().hex[:10]}",))
    first = _server(db, org_id, url="https://mcp.example.com/shared")
    second = _server(db, other_org, url="https://mcp.example.com/shared")

    assert first["id"] != second["id"]
    with pytest.raises(NotFound):
        mcp_servers.get_server(db, other_org, first["id"])


@pytest.mark.parametrize(
    "url",
    [
        "ftp://mcp.example.com/x",
        "mcp.example.com/sse",
        "https://",
        "",
        "https://mcp.example.com/" + "a" * 2048,
        "https://user:secret@mcp.example.com/sse",
        "https://mcp.example.com/a b",
        "https://mcp.example.com:99999/sse",
        None,
    ],
)
def test_register_bad_url_names_url(db, org_id, url):
    with pytest.raises(ValidationError) as raised:
        _server(db, org_id, url=url)

    assert raised.value.field == "url"


def test_register_accepts_websocket_url(db, org_id):
    server = _server(db, org_id, url="wss://mcp.example.com:8443/ws")

    assert server["url"] == "wss://mcp.example.com:8443/ws"


def test_update_and_deactivate(db, org_id):
    server = _server(db, org_id)
    other = _server(db, org_id)

    updated = mcp_servers.update_server(db, org_id, server["id"], ANALYST, {"description": "new", "version": "1.2"})
    assert updated["description"] == "new"
    assert updated["version"] == "1.2"
    with pytest.raises(Conflict):
        mcp_servers.update_server(db, org_id, server["id"], ANALYST, {"url": other["url"]})
    with pytest.raises(ValidationError) as raised:
        mcp_servers.update_server(db, org_id, server["id"], ANALYST, {"confidence": 1})
    assert raised.value.field == "confidence"

    deactivated = mcp_servers.deactivate_server(db, org_id, server["id"], ANALYST)
    assert deactivated["status"] == "inactive"
    assert _audit_actions(db, org_id, server["id"])[-2:] == [
        ("mcp_server.update", "success"), ("mcp_server.deactivate", "success"),
    ]


# --- listing ----------------------------------------------------------------------------------


def test_list_pages_by_name(db, org_id, runtime):
    names = ["delta", "Alpha", "charlie", "bravo", "echo"]
    for name in names:
        _server(db, org_id, name=name)

    seen = []
    page = mcp_servers.list_servers(db, org_id, limit=2, secret=runtime.secret_key)
    assert page.total == 5
    while True:
        seen.extend(item["name"] for item in page.items)
        if page.next_cursor is None:
            break
        page = mcp_servers.list_servers(db, org_id, limit=2, cursor=page.next_cursor, secret=runtime.secret_key)

    assert seen == ["Alpha", "bravo", "charlie", "delta", "echo"]


def test_list_filters(db, org_id):
    alpha = _server(db, org_id, name="alpha-one")
    _server(db, org_id, name="alpha-two")
    _server(db, org_id, name="beta")
    mcp_servers.deactivate_server(db, org_id, alpha["id"], ANALYST)

    by_prefix = mcp_servers.list_servers(db, org_id, name_prefix="ALPHA")
    assert [item["name"] for item in by_prefix.items] == ["alpha-one", "alpha-two"]
    inactive = mcp_servers.list_servers(db, org_id, status="inactive")
    assert [item["name"] for item in inactive.items] == ["alpha-one"]
    drifted = mcp_servers.list_servers(db, org_id, drift_detected=True)
    assert drifted.items == []
    manual = mcp_servers.list_servers(db, org_id, source="manual", sort="confidence")
    assert manual.total == 3
    with pytest.raises(ValidationError) as raised:
        mcp_servers.list_servers(db, org_id, sort="url")
    assert raised.value.field == "sort"
    with pytest.raises(ValidationError) as raised:
        mcp_servers.list_servers(db, org_id, status="gone")
    assert raised.value.field == "status"


def test_list_cache_sees_new_server(db, org_id):
    _server(db, org_id, name="first")
    before = mcp_servers.list_servers(db, org_id)
    _server(db, org_id, name="second")
    after = mcp_servers.list_servers(db, org_id)

    assert before.total == 1
    assert after.total == 2


# --- attestations -----------------------------------------------------------------------------


def test_attest_good_path(runtime, db, org_id):
    server = _server(db, org_id)
    agent_id, key = _agent(db, org_id)

    result = _attest(runtime, org_id, server, _signed(agent_id, key, server, ["search", "files:read"]))

    assert result.baseline_set is True
    assert result.drift is False
    assert result.capabilities == ["files:read", "search"]
    assert result.manifest_hash == mcp_servers.manifest_hash(["files:read", "search"])
    assert result.confidence > 0
    stored = mcp_servers.get_server(db, org_id, server["id"])
    assert stored["known_capabilities"] == ["files:read", "search"]
    assert stored["last_attested_at"] is not None
    assert stored["confidence"] == result.confidence
    row = db.fetch_one("test.attestation", "SELECT * FROM mcp_attestations WHERE id = %s", (result.attestation_id,))
    assert row["agent_id"] == agent_id
    assert row["healthy"] is True
    assert row["latency_ms"] == 12.5
    assert row["expires_at"] - row["attested_at"] == timedelta(days=30)
    connection = db.fetch_one(
        "test.connection", "SELECT * FROM agent_mcp_connections WHERE agent_id = %s AND mcp_server_id = %s",
        (agent_id, server["id"]),
    )
    assert connection is not None
    history = db.fetch_all("test.history", "SELECT confidence, reason FROM mcp_confidence_history WHERE mcp_server_id = %s",
                           (server["id"],))
    assert [(h["confidence"], h["reason"]) for h in history] == [(result.confidence, "attestation")]
    assert ("mcp_server.attest", "success") in _audit_actions(db, org_id, server["id"])


def test_attest_empty_set_is_baseline(runtime, db, org_id):
    server = _server(db, org_id)
    agent_id, key = _agent(db, org_id)

    first = _attest(runtime, org_id, server, _signed(agent_id, key, server, []))
    second = _attest(runtime, org_id, server, _signed(agent_id, key, server, ["search"]))

    assert first.baseline_set is True
    assert first.drift is False
    assert second.baseline_set is False
    assert second.drift is True
    assert second.added == ["search"]


def test_attest_by_url(runtime, db, org_id):
    server = _server(db, org_id, url="https://mcp.example.com/by-url")
    agent_id, key = _agent(db, org_id)
    fields = _signed(agent_id, key, server, ["search"])
    del fields["mcp_server_id"], fields["signature"]
    fields["url"] = "https://MCP.example.com/by-url"
    fields["signature"] = identity.sign_request(key, fields)

    result = _attest(runtime, org_id, server, fields)

    assert result.server_id == server["id"]


def test_attest_bad_signature_rejected(runtime, db, org_id):
    server = _server(db, org_id)
    agent_id, key = _agent(db, org_id)
    request = _signed(agent_id, key, server, ["search"])
    request["capabilities_found"] = ["search", "shell:exec"]  # changed after signing

    with pytest.raises(AttestationRejected) as raised:
        _attest(runtime, org_id, server, request)

    assert raised.value.reason == "bad_signature"
    assert raised.value.field == "signature"
    assert _attestation_count(db, server["id"]) == 0
    alert = db.fetch_one(
        "test.alert", "SELECT * FROM alerts WHERE organization_id = %s AND alert_type = 'invalid_signature'", (org_id,)
    )
    assert alert is not None
    assert alert["resource_id"] == str(agent_id)
    assert alert["related_agent_ids"] == [agent_id]
    assert _audit_actions(db, org_id, server["id"])[-1] == ("mcp_server.attest", "denied")
    assert mcp_servers.get_server(db, org_id, server["id"])["known_capabilities"] == []


def test_attest_malformed_signature_rejected(runtime, db, org_id):
    server = _server(db, org_id)
    agent_id, key = _agent(db, org_id)
    request = _signed(agent_id, key, server, ["search"])
    request["signature"] = "not base64!"

    with pytest.raises(AttestationRejected) as raised:
        _attest(runtime, org_id, server, request)

    assert raised.value.reason == "bad_signature"


def test_attest_replayed_nonce_rejected(runtime, db, org_id):
    server = _server(db, org_id)
    agent_id, key = _agent(db, org_id)
    request = _signed(agent_id, key, server, ["search"])
    _attest(runtime, org_id, server, request)

    with pytest.raises(AttestationRejected) as raised:
        _attest(runtime, org_id, server, request)

    assert raised.value.reason == "replay"
    assert raised.value.field == "nonce"
    assert _attestation_count(db, server["id"]) == 1


def test_attest_replay_caught_without_redis_key(runtime, db, org_id):
    server = _server(db, org_id)
    agent_id, key = _agent(db, org_id)
    request = _signed(agent_id, key, server, ["search"])
    _attest(runtime, org_id, server, request)
    runtime.redis.delete(f"{runtime.settings.redis_prefix}nonce:{agent_id}:{request['nonce']}")

    with pytest.raises(AttestationRejected) as raised:
        _attest(runtime, org_id, server, request)

    assert raised.value.reason == "replay"
    assert _attestation_count(db, server["id"]) == 1


def test_attest_stale_timestamp_rejected(runtime, db, org_id):
    server = _server(db, org_id)
    agent_id, key = _agent(db, org_id)
    old = datetime.now(timezone.utc) - timedelta(seconds=400)

    with pytest.raises(AttestationRejected) as raised:
        _attest(runtime, org_id, server, _signed(agent_id, key, server, ["search"], timestamp=old))

    assert raised.value.reason == "stale_timestamp"
    assert raised.value.field == "timestamp"
    assert _attestation_count(db, server["id"]) == 0


def test_attest_needs_verified_agent(runtime, db, org_id):
    server = _server(db, org_id)
    agent_id, key = _agent(db, org_id)
    agents.suspend(db, org_id, agent_id, ANALYST, reason="test")

    with pytest.raises(PermissionDenied):
        _attest(runtime, org_id, server, _signed(agent_id, key, server, ["search"]))

    assert _attestation_count(db, server["id"]) == 0


def test_attest_other_server_id_rejected(runtime, db, org_id):
    server = _server(db, org_id)
    other = _server(db, org_id)
    agent_id, key = _agent(db, org_id)

    with pytest.raises(ValidationError) as raised:
        _attest(runtime, org_id, server, _signed(agent_id, key, other, ["search"]))

    assert raised.value.field == "mcp_server_id"


def test_attest_missing_field_named(runtime, db, org_id):
    server = _server(db, org_id)
    agent_id, key = _agent(db, org_id)
    request = _signed(agent_id, key, server, ["search"])
    del request["healthy"]

    with pytest.raises(ValidationError) as raised:
        _attest(runtime, org_id, server, request)

    assert raised.value.field == "healthy"


def test_attest_previous_key_within_grace(runtime, db, org_id):
    server = _server(db, org_id)
    agent_id, old_key = _agent(db, org_id)
    agents.rotate_key(db, org_id, agent_id, ANALYST)

    result = _attest(runtime, org_id, server, _signed(agent_id, old_key, server, ["search"]))

    assert result.key_id == agents.get_agent(db, org_id, agent_id)["previous_key_id"]


# --- drift ------------------------------------------------------------------------------------


def test_drift_lowers_trust_of_connected_agents(runtime, db, org_id):
    server = _server(db, org_id, known_capabilities=BASELINE)
    unrelated_server = _server(db, org_id)
    agent_a, key_a = _agent(db, org_id)
    agent_b, key_b = _agent(db, org_id)
    agent_c, key_c = _agent(db, org_id)
    _attest(runtime, org_id, server, _signed(agent_a, key_a, server, BASELINE))
    _attest(runtime, org_id, server, _signed(agent_b, key_b, server, BASELINE))
    _attest(runtime, org_id, unrelated_server, _signed(agent_c, key_c, unrelated_server, ["search"]))
    for agent_id in (agent_a, agent_b, agent_c):
        trust.recalculate_agent(db, org_id, agent_id, reason="test baseline", actor="system:test")
    before = {agent_id: _trust(db, agent_id) for agent_id in (agent_a, agent_b, agent_c)}

    drifted = ["files:read", "search", "shell:exec"]
    result = _attest(runtime, org_id, server, _signed(agent_b, key_b, server, drifted))

    assert result.drift is True
    assert result.added == ["shell:exec"]
    assert result.removed == ["files:write"]
    assert _trust(db, agent_a) < before[agent_a]
    assert _trust(db, agent_b) < before[agent_b]
    assert _trust(db, agent_c) == before[agent_c]
    alert = db.fetch_one("test.alert", "SELECT * FROM alerts WHERE id = %s", (result.alert_id,))
    assert alert["alert_type"] == "capability_drift"
    assert alert["severity"] == "high"
    assert alert["resource_type"] == "mcp_server"
    assert alert["resource_id"] == str(server["id"])
    assert agent_a in alert["related_agent_ids"]
    assert agent_b in alert["related_agent_ids"]
    assert agent_c not in alert["related_agent_ids"]
    assert alert["details"]["added"] == ["shell:exec"]
    assert alert["details"]["removed"] == ["files:write"]
    stored = mcp_servers.get_server(db, org_id, server["id"])
    assert stored["drift_detected"] is True
    assert stored["last_drift_at"] is not None
    assert stored["known_capabilities"] == sorted(BASELINE)
    drift_flag = db.fetch_value("test.drift", "SELECT drift FROM mcp_attestations WHERE id = %s", (result.attestation_id,))
    assert drift_flag is True


def test_repeated_drift_counts_once(runtime, db, org_id):
    server = _server(db, org_id, known_capabilities=BASELINE)
    agent_id, key = _agent(db, org_id)

    first = _attest(runtime, org_id, server, _signed(agent_id, key, server, ["search"]))
    second = _attest(runtime, org_id, server, _signed(agent_id, key, server, ["search"]))

    assert first.alert_id == second.alert_id
    occurrences = db.fetch_value("test.alert", "SELECT occurrences FROM alerts WHERE id = %s", (first.alert_id,))
    assert occurrences == 2


def test_accept_capabilities_sets_new_baseline(runtime, db, org_id):
    server = _server(db, org_id, known_capabilities=BASELINE)
    agent_id, key = _agent(db, org_id)
    with pytest.raises(Conflict):
        mcp_servers.accept_capabilities(db, org_id, server["id"], ANALYST)
    _attest(runtime, org_id, server, _signed(agent_id, key, server, ["search", "shell:exec"]))

    accepted = mcp_servers.accept_capabilities(db, org_id, server["id"], ANALYST)
    after = _attest(runtime, org_id, server, _signed(agent_id, key, server, ["search", "shell:exec"]))

    assert accepted["known_capabilities"] == ["search", "shell:exec"]
    assert accepted["drift_detected"] is False
    assert accepted["manifest_hash"] == mcp_servers.manifest_hash(["search", "shell:exec"])
    assert after.drift is False
    assert ("mcp_server.accept_capabilities", "success") in _audit_actions(db, org_id, server["id"])


# --- confidence -------------------------------------------------------------------------------


def test_confidence_formula():
    now = datetime.now(timezone.utc)
    week_ago = now - timedelta(days=7)

    assert compute_confidence([], now) == Decimal("0")
    assert compute_confidence([ConfidenceSample(1.0, True, now)], now) == Decimal("0.5")
    assert compute_confidence([ConfidenceSample(1.0, True, now)] * 2, now) == Decimal("0.75")
    assert compute_confidence([ConfidenceSample(1.0, True, week_ago)], now) == Decimal("0.2929")
    assert compute_confidence([ConfidenceSample(0.5, True, now)], now) == Decimal("0.2929")
    assert compute_confidence([ConfidenceSample(1.0, True, now), ConfidenceSample(1.0, False, now)], now) == Decimal(
        "0.375"
    )
    assert compute_confidence([ConfidenceSample(1.0, False, now)], now) == Decimal("0")


def test_confidence_rises_with_distinct_agents(runtime, db, org_id):
    server = _server(db, org_id, known_capabilities=["search"])
    agent_ids = [_agent(db, org_id) for _ in range(3)]

    first = _attest(runtime, org_id, server, _signed(*agent_ids[0], server, ["search"])).confidence
    same_agent_again = _attest(runtime, org_id, server, _signed(*agent_ids[0], server, ["search"])).confidence
    second = _attest(runtime, org_id, server, _signed(*agent_ids[1], server, ["search"])).confidence
    third = _attest(runtime, org_id, server, _signed(*agent_ids[2], server, ["search"])).confidence

    assert first > 0
    assert same_agent_again == first
    assert second > first
    assert third > second


def test_confidence_falls_when_attestations_expire(runtime, db, org_id):
    server = _server(db, org_id, known_capabilities=["search"])
    for _ in range(2):
        agent_id, key = _agent(db, org_id)
        _attest(runtime, org_id, server, _signed(agent_id, key, server, ["search"]))
    before = mcp_servers.get_server(db, org_id, server["id"])["confidence"]
    # Age the attestations past their 30-day lifetime.
    db.execute("test.age", "UPDATE mcp_attestations SET expires_at = now() - interval '1 second' WHERE mcp_server_id = %s",
               (server["id"],))

    expired = mcp_servers.expire_attestations(db)

    assert before > 0
    assert expired >= 2
    assert mcp_servers.get_server(db, org_id, server["id"])["confidence"] == Decimal("0")
    flags = db.fetch_all("test.flags", "SELECT expired FROM mcp_attestations WHERE mcp_server_id = %s", (server["id"],))
    assert [row["expired"] for row in flags] == [True, True]
    reason = db.fetch_value(
        "test.history",
        "SELECT reason FROM mcp_confidence_history WHERE mcp_server_id = %s ORDER BY created_at DESC, id DESC LIMIT 1",
        (server["id"],),
    )
    assert reason == "attestations expired"


def test_expire_rejects_naive_now(db):
    with pytest.raises(ValidationError) as raised:
        mcp_servers.expire_attestations(db, now=datetime.now())

    assert raised.value.field == "now"


def test_recompute_confidence_ignores_suspended_agent(runtime, db, org_id):
    server = _server(db, org_id, known_capabilities=["search"])
    agent_id, key = _agent(db, org_id)
    _attest(runtime, org_id, server, _signed(agent_id, key, server, ["search"]))
    agents.suspend(db, org_id, agent_id, ANALYST, reason="test")

    confidence = mcp_servers.recompute_confidence(db, org_id, server["id"])

    assert confidence == Decimal("0")
    assert mcp_servers.get_server(db, org_id, server["id"])["confidence"] == Decimal("0")
