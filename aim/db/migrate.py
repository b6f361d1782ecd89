"""Versioned plain-SQL migrations from `aim/db/migrations/NNNN_name.sql`.

`upgrade()` holds a PostgreSQL advisory lock while it works, so concurrent starters queue behind one
another and each migration is applied once. Each file runs in its own transaction together with its
`schema_migrations` row, so a failed file leaves no trace.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources

import psycopg

from aim.errors import MigrationError

logger = logging.getLogger(__name__)

# Arbitrary constant shared by every AIM process; pg_advisory_lock takes a bigint.
MIGRATION_LOCK_ID = 0x41494D_0001
FILE_PATTERN = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """Read the migration files shipped in the package, ordered by version."""
    found: list[Migration] = []
    for entry in resources.files("aim.db").joinpath("migrations").iterdir():
        match = FILE_PATTERN.match(entry.name)
        if not match:
            continue
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration versions in aim/db/migrations: {versions}")
    return found


def _ensure_table(conn: psycopg.Connection) -> None:
    conn.execute(
        """
        CREATE TABLE IF NOT EXISTS schema_migrations (
            version     integer PRIMARY KEY,
            name        text NOT NULL,
            checksum    text NOT NULL,
            applied_at  timestamptz NOT NULL DEFAULT now()
        )
        """
    )


def applied_versions(conn: psycopg.Connection) -> dict[int, str]:
    """Return {version: checksum} of applied migrations; empty when the table does not exist yet."""
    exists = conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS exists").fetchone()
    if not _first(exists):
        return {}
    rows = conn.execute("SELECT version, checksum FROM schema_migrations ORDER BY version").fetchall()
    return {_get(r, "version", 0): _get(r, "checksum", 1) for r in rows}


def upgrade(url: str) -> list[int]:
    """Apply every pending migration to the database at `url`. Return the versions applied now."""
    migrations = load_migrations()
    applied_now: list[int] = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_ID,))
        try:
            _ensure_table(conn)
            done = applied_versions(conn)
            for migration in migrations:
                if migration.version in done:
                    if done[migration.version] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed after it was applied "
                            f"(checksum {done[migration.version][:12]} in the database, "
                            f"{migration.checksum[:12]} on disk); add a new migration instead"
                        )
                    continue
                logger.info("applying migration %04d_%s", migration.version, migration.name)
                try:
                    with conn.transaction():
                        conn.execute(migration.sql)
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                    ) from exc
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_ID,))
    if applied_now:
        logger.info("schema upgraded to version %d", applied_now[-1])
    return applied_now


def current_version(conn: psycopg.Connection) -> int | None:
    """Return the highest applied migration version, or None on an empty database."""
    done = applied_versions(conn)
    return max(done) if done else None


def _first(row: object) -> object:
    return _get(row, "exists", 0)


def _get(row: object, key: str, index: int) -> object:
    # Works with both the default tuple rows and dict_row connections.
    if isinstance(row, dict):
        return row[key]
    return row[index]  # type: ignore[index]
