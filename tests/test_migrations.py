import multiprocessing

import psycopg
import pytest

from aim.db import migrate
from aim.errors import MigrationError

pytestmark = pytest.mark.integration


@pytest.fixture
def empty_database(empty_database_url):
    return empty_database_url


def _run_upgrade(url, queue):
    queue.put(migrate.upgrade(url))


def test_upgrade_is_idempotent(empty_database):
    first = migrate.upgrade(empty_database)
    second = migrate.upgrade(empty_database)
    assert first == [m.version for m in migrate.load_migrations()]
    assert second == []


def test_concurrent_upgrades_apply_each_migration_once(empty_database):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_run_upgrade, args=(empty_database, queue)) for _ in range(3)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    applied = [queue.get(timeout=5) for _ in workers]

    expected = [m.version for m in migrate.load_migrations()]
    flattened = sorted(v for versions in applied for v in versions)
    assert flattened == expected
    with psycopg.connect(empty_database) as conn:
        rows = conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
    assert [r[0] for r in rows] == expected


def test_changed_migration_is_rejected(empty_database):
    migrate.upgrade(empty_database)
    with psycopg.connect(empty_database, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    with pytest.raises(MigrationError, match="changed after it was applied"):
        migrate.upgrade(empty_database)


def test_trust_score_check_constraint(db, org_id):
    with pytest.raises(psycopg.errors.CheckViolation):
        db.execute(
            "test.agent",
            "INSERT INTO agents (organization_id, name, public_key, key_id, trust_score) VALUES (%s, 'a', %s, 'k', 1.5)",
            (org_id, b"\x00" * 32),
        )
