"""Cost of recomputing the dashboard overview, and of the writes that keep its counters.

Every agent or MCP server write drops the cached overview, so its recomputation runs once per write
under registration churn. This benchmark fills one organization with `--agents` agents and
`--servers` MCP servers, then times:

- the overview read from `organization_counters` (`aim.services.stats.compute_stats`),
- the same figures aggregated from the rows with count(*) and avg(), as before the counters,
- single-row INSERT and UPDATE statements on agents, with the counter triggers on and off
  (autocommit, so each includes its commit).

Example: python bench/overview_stats.py --agents 100000 --servers 10000
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import add_connection_options, drop_database, machine_description, open_database, percentiles_ms  # noqa: E402
from aim.services import stats  # noqa: E402

FILL_CHUNK = 5_000
ROW_AGGREGATES = (
    """SELECT count(*) AS total,
              count(*) FILTER (WHERE status = 'pending') AS pending,
              count(*) FILTER (WHERE status = 'verified') AS verified,
              count(*) FILTER (WHERE status = 'suspended') AS suspended,
              count(*) FILTER (WHERE status = 'revoked') AS revoked,
              avg(trust_score) FILTER (WHERE status <> 'revoked') AS average_trust
       FROM agents WHERE organization_id = %s""",
    """SELECT count(*) AS total, avg(confidence) AS mean_confidence, count(*) FILTER (WHERE drift_detected) AS drifted
       FROM mcp_servers WHERE organization_id = %s AND status = 'active'""",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_connection_options(parser, "aim_bench_overview")
    parser.add_argument("--agents", type=int, default=100_000, help="agents in the organization (default 100000)")
    parser.add_argument("--servers", type=int, default=10_000, help="MCP servers in the organization (default 10000)")
    parser.add_argument("--repeat", type=int, default=200, help="timed repetitions of each step (default 200)")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database (dropped by default)")
    args = parser.parse_args()
    for name in ("agents", "servers", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    return args


def _timed(repeat: int, step) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        step()
        samples.append(time.perf_counter() - started)
    return samples


def _fill(db, organization_id: uuid.UUID, agents: int, servers: int) -> None:
    # Chunks of FILL_CHUNK rows, each one statement, so no statement runs into the statement timeout.
    for first in range(1, agents + 1, FILL_CHUNK):
        db.execute(
            "bench.fill_agents",
            """INSERT INTO agents (organization_id, name, status, trust_score, public_key, key_id)
               SELECT %s, 'bench-' || n, (ARRAY['pending', 'verified', 'verified', 'suspended', 'revoked'])[1 + n %% 5],
                      (n %% 10000) / 10000.0, decode(lpad(to_hex(n), 64, '0'), 'hex'), 'key-' || n
               FROM generate_series(%s::int, %s::int) AS n""",
            (organization_id, first, min(first + FILL_CHUNK - 1, agents)),
        )
    for first in range(1, servers + 1, FILL_CHUNK):
        db.execute(
            "bench.fill_servers",
            """INSERT INTO mcp_servers (organization_id, name, url, status, confidence, drift_detected)
               SELECT %s, 'bench-' || n, 'https://bench-' || n || '.example.com/mcp',
                      (ARRAY['active', 'active', 'inactive'])[1 + n %% 3], (n %% 1000) / 1000.0, n %% 7 = 0
               FROM generate_series(%s::int, %s::int) AS n""",
            (organization_id, first, min(first + FILL_CHUNK - 1, servers)),
        )
    db.execute("bench.analyze", "ANALYZE agents, mcp_servers")


def main() -> int:
    args = parse_args()
    bench = open_database(args.data_dir, args.database)
    db = bench.db
    try:
        with db.connection() as conn:
            print(f"machine: {machine_description(conn)}")
        organization_id = db.fetch_value("bench.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id",
                                         (f"overview-{uuid.uuid4().hex[:8]}",))
        started = time.perf_counter()
        _fill(db, organization_id, args.agents, args.servers)
        print(f"filled {args.agents} agents and {args.servers} MCP servers in {time.perf_counter() - started:.1f} s")

        rows = []
        counters = _timed(args.repeat, lambda: stats.compute_stats(db, organization_id))
        rows.append(("overview from organization_counters", counters))
        aggregates = _timed(args.repeat, lambda: [db.fetch_one("bench.aggregate", query, (organization_id,))
                                                  for query in ROW_AGGREGATES])
        rows.append(("agent and MCP aggregates over the rows", aggregates))

        agent_id = db.fetch_value("bench.agent", "SELECT id FROM agents WHERE organization_id = %s LIMIT 1",
                                  (organization_id,))
        insert = """INSERT INTO agents (organization_id, name, status, public_key, key_id)
                    VALUES (%s, 'one-' || gen_random_uuid(), 'verified', %s, 'one')"""
        flip = "UPDATE agents SET trust_score = 1 - trust_score WHERE id = %s"
        touch = "UPDATE agents SET last_seen_at = now() WHERE id = %s"
        for triggers in ("on", "off"):
            if triggers == "off":
                db.execute("bench.disable", "ALTER TABLE agents DISABLE TRIGGER USER")
            rows.append((f"INSERT agents one row, triggers {triggers}",
                         _timed(args.repeat, lambda: db.execute("bench.insert", insert,
                                                                (organization_id, b"\x03" * 32)))))
            rows.append((f"UPDATE agents trust_score, triggers {triggers}",
                         _timed(args.repeat, lambda: db.execute("bench.flip", flip, (agent_id,)))))
            rows.append((f"UPDATE agents last_seen_at, triggers {triggers}",
                         _timed(args.repeat, lambda: db.execute("bench.touch", touch, (agent_id,)))))
        db.execute("bench.enable", "ALTER TABLE agents ENABLE TRIGGER USER")

        print(f"\n{'step':45s} {'p50 ms':>8s} {'p95 ms':>8s}")
        for label, samples in rows:
            p50, p95 = percentiles_ms(samples)
            print(f"{label:45s} {p50:8.3f} {p95:8.3f}")
    finally:
        bench.close()
        if not args.keep:
            drop_database(bench.server_url, args.database)
    return 0


if __name__ == "__main__":
    sys.exit(main())
