"""Compare audit ingest rates: COPY through aim.db.audit_ingest against one INSERT per row.

Usage: python3 bench/copy_ingest.py [--rows N] [--insert-rows N] [--stream] [--keep] [--data-dir DIR] [--database NAME]

Creates a throwaway database on the AIM PostgreSQL server (AIM_DATABASE_URL, or the embedded server
under the data directory), applies the AIM migrations, and times, in one run:

  validate only       aim.db.audit_ingest.normalize_audit_row on every row, no database
  COPY, empty months  ingest_audit_rows() of rows 120 to 90 days old, into months whose partitions
                      are empty, so it takes the bulk path: COPY into staging tables without
                      indexes, index builds, partition swap
  COPY, live months   ingest_audit_rows() of rows from the last 30 days, into months that already
                      hold a row from before them, so it takes the plain path as live traffic
                      does: COPY into audit_logs in 10,000-row statements, appending to the indexes
  COPY, server only   the first --replay-rows rows of the last 30 days again, as binary COPY data
                      exported from the table and sent unchanged in one statement: the server's
                      share of the plain COPY cost, with the rows going between the ones already
                      stored rather than after them
  single INSERT       insert_audit() once per row, all rows in one transaction

Every ingest figure times the whole call, one transaction from the first row to the commit,
including index builds and the swap. The benchmark checks which path each run took by comparing
the partitions' OIDs before and after it, and prints the number of months swapped in.

Each step also prints CPU time per row: this process's, and the server's when its processes can
be read from /proc (a server on this machine). The server figure covers all of the server's
processes, so on a server that other clients use at the same time it includes their work. CPU
time per row varies less than rows per second when other work shares the cores.
Rows are built in memory before the timed steps start (printed as `generate rows`), so the
ingest figures leave out the cost of making rows up; --stream generates them inside each step.
Rows are spread over the 30 days before the run, in time order, as live traffic arrives. The
database is dropped at the end unless --keep is given. Pass --database to ingest into an existing
database instead, such as the one bench/audit_paging.py filled, to see the cost of larger indexes.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterable

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    add_connection_options, audit_rows, database_url, drop_database, machine_description, open_database,
    server_cpu_seconds,
)

from aim.db.audit_ingest import (
    AUDIT_COLUMNS, BULK_STATEMENT_TIMEOUT, COPY_SQL, ingest_audit_rows, insert_audit, normalize_audit_row,
)
from aim.db.pool import Database

REPLAY_CHUNK = 1 << 20
REAP_WAIT_S = 0.5


class Meter:
    """Wall time, this process's CPU time and the server's CPU time of one step, printed per row."""

    def __init__(self, db: Database) -> None:
        self.db = db

    def _server_cpu(self) -> float | None:
        with self.db.connection() as conn:
            return server_cpu_seconds(conn)

    def __enter__(self) -> Meter:
        self.server = self._server_cpu()
        self.client = time.process_time()
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.client = time.process_time() - self.client
        # The bulk path's helper sessions close when the call returns. Their CPU time counts only
        # once the postmaster has reaped them, so the reading waits a moment, outside the timing.
        time.sleep(REAP_WAIT_S)
        after = self._server_cpu()
        self.server = None if after is None or self.server is None else after - self.server

    def report(self, label: str, rows: int, note: str = "") -> None:
        server = "n/a" if self.server is None else f"{self.server * 1e6 / rows:.2f}"
        print(
            f"{label:<20}{rows:>10,} rows {self.seconds:>7.2f} s {rows / self.seconds:>10,.0f} rows/s"
            f"   CPU per row: client {self.client * 1e6 / rows:.2f} us, server {server} us {note}".rstrip()
        )


def export_copy_data(db: Database, org: uuid.UUID, since: datetime, rows: int) -> bytes:
    """Return `org`'s `rows` oldest audit rows from `since` on as binary COPY data, as ingest_audit_rows sends."""
    with db.connection() as conn, conn.cursor() as cursor:
        export = (f"COPY (SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_logs WHERE organization_id = %s"
                  " AND occurred_at >= %s ORDER BY occurred_at, id LIMIT %s) TO STDOUT (FORMAT BINARY)")
        with cursor.copy(export, (org, since, rows)) as copy:
            return b"".join(bytes(data) for data in copy)


def replay(db: Database, data: bytes) -> None:
    """Send `data` back in one COPY statement, so the client does no per-row work."""
    with db.transaction() as conn:
        conn.execute(f"SET LOCAL statement_timeout = '{BULK_STATEMENT_TIMEOUT}'")
        with conn.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
            for start in range(0, len(data), REPLAY_CHUNK):
                copy.write(data[start:start + REPLAY_CHUNK])


def partition_oids(db: Database) -> dict[str, int]:
    rows = db.fetch_all(
        "bench.partitions",
        "SELECT c.relname AS name, c.oid FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = 'audit_logs'::regclass",
    )
    return {row["name"]: row["oid"] for row in rows}


def seed_live_months(db: Database, org: uuid.UUID, start: datetime, end: datetime) -> None:
    """Insert one audit row at the start of each month of [start, end], or at `start` in the month containing it."""
    month = datetime(start.year, start.month, 1, tzinfo=timezone.utc)
    with db.transaction() as conn:
        while month <= end:
            insert_audit(conn, organization_id=org, actor_type="system", actor_id="bench", action="bench.seed",
                         resource_type="bench", occurred_at=max(month, start))
            month = datetime(month.year + month.month // 12, month.month % 12 + 1, 1, tzinfo=timezone.utc)


def timed_ingest(db: Database, label: str, rows: Iterable[tuple]) -> int:
    """Run ingest_audit_rows, print its rates and the number of partitions it swapped in."""
    before = partition_oids(db)
    with Meter(db) as meter:
        written = ingest_audit_rows(db, rows)
    after = partition_oids(db)
    swapped = sum(1 for name, oid in after.items() if name in before and before[name] != oid)
    meter.report(label, written, f"({swapped} months swapped in)")
    return written


def rows_for(args: argparse.Namespace, org: uuid.UUID, start: datetime, end: datetime) -> Iterable[tuple]:
    """Return the benchmark's rows for [start, end]: a generator with --stream, else a list built now.

    A list keeps the cost of generating rows out of the ingest figures. An import from a file pays
    for its parser instead.
    """
    rows = audit_rows(org, args.rows, start, end)
    return rows if args.stream else list(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to COPY (default 1,000,000)")
    parser.add_argument("--insert-rows", type=int, default=20_000,
                        help="rows to write with single INSERTs (default 20,000)")
    parser.add_argument("--replay-rows", type=int, default=250_000,
                        help="rows to send again as ready binary COPY data (default 250,000)")
    parser.add_argument("--stream", action="store_true",
                        help="generate rows inside the timed steps, as figures before 2026-12 did, instead of "
                             "building them in memory first")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway database")
    add_connection_options(parser, default_database=f"aim_bench_copy_{uuid.uuid4().hex[:8]}")
    args = parser.parse_args()
    throwaway = args.database.startswith("aim_bench_copy_")

    bench = open_database(args.data_dir, args.database)
    db = bench.db
    try:
        with db.connection() as conn:
            print(f"machine: {machine_description(conn)}")
        print(f"database: {args.database}")
        end = datetime.now(timezone.utc)
        start = end - timedelta(days=30)
        # 60 days apart, so no month of the first range is also a month of the second.
        old_end = end - timedelta(days=90)
        old_start = end - timedelta(days=120)
        org = db.fetch_value("bench.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id",
                             (f"bench-copy-ingest-{uuid.uuid4().hex[:8]}",))

        with Meter(db) as meter:
            old_rows = rows_for(args, org, old_start, old_end)
            live_rows = rows_for(args, org, start, end)
        if not args.stream:
            meter.report("generate rows", 2 * args.rows)

        with Meter(db) as meter:
            for row in rows_for(args, org, start, end) if args.stream else live_rows:
                normalize_audit_row(row)
        meter.report("validate only", args.rows)

        timed_ingest(db, "COPY, empty months", old_rows)
        del old_rows
        seed_live_months(db, org, start, end)
        written = timed_ingest(db, "COPY, live months", live_rows)
        del live_rows

        replay_rows = min(args.replay_rows, written)
        data = export_copy_data(db, org, start, replay_rows)
        with Meter(db) as meter:
            replay(db, data)
        meter.report("COPY, server only", replay_rows)

        with Meter(db) as meter, db.transaction() as conn:
            for row in audit_rows(org, args.insert_rows, start, end):
                insert_audit(conn, **dict(zip(AUDIT_COLUMNS, row)))
        meter.report("single INSERT", args.insert_rows)
    finally:
        bench.close()
        if throwaway and not args.keep:
            drop_database(bench.server_url, args.database)
            print(f"dropped {args.database}")
        elif throwaway:
            print(f"kept {database_url(bench.server_url, args.database)}")


if __name__ == "__main__":
    main()
