"""PostgreSQL access: one psycopg_pool per server, queries timed by name.

Every query goes through `Database` with a short name such as `agents.list`. The name labels the
`aim_db_queries_total` and `aim_db_query_duration_seconds` metrics and the per-minute roll-ups that
the performance page charts.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from typing import Any, Iterator, Sequence

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from aim import metrics
from aim.config import Settings, redact_url

logger = logging.getLogger(__name__)

Params = Sequence[Any] | dict[str, Any] | None


def _make_pool(url: str, settings: Settings, name: str) -> ConnectionPool:
    # The check runs before a connection is handed out, so one that the server closed (idle timeout,
    # restart, failover) is replaced instead of failing the caller's first query.
    return ConnectionPool(
        url,
        name=name,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_pool_timeout_s,
        max_idle=settings.db_max_idle_s,
        max_lifetime=settings.db_max_lifetime_s,
        check=ConnectionPool.check_connection,
        kwargs={
            "row_factory": dict_row,
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms} -c timezone=UTC",
            "application_name": "aim",
        },
        open=False,
    )


class Database:
    """A primary pool, and a replica pool when `replica_url` is given.

    Reads marked `stale_ok=True` go to the replica; everything else goes to the primary. Call
    `open()` before use and `close()` at shutdown.
    """

    def __init__(self, settings: Settings, url: str, replica_url: str | None = None) -> None:
        self.url = url
        self.replica_url = replica_url
        self.pool = _make_pool(url, settings, "aim-primary")
        self.replica_pool = _make_pool(replica_url, settings, "aim-replica") if replica_url else None

    def open(self, wait: bool = True, timeout: float = 30.0) -> None:
        self.pool.open(wait=wait, timeout=timeout)
        if self.replica_pool is not None:
            self.replica_pool.open(wait=wait, timeout=timeout)
        logger.info(
            "database pools open: primary %s%s",
            redact_url(self.url),
            f", replica {redact_url(self.replica_url)}" if self.replica_url else "",
        )

    def close(self) -> None:
        self.pool.close()
        if self.replica_pool is not None:
            self.replica_pool.close()
        logger.info("database pools closed")

    @contextmanager
    def connection(self, *, stale_ok: bool = False) -> Iterator[psycopg.Connection]:
        """Borrow a connection. A block that raises rolls back; one that returns commits."""
        pool = self.replica_pool if stale_ok and self.replica_pool is not None else self.pool
        with pool.connection() as conn:
            yield conn

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection]:
        """Borrow a primary connection inside one transaction: every statement commits or none does."""
        with self.pool.connection() as conn:
            with conn.transaction():
                yield conn

    def fetch_all(
        self, name: str, query: str, params: Params = None, *, conn: psycopg.Connection | None = None,
        stale_ok: bool = False,
    ) -> list[dict[str, Any]]:
        with self._cursor(conn, stale_ok) as cur, timed_query(name):
            cur.execute(query, params)
            return cur.fetchall()

    def fetch_one(
        self, name: str, query: str, params: Params = None, *, conn: psycopg.Connection | None = None,
        stale_ok: bool = False,
    ) -> dict[str, Any] | None:
        with self._cursor(conn, stale_ok) as cur, timed_query(name):
            cur.execute(query, params)
            return cur.fetchone()

    def fetch_value(
        self, name: str, query: str, params: Params = None, *, conn: psycopg.Connection | None = None,
        stale_ok: bool = False,
    ) -> Any:
        row = self.fetch_one(name, query, params, conn=conn, stale_ok=stale_ok)
        return None if row is None else next(iter(row.values()))

    def execute(
        self, name: str, query: str, params: Params = None, *, conn: psycopg.Connection | None = None
    ) -> int:
        """Run a statement on the primary and return its row count."""
        with self._cursor(conn, False) as cur, timed_query(name):
            cur.execute(query, params)
            return cur.rowcount

    @contextmanager
    def _cursor(self, conn: psycopg.Connection | None, stale_ok: bool) -> Iterator[psycopg.Cursor]:
        if conn is not None:
            with conn.cursor() as cur:
                yield cur
            return
        with self.connection(stale_ok=stale_ok) as own, own.cursor() as cur:
            yield cur

    def stats(self) -> dict[str, dict[str, int]]:
        """Pool statistics from psycopg_pool, keyed by pool name."""
        result = {"primary": self.pool.get_stats()}
        if self.replica_pool is not None:
            result["replica"] = self.replica_pool.get_stats()
        return result


@contextmanager
def timed_query(name: str) -> Iterator[None]:
    """Time the enclosed query under `name` and record success or error."""
    start = time.perf_counter()
    ok = True
    try:
        yield
    except BaseException:
        ok = False
        raise
    finally:
        metrics.observe_db_query(name, time.perf_counter() - start, ok)
