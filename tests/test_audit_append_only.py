from datetime import datetime, timedelta, timezone

import psycopg
import pytest

pytestmark = pytest.mark.integration


def _insert(db, org_id, when):
    return db.fetch_value(
        "test.audit",
        """INSERT INTO audit_logs (organization_id, occurred_at, actor_type, actor_id, action, resource_type, result)
           VALUES (%s, %s, 'system', 'test', 'test.event', 'test', 'success') RETURNING id""",
        (org_id, when),
    )


def test_update_is_refused(db, org_id):
    row_id = _insert(db, org_id, datetime.now(timezone.utc))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        db.execute("test.audit_update", "UPDATE audit_logs SET action = 'x' WHERE id = %s", (row_id,))


def test_delete_is_refused(db, org_id):
    row_id = _insert(db, org_id, datetime.now(timezone.utc))
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        db.execute("test.audit_delete", "DELETE FROM audit_logs WHERE id = %s", (row_id,))
    assert db.fetch_value("test.audit_count", "SELECT count(*) FROM audit_logs WHERE id = %s", (row_id,)) == 1


def test_truncate_is_refused(db):
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        db.execute("test.audit_truncate", "TRUNCATE audit_logs")


def test_partitions_cover_recent_months(db):
    now = datetime.now(timezone.utc)
    for offset in (-365, -30, 0, 60):
        when = now + timedelta(days=offset)
        name = f"audit_logs_{when:%Y_%m}"
        assert db.fetch_value("test.partition", "SELECT to_regclass(%s) IS NOT NULL", (name,)), name
