"""Time TwoLevelCache.get_or_compute for an L1 hit, an L2 hit and a miss that queries PostgreSQL.

Usage: python3 bench/cache_latency.py [--agents N] [--hits N] [--misses N]

Backends come from AIM_DATABASE_URL and AIM_REDIS_URL, or the embedded servers under AIM_DATA_DIR
(default .aim-test-data in the repository). The script creates a throwaway database with one
organization and `agents` agents, uses a fresh Redis key prefix, and drops both at the end.

Cases, one call each, from one thread:
  l1_hit     the key is in this process's L1
  l1_shared  the same with shared=True: repeated hits return one decoded object instead of a copy
  l2_hit     the cache runs with L1 turned off, so every call reads Redis (GET + PTTL) and decodes
  miss       a key never seen before: L2 read, SET NX lock, the PostgreSQL query, store-and-release
  postgres   the same PostgreSQL query without the cache, for reference

The value is one agent row (UUID, Decimal, datetimes, a text array and a jsonb object), as the
agent_metadata cache would hold it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
import uuid
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
from psycopg import sql

from aim import embedded
from aim.cache import POLICIES, CachePolicy, TwoLevelCache
from aim.config import load_settings, redact_url
from aim.db import migrate
from aim.db.pool import Database
from aim.runtime import make_redis

REPO_ROOT = Path(__file__).resolve().parent.parent
CACHE = "agent_metadata"
AGENT_QUERY = """
SELECT id, organization_id, name, agent_type, status, trust_score, capabilities, metadata,
       key_id, created_at, updated_at
FROM agents WHERE id = %s
"""
WARMUP = 500


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=10_000, help="agent rows to create (default 10000)")
    parser.add_argument("--hits", type=int, default=20_000, help="timed calls per hit case (default 20000)")
    parser.add_argument("--misses", type=int, default=5_000, help="timed calls for miss and postgres (default 5000)")
    return parser.parse_args()


def data_dir() -> Path:
    return Path(os.environ.get("AIM_DATA_DIR", REPO_ROOT / ".aim-test-data"))


def create_database(server_url: str, agents: int) -> tuple[str, str, list[uuid.UUID]]:
    """Create and fill a throwaway database. Return its name, URL and the agent ids."""
    name = f"aim_bench_cache_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    migrate.upgrade(url)
    with psycopg.connect(url) as conn:
        org_id = conn.execute("INSERT INTO organizations (name) VALUES ('bench') RETURNING id").fetchone()[0]
        conn.execute(
            """
            INSERT INTO agents (organization_id, name, status, trust_score, public_key, key_id, capabilities, metadata)
            SELECT %s, 'agent-' || i, 'verified', (i %% 1000) / 1000.0,
                   decode(md5(i::text) || md5(i::text), 'hex'), 'key-' || i,
                   ARRAY['db:read', 'files:write'], jsonb_build_object('team', 'bench', 'index', i)
            FROM generate_series(1, %s) AS i
            """,
            (org_id, agents),
        )
        ids = [row[0] for row in conn.execute("SELECT id FROM agents")]
        conn.execute("ANALYZE agents")
    return name, url, ids


def drop_database(server_url: str, name: str) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def time_calls(count: int, call: Callable[[int], object]) -> np.ndarray:
    """Run `call(i)` for i in range(count) and return each call's duration in microseconds."""
    durations = np.empty(count, dtype=np.float64)
    for i in range(count):
        start = time.perf_counter_ns()
        call(i)
        durations[i] = (time.perf_counter_ns() - start) / 1000.0
    return durations


def machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {model}, Python {platform.python_version()}"


def main() -> None:
    args = parse_args()
    settings = load_settings()
    server_url = settings.database_url or embedded.ensure_postgres(data_dir())
    redis_url = settings.redis_url or embedded.ensure_redis(data_dir())
    settings = dataclasses.replace(settings, database_url=server_url, redis_url=redis_url)
    prefix = f"aimbench:{uuid.uuid4().hex[:8]}:"

    db_name, db_url, agent_ids = create_database(server_url, args.agents)
    db = Database(settings, db_url)
    db.open()
    client = make_redis(redis_url, settings)
    l2_only = {**POLICIES, CACHE: CachePolicy(CACHE, POLICIES[CACHE].ttl_s, l1_ttl_s=0.0)}
    cache = TwoLevelCache(client, prefix)
    cache_l2_only = TwoLevelCache(client, prefix, policies=l2_only)

    def load(agent_id: uuid.UUID) -> Callable[[], dict]:
        return lambda: db.fetch_one("bench.agent", AGENT_QUERY, (agent_id,))

    def agent(i: int) -> uuid.UUID:
        return agent_ids[i % len(agent_ids)]

    try:
        cache.start()
        cache_l2_only.start()
        hot = agent_ids[:1000]
        for agent_id in hot:
            cache.get_or_compute(CACHE, str(agent_id), load(agent_id))

        def l1_hit(i: int) -> object:
            agent_id = hot[i % len(hot)]
            return cache.get_or_compute(CACHE, str(agent_id), load(agent_id))

        def l1_shared(i: int) -> object:
            agent_id = hot[i % len(hot)]
            return cache.get_or_compute(CACHE, str(agent_id), load(agent_id), shared=True)

        def l2_hit(i: int) -> object:
            agent_id = hot[i % len(hot)]
            return cache_l2_only.get_or_compute(CACHE, str(agent_id), load(agent_id))

        def miss(i: int) -> object:
            agent_id = agent(i)
            return cache.get_or_compute(CACHE, f"{agent_id}:{i}", load(agent_id))

        def postgres(i: int) -> object:
            return load(agent(i))()

        results = {}
        for name, call, count in (
            ("l1_hit", l1_hit, args.hits),
            ("l1_shared", l1_shared, args.hits),
            ("l2_hit", l2_hit, args.hits),
            ("miss", miss, args.misses),
            ("postgres", postgres, args.misses),
        ):
            time_calls(WARMUP, lambda i, call=call: call(10_000_000 + i))  # distinct keys for the miss case
            results[name] = time_calls(count, call)

        miss_stats = cache.stats()[CACHE]
        print(f"machine: {machine()}")
        print(f"postgresql: {redact_url(server_url)}  redis: {redact_url(redis_url)}")
        print(f"agents: {args.agents}  hit calls: {args.hits}  miss calls: {args.misses}")
        print()
        print(f"{'case':<10} {'calls':>7} {'p50 us':>9} {'p95 us':>9} {'p99 us':>9} {'mean us':>9}")
        for name, durations in results.items():
            p50, p95, p99 = np.percentile(durations, [50, 95, 99])
            print(f"{name:<10} {len(durations):>7} {p50:>9.1f} {p95:>9.1f} {p99:>9.1f} {durations.mean():>9.1f}")
        print()
        print(f"cache counters ({CACHE}, L1 instance): {miss_stats}")
    finally:
        cache.close()
        cache_l2_only.close()
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)
        client.close()
        db.close()
        drop_database(server_url, db_name)


if __name__ == "__main__":
    main()
