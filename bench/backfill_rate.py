"""Measure the simulator's backfill rate in audit rows per second.

Usage: python3 bench/backfill_rate.py [--days 30] [--agents 1000] [--audit-rows 1000000] [--bad-share 0.1]
                                      [--seed 1] [--mcp-registry FILE] [--keep] [--data-dir DIR] [--database NAME]

Creates a throwaway database on the AIM PostgreSQL server (AIM_DATABASE_URL, or the embedded server
under the data directory), applies the migrations, registers the agents (dated into the past, as
`aim simulate --backfill` does) and runs the backfill. It prints the setup time, the backfill time
split into writing, daily trust snapshots and the final recalculation, and the rates. Redis is the
one AIM would use (AIM_REDIS_URL or the embedded one), under a key prefix of its own. The key store
goes to a temporary directory. The database is dropped at the end unless --keep is given.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_connection_options, drop_database, machine_description, open_database

from aim.config import Settings, load_settings
from aim.runtime import Runtime, make_redis, resolve_redis_url, set_runtime
from aim.simulate import timeline
from aim.simulate.backfill import run_backfill
from aim.simulate.population import prepare_population
from aim.trust.gather import database_now


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30, help="days of history (default 30)")
    parser.add_argument("--agents", type=int, default=1000, help="simulated agents (default 1000)")
    parser.add_argument(
        "--audit-rows", type=int, default=1_000_000, help="actions, one audit row each (default 1,000,000)"
    )
    parser.add_argument("--bad-share", type=float, default=0.1, help="share of misbehaving actions (default 0.1)")
    parser.add_argument("--seed", type=int, default=1, help="traffic model seed (default 1)")
    parser.add_argument(
        "--mcp-registry", type=Path, default=None, help="MCP Registry export file to import servers from"
    )
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    parser.add_argument("--verbose", action="store_true", help="log every registration and ingest (INFO)")
    add_connection_options(parser, default_database=f"aim_bench_backfill_{uuid.uuid4().hex[:8]}")
    args = parser.parse_args()

    bench = open_database(args.data_dir, args.database)
    if not args.verbose:
        # One INFO line per registered agent would bury the figures.
        logging.getLogger("aim").setLevel(logging.WARNING)
    settings = settings_for(args.data_dir)
    redis_url = resolve_redis_url(settings)
    with tempfile.TemporaryDirectory(prefix="aim-bench-backfill-") as data_dir:
        settings = dataclasses.replace(
            settings, database_url=bench.url, redis_url=redis_url, data_dir=Path(data_dir),
            redis_prefix=f"aimbench:{uuid.uuid4().hex[:8]}:",
        )
        runtime = Runtime(settings, bench.db, make_redis(redis_url, settings), redis_url, bench.secret_key)
        set_runtime(runtime)
        try:
            with bench.db.connection() as conn:
                print(f"machine: {machine_description(conn)}")
            run(runtime, args)
        finally:
            set_runtime(None)
            _delete_prefix(runtime)
            runtime.close()
    if not args.keep:
        drop_database(bench.server_url, args.database)


def settings_for(data_dir: Path | None) -> Settings:
    """Return AIM's settings with AIM_DATA_DIR overridden by `data_dir`, as bench.common opens the database."""
    env = dict(os.environ)
    if data_dir is not None:
        env["AIM_DATA_DIR"] = str(data_dir.resolve())
    return load_settings(env)


def run(runtime: Runtime, args: argparse.Namespace) -> None:
    now = database_now(runtime.db)
    registered_at = timeline.registration_times(timeline.window_start(now, args.days), now, args.seed)
    started = time.perf_counter()
    population = prepare_population(
        runtime, organization="bench", agent_count=args.agents, seed=args.seed, mcp_registry=args.mcp_registry,
        registered_at=registered_at, apply_status=False, attest_baselines=False,
    )
    setup_s = time.perf_counter() - started
    print(f"setup: {len(population.agents):,} agents, {len(population.servers):,} MCP servers in {setup_s:.1f} s")

    report = run_backfill(
        runtime, population, days=args.days, audit_rows=args.audit_rows, bad_share=args.bad_share, seed=args.seed
    )
    print(
        f"backfill: {args.days} days, {report.audit_rows:,} audit rows, {report.verification_events:,} verification "
        f"events, {report.attestations:,} attestations, {report.alerts_raised:,} alerts, "
        f"{report.trust_history_rows:,} trust history rows"
    )
    print(
        f"time: {report.seconds:.1f} s = writing {report.write_seconds:.1f} s + daily trust snapshots "
        f"{report.snapshot_seconds:.1f} s + final recalculation {report.finish_seconds:.1f} s"
    )
    print(f"rate: {report.audit_rows_per_second:,.0f} audit rows/s overall, "
          f"{report.audit_rows / report.write_seconds:,.0f} audit rows/s while writing periods")


def _delete_prefix(runtime: Runtime) -> None:
    keys = list(runtime.redis.scan_iter(match=f"{runtime.settings.redis_prefix}*", count=1000))
    for start in range(0, len(keys), 500):
        runtime.redis.delete(*keys[start : start + 500])


if __name__ == "__main__":
    main()
