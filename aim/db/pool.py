"""PostgreSQL access: one psycopg_pool per server, queries timed by name.

Every query goes through `Database` with a short name such as `agents.list`. The name labels the
`aim_db_queries_total` and `aim_db_query_duration_seconds` metrics and the per-minute roll-ups that
the performance page charts.
"""

from __future__ import annotations

import json
import logging
import re
import select
import threading
import time
import weakref
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from typing import Any, Iterator, Sequence

import orjson
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

from aim import metrics
from aim.config import Settings, redact_url

logger = logging.getLogger(__name__)

Params = Sequence[Any] | dict[str, Any] | None

# A connection returned to the pool less than this long ago is handed out again without a round
# trip to check it, because under load the check would double the round trips of a short query.
CHECK_AFTER_IDLE_S = 1.0

# The connection that `Database.pinned()` borrowed for the current context, with the pool it came from.
_pinned: ContextVar[tuple[ConnectionPool, psycopg.Connection] | None] = ContextVar("aim_db_pinned", default=None)


def _has_unread_input(conn: psycopg.Connection) -> bool:
    """Return True when an idle connection's socket is readable or unusable.

    An idle connection owes no reply, so readable input means the server sent an error (such as
    the FATAL of idle_session_timeout or pg_terminate_backend), closed the socket, or sent an
    asynchronous notice. Either way the full check must look at it.
    """
    try:
        readable, _, _ = select.select([conn.pgconn.socket], [], [], 0)
    except (OSError, ValueError, psycopg.OperationalError):
        return True
    return bool(readable)


class _CheckedPool(ConnectionPool):
    """A pool whose `check` round-trips only for connections that idled a while.

    A connection returned less than `idle_s` ago gets a zero-wait poll of its socket instead. That
    catches every connection that its server closed or sent an error, because the FATAL message or
    the end of file is already readable. A peer that vanished without closing the socket (a network
    partition) is caught only by the round-trip check, once the connection has idled `idle_s`.

    The return time is stamped in `putconn`, in the caller's thread. psycopg_pool runs a `reset`
    callback on its worker threads instead, which costs a thread hand-off per borrow and keeps the
    connection out of the pool until a worker runs it.
    """

    def __init__(self, *args: Any, idle_s: float = CHECK_AFTER_IDLE_S, **kwargs: Any) -> None:
        self.idle_s = idle_s
        self._returned_at: weakref.WeakKeyDictionary[psycopg.Connection, float] = weakref.WeakKeyDictionary()
        self._returned_lock = threading.Lock()
        super().__init__(*args, check=self._check_recent, **kwargs)

    def putconn(self, conn: psycopg.Connection) -> None:
        with self._returned_lock:
            self._returned_at[conn] = time.monotonic()
        super().putconn(conn)

    def _check_recent(self, conn: psycopg.Connection) -> None:
        with self._returned_lock:
            returned_at = self._returned_at.get(conn)
        recent = returned_at is not None and time.monotonic() - returned_at < self.idle_s
        if not recent or conn.closed or _has_unread_input(conn):
            ConnectionPool.check_connection(conn)


# A run of this many digits may be an integer beyond 64 bits. orjson 3.8 turns such an integer into
# a float, so those texts go to the json module, which keeps it exact.
_LONG_DIGIT_RUN = re.compile(rb"[0-9]{19}")


def loads_json(data: bytes | memoryview | str) -> Any:
    """Parse a json or jsonb column value, with orjson where it gives the same result as the json module.

    orjson parses the jsonb columns of a 50-row page several times faster. Text with a run of 19 or
    more digits, and anything orjson rejects (such as an escaped lone surrogate), goes to the json
    module.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if _LONG_DIGIT_RUN.search(raw) is None:
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            pass
    return json.loads(raw)


def _configure(conn: psycopg.Connection) -> None:
    set_json_loads(loads_json, conn)


def _make_pool(url: str, settings: Settings, name: str) -> ConnectionPool:
    # The check runs before a connection that was idle is handed out, so one that the server closed
    # (idle timeout, restart, failover) is replaced instead of failing the caller's first query.
    return _CheckedPool(
        url,
        name=name,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        timeout=settings.db_pool_timeout_s,
        max_idle=settings.db_max_idle_s,
        max_lifetime=settings.db_max_lifetime_s,
        configure=_configure,
        kwargs={
            # Autocommit, so a single-statement borrow costs one round trip instead of three (BEGIN,
            # the statement, COMMIT). Blocks that need a transaction open one explicitly: see
            # `Database.connection()` and `Database.transaction()`.
            "autocommit": True,
            "row_factory": dict_row,
            # Generic plans for prepared statements, which psycopg makes of a query after its fifth
            # run on a connection. The keyset list queries then skip planning. On the partitioned
            # audit_logs a custom plan cost 0.46 ms of server CPU per page against 0.13 ms with the
            # generic plan (measured while writing bench/load), and partitions are still pruned at
            # execution.
            "options": f"-c statement_timeout={settings.db_statement_timeout_ms} -c timezone=UTC "
                       f"-c plan_cache_mode=force_generic_plan",
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

    def connect_direct(self) -> psycopg.Connection:
        """Open a primary connection outside the pool, with the pool's settings. The caller closes it.

        For helper sessions of a long bulk operation, which would otherwise hold pool connections
        that requests need.
        """
        kwargs = self.pool.kwargs() if callable(self.pool.kwargs) else self.pool.kwargs
        conn = psycopg.connect(self.url, **(kwargs or {}))
        _configure(conn)
        return conn

    def _pool_for(self, stale_ok: bool) -> ConnectionPool:
        return self.replica_pool if stale_ok and self.replica_pool is not None else self.pool

    @contextmanager
    def connection(self, *, stale_ok: bool = False) -> Iterator[psycopg.Connection]:
        """Borrow a connection inside a transaction. A block that raises rolls back; one that returns commits.

        Inside `pinned()` on the same pool, the transaction runs on the pinned connection.
        """
        pool = self._pool_for(stale_ok)
        current = _pinned.get()
        borrowed = nullcontext(current[1]) if current is not None and current[0] is pool else pool.connection()
        with borrowed as conn, conn.transaction():
            yield conn

    @contextmanager
    def pinned(self, *, stale_ok: bool = False) -> Iterator[psycopg.Connection]:
        """Borrow one connection for every query of the block that names no connection of its own.

        Queries with the same `stale_ok` inside the block (in this thread or context) share the
        connection, so a page and its count cost one pool borrow. Each query commits on its own
        (autocommit), so the block is meant for reads. `transaction()` still borrows a connection
        of its own.
        """
        pool = self._pool_for(stale_ok)
        current = _pinned.get()
        if current is not None and current[0] is pool:
            yield current[1]
            return
        with pool.connection() as conn:
            token = _pinned.set((pool, conn))
            try:
                yield conn
            finally:
                _pinned.reset(token)

    @contextmanager
    def transaction(self, *, pipelined: bool = False) -> Iterator[psycopg.Connection]:
        """Borrow a primary connection inside one transaction: every statement commits or none does.

        With `pipelined`, the connection is in psycopg's pipeline mode: statements are sent without
        waiting for their results, and reading any result (a fetch) waits for everything sent
        before it. So a caller that executes several statements and then fetches pays one round
        trip for them, BEGIN included. A row count read before a fetch is -1, and an error of one
        statement is raised at the next fetch or at the end of the block.
        """
        with self.pool.connection() as conn:
            with conn.pipeline() if pipelined else nullcontext(), conn.transaction():
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
        if conn is None:
            current = _pinned.get()
            if current is not None and current[0] is self._pool_for(stale_ok):
                conn = current[1]
        if conn is not None:
            with conn.cursor() as cur:
                yield cur
            return
        # One statement on a borrowed autocommit connection is its own transaction.
        with self._pool_for(stale_ok).connection() as own, own.cursor() as cur:
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
