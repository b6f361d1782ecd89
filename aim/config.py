"""Settings read from AIM_* environment variables.

Every variable is documented in README.md. A bad value raises `ConfigError` with one line that names
the variable, the value's problem and the expected form, so start-up stops with a message a person
can act on.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

import platformdirs

from aim.errors import ConfigError

logger = logging.getLogger(__name__)

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class Settings:
    """Process-wide configuration. Build it with `load_settings()`."""

    database_url: str | None = None
    database_replica_url: str | None = None
    redis_url: str | None = None
    data_dir: Path = field(default_factory=lambda: Path(platformdirs.user_data_dir("aim")))
    db_pool_min: int = 2
    db_pool_max: int = 10
    db_pool_timeout_s: float = 10.0
    db_statement_timeout_ms: int = 5000
    db_max_idle_s: float = 300.0
    db_max_lifetime_s: float = 1800.0
    redis_pool_max: int = 64
    redis_pool_timeout_s: float = 2.0
    redis_prefix: str = "aim:"
    log_level: str = "INFO"
    secret_key: str | None = None
    key_encryption_key: str | None = None
    metrics_flush_interval_s: float = 10.0

    @property
    def embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def embedded_redis(self) -> bool:
        return self.redis_url is None


def _read_str(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _read_int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = _read_str(env, name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(
            f"{name}={raw!r} is not an integer; expected a whole number from {minimum} to {maximum}"
        ) from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={value} is out of range; expected a whole number from {minimum} to {maximum}")
    return value


def _read_float(env: Mapping[str, str], name: str, default: float, minimum: float, maximum: float) -> float:
    raw = _read_str(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; expected seconds from {minimum} to {maximum}") from None
    if not minimum <= value <= maximum:
        raise ConfigError(f"{name}={value} is out of range; expected seconds from {minimum} to {maximum}")
    return value


def _read_url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = _read_str(env, name)
    if raw is None:
        return None
    scheme = urlsplit(raw).scheme
    if scheme not in schemes:
        expected = " or ".join(f"{s}://..." for s in schemes)
        raise ConfigError(f"{name} has scheme {scheme!r}; expected a URL of the form {expected}")
    return raw


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Build `Settings` from `env` (default: `os.environ`). Raise `ConfigError` on the first bad value."""
    env = os.environ if env is None else env

    database_url = _read_url(env, "AIM_DATABASE_URL", ("postgresql", "postgres"))
    replica_url = _read_url(env, "AIM_DATABASE_REPLICA_URL", ("postgresql", "postgres"))
    if replica_url and not database_url:
        raise ConfigError(
            "AIM_DATABASE_REPLICA_URL is set without AIM_DATABASE_URL; expected both, "
            "because the embedded PostgreSQL has no replica"
        )
    redis_url = _read_url(env, "AIM_REDIS_URL", ("redis", "rediss", "unix"))

    data_dir_raw = _read_str(env, "AIM_DATA_DIR")
    # Resolved to an absolute path: unix:// socket URLs and pgserver both need one.
    data_dir = (Path(data_dir_raw).expanduser() if data_dir_raw else Path(platformdirs.user_data_dir("aim"))).resolve()
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"AIM_DATA_DIR={str(data_dir)!r} is a file; expected a directory path")

    log_level = (_read_str(env, "AIM_LOG_LEVEL") or "INFO").upper()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"AIM_LOG_LEVEL={log_level!r} is not a level; expected one of {', '.join(LOG_LEVELS)}")

    pool_min = _read_int(env, "AIM_DB_POOL_MIN", 2, 0, 500)
    pool_max = _read_int(env, "AIM_DB_POOL_MAX", 10, 1, 500)
    if pool_max < pool_min:
        raise ConfigError(f"AIM_DB_POOL_MAX={pool_max} is below AIM_DB_POOL_MIN={pool_min}; expected max >= min")

    prefix = _read_str(env, "AIM_REDIS_PREFIX") or "aim:"
    if any(ch.isspace() for ch in prefix):
        raise ConfigError(f"AIM_REDIS_PREFIX={prefix!r} contains whitespace; expected a key prefix such as 'aim:'")

    return Settings(
        database_url=database_url,
        database_replica_url=replica_url,
        redis_url=redis_url,
        data_dir=data_dir,
        db_pool_min=pool_min,
        db_pool_max=pool_max,
        db_pool_timeout_s=_read_float(env, "AIM_DB_POOL_TIMEOUT", 10.0, 0.1, 600.0),
        db_statement_timeout_ms=_read_int(env, "AIM_DB_STATEMENT_TIMEOUT_MS", 5000, 0, 3_600_000),
        db_max_idle_s=_read_float(env, "AIM_DB_MAX_IDLE", 300.0, 1.0, 86_400.0),
        db_max_lifetime_s=_read_float(env, "AIM_DB_MAX_LIFETIME", 1800.0, 10.0, 604_800.0),
        redis_pool_max=_read_int(env, "AIM_REDIS_POOL_MAX", 64, 1, 10_000),
        redis_pool_timeout_s=_read_float(env, "AIM_REDIS_POOL_TIMEOUT", 2.0, 0.01, 60.0),
        redis_prefix=prefix,
        log_level=log_level,
        secret_key=_read_str(env, "AIM_SECRET_KEY"),
        key_encryption_key=_read_str(env, "AIM_KEY_ENCRYPTION_KEY"),
        metrics_flush_interval_s=_read_float(env, "AIM_METRICS_FLUSH_INTERVAL", 10.0, 0.1, 3600.0),
    )


def redact_url(url: str) -> str:
    """Return `url` with any password replaced by `***`, for logs and `aim status`."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
