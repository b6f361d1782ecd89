"""History version: figures of past buckets catch up as soon as a backfill reports its writes."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta, timezone

import pytest
from streamlit.testing.v1 import AppTest

from aim.runtime import make_redis, set_runtime
from aim.services import cache_hooks
from aim.simulate.backfill import run_backfill
from aim.ui import auth

from test_ui_audit import seed_events
from ui_support import APP, make_user, navigation_mode  # noqa: F401 - navigation_mode is an autouse fixture

pytestmark = pytest.mark.integration


def chart_totals(at: AppTest) -> dict[str, int]:
    """Parse the per-result totals the audit chart prints, e.g. `success 5 · failure 2 · denied 2`."""
    assert not at.exception, at.exception
    summaries = [str(m.value) for m in at.markdown if "Events per hour" in str(m.value)]
    assert len(summaries) == 1, f"no hourly chart summary; errors: {[e.value for e in at.error]}"
    inner = summaries[0].split(":gray[", 1)[1].rstrip("]")
    totals = {}
    for part in inner.split(" · "):
        result, count = part.rsplit(" ", 1)
        totals[result] = int(count.replace(",", ""))
    return totals


def test_closed_buckets_follow_history_change(db, org_id):
    # The closed range moves at each full hour, so start well clear of one (the test takes seconds).
    while (clock := datetime.now(timezone.utc)).minute == 59 and clock.second >= 30:
        time.sleep(1)
    now = datetime.now(timezone.utc)
    # Three and five hours back lie in whole past hours of the 24-hour window, which the page caches.
    seed_events(db, org_id, 8, newest=now - timedelta(hours=3))
    at = AppTest.from_file(APP, default_timeout=60)
    auth.sign_in_session(at.session_state, make_user(db, org_id, "viewer"))
    at.run()
    at.switch_page("pages/audit_logs.py")
    at.query_params["range"] = "now-24h"
    before = chart_totals(at.run())

    # A backfill writes rows dated in the past: 2 success, 1 denied, 1 failure.
    seed_events(db, org_id, 4, newest=now - timedelta(hours=5), actor="agent-2")
    assert chart_totals(at.run()) == before, "closed buckets should come from the cache before the change"

    cache_hooks.history_changed()
    after = chart_totals(at.run())
    assert after["success"] == before["success"] + 2
    assert after["denied"] == before["denied"] + 1
    assert after["failure"] == before["failure"] + 1


def test_history_changed_increments_version(runtime, monkeypatch):
    monkeypatch.setattr(cache_hooks, "_history_next_read", 0.0)
    before = cache_hooks.history_version()
    cache_hooks.history_changed()
    after = cache_hooks.history_version()
    assert after == before + 1


def test_history_version_survives_redis_outage(runtime, tmp_path, monkeypatch):
    cache_hooks.history_changed()
    known = cache_hooks.history_version()
    dead_url = f"unix://{tmp_path / 'no-redis.sock'}"
    broken = dataclasses.replace(runtime, redis=make_redis(dead_url, runtime.settings), redis_url=dead_url)
    set_runtime(broken)
    try:
        monkeypatch.setattr(cache_hooks, "_history_next_read", 0.0)
        assert cache_hooks.history_version() == known
        # The failed read is not repeated on every call.
        assert cache_hooks._history_next_read > 0.0
    finally:
        set_runtime(runtime)
        broken.redis.close()


def test_history_version_read_throttled(runtime, monkeypatch):
    cache_hooks.history_version()
    prefix_key = f"{runtime.settings.redis_prefix}{cache_hooks.HISTORY_VERSION_KEY}"
    runtime.redis.incr(prefix_key)
    stale = cache_hooks.history_version()
    monkeypatch.setattr(cache_hooks, "_history_next_read", 0.0)
    fresh = cache_hooks.history_version()
    assert fresh == stale + 1


def test_backfill_bumps_history_version(runtime, tmp_path, monkeypatch):
    from test_simulate import _backfill_population, _org_name

    sim_runtime = dataclasses.replace(runtime, settings=dataclasses.replace(runtime.settings, data_dir=tmp_path))
    population = _backfill_population(sim_runtime, _org_name(), 6, 1, seed=21)
    monkeypatch.setattr(cache_hooks, "_history_next_read", 0.0)
    before = cache_hooks.history_version()

    run_backfill(sim_runtime, population, days=1, audit_rows=200, bad_share=0.1, seed=21)

    monkeypatch.setattr(cache_hooks, "_history_next_read", 0.0)
    assert cache_hooks.history_version() > before
