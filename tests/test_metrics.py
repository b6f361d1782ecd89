"""Per-minute roll-ups and the percentile queries, against real PostgreSQL.

Each test writes under its own metric name at fixed past minutes, so tests sharing the session
database never see each other's rows.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from aim.db.pool import Database
from aim.errors import ValidationError
from aim.metrics import histogram, query
from aim.metrics.rollup import RECORDER, Recorder, label_key

pytestmark = pytest.mark.integration

T0 = datetime(2024, 3, 5, 12, 0, tzinfo=timezone.utc)
MINUTE = timedelta(minutes=1)


def unique_name(prefix: str) -> str:
    return f"test_{prefix}_{uuid.uuid4().hex[:10]}"


def stored_rows(db: Database, name: str) -> list[dict]:
    return db.fetch_all(
        "test.metric_rows",
        "SELECT minute, labels, count, sum, buckets FROM metric_rollups WHERE name = %s ORDER BY minute, labels",
        (name,),
    )


# --- bucket layout ---------------------------------------------------------------------------------


def test_layout_growth_factor_at_most_1_1():
    assert histogram.growth_factor() <= 1.1


def test_layout_covers_10us_to_100s():
    assert histogram.LOWEST_BOUND <= 10e-6
    assert histogram.LOWEST_BOUND >= 10e-6 / histogram.GAMMA
    assert histogram.HIGHEST_BOUND >= 100.0
    assert histogram.HIGHEST_BOUND <= 100.0 * histogram.GAMMA


def test_layout_underflow_and_overflow_buckets():
    assert histogram.bucket_index(0.0) == histogram.UNDERFLOW_INDEX
    assert histogram.bucket_index(1e-9) == histogram.UNDERFLOW_INDEX
    assert histogram.bucket_index(1e6) == histogram.OVERFLOW_INDEX
    assert histogram.OVERFLOW_INDEX == histogram.BUCKET_COUNT - 1


def test_bucket_index_matches_bucket_counts():
    rng = np.random.default_rng(7)
    samples = np.concatenate([rng.lognormal(-5, 3, 5000), np.array(histogram.BOUNDARIES), [0.0, 1e6]])
    expected = np.zeros(histogram.BUCKET_COUNT, dtype=np.int64)
    for value in samples:
        expected[histogram.bucket_index(float(value))] += 1
    assert np.array_equal(histogram.bucket_counts(samples), expected)


def test_bucket_holds_its_bounds():
    # Bucket i covers (BOUNDARIES[i-1], BOUNDARIES[i]]: the upper bound is inside, the lower is not.
    for i in range(1, len(histogram.BOUNDARIES)):
        assert histogram.bucket_index(histogram.BOUNDARIES[i]) == i
        assert histogram.bucket_index(histogram.BOUNDARIES[i - 1] * 1.000001) == i


@pytest.mark.parametrize("bad", [-0.001, math.nan])
def test_bucket_index_rejects_bad_duration(bad):
    with pytest.raises(ValidationError) as info:
        histogram.bucket_index(bad)
    assert info.value.field == "seconds"


def test_quantiles_of_empty_histogram_are_none():
    empty = np.zeros(histogram.BUCKET_COUNT, dtype=np.int64)
    assert histogram.quantiles(empty, [0.5, 0.99]) == [None, None]


def test_trim_and_dense_round_trip():
    dense = histogram.bucket_counts([0.001, 0.002, 0.5])
    stored = histogram.trim_trailing_zeros(dense)
    assert stored[-1] != 0
    assert len(stored) < histogram.BUCKET_COUNT
    assert np.array_equal(histogram.to_dense(stored), dense)


# --- recorder and flush ----------------------------------------------------------------------------

DISTRIBUTIONS = {
    "lognormal": lambda rng, n: rng.lognormal(mean=-4.0, sigma=1.0, size=n),
    "exponential": lambda rng, n: rng.exponential(scale=0.05, size=n),
    "uniform": lambda rng, n: rng.uniform(0.001, 0.5, size=n),
    "bimodal": lambda rng, n: np.concatenate(
        [rng.normal(0.01, 0.001, size=n * 9 // 10), rng.normal(1.0, 0.05, size=n - n * 9 // 10)]
    ),
    "pareto": lambda rng, n: 0.002 * (1.0 + rng.pareto(2.5, size=n)),
}


@pytest.mark.parametrize("distribution", sorted(DISTRIBUTIONS))
def test_merged_percentiles_match_numpy(db, distribution):
    name = unique_name(distribution)
    rng = np.random.default_rng(sorted(DISTRIBUTIONS).index(distribution))
    samples = np.abs(DISTRIBUTIONS[distribution](rng, 12_000))
    # Two recorders ("processes") over three minutes, so the query has to merge six rows.
    recorders = [Recorder(), Recorder()]
    for i, value in enumerate(samples):
        recorders[i % 2].observe(name, {"route": "/x"}, float(value), at=T0 + (i % 3) * MINUTE)
    for recorder in recorders:
        assert recorder.flush(db)

    result = query.summary(db, name, T0, T0 + 3 * MINUTE)
    exact = np.percentile(samples, [50, 95, 99])

    assert result.count == samples.size
    assert result.p50_s == pytest.approx(exact[0], rel=0.05)
    assert result.p95_s == pytest.approx(exact[1], rel=0.05)
    assert result.p99_s == pytest.approx(exact[2], rel=0.05)
    assert result.mean_s == pytest.approx(samples.mean(), rel=1e-9)


def record_sources(db: Database, name: str, slow_requests: int) -> None:
    """Source A: 1,000 requests at 10 ms; source B: `slow_requests` at 2 s; same minute, two recorders."""
    source_a, source_b = Recorder(), Recorder()
    labels = {"route": "/api/v1/agents", "method": "GET", "status": "200"}
    for _ in range(1000):
        source_a.observe(name, labels, 0.010, at=T0)
    for _ in range(slow_requests):
        source_b.observe(name, labels, 2.0, at=T0 + timedelta(seconds=30))
    assert source_a.flush(db)
    assert source_b.flush(db)


def test_two_sources_merged_tail_follows_slow_source(db):
    # 20 slow of 1,020 is about 2 %, so the merged p99 lies in the slow source's 2 s requests.
    name = unique_name("tail")
    record_sources(db, name, slow_requests=20)

    merged = query.summary(db, name, T0, T0 + MINUTE)
    mean_of_p99s = (0.010 + 2.0) / 2

    assert merged.count == 1020
    assert merged.p99_s == pytest.approx(2.0, rel=0.05)
    assert abs(merged.p99_s - mean_of_p99s) > 0.5
    assert merged.p50_s == pytest.approx(0.010, rel=0.05)


def test_two_sources_ten_slow_requests(db):
    # 10 slow of 1,010 is 0.99 %, just under 1 %, so the exact p99 is still 10 ms; the tail shows at p99.5.
    name = unique_name("tail10")
    record_sources(db, name, slow_requests=10)
    samples = np.concatenate([np.full(1000, 0.010), np.full(10, 2.0)])

    merged = query.summary(db, name, T0, T0 + MINUTE)
    buckets = query.merged_buckets(db, name, T0, T0 + MINUTE)
    p995 = histogram.quantiles(buckets, [0.995])[0]
    mean_of_p99s = (0.010 + 2.0) / 2

    assert merged.count == 1010
    assert merged.p99_s == pytest.approx(np.percentile(samples, 99), rel=0.05)
    assert abs(merged.p99_s - mean_of_p99s) > 0.5
    assert p995 == pytest.approx(2.0, rel=0.05)
    assert p995 == pytest.approx(np.percentile(samples, 99.5), rel=0.05)


def test_same_minute_from_two_recorders_adds_up(db):
    name = unique_name("add")
    first, second = Recorder(), Recorder()
    for value in (0.001, 0.002, 0.004):
        first.observe(name, {"query": "q"}, value, at=T0)
    for value in (0.002, 0.5):
        second.observe(name, {"query": "q"}, value, at=T0 + timedelta(seconds=59))
    assert first.flush(db)
    assert second.flush(db)

    rows = stored_rows(db, name)
    expected = histogram.bucket_counts([0.001, 0.002, 0.004, 0.002, 0.5])

    assert len(rows) == 1
    assert rows[0]["minute"] == T0
    assert rows[0]["count"] == 5
    assert rows[0]["sum"] == pytest.approx(0.509)
    assert np.array_equal(histogram.to_dense(rows[0]["buckets"]), expected)


def test_labels_in_any_order_share_a_row(db):
    name = unique_name("labels")
    recorder = Recorder()
    recorder.observe(name, {"a": "1", "b": "2"}, 0.01, at=T0)
    recorder.observe(name, {"b": "2", "a": "1"}, 0.01, at=T0)
    assert recorder.flush(db)

    rows = stored_rows(db, name)

    assert len(rows) == 1
    assert rows[0]["labels"] == {"a": "1", "b": "2"}
    assert rows[0]["count"] == 2


def test_observe_now_shares_observe_row(db):
    name = unique_name("now")
    recorder = Recorder()
    recorder.observe(name, {"route": "/a", "status": "200"}, 0.01)
    recorder.observe_now(name, label_key({"status": "200", "route": "/a"}), 0.03)
    assert recorder.flush(db)

    rows = stored_rows(db, name)

    assert len(rows) == 1
    assert rows[0]["count"] == 2
    assert rows[0]["sum"] == pytest.approx(0.04)


def test_count_only_series_has_null_buckets(db):
    name = unique_name("count")
    recorder = Recorder()
    recorder.count(name, {"direction": "up"}, at=T0)
    recorder.count(name, {"direction": "up"}, 4, at=T0)
    assert recorder.flush(db)

    rows = stored_rows(db, name)

    assert len(rows) == 1
    assert rows[0]["count"] == 5
    assert rows[0]["buckets"] is None


def test_failed_flush_keeps_data_for_next_flush(db, settings):
    name = unique_name("retry")
    recorder = Recorder()
    recorder.observe(name, {"route": "/r"}, 0.02, at=T0)
    recorder.observe(name, {"route": "/r"}, 0.03, at=T0)
    recorder.count(name + "_events", {}, 3, at=T0)

    closed = Database(settings, settings.database_url)
    closed.open()
    closed.close()
    assert recorder.flush(closed) is False
    assert recorder.pending_series() == 2
    assert stored_rows(db, name) == []

    recorder.observe(name, {"route": "/r"}, 0.04, at=T0)
    assert recorder.flush(db) is True
    assert recorder.pending_series() == 0
    assert recorder.flush(db) is True

    rows = stored_rows(db, name)
    events = stored_rows(db, name + "_events")
    assert len(rows) == 1
    assert rows[0]["count"] == 3
    assert sum(rows[0]["buckets"]) == 3
    assert events[0]["count"] == 3


def test_buffer_cap_drops_oldest_minutes(db, settings):
    name = unique_name("cap")
    recorder = Recorder(max_series=2)
    for minute in range(4):
        recorder.observe(name, {}, 0.01, at=T0 + minute * MINUTE)

    closed = Database(settings, settings.database_url)
    closed.open()
    closed.close()
    assert recorder.flush(closed) is False
    assert recorder.pending_series() == 2
    assert recorder.flush(db) is True

    minutes = [row["minute"] for row in stored_rows(db, name)]
    assert minutes == [T0 + 2 * MINUTE, T0 + 3 * MINUTE]


@pytest.mark.timeout(60)
def test_global_recorder_flush_records_own_query(db):
    # The flush's own query is timed into RECORDER while the flush runs; that must not deadlock.
    name = unique_name("global")
    RECORDER.observe(name, {"route": "/g"}, 0.01, at=T0)
    assert RECORDER.flush(db) is True
    assert len(stored_rows(db, name)) == 1
    assert RECORDER.pending_series() >= 1
    assert RECORDER.flush(db) is True

    flushes = db.fetch_value(
        "test.flush_rows",
        "SELECT count(*) FROM metric_rollups WHERE name = 'aim_db_query_duration_seconds' "
        "AND labels @> '{\"query\": \"metrics.flush\"}'",
    )
    assert flushes >= 1


@pytest.mark.timeout(60)
def test_flush_thread_stop_flushes_rest(db):
    name = unique_name("thread")
    recorder = Recorder()
    recorder.start(db, interval_s=3600)
    recorder.observe(name, {}, 0.01, at=T0)
    assert recorder.stop() is True
    assert stored_rows(db, name)[0]["count"] == 1


def test_start_rejects_bad_interval(db):
    with pytest.raises(ValidationError) as info:
        Recorder().start(db, interval_s=0)
    assert info.value.field == "interval_s"


def test_observe_rejects_naive_time():
    with pytest.raises(ValidationError) as info:
        Recorder().observe("m", {}, 0.1, at=datetime(2024, 1, 1))
    assert info.value.field == "at"


# --- queries ---------------------------------------------------------------------------------------


def test_window_without_requests_reports_no_traffic(db):
    name = unique_name("quiet")

    result = query.summary(db, name, T0, T0 + 5 * MINUTE)

    assert result.no_traffic
    assert result.count == 0
    assert result.rate_per_s is None
    assert result.error_rate is None
    assert result.mean_s is None
    assert result.p50_s is None
    assert result.p95_s is None
    assert result.p99_s is None


def test_series_step_without_requests_is_none(db):
    name = unique_name("gap")
    recorder = Recorder()
    recorder.observe(name, {"status": "200"}, 0.05, at=T0)
    assert recorder.flush(db)

    points = query.latency_series(db, name, T0, T0 + 3 * MINUTE, MINUTE, error_rule=query.HTTP_SERVER_ERRORS)

    assert [p.count for p in points] == [1, 0, 0]
    assert points[0].p99_s == pytest.approx(0.05, rel=0.05)
    assert points[0].error_rate == 0.0
    assert points[1].p99_s is None
    assert points[1].rate_per_s is None
    assert points[1].error_rate is None


def test_series_rates_and_http_errors(db):
    name = query.HTTP_METRIC
    route = f"/test/{uuid.uuid4().hex[:8]}"
    recorder = Recorder()
    for status, n in (("200", 90), ("503", 6), ("500", 3), ("404", 1)):
        for _ in range(n):
            recorder.observe(name, {"route": route, "method": "GET", "status": status}, 0.01, at=T0)
    assert recorder.flush(db)

    points = query.latency_series(db, name, T0, T0 + 2 * MINUTE, 2 * MINUTE, label_filter={"route": route})

    assert len(points) == 1
    assert points[0].count == 100
    assert points[0].errors == 9
    assert points[0].error_rate == pytest.approx(0.09)
    assert points[0].rate_per_s == pytest.approx(100 / 120)


def test_series_db_outcome_errors(db):
    name = query.DB_METRIC
    query_name = f"test.{uuid.uuid4().hex[:8]}"
    recorder = Recorder()
    recorder.observe(name, {"query": query_name, "outcome": "ok"}, 0.001, at=T0)
    recorder.observe(name, {"query": query_name, "outcome": "error"}, 0.001, at=T0)
    assert recorder.flush(db)

    result = query.summary(db, name, T0, T0 + MINUTE, label_filter={"query": query_name})

    assert result.count == 2
    assert result.error_rate == pytest.approx(0.5)


def test_series_without_error_rule_has_no_error_rate(db):
    name = unique_name("norule")
    recorder = Recorder()
    recorder.observe(name, {"status": "500"}, 0.01, at=T0)
    assert recorder.flush(db)

    result = query.summary(db, name, T0, T0 + MINUTE)

    assert result.errors is None
    assert result.error_rate is None


def test_series_group_by_fills_every_step(db):
    name = unique_name("group")
    recorder = Recorder()
    recorder.observe(name, {"route": "/a"}, 0.01, at=T0)
    recorder.observe(name, {"route": "/b"}, 0.2, at=T0 + MINUTE)
    assert recorder.flush(db)

    points = query.latency_series(db, name, T0, T0 + 2 * MINUTE, MINUTE, group_by=["route"])
    table = {(p.group["route"], p.start): p for p in points}

    assert len(points) == 4
    assert table[("/a", T0)].p50_s == pytest.approx(0.01, rel=0.05)
    assert table[("/a", T0 + MINUTE)].no_traffic
    assert table[("/b", T0)].no_traffic
    assert table[("/b", T0 + MINUTE)].p50_s == pytest.approx(0.2, rel=0.05)


def test_window_rounds_to_minutes_and_short_last_step(db):
    name = unique_name("round")
    points = query.latency_series(
        db, name, T0 + timedelta(seconds=20), T0 + timedelta(minutes=4, seconds=10), 2 * MINUTE
    )

    assert [p.start for p in points] == [T0, T0 + 2 * MINUTE, T0 + 4 * MINUTE]
    assert points[-1].end == T0 + 5 * MINUTE


def test_counter_series_and_cache_hit_rate(db):
    name = unique_name("cache")
    recorder = Recorder()
    for result, n in (("l1_hit", 70), ("l2_hit", 20), ("miss", 10)):
        recorder.count(name, {"cache": "agents", "result": result}, n, at=T0)
    recorder.count(name, {"cache": "stats", "result": "miss"}, 2, at=T0 + MINUTE)
    assert recorder.flush(db)

    rates = query.cache_hit_rates(db, T0, T0 + 2 * MINUTE, MINUTE, name=name)
    table = {(p.cache, p.start): p for p in rates}
    counts = query.counter_series(db, name, T0, T0 + 2 * MINUTE, MINUTE)

    assert table[("agents", T0)].lookups == 100
    assert table[("agents", T0)].hit_rate == pytest.approx(0.9)
    assert table[("agents", T0 + MINUTE)].hit_rate is None
    assert table[("stats", T0 + MINUTE)].hit_rate == 0.0
    assert table[("stats", T0)].hit_rate is None
    assert [p.count for p in counts] == [100, 2]
    assert counts[0].rate_per_s == pytest.approx(100 / 60)


def test_counter_series_without_events_is_none(db):
    points = query.counter_series(db, unique_name("none"), T0, T0 + 2 * MINUTE, MINUTE)

    assert [p.count for p in points] == [0, 0]
    assert [p.rate_per_s for p in points] == [None, None]


def test_heatmap_counts_per_step_and_bucket(db):
    name = unique_name("heat")
    recorder = Recorder()
    for _ in range(3):
        recorder.observe(name, {}, 0.001, at=T0)
    recorder.observe(name, {}, 0.1, at=T0 + MINUTE)
    assert recorder.flush(db)

    result = query.heatmap(db, name, T0, T0 + 3 * MINUTE, MINUTE)
    low = histogram.bucket_index(0.001)
    high = histogram.bucket_index(0.1)

    assert result.step_starts == [T0, T0 + MINUTE, T0 + 2 * MINUTE]
    assert result.counts.shape == (3, high - low + 1)
    assert result.counts[0, 0] == 3
    assert result.counts[1, -1] == 1
    assert result.counts.sum() == 4
    assert result.lower_s[0] < 0.001 <= result.upper_s[0]
    assert result.lower_s[-1] < 0.1 <= result.upper_s[-1]


def test_heatmap_without_data_is_empty(db):
    result = query.heatmap(db, unique_name("noheat"), T0, T0 + 2 * MINUTE, MINUTE)

    assert result.counts.shape == (2, 0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"start": datetime(2024, 1, 1), "end": T0, "step": MINUTE}, "start"),
        ({"start": T0, "end": T0, "step": MINUTE}, "end"),
        ({"start": T0, "end": T0 + MINUTE, "step": timedelta(seconds=30)}, "step"),
        ({"start": T0, "end": T0 + timedelta(days=30), "step": MINUTE}, "step"),
    ],
)
def test_series_rejects_bad_window(db, kwargs, field):
    with pytest.raises(ValidationError) as info:
        query.latency_series(db, "m", **kwargs)
    assert info.value.field == field


def test_series_rejects_bad_group_by(db):
    with pytest.raises(ValidationError) as info:
        query.latency_series(db, "m", T0, T0 + MINUTE, MINUTE, group_by=["route", "route"])
    assert info.value.field == "group_by"


def test_concurrent_observers_lose_nothing(db):
    name = unique_name("threads")
    recorder = Recorder()

    def work(thread_index: int) -> None:
        for i in range(2000):
            recorder.observe(name, {"thread": str(thread_index % 2)}, 0.001 * (1 + i % 7), at=T0)
            if i % 500 == 0:
                recorder.flush(db)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert recorder.flush(db)

    rows = stored_rows(db, name)
    assert sum(row["count"] for row in rows) == 8000
    assert sum(sum(row["buckets"]) for row in rows) == 8000


def test_forked_child_starts_with_empty_buffer():
    recorder = Recorder()
    recorder.observe(unique_name("fork"), {}, 0.01, at=T0)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write_end, str(recorder.pending_series()).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child_pending = int(os.read(read_end, 16))
    os.close(read_end)
    os.close(write_end)

    assert child_pending == 0
    assert recorder.pending_series() == 1


def test_flush_keeps_batch_on_unexpected_error(db):
    name = unique_name("bug")
    recorder = Recorder()
    recorder.observe(name, {}, 0.01, at=T0)

    with pytest.raises(AttributeError):
        recorder.flush(None)
    assert recorder.pending_series() == 1
    assert recorder.flush(db) is True
    assert stored_rows(db, name)[0]["count"] == 1
