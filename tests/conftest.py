"""Shared fixtures: a fresh PostgreSQL database and Redis key prefix per test session.

Backends come from the environment, as in production. With AIM_DATABASE_URL and AIM_REDIS_URL set,
the tests use those servers; without them they start the embedded PostgreSQL and Redis under
AIM_TEST_DATA_DIR (default `.aim-test-data/` in the repository). Either way each session creates its
own database and key prefix, and drops the database at the end, so runs never see each other's rows.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from aim import embedded
from aim.config import Settings, load_settings
from aim.db import migrate
from aim.db.pool import Database
from aim.metrics.rollup import RECORDER
from aim.runtime import Runtime, make_redis, set_runtime
from aim.services.mcp_registry import BUNDLED_REGISTRY_FILE

REPO_ROOT = Path(__file__).resolve().parent.parent
# The registry export bundled with AIM; AIM_TEST_SHARED_DATA points the tests at another copy.
MCP_REGISTRY_FILE = (Path(os.environ["AIM_TEST_SHARED_DATA"]) / "mcp-registry-seed-2025-05-16.json"
                     if os.environ.get("AIM_TEST_SHARED_DATA") else BUNDLED_REGISTRY_FILE)


def _with_database(url: str, name: str) -> str:
    """Return `url` pointing at database `name`; works for host URLs and socket URLs alike."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    env = dict(os.environ)
    env.setdefault("AIM_DATA_DIR", os.environ.get("AIM_TEST_DATA_DIR", str(REPO_ROOT / ".aim-test-data")))
    # Small pools keep the many short-lived test runtimes cheap.
    env.setdefault("AIM_DB_POOL_MIN", "1")
    env.setdefault("AIM_DB_POOL_MAX", "8")
    return load_settings(env)


@pytest.fixture(scope="session")
def server_url(base_settings: Settings) -> str:
    """URL of the PostgreSQL server under test, pointing at a maintenance database."""
    if base_settings.database_url:
        return base_settings.database_url
    return embedded.ensure_postgres(base_settings.data_dir)


@pytest.fixture(scope="session")
def redis_url(base_settings: Settings) -> str:
    if base_settings.redis_url:
        return base_settings.redis_url
    return embedded.ensure_redis(base_settings.data_dir)


@pytest.fixture(scope="session")
def database_url(server_url: str) -> str:
    """A database created for this test session, with every migration applied."""
    name = f"aim_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = _with_database(server_url, name)
    migrate.upgrade(url)
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def settings(base_settings: Settings, database_url: str, redis_url: str) -> Settings:
    prefix = f"aimtest:{uuid.uuid4().hex[:8]}:"
    return dataclasses.replace(base_settings, database_url=database_url, redis_url=redis_url, redis_prefix=prefix)


@pytest.fixture(scope="session")
def runtime(settings: Settings) -> Runtime:
    db = Database(settings, settings.database_url)
    db.open()
    secret = db.fetch_value("instance.secret_key", "SELECT value FROM instance_settings WHERE key = 'secret_key'")
    rt = Runtime(settings, db, make_redis(settings.redis_url, settings), settings.redis_url, secret.encode())
    set_runtime(rt)
    yield rt
    # Dashboard tests start the metric flusher in this process; stop it while the pool is still open.
    RECORDER.stop()
    set_runtime(None)
    _delete_prefix(rt)
    rt.close()


def _delete_prefix(rt: Runtime) -> None:
    keys = list(rt.redis.scan_iter(match=f"{rt.settings.redis_prefix}*", count=1000))
    for start in range(0, len(keys), 500):
        rt.redis.delete(*keys[start : start + 500])


@pytest.fixture
def db(runtime: Runtime) -> Database:
    return runtime.db


@pytest.fixture
def org_id(db: Database) -> uuid.UUID:
    """A fresh organization per test, so tests that share the session database stay independent."""
    return db.fetch_value(
        "test.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id", (f"org-{uuid.uuid4().hex[:10]}",)
    )


@pytest.fixture
def empty_database_url(server_url: str) -> str:
    """A new database with no schema, dropped after the test."""
    name = f"aim_scratch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield _with_database(server_url, name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def scratch_db(settings: Settings, empty_database_url: str) -> Database:
    """A migrated database of its own, for tests that change shared structure such as partitions."""
    migrate.upgrade(empty_database_url)
    database = Database(settings, empty_database_url)
    database.open()
    yield database
    database.close()


def pytest_collection_modifyitems(session, config, items) -> None:
    """Run the browser tests last.

    Playwright's sync API keeps an asyncio loop running in the main thread until its session
    fixtures are torn down at the end of the run, and tests that start their own event loop
    (anyio.run, the async client) fail while it runs. The sort is stable, so the order is otherwise kept.
    """
    items.sort(key=lambda item: "e2e" in item.path.parts)
