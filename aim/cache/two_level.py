"""`TwoLevelCache`: L1 in this process, L2 in Redis, invalidated everywhere through pub/sub.

Redis keys, under the configured prefix:

- `cache:{cache}:v{generation}:{key}` contains a value as tagged JSON, with a jittered TTL;
- `cache:{cache}:lock{generation}:{key}` is the single-flight lock of a cold key;
- `cache:{cache}:gen` is the generation counter that `invalidate_all` increments, so a whole cache
  is dropped in O(1) and the old keys expire on their own;
- channel `cache:invalidate` carries invalidations to the other processes.

Redis is an accelerator here, never a dependency: every Redis failure is caught, counted, logged
through a warning limited to one per 30 s per process, and the call falls through to L1 and then to
`compute`. After a failure Redis is skipped for `REDIS_RETRY_INTERVAL_S`, so a Redis that times out
costs one slow call per interval instead of one per request. Writes that could not reach Redis are
replayed as invalidations once it is reachable again (see `aim.cache.pending`).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from collections import Counter
from typing import Any, Callable, Mapping, NamedTuple, TypeVar

import redis

from aim import metrics
from aim.cache.codec import DecodeError, decode, encode
from aim.cache.listener import InvalidationListener
from aim.cache.local import LocalCache
from aim.cache.pending import PendingInvalidations
from aim.cache.policy import JITTER_FRACTION, POLICIES, CachePolicy, jittered_ttl
from aim.cache.singleflight import SingleFlight
from aim.cache.throttle import RateLimitedWarning
from aim.errors import ValidationError

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Module-level, so the limit applies per process however many TwoLevelCache objects exist.
REDIS_WARNING = RateLimitedWarning(logger, interval_s=30.0)
LOCK_WAIT_WARNING = RateLimitedWarning(logger, interval_s=30.0)
BAD_VALUE_WARNING = RateLimitedWarning(logger, interval_s=30.0)

DEFAULT_LOCK_TIMEOUT_S = 10.0
REDIS_RETRY_INTERVAL_S = 1.0
LISTENER_START_WAIT_S = 5.0
# Waiters poll L2 for the leader's value starting at 5 ms and doubling up to 50 ms between polls.
LOCK_POLL_INITIAL_S = 0.005
LOCK_POLL_MAX_S = 0.05
# After finding a key of a `stale_s` cache locked by another process's load, this process serves
# the stale value for this long without asking Redis again, so that a burst of reads costs one
# lock attempt instead of one each.
REMOTE_LOAD_GRACE_S = 0.05

# Store the computed value only while the caller still holds the lock, then release it. A write or
# invalidation that ran during the computation deletes the lock, so a value computed from data read
# before that write is never stored in L2.
_STORE_AND_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
    redis.call('DEL', KEYS[1])
    return 1
end
return 0
"""
# Compare-and-delete: release the lock only if it still holds this caller's token.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""


class _RedisUnavailable(Exception):
    """Internal signal: this Redis call failed or was skipped, so fall through to L1 or compute."""


class _Loaded(NamedTuple):
    """Outcome of one load, shared by the threads that waited on it."""

    result: str  # l2_hit or miss, or l1_hit for a stale value
    data: bytes
    value: Any  # decoded from `data`, for the leader only: waiters decode their own copy
    l1_ttl_cap_s: float | None  # remaining L2 TTL, or None for no cap


# Bound of the map of decoded values that get_local(shared=True) reuses.
SHARED_VALUES_MAX = 4096


class TwoLevelCache:
    """Two-level cache over the named caches in `policies` (default `POLICIES`).

    Values are JSON types plus datetime, date, time, timedelta, UUID, Decimal and bytes (see
    `aim.cache.codec`), and every call returns a fresh copy unless it passes `shared`. Call
    `start()` to receive other processes' invalidations and `close()` at shutdown. All methods are
    thread-safe, and none raises because Redis is down. They raise `ValidationError` for an unknown
    cache name, for a key that is not a non-empty str, and for a value that cannot be encoded.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        *,
        policies: Mapping[str, CachePolicy] | None = None,
        lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S,
        jitter: float = JITTER_FRACTION,
    ) -> None:
        if lock_timeout_s <= 0:
            raise ValidationError("lock_timeout_s", f"{lock_timeout_s!r} is not positive; expected seconds > 0")
        jittered_ttl(1.0, jitter)  # validates `jitter`
        self._client = client
        self._prefix = prefix
        self._policies = dict(POLICIES if policies is None else policies)
        self._lock_timeout_s = lock_timeout_s
        self._jitter = jitter
        self.origin = uuid.uuid4().hex
        self.channel = f"{prefix}cache:invalidate"

        self._local = LocalCache(self._policies.values())
        # Decoded L1 values handed out shared by get_local(shared=True), as (cache, key) ->
        # (the L1 bytes they came from, value). An entry is valid only while L1 contains those same bytes.
        self._shared: dict[tuple[str, str], tuple[bytes, Any]] = {}
        self._flights: SingleFlight[_Loaded] = SingleFlight()
        # (cache, key) -> monotonic time until which another process is taken to be loading it.
        self._remote_loads: dict[tuple[str, str], float] = {}
        self._counters_lock = threading.Lock()
        self._counters: dict[str, Counter] = {name: Counter() for name in self._policies}
        # Monotonic time before which Redis calls are skipped after a failure.
        self._redis_retry_at = 0.0
        self._pending = PendingInvalidations()
        self._replay_lock = threading.Lock()

        self._store_and_release = client.register_script(_STORE_AND_RELEASE_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._listener = InvalidationListener(client, self.channel, self._apply_message, self._on_subscribed)

    # Lifecycle

    def start(self, wait_s: float = LISTENER_START_WAIT_S) -> bool:
        """Start the invalidation listener and wait up to `wait_s` for its subscription.

        Return True once subscribed. When Redis is unreachable, return False and keep retrying in
        the background. Until the listener subscribes, only this process's own writes reach its L1.
        """
        subscribed = self._listener.start(wait_s)
        if not subscribed:
            logger.warning(
                "cache invalidation listener not subscribed to %s within %.1f s; retrying in the background",
                self.channel, wait_s,
            )
        return subscribed

    def close(self) -> None:
        """Stop the listener thread. The Redis client belongs to the caller and stays open."""
        self._listener.stop()

    def __enter__(self) -> "TwoLevelCache":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # Reads

    def get_or_compute(self, cache: str, key: str, compute: Callable[[], T], *, shared: bool = False) -> T:
        """Return the cached value of `key`, or run `compute()` once, cache its result and return it.

        Concurrent callers of one cold key share one `compute()`: threads of this process wait for
        the first thread, and other processes wait on a Redis lock for up to `lock_timeout_s` and
        then compute themselves. An exception from `compute()` propagates to the caller and to the
        threads waiting on it, and nothing is cached. `shared` applies to L1 hits as in `get_local`.

        In a cache with `stale_s` (see `aim.cache.policy`), a caller that would wait for another
        caller's load gets the value that the last `invalidate_all` dropped instead, when there is
        one. Such a value counts as an `l1_hit` in the metrics and as `stale` in `stats()`.
        """
        policy = self._policy(cache)
        _check_key(key)
        start = time.perf_counter()

        data = self._local.get(cache, key)
        if data is None and policy.stale_s:
            data = self._stale_while_loading(cache, key)
        if data is not None:
            value = self._decode_shared(cache, key, data) if shared else decode(data)
            self._record(cache, "l1_hit", start)
            return value

        loaded, waited = self._flights.do((cache, key), lambda: self._load(policy, key, compute))
        self._record(cache, loaded.result, start)
        if waited:
            self._count(cache, "shared_wait")
            return decode(loaded.data)
        return loaded.value

    def get_local(self, cache: str, key: str, default: Any = None, *, shared: bool = False) -> Any:
        """Return the L1 value of `key`, or `default` when this process's L1 has no entry for it.

        Pure CPU, with no Redis or PostgreSQL call, so async code may call it on the event loop and
        fall back to `get_or_compute` in a thread on a miss. A miss here is not counted, because the
        fallback counts the same lookup. In a cache with `stale_s`, it returns the dropped value
        while another thread reloads the key, as `get_or_compute` would.

        With `shared`, repeated hits on the same L1 entry return one decoded object instead of a
        fresh copy each, so the caller must not change it. In py-spy profiles of the API, decoding
        was the largest cost of a hit on a cached response body or API key.
        """
        policy = self._policy(cache)
        _check_key(key)
        start = time.perf_counter()
        data = self._local.get(cache, key)
        if data is None and policy.stale_s:
            data = self._stale_while_loading(cache, key)
        if data is None:
            return default
        value = self._decode_shared(cache, key, data) if shared else decode(data)
        self._record(cache, "l1_hit", start)
        return value

    def _stale_while_loading(self, cache: str, key: str) -> bytes | None:
        """Return the stale L1 value of `key` while another thread or process reloads it, else None."""
        if not self._flights.running((cache, key)):
            until = self._remote_loads.get((cache, key))
            if until is None:
                return None
            if time.monotonic() > until:
                self._remote_loads.pop((cache, key), None)
                return None
        data = self._local.get_stale(cache, key)
        if data is not None:
            self._count(cache, "stale")
        return data

    def _decode_shared(self, cache: str, key: str, data: bytes) -> Any:
        """Return the decoded `data` of L1 entry (`cache`, `key`), decoding it only on its first hit."""
        memo = self._shared.get((cache, key))
        if memo is not None and memo[0] is data:
            return memo[1]
        value = decode(data)
        if len(self._shared) >= SHARED_VALUES_MAX:
            # Entries of evicted or replaced L1 values are never read again, so dropping them all at
            # once keeps the map bounded at the price of a few decodes.
            self._shared.clear()
        self._shared[(cache, key)] = (data, value)
        return value

    def get(self, cache: str, key: str, default: Any = None) -> Any:
        """Return the cached value of `key`, or `default` when neither level contains it.

        Unlike `get_or_compute`, this never computes and never waits on another caller's computation.
        """
        policy = self._policy(cache)
        _check_key(key)
        start = time.perf_counter()

        data = self._local.get(cache, key)
        if data is not None:
            value = decode(data)
            self._record(cache, "l1_hit", start)
            return value

        epoch = self._local.epoch(cache)
        try:
            found = self._read_l2(cache, self._generation(cache), key)
        except _RedisUnavailable:
            found = None
        if found is None:
            self._record(cache, "miss", start)
            return default
        data, value, remaining_s = found
        self._fill_l1(policy, key, data, epoch, remaining_s)
        self._record(cache, "l2_hit", start)
        return value

    # Writes

    def set(self, cache: str, key: str, value: Any) -> None:
        """Store `value` on both levels and drop `key` from every other process's L1.

        Call it after the database transaction that produced `value` commits. Raise
        `ValidationError` before changing anything when `value` cannot be encoded.
        """
        policy = self._policy(cache)
        _check_key(key)
        data = encode(value)
        ttl_s = jittered_ttl(policy.ttl_s, self._jitter)
        message = self._message(cache, key=key)

        def write(generation: int) -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.set(self._value_key(cache, generation, key), data, px=_milliseconds(ttl_s))
            pipe.delete(self._lock_key(cache, generation, key))
            pipe.publish(self.channel, message)
            pipe.execute()

        try:
            generation = self._generation(cache)
            self._call_redis(cache, "set", lambda: write(generation))
        except _RedisUnavailable:
            self._pending.add(cache, key)
        # L1 changes only after L2 did, so a concurrent load that read the old L2 value has an
        # older epoch and cannot store it over this one.
        self._local.invalidate(cache, key)
        self._local.put(cache, key, data, self._l1_ttl(policy, ttl_s))

    def invalidate(self, cache: str, key: str) -> None:
        """Drop `key` from both levels and from every other process's L1.

        Call it after the database transaction that changed the underlying data commits. A
        computation of `key` that is running anywhere meanwhile still returns its result to its
        callers, but does not store it.
        """
        self._policy(cache)
        _check_key(key)
        message = self._message(cache, key=key)

        def delete(generation: int) -> None:
            pipe = self._client.pipeline(transaction=True)
            pipe.delete(self._value_key(cache, generation, key), self._lock_key(cache, generation, key))
            pipe.publish(self.channel, message)
            pipe.execute()

        try:
            generation = self._generation(cache)
            self._call_redis(cache, "invalidate", lambda: delete(generation))
        except _RedisUnavailable:
            self._pending.add(cache, key)
        # After the L2 delete, for the same reason as in `set`.
        self._local.invalidate(cache, key)

    def invalidate_all(self, cache: str, *more: str) -> None:
        """Drop every key of `cache` (and of each cache in `more`) on both levels and in every process.

        Each cache moves to a new generation. All of them change in one Redis round trip, with one
        message per cache, which processes of any version apply.
        """
        caches = (cache, *more)
        for name in caches:
            self._policy(name)
        messages = [self._message(name, all_keys=True) for name in caches]

        def bump() -> list[int]:
            pipe = self._client.pipeline(transaction=True)
            for name in caches:
                pipe.incr(self._generation_key(name))
            for message in messages:
                pipe.publish(self.channel, message)
            return [int(generation) for generation in pipe.execute()[:len(caches)]]

        generations: list[int | None]
        try:
            generations = list(self._call_redis(cache, "invalidate_all", bump))
        except _RedisUnavailable:
            generations = [None] * len(caches)
            for name in caches:
                self._pending.add(name, None)
        # Invalidate L1 after INCR, so a concurrent reader that fetched the old generation before
        # the INCR cannot store it: its epoch no longer matches.
        for name, generation in zip(caches, generations):
            self._local.invalidate_all(name, generation)

    # Introspection

    def stats(self) -> dict[str, dict[str, int]]:
        """Return per-cache counters since construction.

        Keys: `l1_hit`, `l2_hit`, `miss` (lookups by result), `compute` (calls of `compute()` in
        this process), `shared_wait` (calls served by another thread's in-flight load), `stale`
        (calls answered with a dropped value while the key reloaded, also counted as `l1_hit`),
        `l2_unavailable` (Redis calls that failed or were skipped) and `l1_size` (live L1 entries).
        """
        with self._counters_lock:
            snapshot = {name: dict(counter) for name, counter in self._counters.items()}
        result = {}
        for name in self._policies:
            counts = {field: snapshot[name].get(field, 0) for field in _STAT_FIELDS}
            counts["l1_size"] = self._local.size(name)
            result[name] = counts
        return result

    @property
    def policies(self) -> Mapping[str, CachePolicy]:
        return dict(self._policies)

    @property
    def subscriptions(self) -> int:
        """Count of (re)subscriptions of the invalidation listener. Each one cleared this process's L1."""
        return self._listener.subscriptions

    @property
    def listening(self) -> bool:
        """True while the invalidation listener thread runs (subscribed or reconnecting)."""
        return self._listener.running

    # Loading a cold key

    def _load(self, policy: CachePolicy, key: str, compute: Callable[[], Any]) -> _Loaded:
        """Fetch `key` from L2, or compute it under the cross-process lock; fill L1 either way."""
        cache = policy.name
        epoch = self._local.epoch(cache)
        try:
            generation = self._generation(cache)
            found = self._read_l2(cache, generation, key)
            if found is not None:
                loaded = _Loaded("l2_hit", *found)
            else:
                loaded = self._compute_under_lock(policy, generation, key, compute)
        except _RedisUnavailable:
            data = self._compute(cache, compute)
            loaded = _Loaded("miss", data, decode(data), None)
        if loaded.result == "l1_hit":
            return loaded  # a stale value, which must not become current again
        self._fill_l1(policy, key, loaded.data, epoch, loaded.l1_ttl_cap_s)
        return loaded

    def _compute_under_lock(
        self, policy: CachePolicy, generation: int, key: str, compute: Callable[[], Any]
    ) -> _Loaded:
        cache = policy.name
        lock_key = self._lock_key(cache, generation, key)
        token = secrets.token_hex(16)
        lock_ms = _milliseconds(self._lock_timeout_s)

        def acquire() -> bool:
            return bool(self._client.set(lock_key, token, nx=True, px=lock_ms))

        if self._call_redis(cache, "acquire lock", acquire):
            return self._compute_as_leader(policy, generation, key, lock_key, token, compute)

        stale = self._local.get_stale(cache, key) if policy.stale_s else None
        if stale is not None:
            # Another process is loading the key, so return the dropped value instead of polling L2.
            if len(self._remote_loads) >= SHARED_VALUES_MAX:
                self._remote_loads.clear()
            self._remote_loads[(cache, key)] = time.monotonic() + REMOTE_LOAD_GRACE_S
            self._count(cache, "stale")
            return _Loaded("l1_hit", stale, decode(stale), None)

        # Another process holds the lock: poll L2 for its value. If the lock disappears without a
        # value (its holder failed), take the lock and compute here.
        deadline = time.monotonic() + self._lock_timeout_s
        delay = LOCK_POLL_INITIAL_S
        while (remaining := deadline - time.monotonic()) > 0:
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, LOCK_POLL_MAX_S)
            found = self._read_l2(cache, generation, key)
            if found is not None:
                return _Loaded("l2_hit", *found)
            if self._call_redis(cache, "acquire lock", acquire):
                return self._compute_as_leader(policy, generation, key, lock_key, token, compute)

        LOCK_WAIT_WARNING.warning(
            "waited %.1f s for another process to compute a %s value; computing here without storing it in L2",
            self._lock_timeout_s, cache,
        )
        # Not cached in L1 either: the lock holder will store a value soon, and this one may be older.
        data = self._compute(cache, compute)
        return _Loaded("miss", data, decode(data), 0.0)

    def _compute_as_leader(
        self, policy: CachePolicy, generation: int, key: str, lock_key: str, token: str,
        compute: Callable[[], Any],
    ) -> _Loaded:
        cache = policy.name
        try:
            data = self._compute(cache, compute)
        except BaseException:
            self._release_lock(cache, lock_key, token)
            raise

        ttl_s = jittered_ttl(policy.ttl_s, self._jitter)

        def store() -> bool:
            keys = [lock_key, self._value_key(cache, generation, key)]
            return bool(self._store_and_release(keys=keys, args=[token, data, _milliseconds(ttl_s)]))

        # Decoded rather than returned as computed, so the first caller sees what later hits see
        # (lists for tuples, for example).
        value = decode(data)
        try:
            stored = self._call_redis(cache, "store", store)
        except _RedisUnavailable:
            return _Loaded("miss", data, value, None)
        if not stored:
            # The lock expired or a write deleted it while computing, so this value may predate that
            # write. Return it to the callers but cache it on neither level.
            logger.debug("computed %s value not cached: the lock was released or expired during compute", cache)
            return _Loaded("miss", data, value, 0.0)
        return _Loaded("miss", data, value, ttl_s)

    def _compute(self, cache: str, compute: Callable[[], Any]) -> bytes:
        self._count(cache, "compute")
        return encode(compute())

    def _release_lock(self, cache: str, lock_key: str, token: str) -> None:
        try:
            self._call_redis(cache, "release lock", lambda: self._release(keys=[lock_key], args=[token]))
        except _RedisUnavailable:
            pass  # the lock expires after lock_timeout_s

    # Redis access

    def _generation(self, cache: str) -> int:
        generation = self._local.generation(cache)
        if generation is not None:
            return generation
        epoch = self._local.epoch(cache)
        raw = self._call_redis(cache, "read generation", lambda: self._client.get(self._generation_key(cache)))
        generation = int(raw) if raw is not None else 0
        self._local.put_generation_if_current(cache, generation, epoch)
        return generation

    def _read_l2(self, cache: str, generation: int, key: str) -> tuple[bytes, Any, float | None] | None:
        """Return `(data, decoded value, remaining TTL in s)` of `key` in L2, or None when absent or unreadable."""
        value_key = self._value_key(cache, generation, key)

        def read() -> list:
            pipe = self._client.pipeline(transaction=False)
            pipe.get(value_key)
            pipe.pttl(value_key)
            return pipe.execute()

        data, pttl_ms = self._call_redis(cache, "get", read)
        if data is None:
            return None
        try:
            value = decode(data)
        except DecodeError as exc:
            # Treated as a miss, so the next computed value overwrites it.
            BAD_VALUE_WARNING.warning("ignored an unreadable %s value in Redis: %s", cache, exc)
            return None
        return data, value, (pttl_ms / 1000.0 if pttl_ms > 0 else None)

    def _call_redis(self, cache: str, action: str, fn: Callable[[], T]) -> T:
        if time.monotonic() < self._redis_retry_at:
            self._count(cache, "l2_unavailable")
            raise _RedisUnavailable
        try:
            result = fn()
        except (redis.RedisError, OSError) as exc:
            self._redis_retry_at = time.monotonic() + REDIS_RETRY_INTERVAL_S
            self._count(cache, "l2_unavailable")
            REDIS_WARNING.warning(
                "Redis cache call %s on %s failed with %s: %s. Serving from L1 and PostgreSQL, retrying Redis in %.0f s",
                action, cache, type(exc).__name__, exc, REDIS_RETRY_INTERVAL_S,
            )
            raise _RedisUnavailable from exc
        if len(self._pending):
            self._replay_pending()
        return result

    def _replay_pending(self) -> None:
        """Send the invalidations that failed while Redis was unreachable. A failing one is queued again."""
        if not self._replay_lock.acquire(blocking=False):
            return  # another thread is replaying, or this is a call made by the replay itself
        try:
            entries = self._pending.take()
            if entries:
                logger.info("replaying %d cache invalidations that failed while Redis was unreachable", len(entries))
            for cache, key in entries:
                if key is None:
                    self.invalidate_all(cache)
                else:
                    self.invalidate(cache, key)
        finally:
            self._replay_lock.release()

    def _value_key(self, cache: str, generation: int, key: str) -> str:
        return f"{self._prefix}cache:{cache}:v{generation}:{key}"

    def _lock_key(self, cache: str, generation: int, key: str) -> str:
        return f"{self._prefix}cache:{cache}:lock{generation}:{key}"

    def _generation_key(self, cache: str) -> str:
        return f"{self._prefix}cache:{cache}:gen"

    # Invalidation messages

    def _message(self, cache: str, *, key: str | None = None, all_keys: bool = False) -> str:
        return json.dumps({"origin": self.origin, "cache": cache, "key": key, "all": all_keys})

    def _on_subscribed(self) -> None:
        """Clear L1 and replay pending invalidations after each (re)subscription. Runs on the listener thread."""
        # Messages sent while the listener was not subscribed are lost, so any L1 entry may be stale.
        self._local.clear()
        # The subscription shows that Redis is reachable again, so stop skipping it.
        self._redis_retry_at = 0.0
        if len(self._pending):
            self._replay_pending()

    def _apply_message(self, message: dict[str, Any]) -> None:
        """Apply another process's invalidation to L1. Runs on the listener thread."""
        if message.get("origin") == self.origin:
            return  # this process applied it already
        cache = message.get("cache")
        if cache not in self._policies:
            return  # a cache this process does not use, or a newer version's
        if message.get("all"):
            self._local.invalidate_all(cache)
            return
        key = message.get("key")
        if isinstance(key, str):
            self._local.invalidate(cache, key)

    # Helpers

    def _policy(self, cache: str) -> CachePolicy:
        policy = self._policies.get(cache)
        if policy is None:
            expected = ", ".join(sorted(self._policies))
            raise ValidationError("cache", f"unknown cache {cache!r}; expected one of {expected}")
        return policy

    def _l1_ttl(self, policy: CachePolicy, l2_ttl_s: float | None) -> float:
        ttl_s = jittered_ttl(policy.l1_ttl_s, self._jitter)
        return ttl_s if l2_ttl_s is None else min(ttl_s, l2_ttl_s)

    def _fill_l1(self, policy: CachePolicy, key: str, data: bytes, epoch: int, l2_ttl_s: float | None) -> None:
        if policy.uses_l1:
            self._local.put_if_current(policy.name, key, data, self._l1_ttl(policy, l2_ttl_s), epoch)

    def _count(self, cache: str, field: str) -> None:
        with self._counters_lock:
            self._counters[cache][field] += 1

    def _record(self, cache: str, result: str, start: float) -> None:
        metrics.observe_cache(cache, result, time.perf_counter() - start)
        self._count(cache, result)


_STAT_FIELDS = ("l1_hit", "l2_hit", "miss", "compute", "shared_wait", "stale", "l2_unavailable")


def _check_key(key: object) -> None:
    if not isinstance(key, str) or not key:
        raise ValidationError("key", f"{key!r} is not a valid cache key; expected a non-empty str")


def _milliseconds(seconds: float) -> int:
    return max(1, int(seconds * 1000))
