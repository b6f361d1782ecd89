"""Live simulator traffic sent through a real API on 127.0.0.1, as `aim simulate --via-api` does."""

from __future__ import annotations

import dataclasses
import random
import uuid

import pytest

from aim.api import create_app
from aim.simulate.live import ActionExecutor, run_actions
from aim.simulate.population import prepare_population
from aim.simulate.scenario import TrafficPlanner
from aim.simulate.target import HttpTarget
from test_api_support import make_key
from test_client import _serve, _stop

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api_url(runtime):
    server, thread, url = _serve(create_app(runtime, background_jobs=False, rate_limit_per_minute=0))
    yield url
    _stop(server, thread)


def test_live_traffic_through_api(runtime, api_url, tmp_path):
    sim_runtime = dataclasses.replace(runtime, settings=dataclasses.replace(runtime.settings, data_dir=tmp_path))
    population = prepare_population(sim_runtime, organization=f"via-api-{uuid.uuid4().hex[:8]}", agent_count=8,
                                    seed=3)
    target = HttpTarget(api_url, make_key(runtime.db, population.organization_id, "analyst"))
    planner = TrafficPlanner(population.active, population.inactive, population.servers, bad_share=0.3,
                             rng=random.Random(3))

    try:
        stats = run_actions(planner, ActionExecutor(target).execute, rate=30, duration=2.0, workers=2)
    finally:
        target.close()

    assert stats.errors == 0
    assert stats.allowed > 0
    assert sum(stats.denied.values()) > 0
    stored = runtime.db.fetch_value(
        "test.events", "SELECT count(*) FROM verification_events WHERE organization_id = %s",
        (population.organization_id,),
    )
    assert stored >= stats.allowed + sum(stats.denied.values()) - stats.denied.get("invalid_request", 0)


def test_http_target_rejects_bad_key(api_url):
    target = HttpTarget(api_url, "aim_not_a_real_key")
    try:
        outcome = target.verify(uuid.uuid4(), {"agent_id": "x"})
    finally:
        target.close()
    assert outcome.decision == "denied"
    assert outcome.reason == "invalid_api_key"
