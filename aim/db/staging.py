"""Staging tables of the audit bulk path, loaded and indexed on helper connections.

The bulk path loads a month whose partition is empty into a staging table, indexes it and swaps it
in for the partition (see `aim.db.partitions.swap_in_staging`). On one connection the index builds
run one after another after the last row, on one core. `ParallelStaging` does the same work on
helper connections instead:

- each staging table is created and loaded with COPY FREEZE in a transaction of its own on the
  loading connection, which commits when the ingest moves on to another month;
- once committed, the table's index builds run on `INDEX_SESSIONS` connections at once, while the
  ingest goes on loading later months;
- the caller's transaction waits for the builds, then swaps each table in, so readers see every
  month at once or none of them.

A committed staging table is not attached to audit_logs, so no reader sees it. If the swap does not
commit, the table is left over: `drop_leftovers` removes this call's tables when it ends, and
`sweep_orphans` removes tables whose ingest transaction has ended, such as after a crash. The name
of each table carries the xid of the ingest's transaction for that check.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
from psycopg import sql

from aim.db import partitions
from aim.db.pool import Database

logger = logging.getLogger(__name__)

# Index builds that run at once. Two keep both cores of the 2-core development machine busy while
# the client encodes the next month's rows. With two, bench/copy_ingest.py went from 154,000-159,000
# to 173,000-182,000 rows/s on the bulk path (500,000 rows in two months, embedded PostgreSQL 16).
INDEX_SESSIONS = 2


class StagingError(RuntimeError):
    """An index build on a staging table failed, so the bulk load cannot be swapped in."""


def can_use_helpers(db: Database, conn: psycopg.Connection) -> bool:
    """Return whether helper sessions can load staging tables for `conn`'s transaction now.

    Under REPEATABLE READ or SERIALIZABLE the transaction's snapshot predates the helpers' commits,
    so it could not read the rows back when a swap falls back to inserting them. And once the
    transaction holds a lock on audit_logs that blocks ACCESS SHARE, as creating a partition takes,
    a helper's CREATE TABLE (LIKE audit_logs) would wait for the transaction that waits for it.
    """
    row = db.fetch_one(
        "audit.helper_check",
        """SELECT current_setting('transaction_isolation') = 'read committed' AS read_committed,
                  EXISTS (SELECT 1 FROM pg_locks
                          WHERE pid = pg_backend_pid() AND locktype = 'relation' AND granted
                            AND relation = 'audit_logs'::regclass AND mode = 'AccessExclusiveLock') AS locked""",
        conn=conn,
    )
    return bool(row["read_committed"]) and not row["locked"]


class ParallelStaging:
    """Staging tables of one ingest call, and the helper connections that load and index them.

    Use it from the ingest's thread only. `close()` must run once the caller's transaction has ended,
    so that it can drop what was not swapped in.
    """

    def __init__(self, db: Database, main_conn: psycopg.Connection, statement_timeout: str) -> None:
        self.db = db
        # Catalog reads about the partitions go through the caller's transaction, which may have
        # created a partition that other sessions cannot see yet.
        self.main_conn = main_conn
        self.statement_timeout = statement_timeout
        self.xid = db.fetch_value("audit.ingest_xid", "SELECT pg_current_xact_id()::text", conn=main_conn)
        self.loader: psycopg.Connection | None = None
        # The staging table whose loading transaction is open on `loader`, if any.
        self.loading: str | None = None
        # Staging tables created by this call, in creation order.
        self.tables: list[str] = []
        self.builds: dict[str, list[Future]] = {}
        self.renames: dict[str, list[tuple[str, str]]] = {}
        self.partitions: dict[str, str] = {}
        self.executor = ThreadPoolExecutor(INDEX_SESSIONS, thread_name_prefix="aim-audit-index")
        self._builders: list[psycopg.Connection] = []
        self._builders_lock = threading.Lock()
        # Set once the caller's transaction has swapped in or dropped every table. That transaction
        # then holds their locks, and dropping them from here would wait for it.
        self.handed_over = False

    def _connect(self) -> psycopg.Connection:
        conn = self.db.connect_direct()
        conn.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(self.statement_timeout)))
        # The sessions already run the builds side by side, and parallel workers on top of them
        # slowed the same benchmark down (165,000 against 178,000 rows/s).
        conn.execute("SET max_parallel_maintenance_workers = 0")
        return conn

    def create(self, partition: str) -> str:
        """Create a staging table for `partition` in a new loading transaction on `loader`, and return its name.

        COPY into it on `loader` may use FREEZE until `seal()`.
        """
        self.seal()
        if self.loader is None:
            self.loader = self._connect()
            sweep_orphans(self.db, self.loader)
        bounds = partitions.partition_constraint(self.db, self.main_conn, partition)
        self.loader.execute("BEGIN")
        staging = partitions.create_staging_table(
            self.db, self.loader, partition, name=f"{partition}_load_{self.xid}_{uuid.uuid4().hex[:8]}", bounds=bounds
        )
        self.loading = staging
        self.tables.append(staging)
        self.partitions[staging] = partition
        return staging

    def reopen(self, staging: str) -> psycopg.Connection:
        """Return `loader` with a loading transaction open for `staging`, opening a new one for a sealed table.

        COPY into a sealed table runs without FREEZE, and waits for index builds that already started on it.
        """
        if self.loading == staging:
            assert self.loader is not None
            return self.loader
        self.seal()
        assert self.loader is not None
        self.loader.execute("BEGIN")
        self.loading = staging
        return self.loader

    def is_loading(self, staging: str) -> bool:
        return self.loading == staging

    def seal(self) -> None:
        """Commit the open loading transaction and queue the index builds of its table, once per table."""
        if self.loading is None:
            return
        assert self.loader is not None
        staging, self.loading = self.loading, None
        self.loader.execute("COMMIT")
        if staging in self.builds:
            return
        plan = partitions.staging_index_plan(self.db, self.main_conn, self.partitions[staging], staging)
        self.renames[staging] = [rename for _, rename in plan if rename is not None]
        self.builds[staging] = [self.executor.submit(self._build, staging, statement) for statement, _ in plan]

    def _build(self, staging: str, statement: str) -> None:
        with self._builders_lock:
            conn = self._builders.pop() if self._builders else None
        if conn is None:
            conn = self._connect()
        try:
            self.db.execute("audit.build_staging_index", statement, conn=conn)
        except BaseException:
            conn.close()
            raise
        with self._builders_lock:
            self._builders.append(conn)

    def finish(self) -> dict[str, list[tuple[str, str]]]:
        """Seal the last table, wait for every index build and return the index renames per staging table.

        Raises StagingError naming the table when a build failed.
        """
        self.seal()
        started = time.perf_counter()
        for staging in self.tables:
            for build in self.builds.get(staging, []):
                error = build.exception()
                if error is not None:
                    message = f"building an index on the audit staging table {staging} failed: {error}"
                    raise StagingError(message) from error
        logger.info("waited %.2f s for the index builds of %d staging tables", time.perf_counter() - started,
                    len(self.tables))
        return dict(self.renames)

    def close(self) -> None:
        """Stop the index builds, drop the staging tables unless handed over, and close the helper connections.

        If the caller's transaction rolls back after the hand-over, its tables are left over until
        `sweep_orphans` of a later bulk load drops them.
        """
        self.executor.shutdown(wait=True, cancel_futures=True)
        try:
            if self.loader is not None and not self.loader.closed and not self.handed_over:
                self.loading = None
                if self.loader.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    self.loader.execute("ROLLBACK")
                drop_leftovers(self.db, self.loader, self.tables)
        except psycopg.Error as exc:
            logger.warning("could not drop the audit staging tables %s (%s). A later bulk load drops them.",
                           ", ".join(self.tables), exc)
        finally:
            for conn in [self.loader, *self._builders]:
                if conn is not None:
                    conn.close()
            self._builders.clear()


def drop_leftovers(db: Database, conn: psycopg.Connection, tables: list[str]) -> None:
    """Drop each of `tables` that still exists under its staging name, in autocommit on `conn`."""
    for staging in tables:
        db.execute("audit.drop_staging", sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(staging)),
                   conn=conn)


def sweep_orphans(db: Database, conn: psycopg.Connection) -> list[str]:
    """Drop staging tables whose ingest transaction is no longer running, and return their names.

    A table whose transaction is still in progress belongs to a running ingest and is kept.
    """
    rows = db.fetch_all(
        "audit.staging_orphans",
        r"""SELECT c.relname, pg_xact_status(substring(c.relname FROM '_load_(\d+)_')::xid8) AS status
            FROM pg_class c
            WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r' AND NOT c.relispartition
              AND c.relname ~ '^audit_logs_\d{4}_\d{2}_load_\d+_[0-9a-f]{8}$'""",
        conn=conn,
    )
    orphans = [row["relname"] for row in rows if row["status"] != "in progress"]
    if orphans:
        drop_leftovers(db, conn, orphans)
        logger.info("dropped %d audit staging tables left by ended ingests: %s", len(orphans), ", ".join(orphans))
    return orphans
