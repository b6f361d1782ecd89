"""Time Recorder.observe() and Recorder.flush(): the per-request cost and the per-flush cost of roll-ups.

Usage: python3 bench/metrics_recorder_bench.py [--observations N] [--series N]

Flushes go to a throwaway database on the AIM PostgreSQL server (AIM_DATABASE_URL, or the embedded
server under AIM_DATA_DIR / .aim-test-data), which is dropped at the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from aim.config import load_settings
from aim.db import migrate
from aim.db.pool import Database
from aim.metrics.rollup import Recorder

from metrics_query_bench import server_url

T0 = datetime(2024, 6, 1, tzinfo=timezone.utc).timestamp()


def observe_cost(observations: int, threads: int) -> float:
    recorder = Recorder()
    labels = {"route": "/api/v1/agents", "method": "GET", "status": "200"}
    per_thread = observations // threads

    def work() -> None:
        for i in range(per_thread):
            recorder.observe("aim_http_request_duration_seconds", labels, 0.001 + (i % 100) * 1e-4)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    t = time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return (time.perf_counter() - t) / (per_thread * threads) * 1e9


def flush_cost(db: Database, series: int) -> float:
    """Return the milliseconds of one flush of `series` series, 20 observations each, all in minute T0."""
    recorder = Recorder()
    for s in range(series):
        for k in range(20):
            recorder.observe("bench_flush", {"route": f"/r{s}"}, 0.001 * (1 + k), at=T0)
    t = time.perf_counter()
    assert recorder.flush(db)
    return (time.perf_counter() - t) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--observations", type=int, default=200_000, help="observe() calls to time")
    parser.add_argument("--series", type=int, default=1000, help="series per timed flush")
    args = parser.parse_args()

    for threads in (1, 2):
        ns = observe_cost(args.observations, threads)
        print(f"observe(), {threads} thread(s): {ns:,.0f} ns per call (wall time / calls)")

    base = server_url()
    db_name = f"aim_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
    url = urlunsplit(urlsplit(base)._replace(path=f"/{db_name}"))
    try:
        migrate.upgrade(url)
        db = Database(dataclasses.replace(load_settings(), database_url=url), url)
        db.open()
        # The first flush inserts new rows; the later ones hit the same minute and add to them.
        for label in ("new rows", "existing rows", "existing rows"):
            print(f"flush of {args.series} series into {label}: {flush_cost(db, args.series):.0f} ms")
        db.close()
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name)))


if __name__ == "__main__":
    main()
