"""Trust recalculation against real PostgreSQL: gathering, storing, history rows and batches."""

from __future__ import annotations

import os
import uuid
from datetime import datetime, timedelta
from decimal import Decimal

import pytest
from prometheus_client import REGISTRY

from aim.errors import NotFound, ValidationError
from aim.services import agents
from aim.services.actor import Actor
from aim.trust import factors, gather
from aim.trust.factors import MEASURED, NO_DATA
from aim.trust.inputs import evaluate_factors
from aim.trust.recalc import _write_changes, recalculate_agent, recalculate_all, recalculate_organization
from aim.trust.score import combine

pytestmark = pytest.mark.integration

REASON = "test recalculation"
ACTOR = "system:test"


@pytest.fixture
def as_of(db) -> datetime:
    return gather.database_now(db)


def _agent(db, org_id, as_of, *, age_days=200.0, last_seen_days_ago=None) -> uuid.UUID:
    created_at = as_of - timedelta(days=age_days)
    last_seen_at = None if last_seen_days_ago is None else as_of - timedelta(days=last_seen_days_ago)
    return db.fetch_value(
        "test.trust_agent",
        """INSERT INTO agents (organization_id, name, public_key, key_id, created_at, key_created_at, last_seen_at)
           VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING id""",
        (org_id, f"agent-{uuid.uuid4().hex[:10]}", os.urandom(32), f"key-{uuid.uuid4().hex[:8]}",
         created_at, created_at, last_seen_at),
    )


def _events(
    db, org_id, agent_id, as_of, *, count=1, days_ago=0.5, decision="allowed", reason="ok", signature_valid=True,
) -> None:
    db.execute(
        "test.trust_events",
        """INSERT INTO verification_events
               (organization_id, agent_id, action, risk_class, decision, reason, signature_valid, created_at)
           SELECT %s, %s, 'db:read', 'low', %s, %s, %s, %s FROM generate_series(1, %s)""",
        (org_id, agent_id, decision, reason, signature_valid, as_of - timedelta(days=days_ago), count),
    )


def _daily_activity(db, org_id, agent_id, as_of, days=7) -> None:
    for day in range(days):
        _events(db, org_id, agent_id, as_of, count=2, days_ago=day + 0.5)


def _alert(
    db, org_id, agent_id, *, severity="high", status="open", alert_type="bad_signature", related=True,
    resource_agent=False, resolved_at=None,
) -> uuid.UUID:
    resource_type, resource_id = ("agent", str(agent_id)) if resource_agent else ("mcp_server", str(uuid.uuid4()))
    return db.fetch_value(
        "test.trust_alert",
        """INSERT INTO alerts (organization_id, alert_type, severity, status, title, resource_type, resource_id,
                               related_agent_ids, dedup_key, resolved_at)
           VALUES (%s, %s, %s, %s, 'test alert', %s, %s, %s, %s, %s) RETURNING id""",
        (org_id, alert_type, severity, status, resource_type, resource_id,
         [agent_id] if related else [], uuid.uuid4().hex, resolved_at),
    )


def _mcp_server(db, org_id) -> uuid.UUID:
    return db.fetch_value(
        "test.trust_mcp",
        "INSERT INTO mcp_servers (organization_id, name, url) VALUES (%s, 'srv', %s) RETURNING id",
        (org_id, f"https://mcp.example/{uuid.uuid4().hex}"),
    )


def _connect(db, org_id, agent_id, server_id) -> None:
    db.execute(
        "test.trust_connect",
        "INSERT INTO agent_mcp_connections (organization_id, agent_id, mcp_server_id) VALUES (%s, %s, %s)",
        (org_id, agent_id, server_id),
    )


def _attest(db, org_id, agent_id, server_id, attested_at) -> None:
    db.execute(
        "test.trust_attest",
        """INSERT INTO mcp_attestations (organization_id, mcp_server_id, agent_id, manifest_hash, healthy,
                                         signature, key_id, attested_at)
           VALUES (%s, %s, %s, 'h', true, %s, 'k', %s)""",
        (org_id, server_id, agent_id, os.urandom(64), attested_at),
    )


def _rate(db, org_id, agent_id, as_of, *ratings) -> None:
    for rating in ratings:
        db.execute(
            "test.trust_rate",
            """INSERT INTO agent_feedback (organization_id, agent_id, rating, created_by, created_at)
               VALUES (%s, %s, %s, 'user:t', %s)""",
            (org_id, agent_id, rating, as_of - timedelta(days=1)),
        )


def _stored(db, agent_id) -> dict:
    return db.fetch_one("test.trust_stored", "SELECT trust_score, trust_factors FROM agents WHERE id = %s", (agent_id,))


def _history(db, agent_id) -> list[dict]:
    return db.fetch_all(
        "test.trust_history",
        "SELECT * FROM trust_score_history WHERE agent_id = %s ORDER BY created_at, id",
        (agent_id,),
    )


def _recalc(db, org_id, agent_id, as_of, **kwargs):
    return recalculate_agent(db, org_id, agent_id, reason=REASON, actor=ACTOR, as_of=as_of, **kwargs)


def test_clean_agent_stored_with_history(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    _daily_activity(db, org_id, agent_id, as_of)

    result = _recalc(db, org_id, agent_id, as_of)

    assert result.score == 0.95
    stored = _stored(db, agent_id)
    assert stored["trust_score"] == Decimal("0.9500")
    assert stored["trust_factors"] == result.factors_json()
    assert stored["trust_factors"][factors.VERIFICATION]["provenance"] == MEASURED
    assert stored["trust_factors"][factors.DRIFT]["provenance"] == NO_DATA
    history = _history(db, agent_id)
    assert len(history) == 1
    assert history[0]["score"] == Decimal("0.9500")
    assert history[0]["previous_score"] == Decimal("0.5000")
    assert history[0]["reason"] == REASON
    assert history[0]["actor"] == ACTOR
    assert history[0]["factors"] == result.factors_json()
    assert history[0]["factors"][factors.FEEDBACK]["provenance"] == NO_DATA
    assert history[0]["factors"][factors.UPTIME]["provenance"] == MEASURED


def test_unchanged_writes_no_history(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    _daily_activity(db, org_id, agent_id, as_of)
    _recalc(db, org_id, agent_id, as_of)

    _recalc(db, org_id, agent_id, as_of)
    _recalc(db, org_id, agent_id, as_of + timedelta(seconds=5))

    assert len(_history(db, agent_id)) == 1


def test_provenance_change_writes_history(db, org_id, as_of):
    # Only the stored drift provenance differs from the recalculated one; the rounded score is the
    # same, and a row must still be written.
    agent_id = _agent(db, org_id, as_of)
    _daily_activity(db, org_id, agent_id, as_of)
    _recalc(db, org_id, agent_id, as_of)
    db.execute(
        "test.trust_forge",
        "UPDATE agents SET trust_factors = jsonb_set(trust_factors, '{drift,provenance}', '\"measured\"') WHERE id = %s",
        (agent_id,),
    )

    _recalc(db, org_id, agent_id, as_of)

    history = _history(db, agent_id)
    assert len(history) == 2
    assert history[1]["score"] == history[0]["score"]
    assert history[1]["factors"][factors.DRIFT]["provenance"] == NO_DATA


def test_alert_lowers_score_with_previous(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    _daily_activity(db, org_id, agent_id, as_of)
    _recalc(db, org_id, agent_id, as_of)
    _alert(db, org_id, agent_id, severity="critical")

    result = _recalc(db, org_id, agent_id, as_of)

    assert result.factor(factors.SECURITY_ALERTS).value == 0.5
    history = _history(db, agent_id)
    assert len(history) == 2
    assert history[1]["previous_score"] == Decimal("0.9500")
    assert history[1]["score"] == Decimal(str(result.score))
    assert result.score < 0.95


def test_metric_counts_change_direction(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    _daily_activity(db, org_id, agent_id, as_of)
    labels = {"direction": "down"}
    before = REGISTRY.get_sample_value("aim_trust_score_changes_total", labels) or 0.0
    _recalc(db, org_id, agent_id, as_of)
    _alert(db, org_id, agent_id, severity="critical")

    _recalc(db, org_id, agent_id, as_of)

    assert REGISTRY.get_sample_value("aim_trust_score_changes_total", labels) == before + 1


def test_signature_and_decision_counts(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    _events(db, org_id, agent_id, as_of, count=6)
    _events(db, org_id, agent_id, as_of, count=2, decision="denied", reason="bad_signature", signature_valid=False)
    _events(db, org_id, agent_id, as_of, count=2, decision="denied", reason="capability_not_granted")
    _events(db, org_id, agent_id, as_of, count=3, decision="denied", reason="trust_below_threshold")
    _events(db, org_id, agent_id, as_of, count=1, decision="denied", reason="replay")
    _events(db, org_id, agent_id, as_of, count=5, days_ago=31)

    snapshot = gather.gather_agent(db, org_id, agent_id, as_of=as_of)
    result = _recalc(db, org_id, agent_id, as_of)

    assert snapshot.inputs.signatures_total == 14
    assert snapshot.inputs.signatures_valid == 12
    assert snapshot.inputs.requests_attempted == 9
    assert snapshot.inputs.requests_allowed == 6
    assert snapshot.inputs.capability_checks == 11
    assert snapshot.inputs.capability_violations == 2
    assert result.factor(factors.VERIFICATION).value == pytest.approx(12 / 14)
    assert result.factor(factors.SUCCESS_RATE).value == pytest.approx(6 / 9)
    assert result.factor(factors.COMPLIANCE).value == pytest.approx(1 - 2 / 11)


def test_no_events_means_no_data(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)

    result = _recalc(db, org_id, agent_id, as_of)

    assert result.factor(factors.VERIFICATION).provenance == NO_DATA
    assert result.factor(factors.SUCCESS_RATE).provenance == NO_DATA
    assert result.factor(factors.COMPLIANCE).provenance == NO_DATA
    assert result.factor(factors.FEEDBACK).provenance == NO_DATA
    assert result.factor(factors.SECURITY_ALERTS).value == 1.0
    assert result.factor(factors.UPTIME).value == 0.0
    assert result.factor(factors.AGE).value == 1.0


def test_uptime_sources(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of, age_days=3.5, last_seen_days_ago=0.2)
    server_id = _mcp_server(db, org_id)
    _attest(db, org_id, agent_id, server_id, as_of - timedelta(days=1.5))
    # A bad signature is not proof the agent was there, and day 3 is only partly inside its life.
    _events(db, org_id, agent_id, as_of, days_ago=2.5, decision="denied", reason="bad_signature",
            signature_valid=False)
    _events(db, org_id, agent_id, as_of, days_ago=3.2)

    result = _recalc(db, org_id, agent_id, as_of)

    uptime = result.factor(factors.UPTIME)
    assert uptime.value == pytest.approx(2 / 3)
    assert uptime.detail == "seen on 2 of the last 3 days"


def test_new_agent_uptime_no_data(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of, age_days=0.5, last_seen_days_ago=0.1)

    result = _recalc(db, org_id, agent_id, as_of)

    assert result.factor(factors.UPTIME).provenance == NO_DATA
    assert result.factor(factors.AGE).value == pytest.approx(0.5 / 90)


def test_alert_links_and_status(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    _alert(db, org_id, agent_id, severity="high", related=True, resource_agent=True)
    _alert(db, org_id, agent_id, severity="medium", related=False, resource_agent=True, status="acknowledged")
    _alert(db, org_id, agent_id, severity="low", related=True)
    _alert(db, org_id, agent_id, severity="critical", status="resolved", resolved_at=as_of - timedelta(days=1))
    _alert(db, org_id, agent_id, severity="medium", alert_type="capability_drift")

    snapshot = gather.gather_agent(db, org_id, agent_id, as_of=as_of)

    assert snapshot.inputs.open_alerts["high"] == 1
    assert snapshot.inputs.open_alerts["medium"] == 1
    assert snapshot.inputs.open_alerts["low"] == 1
    assert snapshot.inputs.open_alerts["critical"] == 0
    assert snapshot.inputs.drift_events == 1


def test_other_organization_alert_ignored(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    other_org = db.fetch_value(
        "test.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id", (f"org-{uuid.uuid4().hex[:10]}",)
    )
    _alert(db, other_org, agent_id, severity="critical")

    result = _recalc(db, org_id, agent_id, as_of)

    assert result.factor(factors.SECURITY_ALERTS).value == 1.0


def test_drift_events_window(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    server_id = _mcp_server(db, org_id)
    _connect(db, org_id, agent_id, server_id)
    _alert(db, org_id, agent_id, alert_type="capability_drift", severity="medium")
    _alert(db, org_id, agent_id, alert_type="capability_drift", status="resolved",
           resolved_at=as_of - timedelta(days=10))
    _alert(db, org_id, agent_id, alert_type="capability_drift", status="resolved",
           resolved_at=as_of - timedelta(days=40))

    result = _recalc(db, org_id, agent_id, as_of)

    assert result.factor(factors.DRIFT).value == 0.5
    assert result.factor(factors.SECURITY_ALERTS).value == 1.0


def test_drift_measured_once_connected(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    before = _recalc(db, org_id, agent_id, as_of)
    _connect(db, org_id, agent_id, _mcp_server(db, org_id))

    after = _recalc(db, org_id, agent_id, as_of)

    assert before.factor(factors.DRIFT).provenance == NO_DATA
    assert after.factor(factors.DRIFT).provenance == MEASURED
    assert after.factor(factors.DRIFT).value == 1.0


def test_feedback_ratings(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    _rate(db, org_id, agent_id, as_of, 5, 3, 4)

    result = _recalc(db, org_id, agent_id, as_of)

    assert result.factor(factors.FEEDBACK).value == pytest.approx(0.75)


def test_caller_transaction_rolls_back(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    _daily_activity(db, org_id, agent_id, as_of)

    with pytest.raises(RuntimeError):
        with db.transaction() as conn:
            _recalc(db, org_id, agent_id, as_of, conn=conn)
            raise RuntimeError("caller failed")

    assert _stored(db, agent_id)["trust_score"] == Decimal("0.5000")
    assert _history(db, agent_id) == []


def test_caller_transaction_commits(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    _daily_activity(db, org_id, agent_id, as_of)

    with db.transaction() as conn:
        _events(db, org_id, agent_id, as_of, count=10, decision="denied", reason="bad_signature",
                signature_valid=False)
        result = _recalc(db, org_id, agent_id, as_of, conn=conn)

    assert result.factor(factors.VERIFICATION).value == pytest.approx(14 / 24)
    assert _stored(db, agent_id)["trust_score"] == Decimal(str(result.score))
    assert len(_history(db, agent_id)) == 1


def test_agent_of_other_organization_not_found(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    other_org = db.fetch_value(
        "test.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id", (f"org-{uuid.uuid4().hex[:10]}",)
    )

    with pytest.raises(NotFound):
        _recalc(db, other_org, agent_id, as_of)


@pytest.mark.parametrize(("reason", "actor", "field"), [("", ACTOR, "reason"), (REASON, "  ", "actor")])
def test_empty_labels_rejected(db, org_id, as_of, reason, actor, field):
    agent_id = _agent(db, org_id, as_of)

    with pytest.raises(ValidationError) as caught:
        recalculate_agent(db, org_id, agent_id, reason=reason, actor=actor, as_of=as_of)

    assert caught.value.field == field


def test_batch_size_rejected(db, org_id):
    with pytest.raises(ValidationError) as caught:
        recalculate_organization(db, org_id, reason=REASON, actor=ACTOR, batch_size=0)
    assert caught.value.field == "batch_size"


def _varied_agents(db, org_id, as_of) -> list[uuid.UUID]:
    agents = []
    server_id = _mcp_server(db, org_id)
    for index in range(13):
        agent_id = _agent(db, org_id, as_of, age_days=0.5 + index * 9, last_seen_days_ago=index % 4)
        _daily_activity(db, org_id, agent_id, as_of, days=index % 8)
        if index % 3 == 0:
            _events(db, org_id, agent_id, as_of, count=index, decision="denied", reason="bad_signature",
                    signature_valid=False)
        if index % 4 == 1:
            _events(db, org_id, agent_id, as_of, count=2, decision="denied", reason="capability_not_granted")
        if index % 5 == 2:
            _alert(db, org_id, agent_id, severity=("low", "medium", "high", "critical")[index % 4])
        if index % 6 == 3:
            _connect(db, org_id, agent_id, server_id)
            _alert(db, org_id, agent_id, alert_type="capability_drift")
        if index % 2 == 0:
            _rate(db, org_id, agent_id, as_of, 1 + index % 5)
        agents.append(agent_id)
    return agents


def test_batch_equals_single(db, org_id, as_of):
    agents = _varied_agents(db, org_id, as_of)

    changed = recalculate_organization(db, org_id, reason="periodic", actor=ACTOR, batch_size=4, as_of=as_of)
    batch = {agent_id: _stored(db, agent_id) for agent_id in agents}
    db.execute(
        "test.trust_reset",
        "UPDATE agents SET trust_score = 0.5, trust_factors = '{}'::jsonb WHERE organization_id = %s",
        (org_id,),
    )
    single = {agent_id: _recalc(db, org_id, agent_id, as_of) for agent_id in agents}

    assert changed == len(agents)
    for agent_id in agents:
        assert batch[agent_id]["trust_score"] == Decimal(str(single[agent_id].score)), agent_id
        assert batch[agent_id]["trust_factors"] == single[agent_id].factors_json(), agent_id


def test_batch_history_and_rerun(db, org_id, as_of):
    agents = _varied_agents(db, org_id, as_of)

    first = recalculate_organization(db, org_id, reason="periodic", actor=ACTOR, batch_size=5, as_of=as_of)
    second = recalculate_organization(db, org_id, reason="periodic", actor=ACTOR, batch_size=5, as_of=as_of)

    assert first == len(agents)
    assert second == 0
    for agent_id in agents:
        history = _history(db, agent_id)
        assert len(history) == 1, agent_id
        assert history[0]["reason"] == "periodic"
        assert history[0]["actor"] == ACTOR
        assert history[0]["score"] == _stored(db, agent_id)["trust_score"]


def test_batch_skips_concurrent_change(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    _daily_activity(db, org_id, agent_id, as_of)
    snapshot = gather.gather_agent(db, org_id, agent_id, as_of=as_of)
    _recalc(db, org_id, agent_id, as_of)

    with db.transaction() as conn:
        written = _write_changes(
            db, conn, org_id, [(snapshot, combine(evaluate_factors(snapshot.inputs)))], reason="stale", actor=ACTOR
        )

    assert written == 0
    assert [row["reason"] for row in _history(db, agent_id)] == [REASON]


def test_recalculate_all_covers_organization(db, org_id, as_of):
    agent_id = _agent(db, org_id, as_of)
    _daily_activity(db, org_id, agent_id, as_of)

    changed = recalculate_all(db, reason="periodic", actor=ACTOR, as_of=as_of)

    assert changed >= 1
    assert _stored(db, agent_id)["trust_score"] == Decimal("0.9500")
    assert [row["reason"] for row in _history(db, agent_id)] == ["periodic"]


def test_batch_skips_locked_agent(db, org_id, as_of):
    locked_id = _agent(db, org_id, as_of)
    free_id = _agent(db, org_id, as_of)

    with db.transaction() as holder:
        holder.execute("SELECT 1 FROM agents WHERE id = %s FOR NO KEY UPDATE", (locked_id,))
        changed = recalculate_organization(db, org_id, reason="periodic", actor=ACTOR, as_of=as_of)

    assert changed == 1
    assert _history(db, locked_id) == []
    assert len(_history(db, free_id)) == 1
    assert recalculate_organization(db, org_id, reason="periodic", actor=ACTOR, as_of=as_of) == 1
    assert len(_history(db, locked_id)) == 1


def test_new_agent_score_matches_full_recalculation(db, org_id):
    from aim.services import agents
    from aim.services.actor import Actor

    registered = agents.register_agent(db, org_id, Actor("system", "test"), name=f"fresh-{uuid.uuid4().hex[:8]}")
    agent = registered.agent
    stored = _stored(db, agent["id"])
    assert len(_history(db, agent["id"])) == 1

    full = _recalc(db, org_id, agent["id"], agent["created_at"])

    assert Decimal(str(full.score)) == stored["trust_score"]
    assert full.factors_json() == stored["trust_factors"]
    assert len(_history(db, agent["id"])) == 1


def test_registration_stores_first_score(db, org_id):
    agent_id = agents.register_agent(db, org_id, Actor("system", "test"), name=f"new-{uuid.uuid4().hex[:8]}").agent["id"]
    stored = db.fetch_one("test.new_agent", "SELECT trust_score, trust_factors, created_at FROM agents WHERE id = %s",
                          (agent_id,))
    history_sql = "SELECT score, previous_score, reason FROM trust_score_history WHERE agent_id = %s"
    history = db.fetch_all("test.new_agent_history", history_sql, (agent_id,))

    rescored = _recalc(db, org_id, agent_id, stored["created_at"])

    assert history == [{"score": stored["trust_score"], "previous_score": Decimal("0.5"), "reason": "agent registered"}]
    assert Decimal(str(rescored.score)) == stored["trust_score"]
    assert stored["trust_factors"] == rescored.factors_json()
    # The recalculation found nothing to change, so it wrote no second history row.
    assert db.fetch_all("test.new_agent_history", history_sql, (agent_id,)) == history
