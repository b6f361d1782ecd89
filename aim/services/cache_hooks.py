"""Cache invalidation that services trigger after a committed write.

Invalidation failures are logged by the cache and never undo the write: the TTLs bound how long a
stale entry can live.
"""

from __future__ import annotations

import uuid

AGENT_LIST = "agent_list"
AGENT_METADATA = "agent_metadata"
DASHBOARD_STATS = "dashboard_stats"
MCP_SERVER_LIST = "mcp_server_list"
TRUST_SCORES = "trust_scores"


def _cache():
    from aim.cache import get_cache

    return get_cache()


def agent_changed(agent_id: uuid.UUID | str) -> None:
    cache = _cache()
    cache.invalidate(AGENT_METADATA, str(agent_id))
    cache.invalidate(TRUST_SCORES, str(agent_id))
    cache.invalidate_all(AGENT_LIST)
    cache.invalidate_all(DASHBOARD_STATS)


def agent_registered() -> None:
    cache = _cache()
    cache.invalidate_all(AGENT_LIST)
    cache.invalidate_all(DASHBOARD_STATS)


def trust_changed(agent_id: uuid.UUID | str) -> None:
    """Drop one agent's cached trust score. Callers then call `agent_list_changed` once per batch."""
    _cache().invalidate(TRUST_SCORES, str(agent_id))


def agent_list_changed() -> None:
    _cache().invalidate_all(AGENT_LIST)


def mcp_servers_changed() -> None:
    cache = _cache()
    cache.invalidate_all(MCP_SERVER_LIST)
    cache.invalidate_all(DASHBOARD_STATS)


def stats_changed() -> None:
    _cache().invalidate_all(DASHBOARD_STATS)
