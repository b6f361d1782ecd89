"""The traffic simulator against real PostgreSQL and Redis: setup, live traffic, backfill and the CLI."""

from __future__ import annotations

import dataclasses
import os
import random
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from typer.testing import CliRunner

from aim import identity
from aim.runtime import get_runtime, set_runtime
from aim.services import verification
from aim.simulate import keystore, rules, timeline
from aim.simulate.backfill import has_history, run_backfill
from aim.simulate.commands import app as simulate_app
from aim.simulate.keystore import KeyStore, KeyStoreError
from aim.simulate.live import ActionExecutor, run_actions
from aim.simulate.population import prepare_population
from aim.simulate.scenario import ROUTINE, STALE_TIMESTAMP, TAMPERED_SIGNATURE, TrafficPlanner
from aim.simulate.signed_requests import verification_request
from aim.simulate.target import LocalTarget
from aim.trust.gather import database_now
from conftest import MCP_REGISTRY_FILE

pytestmark = pytest.mark.integration


@pytest.fixture
def sim_runtime(runtime, tmp_path):
    """The session runtime with its data dir in a per-test temporary directory (for the key store)."""
    return dataclasses.replace(runtime, settings=dataclasses.replace(runtime.settings, data_dir=tmp_path))


def _org_name() -> str:
    return f"sim-{uuid.uuid4().hex[:10]}"


def test_setup_creates_agents_with_working_keys(sim_runtime):
    org = _org_name()
    population = prepare_population(sim_runtime, organization=org, agent_count=6, seed=1)

    assert len(population.agents) == 6
    assert population.created == 6
    assert len({agent.agent_type for agent in population.agents}) >= 3
    assert population.servers, "built-in MCP servers are registered without a registry file"
    stored = KeyStore.for_organization(sim_runtime.settings.data_dir, org).load()
    assert set(stored) == {agent.agent_id for agent in population.agents}

    agent = population.active[0]
    key = identity.load_private_key(stored[agent.agent_id].private_key_pem)
    signer = dataclasses.replace(agent, private_key=key)
    request = verification_request(
        signer, agent.profile.actions[0][0], "docs/1", timestamp=datetime.now(timezone.utc), nonce=identity.new_nonce()
    )
    decision = verification.verify(
        sim_runtime.db, sim_runtime.redis, sim_runtime.settings.redis_prefix, population.organization_id,
        agent.agent_id, request,
    )
    assert decision.decision == "allowed", decision.detail


def test_rerun_reuses_agents(sim_runtime):
    org = _org_name()
    first = prepare_population(sim_runtime, organization=org, agent_count=4, seed=1)
    second = prepare_population(sim_runtime, organization=org, agent_count=4, seed=1)

    assert second.created == 0
    assert second.reused == 4
    assert [a.agent_id for a in second.agents] == [a.agent_id for a in first.agents]
    count = sim_runtime.db.fetch_value(
        "test.count_agents", "SELECT count(*) FROM agents WHERE organization_id = %s", (first.organization_id,)
    )
    assert count == 4


def test_rerun_without_key_store_rotates_keys(sim_runtime):
    org = _org_name()
    first = prepare_population(sim_runtime, organization=org, agent_count=3, seed=1)
    first.keystore_path.unlink()

    second = prepare_population(sim_runtime, organization=org, agent_count=3, seed=1)

    assert second.created == 0
    assert second.rekeyed == 3
    assert {a.agent_id for a in second.agents} == {a.agent_id for a in first.agents}
    assert {a.key_id for a in second.agents}.isdisjoint({a.key_id for a in first.agents})


def test_key_store_file_mode_is_0600(sim_runtime):
    population = prepare_population(sim_runtime, organization=_org_name(), agent_count=2, seed=1)
    mode = os.stat(population.keystore_path).st_mode & 0o777
    assert mode == 0o600


def test_key_store_rejects_readable_file(sim_runtime):
    org = _org_name()
    population = prepare_population(sim_runtime, organization=org, agent_count=2, seed=1)
    os.chmod(population.keystore_path, 0o644)

    with pytest.raises(KeyStoreError, match="0644"):
        KeyStore.for_organization(sim_runtime.settings.data_dir, org).load()
    with pytest.raises(KeyStoreError):
        prepare_population(sim_runtime, organization=org, agent_count=2, seed=1)


def test_key_store_path_stays_in_directory(tmp_path):
    path = keystore.store_path(tmp_path, "../../etc/passwd")
    assert path.parent == tmp_path / "simulator"
    assert ".." not in path.name


def test_live_traffic_mixes_allowed_and_denied(sim_runtime):
    org = _org_name()
    population = prepare_population(
        sim_runtime, organization=org, agent_count=30, seed=7, mcp_registry=MCP_REGISTRY_FILE
    )
    planner = TrafficPlanner(
        population.active, population.inactive, population.servers, bad_share=0.3, rng=random.Random(7)
    )
    executor = ActionExecutor(LocalTarget(sim_runtime, population.organization_id))

    stats = run_actions(planner, executor.execute, rate=40, duration=3.0, workers=4)

    assert stats.errors == 0
    assert stats.allowed > 0
    assert sum(stats.denied.values()) > 0
    assert len(stats.denied) >= 3, stats.denied
    db = sim_runtime.db
    reasons = {
        row["reason"]
        for row in db.fetch_all(
            "test.reasons",
            "SELECT DISTINCT reason FROM verification_events WHERE organization_id = %s AND decision = 'denied'",
            (population.organization_id,),
        )
    }
    assert len(reasons) >= 3, reasons
    alert_count = db.fetch_value(
        "test.alerts", "SELECT count(*) FROM alerts WHERE organization_id = %s", (population.organization_id,)
    )
    assert alert_count > 0


def _backfill_population(runtime, org, agent_count, days, seed):
    now = database_now(runtime.db)
    registered_at = timeline.registration_times(timeline.window_start(now, days), now, seed)
    return prepare_population(
        runtime, organization=org, agent_count=agent_count, seed=seed, registered_at=registered_at,
        apply_status=False, attest_baselines=False,
    )


def _count(db, query, *params):
    return db.fetch_value("test.count", query, params)


def test_backfill_writes_history_without_metrics(sim_runtime):
    db = sim_runtime.db
    rollups_before = _count(db, "SELECT count(*) FROM metric_rollups")
    population = _backfill_population(sim_runtime, _org_name(), 25, 2, seed=11)
    org_id = population.organization_id

    report = run_backfill(sim_runtime, population, days=2, audit_rows=3000, bad_share=0.2, seed=11)

    assert _count(db, "SELECT count(*) FROM metric_rollups") == rollups_before
    assert report.actions == 3000
    assert report.samples_checked >= 2
    verify_audits = _count(
        db, "SELECT count(*) FROM audit_logs WHERE organization_id = %s AND action = 'agent.verify'", org_id
    )
    assert verify_audits == report.verification_events
    assert report.audit_rows >= 3000
    events = db.fetch_one(
        "test.events",
        """SELECT count(*) AS total, count(latency_ms) AS with_latency, min(created_at) AS first,
                  max(created_at) AS last, count(DISTINCT reason) AS reasons
           FROM verification_events WHERE organization_id = %s""",
        (org_id,),
    )
    assert events["total"] == report.verification_events
    assert events["with_latency"] == 0
    assert events["last"] - events["first"] > timedelta(days=1)
    assert events["reasons"] >= 5
    history = db.fetch_one(
        "test.history",
        """SELECT count(*) AS total, min(created_at) AS first, max(created_at) AS last,
                  count(DISTINCT agent_id) AS agents
           FROM trust_score_history WHERE organization_id = %s AND actor = 'system:simulator-backfill'""",
        (org_id,),
    )
    assert history["last"] - history["first"] >= timedelta(days=2)
    assert history["agents"] >= 15
    alert_statuses = {
        row["status"]
        for row in db.fetch_all(
            "test.alert_statuses",
            "SELECT DISTINCT status FROM alerts WHERE organization_id = %s AND created_at < now() - interval '1 hour'",
            (org_id,),
        )
    }
    assert {"open", "acknowledged", "resolved"} <= alert_statuses
    assert _count(db, "SELECT count(*) FROM mcp_attestations WHERE organization_id = %s", org_id) == report.attestations
    assert report.attestations > 0
    assert _count(db, "SELECT count(*) FROM mcp_confidence_history WHERE organization_id = %s", org_id) > 0
    oldest_agent = _count(db, "SELECT min(created_at) FROM agents WHERE organization_id = %s", org_id)
    assert oldest_agent < report.start
    inactive = _count(
        db, "SELECT count(*) FROM agents WHERE organization_id = %s AND status IN ('suspended', 'revoked')", org_id
    )
    assert inactive == 2


def test_backfill_rerun_adds_history_only(sim_runtime):
    db = sim_runtime.db
    org = _org_name()
    population = _backfill_population(sim_runtime, org, 12, 2, seed=3)
    first = run_backfill(sim_runtime, population, days=2, audit_rows=800, bad_share=0.1, seed=3)

    again = _backfill_population(sim_runtime, org, 12, 2, seed=3)
    second = run_backfill(sim_runtime, again, days=2, audit_rows=800, bad_share=0.1, seed=4)

    assert again.created == 0
    assert again.reused == 12
    assert _count(db, "SELECT count(*) FROM agents WHERE organization_id = %s", population.organization_id) == 12
    assert second.snapshots_skipped >= 2
    events = _count(
        db, "SELECT count(*) FROM verification_events WHERE organization_id = %s", population.organization_id
    )
    assert events == first.verification_events + second.verification_events


def test_backfill_analyzes_audit_partitions(sim_runtime):
    db = sim_runtime.db
    population = _backfill_population(sim_runtime, _org_name(), 8, 2, seed=5)
    started = database_now(db)

    report = run_backfill(sim_runtime, population, days=2, audit_rows=400, bad_share=0.1, seed=5)

    months = {report.start.strftime("audit_logs_%Y_%m"), report.end.strftime("audit_logs_%Y_%m")}
    analyzed = db.fetch_all(
        "test.last_analyze",
        "SELECT relname, last_analyze FROM pg_stat_user_tables WHERE relname = ANY(%s)",
        (sorted(months),),
    )
    assert {row["relname"] for row in analyzed} == months
    for row in analyzed:
        assert row["last_analyze"] is not None, row["relname"]
        assert row["last_analyze"] >= started, row["relname"]


def test_planner_is_reproducible_for_a_seed(sim_runtime):
    population = prepare_population(sim_runtime, organization=_org_name(), agent_count=10, seed=2)

    def draw(seed):
        planner = TrafficPlanner(
            population.active, population.inactive, population.servers, bad_share=0.3, rng=random.Random(seed)
        )
        return [(p.kind, p.agent.agent_id, p.action, p.resource) for p in (planner.next() for _ in range(200))]

    assert draw(9) == draw(9)
    assert draw(9) != draw(10)


def test_expected_reasons_follow_verifier_order():
    common = {"capabilities": ["db:read"], "risk_class": "low", "trust_score": 0.9}
    assert rules.expected_reason(TAMPERED_SIGNATURE, status="revoked", action="db:read", **common) == "bad_signature"
    assert rules.expected_reason(STALE_TIMESTAMP, status="verified", action="db:read", **common) == "stale_timestamp"
    assert rules.expected_reason(ROUTINE, status="suspended", action="db:write", **common) == "agent_not_verified"
    assert rules.expected_reason(ROUTINE, status="verified", action="db:write", **common) == "capability_not_granted"
    low_trust = dict(common, trust_score=0.2)
    assert rules.expected_reason(ROUTINE, status="verified", action="db:read", **low_trust) == "trust_below_threshold"
    assert rules.expected_reason(ROUTINE, status="verified", action="db:read", **common) == "ok"


@pytest.fixture
def installed_runtime(sim_runtime):
    """`sim_runtime` installed as the process runtime, for code that calls get_runtime() (the CLI)."""
    previous = get_runtime()
    set_runtime(sim_runtime)
    yield sim_runtime
    set_runtime(previous)


def test_cli_backfill_then_rerun(installed_runtime):
    org = _org_name()
    args = ["--org", org, "--agents", "6", "--backfill", "2", "--audit-rows", "600", "--seed", "5"]

    first = CliRunner().invoke(simulate_app, args)
    second = CliRunner().invoke(simulate_app, args)

    assert first.exit_code == 0, first.output
    assert "backfill" in first.output
    assert "6 created" in first.output
    assert second.exit_code == 0, second.output
    assert "6 reused" in second.output


def test_cli_live_run_for_duration(installed_runtime):
    org = _org_name()
    result = CliRunner().invoke(
        simulate_app, ["--org", org, "--agents", "5", "--rate", "15", "--duration", "1.5", "--bad-share", "0.5"]
    )
    assert result.exit_code == 0, result.output
    assert "live traffic stopped" in result.output
    events = _count(
        installed_runtime.db,
        """SELECT count(*) FROM verification_events e JOIN organizations o ON o.id = e.organization_id
           WHERE o.name = %s""",
        org,
    )
    assert events > 0


def test_cli_rejects_bad_share_out_of_range(installed_runtime):
    result = CliRunner().invoke(simulate_app, ["--org", _org_name(), "--bad-share", "1.5", "--duration", "1"])
    assert result.exit_code == 2
    assert "bad-share" in result.output


def test_history_found_after_first_event(db, org_id):
    # `aim up --demo` skips its backfill when the demo organization already has history.
    before = has_history(db, org_id)
    agent_id = db.fetch_value(
        "test.history_agent",
        """INSERT INTO agents (organization_id, name, public_key, key_id, created_at)
           VALUES (%s, %s, %s, %s, now()) RETURNING id""",
        (org_id, f"history-{uuid.uuid4().hex[:8]}", os.urandom(32), f"ed25519:{uuid.uuid4().hex}"),
    )
    db.execute(
        "test.history_event",
        """INSERT INTO verification_events (organization_id, agent_id, action, risk_class, decision, reason,
                                            signature_valid)
           VALUES (%s, %s, 'db:read', 'low', 'allowed', 'ok', true)""",
        (org_id, agent_id),
    )

    assert before is False
    assert has_history(db, org_id) is True
