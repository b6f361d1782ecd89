"""Cache invalidation that services trigger after a committed write.

Invalidation failures are logged by the cache and never undo the write: the TTLs bound how long a
stale entry can live.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterable

import redis

from aim.cache.throttle import RateLimitedWarning

logger = logging.getLogger(__name__)
REDIS_WARNING = RateLimitedWarning(logger, interval_s=30.0)

AGENT_LIST = "agent_list"
AGENT_METADATA = "agent_metadata"
DASHBOARD_STATS = "dashboard_stats"
MCP_SERVER_LIST = "mcp_server_list"
TRUST_SCORES = "trust_scores"

# Redis key (under the configured prefix) of the history version: a counter that changes only when
# past rows are written, as a backfill does. Dashboard loaders that cache figures of past time
# buckets put it into their cache keys, so entries made before the change are no longer used.
HISTORY_VERSION_KEY = "history_version"
# Each process reads the counter at most this often, so a page render costs no Redis call.
HISTORY_VERSION_REFRESH_S = 2.0
# After a failed read the process keeps its last known version this long before it reads Redis again.
HISTORY_VERSION_RETRY_S = 30.0

_history_lock = threading.Lock()
_history_version = 0
_history_next_read = 0.0


def _cache():
    from aim.cache import get_cache

    return get_cache()


def agent_changed(agent_id: uuid.UUID | str) -> None:
    cache = _cache()
    cache.invalidate(AGENT_METADATA, str(agent_id))
    cache.invalidate(TRUST_SCORES, str(agent_id))
    cache.invalidate_all(AGENT_LIST, DASHBOARD_STATS)


def agent_registered() -> None:
    _cache().invalidate_all(AGENT_LIST, DASHBOARD_STATS)


def scores_recalculated(agent_ids: Iterable[uuid.UUID | str] | None = None) -> None:
    """Drop cached trust scores after a recalculation commits, with the agent lists and overview that show them.

    With `agent_ids`, only those agents' scores are dropped. Without, every cached score is, which
    suits a recalculation of whole organizations. Until then, verification would go on deciding
    with the old score for up to the trust cache's TTL.
    """
    cache = _cache()
    if agent_ids is None:
        cache.invalidate_all(TRUST_SCORES, AGENT_LIST, DASHBOARD_STATS)
        return
    for agent_id in agent_ids:
        cache.invalidate(TRUST_SCORES, str(agent_id))
    cache.invalidate_all(AGENT_LIST, DASHBOARD_STATS)


def agent_list_changed() -> None:
    _cache().invalidate_all(AGENT_LIST)


def mcp_servers_changed() -> None:
    _cache().invalidate_all(MCP_SERVER_LIST, DASHBOARD_STATS)


def stats_changed() -> None:
    _cache().invalidate_all(DASHBOARD_STATS)


def history_version() -> int:
    """Return the history version, read from Redis at most every HISTORY_VERSION_REFRESH_S seconds.

    While Redis is unreachable this returns the last version read, or 0 before the first read, so
    cached figures stay in use until their TTL instead of failing.
    """
    global _history_version, _history_next_read
    now = time.monotonic()
    with _history_lock:
        if now < _history_next_read:
            return _history_version
    try:
        client, key = _history_client()
        raw = client.get(key)
        version = int(raw) if raw is not None else 0
        delay = HISTORY_VERSION_REFRESH_S
    except (redis.RedisError, OSError, ValueError) as exc:
        REDIS_WARNING.warning("reading the history version from Redis failed, keeping version %d: %s",
                              _history_version, exc)
        version = None
        delay = HISTORY_VERSION_RETRY_S
    with _history_lock:
        if version is not None:
            _history_version = version
        _history_next_read = now + delay
        return _history_version


def history_changed() -> None:
    """Mark past data as rewritten: bump the history version and drop the shared aggregate caches.

    Call after committing rows dated in the past. Other dashboard processes see the new version
    within HISTORY_VERSION_REFRESH_S seconds. If Redis is down the bump is lost and cached figures
    catch up only when their TTLs expire.
    """
    global _history_version, _history_next_read
    try:
        client, key = _history_client()
        version = int(client.incr(key))
    except (redis.RedisError, OSError, ValueError) as exc:
        REDIS_WARNING.warning("bumping the history version in Redis failed: %s", exc)
    else:
        with _history_lock:
            _history_version = version
            _history_next_read = time.monotonic() + HISTORY_VERSION_REFRESH_S
    cache = _cache()
    for name in (DASHBOARD_STATS, AGENT_LIST, MCP_SERVER_LIST, TRUST_SCORES):
        cache.invalidate_all(name)


def _history_client() -> tuple[redis.Redis, str]:
    from aim.runtime import get_runtime

    runtime = get_runtime()
    return runtime.redis, f"{runtime.settings.redis_prefix}{HISTORY_VERSION_KEY}"
