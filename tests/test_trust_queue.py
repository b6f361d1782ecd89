"""The trust queue: verification marks agents dirty, and the job recalculates them in batches."""

from __future__ import annotations

import uuid

import pytest

from aim import jobs
from aim.services import agents
from aim.services.actor import Actor
from aim.services.verification import load_trust_score, mark_trust_dirty
from aim.simulate import periodic
from aim.trust import gather
from aim.trust.recalc import recalculate_agent, recalculate_agents

pytestmark = pytest.mark.integration

ACTOR = Actor("system", "test")


def _register(db, org_id) -> uuid.UUID:
    return agents.register_agent(db, org_id, ACTOR, name=f"queued-{uuid.uuid4().hex[:8]}").agent["id"]


def _denials(db, org_id, agent_id, count: int) -> None:
    db.execute(
        "test.queue_events",
        """INSERT INTO verification_events
               (organization_id, agent_id, action, risk_class, decision, reason, signature_valid, created_at)
           SELECT %s, %s, 'db:write', 'medium', 'denied', 'bad_signature', false, now() - interval '1 minute'
           FROM generate_series(1, %s)""",
        (org_id, agent_id, count),
    )


def _score(db, agent_id):
    return db.fetch_one("test.queue_score", "SELECT trust_score, trust_factors FROM agents WHERE id = %s", (agent_id,))


def test_batch_matches_one_by_one(db, org_id):
    batch = [_register(db, org_id) for _ in range(3)]
    single = [_register(db, org_id) for _ in range(3)]
    for index, agent_id in enumerate(batch + single):
        _denials(db, org_id, agent_id, 1 + index % 3)

    found = recalculate_agents(db, org_id, batch, reason="test batch", actor="system:test")
    as_of = gather.database_now(db)
    for agent_id in single:
        recalculate_agent(db, org_id, agent_id, reason="test single", actor="system:test", as_of=as_of)

    assert sorted(found) == sorted(batch)
    for batched, one_by_one in zip(batch, single):
        assert _score(db, batched)["trust_score"] == _score(db, one_by_one)["trust_score"]
        assert _score(db, batched)["trust_score"] < 1


def test_batch_ignores_other_organizations(db, org_id):
    other = db.fetch_value("test.other_org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id",
                           (f"other-{uuid.uuid4().hex[:8]}",))
    foreign = _register(db, other)
    before = _score(db, foreign)

    assert recalculate_agents(db, org_id, [foreign, uuid.uuid4()], reason="test", actor="system:test") == []
    assert _score(db, foreign) == before


def test_job_drains_queue(runtime, db, org_id):
    queue = f"{runtime.settings.redis_prefix}trust:dirty"
    runtime.redis.delete(queue)  # agents that earlier tests of this session queued
    queued = [_register(db, org_id) for _ in range(4)]
    for agent_id in queued:
        _denials(db, org_id, agent_id, 3)
        mark_trust_dirty(runtime.redis, runtime.settings.redis_prefix, agent_id)
    mark_trust_dirty(runtime.redis, runtime.settings.redis_prefix, uuid.uuid4())  # deleted since it was queued
    before = {agent_id: _score(db, agent_id)["trust_score"] for agent_id in queued}

    processed = jobs.process_dirty_agents(runtime)

    assert processed == len(queued)
    assert runtime.redis.scard(queue) == 0
    for agent_id in queued:
        assert _score(db, agent_id)["trust_score"] < before[agent_id]
    assert jobs.process_dirty_agents(runtime) == 0


def test_unchanged_score_not_returned(db, org_id):
    agent_id = _register(db, org_id)
    _denials(db, org_id, agent_id, 2)

    first = recalculate_agents(db, org_id, [agent_id], reason="test first", actor="system:test")
    again = recalculate_agents(db, org_id, [agent_id], reason="test again", actor="system:test")

    assert first == [agent_id]
    assert again == []


def _cache_then_deny(db, org_id) -> tuple[uuid.UUID, float]:
    """Register an agent, cache its trust score as a verification does, then add denials to lower it."""
    agent_id = _register(db, org_id)
    cached = load_trust_score(db, agent_id)
    _denials(db, org_id, agent_id, 3)
    return agent_id, cached


def test_queue_job_drops_cached_score(runtime, db, org_id):
    runtime.redis.delete(f"{runtime.settings.redis_prefix}trust:dirty")
    agent_id, cached = _cache_then_deny(db, org_id)
    mark_trust_dirty(runtime.redis, runtime.settings.redis_prefix, agent_id)

    jobs.process_dirty_agents(runtime)

    stored = float(_score(db, agent_id)["trust_score"])
    assert stored < cached
    assert load_trust_score(db, agent_id) == stored


@pytest.mark.parametrize("recalculate", [
    pytest.param(lambda runtime, org_id: jobs.recalculate_all_trust(runtime), id="periodic-job"),
    pytest.param(periodic.recalculate_trust, id="simulator"),
])
def test_recalculation_drops_cached_scores(runtime, db, org_id, recalculate):
    agent_id, cached = _cache_then_deny(db, org_id)

    recalculate(runtime, org_id)

    stored = float(_score(db, agent_id)["trust_score"])
    assert stored < cached
    assert load_trust_score(db, agent_id) == stored
