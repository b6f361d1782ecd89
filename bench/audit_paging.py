"""Measure audit-log page latency at the first and the deepest page, keyset against OFFSET.

Usage: python3 bench/audit_paging.py [--rows N] [--limit N] [--samples N] [--offset-samples N]
                                     [--data-dir DIR] [--database NAME]

Loads `--rows` audit rows (default 10,000,000) for one organization, spread over the 60 days up to
the load time, with aim.db.audit_ingest's COPY ingest into the benchmark database (default
`aim_bench_audit`), then runs VACUUM (ANALYZE). The organization is named after the row count and
marked complete in the load's own transaction, so a rerun with the same --rows reuses the data.

Each latency sample is one aim.db.keyset.fetch_page call as a service makes it: pool checkout,
query, cursor signing. The deepest page is reached through a cursor built for the oldest rows. The
OFFSET rows run the naive `ORDER BY ... LIMIT n OFFSET depth` query at the same depths.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import add_connection_options, audit_rows, machine_description, open_database, percentiles_ms

from aim.db.audit_ingest import ingest_audit_rows
from aim.db.keyset import NEXT, CursorPosition, ListSpec, encode_cursor, fetch_page
from aim.db.pool import Database

AUDIT_LIST = ListSpec(
    name="bench.audit_list",
    table="audit_logs",
    columns=("id", "occurred_at", "actor_type", "actor_id", "action", "resource_type", "resource_id", "result",
             "host(ip_address) AS ip_address"),
    sort="occurred_at",
    sort_type="timestamptz",
    id_type="bigint",
    equality={"action": "action", "actor_id": "actor_id", "result": "result"},
    time_column="occurred_at",
)
SPAN = timedelta(days=60)
WARMUP = 20


def load(db: Database, rows: int) -> uuid.UUID:
    """Return the benchmark organization for `rows`, loading its audit rows first if needed."""
    name = f"bench-audit-paging-{rows}"
    found = db.fetch_one(
        "bench.org", "SELECT id, settings FROM organizations WHERE name = %s", (name,)
    )
    if found and found["settings"].get("bench_audit_rows") == rows:
        print(f"reusing {rows:,} rows of organization {name}")
        return found["id"]

    end = datetime.now(timezone.utc)
    started = time.perf_counter()
    # The organization, its rows and the completion mark commit together, so an interrupted load
    # leaves nothing behind and the next run loads again.
    with db.transaction() as conn:
        org = db.fetch_value("bench.org_insert", "INSERT INTO organizations (name) VALUES (%s) RETURNING id",
                             (name,), conn=conn)
        written = ingest_audit_rows(db, audit_rows(org, rows, end - SPAN, end), conn=conn)
        db.execute("bench.org_mark", "UPDATE organizations SET settings = %s WHERE id = %s",
                   (Jsonb({"bench_audit_rows": written}), org), conn=conn)
    elapsed = time.perf_counter() - started
    print(f"loaded {written:,} rows in {elapsed:.1f} s ({written / elapsed:,.0f} rows/s, COPY ingest)")
    return org


def vacuum_analyze(url: str) -> None:
    # VACUUM sets the visibility map and hint bits that autovacuum would set soon after a bulk load,
    # so the first timed reads do not pay for that one-off work.
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE) audit_logs")
    print(f"VACUUM (ANALYZE) audit_logs took {time.perf_counter() - started:.1f} s")


def time_calls(call, samples: int) -> list[float]:
    for _ in range(WARMUP):
        call()
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return timings


def boundary_cursor(db: Database, org: uuid.UUID, secret: bytes, rows_after: int) -> tuple[str, int]:
    """Return a cursor whose next page contains the `rows_after` oldest rows, and the rows before it."""
    # Reading the oldest rows backward through the index costs the same as reading the newest.
    boundary = db.fetch_one(
        "bench.boundary",
        "SELECT occurred_at, id FROM audit_logs WHERE organization_id = %s"
        " ORDER BY occurred_at ASC, id ASC OFFSET %s LIMIT 1",
        (org, rows_after),
    )
    total = db.fetch_value("bench.total", "SELECT (settings->>'bench_audit_rows')::bigint FROM organizations"
                                          " WHERE id = %s", (org,))
    position = CursorPosition(boundary["occurred_at"], boundary["id"], NEXT)
    cursor = encode_cursor(AUDIT_LIST, position, scope={"organization_id": org}, filters=None, secret=secret)
    return cursor, total - rows_after


def middle_cursor(db: Database, org: uuid.UUID, secret: bytes) -> str:
    """Return a cursor at the row nearest the middle of the 60-day span, about half the rows deep."""
    newest = db.fetch_value("bench.newest", "SELECT max(occurred_at) FROM audit_logs WHERE organization_id = %s",
                            (org,))
    boundary = db.fetch_one(
        "bench.middle",
        "SELECT occurred_at, id FROM audit_logs WHERE organization_id = %s AND occurred_at <= %s"
        " ORDER BY occurred_at DESC, id DESC LIMIT 1",
        (org, newest - SPAN / 2),
    )
    position = CursorPosition(boundary["occurred_at"], boundary["id"], NEXT)
    return encode_cursor(AUDIT_LIST, position, scope={"organization_id": org}, filters=None, secret=secret)


def offset_timings(url: str, org: uuid.UUID, limit: int, offset: int, samples: int) -> list[float]:
    query = (f"SELECT {', '.join(AUDIT_LIST.columns)} FROM audit_logs WHERE organization_id = %s"
             " ORDER BY occurred_at DESC, id DESC LIMIT %s OFFSET %s")
    # A deep OFFSET can run far past the pool's statement_timeout, so it gets its own connection.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = 0")
        conn.execute(query, (org, limit, offset)).fetchall()
        timings = []
        for _ in range(samples):
            started = time.perf_counter()
            conn.execute(query, (org, limit, offset)).fetchall()
            timings.append(time.perf_counter() - started)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000, help="audit rows to load (default 10,000,000)")
    parser.add_argument("--limit", type=int, default=100, help="rows per page (default 100)")
    parser.add_argument("--samples", type=int, default=500, help="timed keyset fetches per depth (default 500)")
    parser.add_argument("--offset-samples", type=int, default=5,
                        help="timed OFFSET queries at the middle and deepest page (default 5); they take seconds")
    add_connection_options(parser, default_database="aim_bench_audit")
    args = parser.parse_args()

    bench = open_database(args.data_dir, args.database)
    db = bench.db
    url = bench.url
    with db.connection() as conn:
        print(f"machine: {machine_description(conn)}")

    org = load(db, args.rows)
    vacuum_analyze(url)
    scope = {"organization_id": org}
    secret = bench.secret_key

    deepest, deepest_depth = boundary_cursor(db, org, secret, args.limit)
    page = fetch_page(db, AUDIT_LIST, scope=scope, cursor=deepest, limit=args.limit, secret=secret, count=False)
    if len(page.items) != args.limit or page.next_cursor is not None:
        raise SystemExit(f"the deepest cursor returned {len(page.items)} rows and a next cursor; expected the last page")
    middle = middle_cursor(db, org, secret)

    def keyset(cursor: str | None, count: bool = False):
        return lambda: fetch_page(db, AUDIT_LIST, scope=scope, cursor=cursor, limit=args.limit, secret=secret,
                                  count=count)

    results = {
        "first": time_calls(keyset(None), args.samples),
        "middle": time_calls(keyset(middle), args.samples),
        "deepest": time_calls(keyset(deepest), args.samples),
        "first + total": time_calls(keyset(None, count=True), args.samples),
    }
    offsets = {
        "first": offset_timings(url, org, args.limit, 0, args.samples),
        "middle": offset_timings(url, org, args.limit, args.rows // 2, args.offset_samples),
        "deepest": offset_timings(url, org, args.limit, deepest_depth, args.offset_samples),
    }

    print(f"\n{args.rows:,} rows, {args.limit} rows per page, deepest page starts at row {deepest_depth:,}")
    print(f"{'page':<15}{'keyset p50':>12}{'keyset p95':>12}{'OFFSET p50':>14}{'OFFSET p95':>14}")
    for label, timings in results.items():
        p50, p95 = percentiles_ms(timings)
        line = f"{label:<15}{p50:>9.2f} ms{p95:>9.2f} ms"
        if label in offsets:
            o50, o95 = percentiles_ms(offsets[label])
            line += f"{o50:>11.2f} ms{o95:>11.2f} ms"
        print(line)
    first50, first95 = percentiles_ms(results["first"])
    deep50, deep95 = percentiles_ms(results["deepest"])
    print(f"\nkeyset deepest/first: p50 {deep50 / first50:.2f}, p95 {deep95 / first95:.2f} (target <= 1.5)")
    worst = max(percentiles_ms(results[label])[1] for label in ("first", "middle", "deepest"))
    print(f"keyset p95 at the worst depth: {worst:.2f} ms (target <= 10 ms)")
    bench.close()


if __name__ == "__main__":
    main()
