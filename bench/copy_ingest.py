"""Compare audit ingest rates: COPY through aim.db.audit_ingest against one INSERT per row.

Usage: python3 bench/copy_ingest.py [--rows N] [--insert-rows N] [--keep] [--data-dir DIR] [--database NAME]

Creates a throwaway database on the AIM PostgreSQL server (AIM_DATABASE_URL, or the embedded server
under the data directory), applies the AIM migrations, and times, in one run:

  validate only       aim.db.audit_ingest.normalize_audit_row on every row, no database
  COPY                ingest_audit_rows(): validation plus COPY in 10,000-row statements, one transaction
  COPY, server only   the first --replay-rows rows again, as COPY text exported from the table and
                      sent unchanged in 10,000-row statements: the server's share of the COPY cost
  single INSERT       insert_audit() once per row, all rows in one transaction

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

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (
    add_connection_options, audit_rows, database_url, drop_database, machine_description, open_database,
)

from aim.db.audit_ingest import AUDIT_COLUMNS, COPY_SQL, ingest_audit_rows, insert_audit, normalize_audit_row
from aim.db.pool import Database

REPLAY_BATCH = 10_000


def rate(label: str, rows: int, seconds: float) -> None:
    print(f"{label:<20}{rows:>12,} rows {seconds:>9.2f} s {rows / seconds:>12,.0f} rows/s")


def export_copy_text(db: Database, org: uuid.UUID, rows: int) -> list[bytes]:
    """Return the COPY text of `org`'s `rows` oldest audit rows, in chunks of REPLAY_BATCH lines."""
    lines: list[bytes] = []
    with db.connection() as conn, conn.cursor() as cursor:
        export = (f"COPY (SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_logs WHERE organization_id = %s"
                  " ORDER BY occurred_at, id LIMIT %s) TO STDOUT")
        with cursor.copy(export, (org, rows)) as copy:
            text = b"".join(bytes(data) for data in copy)
    lines = text.splitlines(keepends=True)
    return [b"".join(lines[start:start + REPLAY_BATCH]) for start in range(0, len(lines), REPLAY_BATCH)]


def replay(db: Database, chunks: list[bytes]) -> None:
    with db.transaction() as conn:
        for chunk in chunks:
            with conn.cursor() as cursor, cursor.copy(COPY_SQL) as copy:
                copy.write(chunk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to COPY (default 1,000,000)")
    parser.add_argument("--insert-rows", type=int, default=20_000,
                        help="rows to write with single INSERTs (default 20,000)")
    parser.add_argument("--replay-rows", type=int, default=250_000,
                        help="rows to send again as ready COPY text (default 250,000)")
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
        org = db.fetch_value("bench.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id",
                             (f"bench-copy-ingest-{uuid.uuid4().hex[:8]}",))

        started = time.perf_counter()
        for row in audit_rows(org, args.rows, start, end):
            normalize_audit_row(row)
        rate("validate only", args.rows, time.perf_counter() - started)

        started = time.perf_counter()
        written = ingest_audit_rows(db, audit_rows(org, args.rows, start, end))
        rate("COPY", written, time.perf_counter() - started)

        chunks = export_copy_text(db, org, min(args.replay_rows, written))
        started = time.perf_counter()
        replay(db, chunks)
        rate("COPY, server only", sum(chunk.count(b"\n") for chunk in chunks), time.perf_counter() - started)

        started = time.perf_counter()
        with db.transaction() as conn:
            for row in audit_rows(org, args.insert_rows, start, end):
                insert_audit(conn, **dict(zip(AUDIT_COLUMNS, row)))
        rate("single INSERT", args.insert_rows, time.perf_counter() - started)
    finally:
        bench.close()
        if throwaway and not args.keep:
            drop_database(bench.server_url, args.database)
            print(f"dropped {args.database}")
        elif throwaway:
            print(f"kept {database_url(bench.server_url, args.database)}")


if __name__ == "__main__":
    main()
