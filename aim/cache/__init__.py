"""Two-level cache: L1 in-process with a TTL, L2 in Redis, invalidated in every process.

Use the process-wide instance from `get_cache()`:

    cache = get_cache()
    stats = cache.get_or_compute("dashboard_stats", str(org_id), lambda: load_stats(org_id))
    ...
    cache.invalidate("agent_metadata", str(agent_id))  # after the change commits

Named caches and TTLs are in `aim.cache.policy.POLICIES`.
"""

from __future__ import annotations

import logging
import os
import threading

from aim.cache.codec import DecodeError, decode, encode
from aim.cache.policy import JITTER_FRACTION, L1_TTL_CAP_S, POLICIES, CachePolicy, jittered_ttl
from aim.cache.two_level import TwoLevelCache

__all__ = [
    "CachePolicy",
    "DecodeError",
    "JITTER_FRACTION",
    "L1_TTL_CAP_S",
    "POLICIES",
    "TwoLevelCache",
    "close_cache",
    "decode",
    "encode",
    "get_cache",
    "jittered_ttl",
]

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_cache: TwoLevelCache | None = None
_cache_runtime: object | None = None
_cache_pid: int | None = None


def get_cache() -> TwoLevelCache:
    """Return this process's cache, built on `aim.runtime.get_runtime()` and started on first call.

    A new cache is built when the runtime was replaced (`set_runtime`) or the process was forked,
    because a forked child has no listener thread.
    """
    global _cache, _cache_runtime, _cache_pid
    from aim.runtime import get_runtime  # deferred: the runtime imports the database layer

    runtime = get_runtime()
    with _lock:
        if _cache is not None and _cache_runtime is runtime and _cache_pid == os.getpid():
            return _cache
        if _cache is not None and _cache_pid == os.getpid():
            _cache.close()
        cache = TwoLevelCache(runtime.redis, runtime.settings.redis_prefix)
        cache.start()
        _cache, _cache_runtime, _cache_pid = cache, runtime, os.getpid()
        logger.info("process cache started with prefix %s", runtime.settings.redis_prefix)
        return cache


def close_cache() -> None:
    """Stop and forget this process's cache. The next `get_cache()` builds a new one."""
    global _cache, _cache_runtime, _cache_pid
    with _lock:
        if _cache is not None and _cache_pid == os.getpid():
            _cache.close()
        _cache, _cache_runtime, _cache_pid = None, None, None
