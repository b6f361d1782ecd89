"""Monthly partitions of `audit_logs`: creation ahead of time and retention by whole months.

Retention is the only way audit rows leave the database: the append-only trigger refuses row UPDATE
and DELETE, and DROP TABLE on a partition removes a whole month at once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone

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
