"""Process-wide backends: settings, the PostgreSQL pools, the Redis client and the secret key.

`get_runtime()` builds them once per process. On first use it starts the embedded servers when no
URLs are set and applies pending migrations, so every front (API, dashboard, CLI) starts the same way.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import redis
import redis.asyncio
import redis.asyncio.retry
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from aim import embedded
from aim.config import Settings, load_settings, redact_url
from aim.db import migrate
from aim.db.pool import Database

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_runtime: "Runtime | None" = None


@dataclass
class Runtime:
    settings: Settings
    db: Database
    redis: redis.Redis
    redis_url: str
    secret_key: bytes

    def close(self) -> None:
        self.db.close()
        self.redis.close()
        logger.info("runtime closed")

    def backend_description(self) -> dict[str, str]:
        """Return which backends are in use and where, with passwords hidden."""
        return {
            "postgresql": ("embedded " if self.settings.embedded_database else "") + redact_url(self.db.url),
            "postgresql_replica": redact_url(self.db.replica_url) if self.db.replica_url else "none",
            "redis": ("embedded " if self.settings.embedded_redis else "") + redact_url(self.redis_url),
        }


def configure_logging(settings: Settings) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aim").setLevel(settings.log_level)


def resolve_database_url(settings: Settings) -> str:
    if settings.database_url:
        return settings.database_url
    return embedded.ensure_postgres(settings.data_dir)


def resolve_redis_url(settings: Settings) -> str:
    if settings.redis_url:
        return settings.redis_url
    return embedded.ensure_redis(settings.data_dir)


def _pool_options(settings: Settings) -> dict[str, object]:
    # A blocking pool waits up to the timeout for a free connection instead of raising
    # "Too many connections" under bursts. Short socket timeouts let callers fall back to PostgreSQL
    # quickly when Redis is down.
    return {
        "max_connections": settings.redis_pool_max,
        "timeout": settings.redis_pool_timeout_s,
        "socket_timeout": 1.0,
        "socket_connect_timeout": 1.0,
        "health_check_interval": 30,
    }


def _backoff() -> ExponentialBackoff:
    # One quick retry instead of redis-py's default backoff of several seconds, so an outage costs
    # each call milliseconds before the caller falls back to PostgreSQL.
    return ExponentialBackoff(cap=0.05, base=0.01)


def make_redis(url: str, settings: Settings) -> redis.Redis:
    pool = redis.BlockingConnectionPool.from_url(url, **_pool_options(settings))
    return redis.Redis(connection_pool=pool, retry=Retry(_backoff(), retries=1))


def make_async_redis(url: str, settings: Settings) -> redis.asyncio.Redis:
    """Return an asyncio Redis client with the pool limits, timeouts and retry of `make_redis`.

    Bind it to one event loop: create it inside the loop that uses it, and close it there.
    """
    pool = redis.asyncio.BlockingConnectionPool.from_url(url, **_pool_options(settings))
    return redis.asyncio.Redis(connection_pool=pool, retry=redis.asyncio.retry.Retry(_backoff(), retries=1))


def build_runtime(settings: Settings, *, upgrade: bool = True) -> Runtime:
    """Resolve backends for `settings`, apply migrations when `upgrade`, and open the pools."""
    configure_logging(settings)
    db_url = resolve_database_url(settings)
    if upgrade:
        migrate.upgrade(db_url)
    redis_url = resolve_redis_url(settings)
    db = Database(settings, db_url, settings.database_replica_url)
    db.open()
    secret = settings.secret_key
    if secret is None:
        secret = db.fetch_value(
            "instance.secret_key", "SELECT value FROM instance_settings WHERE key = 'secret_key'"
        )
    logger.info(
        "backends: postgresql=%s%s redis=%s%s",
        "embedded " if settings.embedded_database else "",
        redact_url(db_url),
        "embedded " if settings.embedded_redis else "",
        redact_url(redis_url),
    )
    return Runtime(settings, db, make_redis(redis_url, settings), redis_url, str(secret).encode())


def get_runtime() -> Runtime:
    """Return this process's runtime, building it from the environment on first call."""
    global _runtime
    with _lock:
        if _runtime is None:
            _runtime = build_runtime(load_settings())
        return _runtime


def set_runtime(runtime: Runtime | None) -> None:
    """Install `runtime` as this process's runtime (tests, or a front that built its own)."""
    global _runtime
    with _lock:
        _runtime = runtime
