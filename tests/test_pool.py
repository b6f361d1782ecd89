import dataclasses
import time
import uuid

import psycopg
import pytest
from psycopg import sql

from aim.db import migrate
from aim.db.pool import Database
from conftest import _with_database

pytestmark = pytest.mark.integration


@pytest.fixture
def short_idle_database(server_url):
    """A database whose server closes sessions idle for more than 5 s.

    psycopg_pool waits about 1 s, then 2 s, between failed checks, and replacement connections idle in
    the pool meanwhile, so the timeout must exceed those waits or the replacements die too.
    """
    name = f"aim_idle_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("ALTER DATABASE {} SET idle_session_timeout = '5s'").format(sql.Identifier(name)))
    url = _with_database(server_url, name)
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_pool_recovers_after_server_closes_idle_connections(settings, short_idle_database):
    pool_settings = dataclasses.replace(settings, db_pool_min=2, db_pool_max=2)
    database = Database(pool_settings, short_idle_database)
    database.open()
    try:
        assert database.fetch_value("test.ping", "SELECT 1") == 1
        time.sleep(6.0)  # every pooled connection is now closed by the server

        for _ in range(6):
            assert database.fetch_value("test.ping", "SELECT 1") == 1
    finally:
        database.close()


def test_statement_timeout_is_applied(settings, database_url):
    pool_settings = dataclasses.replace(settings, db_statement_timeout_ms=200)
    database = Database(pool_settings, database_url)
    database.open()
    try:
        assert database.fetch_value("test.timeout_setting", "SHOW statement_timeout") == "200ms"
        with pytest.raises(psycopg.errors.QueryCanceled):
            database.fetch_value("test.slow", "SELECT pg_sleep(2)")
        assert database.fetch_value("test.after_timeout", "SELECT 1") == 1
    finally:
        database.close()


def test_sessions_use_utc(db):
    assert db.fetch_value("test.timezone", "SHOW timezone") == "UTC"


def test_transaction_rolls_back_on_error(db, org_id):
    with pytest.raises(RuntimeError):
        with db.transaction() as conn:
            db.execute("test.insert_user_org", "UPDATE organizations SET settings = '{\"x\": 1}' WHERE id = %s",
                       (org_id,), conn=conn)
            raise RuntimeError("abort")
    settings = db.fetch_value("test.read_org", "SELECT settings FROM organizations WHERE id = %s", (org_id,))
    assert settings == {}


def test_pipelined_transaction_reads_own_writes(db, org_id):
    with db.transaction(pipelined=True) as conn:
        db.execute("test.set_org", "UPDATE organizations SET settings = '{\"p\": 1}' WHERE id = %s", (org_id,),
                   conn=conn)
        inside = db.fetch_value("test.read_org", "SELECT settings FROM organizations WHERE id = %s", (org_id,),
                                conn=conn)

    assert inside == {"p": 1}
    assert db.fetch_value("test.read_org", "SELECT settings FROM organizations WHERE id = %s", (org_id,)) == {"p": 1}


def test_pipelined_error_rolls_back_all(db, org_id):
    with pytest.raises(psycopg.errors.DivisionByZero):
        with db.transaction(pipelined=True) as conn:
            db.execute("test.set_org", "UPDATE organizations SET settings = '{\"p\": 2}' WHERE id = %s", (org_id,),
                       conn=conn)
            db.execute("test.fail", "SELECT 1 / 0", conn=conn)
            db.fetch_value("test.after", "SELECT 1", conn=conn)

    assert db.fetch_value("test.read_org", "SELECT settings FROM organizations WHERE id = %s", (org_id,)) == {}


def test_upgrade_on_migrated_database_applies_nothing(database_url):
    assert migrate.upgrade(database_url) == []


def test_pool_never_hands_out_terminated_connection(settings, database_url):
    pool_settings = dataclasses.replace(settings, db_pool_min=1, db_pool_max=1)
    database = Database(pool_settings, database_url)
    database.open()
    try:
        for _ in range(3):
            backend = database.fetch_value("test.backend_pid", "SELECT pg_backend_pid()")
            with psycopg.connect(database_url, autocommit=True) as admin:
                assert admin.execute("SELECT pg_terminate_backend(%s)", (backend,)).fetchone()[0] is True
            time.sleep(0.05)  # well inside the window in which the round-trip check is skipped

            assert database.fetch_value("test.after_terminate", "SELECT pg_backend_pid()") != backend
    finally:
        database.close()


def test_putconn_returns_connection_at_once(settings, database_url):
    # With a `reset` callback, a pool worker thread returns the connection later, so the next borrow
    # waits for that thread or opens another connection.
    pool_settings = dataclasses.replace(settings, db_pool_min=1, db_pool_max=1)
    database = Database(pool_settings, database_url)
    database.open()
    try:
        backend = database.fetch_value("test.backend_pid", "SELECT pg_backend_pid()")
        assert database.pool.get_stats()["pool_available"] == 1

        with database.pinned() as conn:
            assert database.pool.get_stats()["pool_available"] == 0
            assert conn.info.backend_pid == backend
        assert database.pool.get_stats()["pool_available"] == 1
        assert database.fetch_value("test.same_backend", "SELECT pg_backend_pid()") == backend
    finally:
        database.close()
