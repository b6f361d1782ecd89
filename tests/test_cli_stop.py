"""`aim stop`: stopping the embedded PostgreSQL and Redis under a data directory.

These tests start their own servers in a fresh temporary directory, never in the data directory the
rest of the suite shares, because stopping that one would break every other test.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
import pytest
import redis
from typer.testing import CliRunner

from aim import embedded
from aim.cli import app

# Unset the external-server URLs so `aim stop` acts on the embedded servers. CliRunner removes a variable set to None.
EMBEDDED_ENV = {"AIM_DATABASE_URL": None, "AIM_DATABASE_REPLICA_URL": None, "AIM_REDIS_URL": None}


@pytest.fixture
def fresh_data_dir():
    # tmp_path is mode 0700 under root's pytest directory, which the `pgserver` user that runs
    # PostgreSQL for root cannot enter, so the directory comes from tempfile and is opened up.
    path = Path(tempfile.mkdtemp(prefix="aim-stop-test-"))
    path.chmod(0o755)
    yield path
    embedded.stop_redis(path)
    embedded.stop_postgres(path)
    shutil.rmtree(path, ignore_errors=True)


def _postgres_answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def test_stop_stops_running_servers(fresh_data_dir: Path):
    database_url = embedded.ensure_postgres(fresh_data_dir)
    redis_url = embedded.ensure_redis(fresh_data_dir)
    assert _postgres_answers(database_url)
    assert _redis_answers(redis_url)

    result = CliRunner().invoke(app, ["stop"], env={**EMBEDDED_ENV, "AIM_DATA_DIR": str(fresh_data_dir)})

    assert result.exit_code == 0, result.output
    assert f"stopped embedded PostgreSQL in {fresh_data_dir / 'postgres'}" in result.output
    assert f"stopped embedded Redis at {embedded.redis_socket_path(fresh_data_dir)}" in result.output
    assert not _postgres_answers(database_url)
    assert not _redis_answers(redis_url)


def test_stop_data_dir_option(fresh_data_dir: Path):
    redis_url = embedded.ensure_redis(fresh_data_dir)
    other_dir = fresh_data_dir / "unused"

    result = CliRunner().invoke(
        app, ["stop", "--data-dir", str(fresh_data_dir)], env={**EMBEDDED_ENV, "AIM_DATA_DIR": str(other_dir)}
    )

    assert result.exit_code == 0, result.output
    assert "stopped embedded Redis" in result.output
    assert not _redis_answers(redis_url)


def test_stop_with_nothing_running(fresh_data_dir: Path):
    result = CliRunner().invoke(app, ["stop"], env={**EMBEDDED_ENV, "AIM_DATA_DIR": str(fresh_data_dir)})

    assert result.exit_code == 0, result.output
    assert f"no embedded PostgreSQL or Redis is running under {fresh_data_dir}" in result.output
    assert "stopped" not in result.output


def test_stop_rejects_external_servers(fresh_data_dir: Path):
    redis_url = embedded.ensure_redis(fresh_data_dir)
    env = {
        **EMBEDDED_ENV,
        "AIM_DATA_DIR": str(fresh_data_dir),
        "AIM_REDIS_URL": redis_url,
    }

    result = CliRunner().invoke(app, ["stop"], env=env)

    assert result.exit_code == 2
    assert "AIM_REDIS_URL is set" in result.output
    assert "stopped" not in result.output
    assert _redis_answers(redis_url), "aim stop must leave a server given by URL running"


def test_stop_ignores_stale_pid_file(fresh_data_dir: Path):
    embedded.ensure_postgres(fresh_data_dir)
    assert embedded.stop_postgres(fresh_data_dir)
    # A crashed server leaves postmaster.pid behind. The PID of a child that has exited and been reaped
    # belongs to no process, unless the kernel has reused it in the meantime.
    finished = subprocess.Popen(["true"])
    finished.wait()
    pid_file = fresh_data_dir / "postgres" / "postmaster.pid"
    pid_file.write_text(f"{finished.pid}\n")

    result = CliRunner().invoke(app, ["stop"], env={**EMBEDDED_ENV, "AIM_DATA_DIR": str(fresh_data_dir)})

    assert result.exit_code == 0, result.output
    assert "no embedded PostgreSQL or Redis is running" in result.output
