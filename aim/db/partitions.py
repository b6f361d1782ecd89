"""Monthly partitions of `audit_logs`: creation ahead of time and retention by whole months.

Retention is the only way audit rows leave the database: the append-only trigger refuses row UPDATE
and DELETE, and DROP TABLE on a partition removes a whole month at once.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Sequence

import psycopg
from psycopg import sql

from aim.db.pool import Database
from aim.errors import ValidationError

logger = logging.getLogger(__name__)

PARTITION_NAME = re.compile(r"^audit_logs_(\d{4})_(\d{2})$")


@dataclass(frozen=True)
class Partition:
    name: str
    month: date
    rows_estimate: int


def ensure_partitions(db: Database, start: datetime, end: datetime) -> int:
    """Create the monthly partitions covering [start, end]. Return how many were created."""
    return int(
        db.fetch_value("audit.ensure_partitions", "SELECT aim_ensure_audit_partitions(%s, %s)", (start, end)) or 0
    )


def list_partitions(db: Database) -> list[Partition]:
    rows = db.fetch_all(
        "audit.list_partitions",
        """
        SELECT c.relname AS name, greatest(c.reltuples, 0)::bigint AS rows_estimate
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'audit_logs'::regclass
        ORDER BY c.relname
        """,
    )
    partitions = []
    for row in rows:
        match = PARTITION_NAME.match(row["name"])
        if match:
            month = date(int(match.group(1)), int(match.group(2)), 1)
            partitions.append(Partition(row["name"], month, row["rows_estimate"]))
    return partitions


def _month_floor(now: datetime, months_back: int) -> date:
    index = now.year * 12 + (now.month - 1) - months_back
    return date(index // 12, index % 12 + 1, 1)


def apply_retention(db: Database, keep_months: int, now: datetime | None = None, dry_run: bool = False) -> list[str]:
    """Drop audit partitions for months older than the current month minus `keep_months`.

    `keep_months=1` keeps only the current month. Return the names of the partitions dropped (or that
    would be dropped with `dry_run`).
    """
    if not isinstance(keep_months, int) or keep_months < 1:
        raise ValidationError("keep_months", f"{keep_months!r} is invalid; expected a whole number of months >= 1")
    now = now or datetime.now(timezone.utc)
    cutoff = _month_floor(now, keep_months - 1)
    doomed = [p.name for p in list_partitions(db) if p.month < cutoff]
    if dry_run:
        return doomed
    with db.transaction() as conn:
        for name in doomed:
            # Names come from pg_class and match PARTITION_NAME, so quoting them is enough.
            db.execute("audit.drop_partition", f'DROP TABLE "{name}"', conn=conn)
    for name in doomed:
        logger.info("retention dropped audit partition %s (keeping months from %s)", name, cutoff.isoformat())
    return doomed


# --- loading a whole month into an empty partition ---------------------------------------------
#
# COPY into audit_logs maintains four B-tree indexes row by row, which made it four to five times
# slower than COPY into a table without indexes (PostgreSQL 15 and 16, 300,000 rows, 2-core
# machine). For a month whose partition is empty, the rows instead go into a staging table without
# indexes, the indexes are built once by sorting, and the staging table replaces the empty
# partition. ATTACH PARTITION then adopts the staging table's indexes into the parent's partitioned
# indexes without rebuilding them, and skips its validation scan because of the CHECK constraint
# that equals the partition constraint. Row triggers of audit_logs, such as the append-only
# trigger, are cloned onto the attached table.

# How long the swap waits for its exclusive lock on audit_logs before it gives up and copies the
# staging rows into the partition with INSERT instead. Readers of audit_logs queue behind a waiting
# ACCESS EXCLUSIVE request, so this bounds the stall they see.
SWAP_LOCK_TIMEOUT = "1s"

_INDEX_DEFINITION = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON ONLY \S+ ")


def set_local(db: Database, conn: psycopg.Connection, setting: str, value: str) -> str:
    """Set `setting` for the rest of `conn`'s transaction, as SET LOCAL does, and return its previous value."""
    return db.fetch_value(
        "audit.set_local",
        "SELECT current_setting(%s) AS previous, set_config(%s, %s, true)",
        (setting, setting, value),
        conn=conn,
    )


def month_partition_name(month_start: datetime) -> str:
    """Return the name aim_ensure_audit_partitions gives the partition of the UTC month starting at `month_start`."""
    return f"audit_logs_{month_start:%Y_%m}"


def partition_is_empty(db: Database, conn: psycopg.Connection, partition: str) -> bool:
    """Return whether `partition` has no rows visible to `conn`'s transaction."""
    return bool(
        db.fetch_value(
            "audit.partition_empty",
            sql.SQL("SELECT NOT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(partition)),
            conn=conn,
        )
    )


def partition_constraint(db: Database, conn: psycopg.Connection, partition: str) -> str:
    """Return the partition constraint of `partition` as an SQL expression."""
    return db.fetch_value(
        "audit.partition_constraint",
        "SELECT pg_get_partition_constraintdef(%s::regclass)",
        (partition,),
        conn=conn,
    )


def create_staging_table(
    db: Database, conn: psycopg.Connection, partition: str, name: str | None = None, bounds: str | None = None
) -> str:
    """Create a table shaped like audit_logs, without indexes, that only accepts rows of `partition`'s month.

    Returns its name, which is `name` when given. `bounds` is the partition's constraint, read on
    `conn` when not given. The table belongs to `conn`'s transaction, so a rollback removes it.
    """
    staging = name or f"{partition}_load_{uuid.uuid4().hex[:8]}"
    if bounds is None:
        bounds = partition_constraint(db, conn, partition)
    # INCLUDING CONSTRAINTS copies the CHECK constraints ATTACH PARTITION requires, and
    # INCLUDING DEFAULTS the id default, which draws from audit_logs_id_seq as inserts do.
    db.execute(
        "audit.create_staging",
        sql.SQL(
            "CREATE TABLE {staging} (LIKE audit_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
            " INCLUDING STORAGE INCLUDING COMPRESSION, CONSTRAINT {check} CHECK ({bounds}))"
        ).format(
            staging=sql.Identifier(staging), check=sql.Identifier(f"{staging}_bounds"), bounds=sql.SQL(bounds)
        ),
        conn=conn,
    )
    return staging


def _index_plan(db: Database, conn: psycopg.Connection, partition: str) -> list[dict[str, Any]]:
    """Return audit_logs' indexes with their definitions and the names of their indexes on `partition`."""
    return db.fetch_all(
        "audit.index_plan",
        """
        SELECT pg_get_indexdef(parent.indexrelid) AS definition, child.relname AS partition_index
        FROM pg_index parent
        LEFT JOIN (pg_inherits link JOIN pg_index child_index ON child_index.indexrelid = link.inhrelid
                   JOIN pg_class child ON child.oid = link.inhrelid)
               ON link.inhparent = parent.indexrelid AND child_index.indrelid = %s::regclass
        WHERE parent.indrelid = 'audit_logs'::regclass
        ORDER BY parent.indexrelid
        """,
        (partition,),
        conn=conn,
    )


def staging_index_plan(
    db: Database, conn: psycopg.Connection, partition: str, staging: str
) -> list[tuple[str, tuple[str, str] | None]]:
    """Return a CREATE INDEX statement on `staging` for each index of audit_logs, with the same definition.

    Each statement comes with a (staging index, name of the matching index on `partition`) pair for
    renaming after the swap, or None when the partition has no such index.
    """
    plan = []
    for number, index in enumerate(_index_plan(db, conn, partition)):
        match = _INDEX_DEFINITION.match(index["definition"])
        if match is None:
            raise RuntimeError(
                f"cannot copy the audit_logs index definition {index['definition']!r} to a staging table; "
                "expected the form CREATE INDEX name ON ONLY table ..."
            )
        name = f"{staging}_{number}"
        statement = (
            f"CREATE {match.group(1) or ''}INDEX {sql.Identifier(name).as_string(conn)} "
            f"ON {sql.Identifier(staging).as_string(conn)} {index['definition'][match.end():]}"
        )
        plan.append((statement, (name, index["partition_index"]) if index["partition_index"] else None))
    return plan


def build_staging_indexes(
    db: Database, conn: psycopg.Connection, partition: str, staging: str
) -> list[tuple[str, str]]:
    """Create on `staging` each index of audit_logs with the same definition, one after another on `conn`.

    Returns (staging index, name of the matching index on `partition`) pairs, for renaming after the swap.
    """
    renames = []
    for statement, rename in staging_index_plan(db, conn, partition, staging):
        db.execute("audit.build_staging_index", statement, conn=conn)
        if rename is not None:
            renames.append(rename)
    return renames


def swap_in_staging(
    db: Database, conn: psycopg.Connection, partition: str, staging: str, index_renames: list[tuple[str, str]]
) -> bool:
    """Replace the empty `partition` with the loaded `staging` table, in `conn`'s transaction.

    Returns False, with nothing changed, when the partition has rows or the locks are not granted
    within SWAP_LOCK_TIMEOUT. The caller then copies the staging rows in another way. Once swapped,
    the ACCESS EXCLUSIVE lock on audit_logs lasts until the transaction ends.
    """
    partition_id = sql.Identifier(partition)
    staging_id = sql.Identifier(staging)
    try:
        with conn.transaction():
            previous = set_local(db, conn, "lock_timeout", SWAP_LOCK_TIMEOUT)
            # Writers hold ROW EXCLUSIVE on audit_logs and the partition until they commit, so once
            # this lock is granted no uncommitted row can be in the partition, and no new one can arrive.
            db.execute(
                "audit.lock_for_swap",
                sql.SQL("LOCK TABLE ONLY audit_logs, {} IN ACCESS EXCLUSIVE MODE").format(partition_id),
                conn=conn,
            )
            set_local(db, conn, "lock_timeout", previous)
            if not partition_is_empty(db, conn, partition):
                raise _PartitionNotEmpty(partition)
            bounds = db.fetch_value(
                "audit.partition_bounds",
                "SELECT pg_get_expr(relpartbound, oid) FROM pg_class WHERE oid = %s::regclass",
                (partition,),
                conn=conn,
            )
            statements = [
                sql.SQL("ALTER TABLE audit_logs DETACH PARTITION {}").format(partition_id),
                sql.SQL("ALTER TABLE audit_logs ATTACH PARTITION {} {}").format(staging_id, sql.SQL(bounds)),
                sql.SQL("DROP TABLE {}").format(partition_id),
                sql.SQL("ALTER TABLE {} RENAME TO {}").format(staging_id, partition_id),
                # The partition constraint now enforces the same bounds.
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(partition_id, sql.Identifier(f"{staging}_bounds")),
            ]
            statements += [
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(old), sql.Identifier(new))
                for old, new in index_renames
            ]
            for statement in statements:
                db.execute("audit.swap_partition", statement, conn=conn)
    except _PartitionNotEmpty:
        logger.info("audit partition %s received rows during a bulk load; inserting the load instead", partition)
        return False
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
        logger.warning(
            "could not lock audit_logs to swap in %s (%s); inserting the load instead", partition,
            exc.diag.message_primary,
        )
        return False
    return True


def insert_from_staging(db: Database, conn: psycopg.Connection, staging: str, columns: Sequence[str]) -> int:
    """Insert the rows of `staging` into audit_logs, keeping their ids, then drop `staging`. Returns the row count."""
    column_list = sql.SQL(", ").join(sql.Identifier(column) for column in ("id", *columns))
    inserted = db.execute(
        "audit.insert_from_staging",
        sql.SQL("INSERT INTO audit_logs ({columns}) SELECT {columns} FROM {staging}").format(
            columns=column_list, staging=sql.Identifier(staging)
        ),
        conn=conn,
    )
    db.execute("audit.drop_staging", sql.SQL("DROP TABLE {}").format(sql.Identifier(staging)), conn=conn)
    return inserted


class _PartitionNotEmpty(Exception):
    """The partition a bulk load was to replace has rows, so the swap is abandoned."""
