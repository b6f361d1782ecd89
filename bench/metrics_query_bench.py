"""Time the roll-up queries over a 7-day range of one-minute rows, and compare three ways to merge buckets.

Usage: python3 bench/metrics_query_bench.py [--series N] [--per-minute N] [--repeat N]

Creates a throwaway database on the AIM PostgreSQL server (AIM_DATABASE_URL, or the embedded server
under AIM_DATA_DIR / .aim-test-data), fills it with `series` label sets x 10,080 minutes of roll-up
rows, prints timings and drops the database. The rows exist only in that database.

Strategies compared for the bucket merge:
  aim.metrics.query     GROUP BY in PostgreSQL with one sum(buckets[i]) per bucket index
  unnest                GROUP BY over unnest(buckets) WITH ORDINALITY, returning non-zero cells
  numpy                 fetch every row's bucket array (binary) and sum per step with numpy
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import numpy as np
import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from aim import embedded
from aim.config import load_settings
from aim.db import migrate
from aim.db.pool import Database
from aim.metrics import histogram, query

NAME = "aim_http_request_duration_seconds"
REPO_ROOT = Path(__file__).resolve().parent.parent


def server_url() -> str:
    settings = load_settings()
    if settings.database_url:
        return settings.database_url
    return embedded.ensure_postgres(Path(os.environ.get("AIM_DATA_DIR", REPO_ROOT / ".aim-test-data")))


def fill(conn: psycopg.Connection, start: datetime, series: int, per_minute: int) -> int:
    rng = np.random.default_rng(1)
    rows = 0
    with conn.cursor() as cur, cur.copy(
        "COPY metric_rollups (minute, name, labels, count, sum, buckets) FROM STDIN"
    ) as copy:
        for s in range(series):
            labels = Jsonb({"route": f"/api/v1/r{s}", "method": "GET", "status": "500" if s == 0 else "200"})
            for m in range(7 * 24 * 60):
                samples = rng.lognormal(-4.5 + 0.2 * s, 0.8, per_minute)
                buckets = histogram.trim_trailing_zeros(histogram.bucket_counts(samples))
                copy.write_row((start + timedelta(minutes=m), NAME, labels, per_minute, float(samples.sum()), buckets))
                rows += 1
    conn.commit()
    return rows


STEP_SQL = "((extract(epoch FROM minute)::bigint - %(start_epoch)s) / %(step_s)s)::int"
WHERE_SQL = "name = %(name)s AND minute >= %(start)s AND minute < %(end)s"


def bench_params(start: datetime, end: datetime, step: timedelta) -> dict:
    return {"name": NAME, "start": start, "end": end, "start_epoch": int(start.timestamp()),
            "step_s": int(step.total_seconds())}


def numpy_strategy(db: Database, start: datetime, end: datetime, step: timedelta) -> list:
    """Fetch every row's array, sum per step in numpy, percentiles per step with histogram.quantile_matrix."""
    with db.connection() as conn, conn.cursor(binary=True) as cur:
        cur.execute(f"SELECT {STEP_SQL} AS s, buckets FROM metric_rollups WHERE {WHERE_SQL}",
                    bench_params(start, end, step))
        rows = cur.fetchall()
    n_steps = max(row["s"] for row in rows) + 1
    per_step = np.zeros((n_steps, histogram.BUCKET_COUNT), dtype=np.int64)
    for row in rows:
        buckets = row["buckets"] or []
        per_step[row["s"], : len(buckets)] += buckets
    return histogram.quantile_matrix(per_step, query.QUANTILES).tolist()


def unnest_strategy(db: Database, start: datetime, end: datetime, step: timedelta) -> list:
    """Sum per (step, bucket index) over unnest() in PostgreSQL; percentiles with histogram.quantile_matrix."""
    rows = db.fetch_all(
        "bench.unnest",
        f"SELECT {STEP_SQL} AS s, (b.i - 1)::int AS bucket, sum(b.c)::bigint AS n "
        "FROM metric_rollups CROSS JOIN LATERAL unnest(buckets) WITH ORDINALITY AS b(c, i) "
        f"WHERE {WHERE_SQL} AND b.c <> 0 GROUP BY 1, 2",
        bench_params(start, end, step),
    )
    n_steps = max(row["s"] for row in rows) + 1
    per_step = np.zeros((n_steps, histogram.BUCKET_COUNT), dtype=np.int64)
    for row in rows:
        per_step[row["s"], row["bucket"]] += row["n"]
    return histogram.quantile_matrix(per_step, query.QUANTILES).tolist()


def timed(fn, repeat: int) -> tuple[float, float]:
    fn()  # warm the cache and the plan
    samples = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=4, help="label sets (routes), default 4")
    parser.add_argument("--per-minute", type=int, default=600, help="observations per series per minute")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per case, default 5")
    args = parser.parse_args()

    base = server_url()
    db_name = f"aim_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db_name)))
    url = urlunsplit(urlsplit(base)._replace(path=f"/{db_name}"))
    try:
        migrate.upgrade(url)
        settings = dataclasses.replace(load_settings(), database_url=url, db_statement_timeout_ms=60_000)
        db = Database(settings, url)
        db.open()
        end = datetime(2024, 6, 8, tzinfo=timezone.utc)
        start = end - timedelta(days=7)
        with db.connection() as conn:
            t = time.perf_counter()
            rows = fill(conn, start, args.series, args.per_minute)
            print(f"filled {rows} rows in {time.perf_counter() - t:.1f} s")
            conn.execute("ANALYZE metric_rollups")
        size = db.fetch_value("bench.size", "SELECT pg_size_pretty(pg_total_relation_size('metric_rollups'))")
        print(f"metric_rollups size: {size}")

        cases = [
            ("summary 7 d", lambda: query.summary(db, NAME, start, end)),
            ("latency_series 7 d, step 1 h", lambda: query.latency_series(db, NAME, start, end, timedelta(hours=1))),
            ("latency_series 7 d, step 1 h, group_by route",
             lambda: query.latency_series(db, NAME, start, end, timedelta(hours=1), group_by=["route"])),
            ("latency_series 7 d, step 1 min", lambda: query.latency_series(db, NAME, start, end, timedelta(minutes=1))),
            ("latency_series 1 h, step 1 min",
             lambda: query.latency_series(db, NAME, end - timedelta(hours=1), end, timedelta(minutes=1))),
            ("heatmap 7 d, step 1 h", lambda: query.heatmap(db, NAME, start, end, timedelta(hours=1))),
            ("unnest strategy 7 d, step 1 h (percentiles only)",
             lambda: unnest_strategy(db, start, end, timedelta(hours=1))),
            ("numpy strategy 7 d, step 1 h (percentiles only)",
             lambda: numpy_strategy(db, start, end, timedelta(hours=1))),
            ("numpy strategy 7 d, step 1 min (percentiles only)",
             lambda: numpy_strategy(db, start, end, timedelta(minutes=1))),
        ]
        for label, fn in cases:
            median_ms, max_ms = timed(fn, args.repeat)
            print(f"{label:55s} median {median_ms:8.1f} ms   max {max_ms:8.1f} ms")
        db.close()
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db_name)))


if __name__ == "__main__":
    main()
