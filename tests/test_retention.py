from datetime import datetime, timedelta, timezone

import pytest

from aim.db.partitions import apply_retention, ensure_partitions, list_partitions
from aim.errors import ValidationError

pytestmark = pytest.mark.integration


def _insert(db, org_id, when):
    db.execute(
        "test.audit",
        """INSERT INTO audit_logs (organization_id, occurred_at, actor_type, actor_id, action, resource_type, result)
           VALUES (%s, %s, 'system', 'test', 'test.retention', 'test', 'success')""",
        (org_id, when),
    )


def _count(db, org_id):
    return db.fetch_value(
        "test.audit_count",
        "SELECT count(*) FROM audit_logs WHERE organization_id = %s AND action = 'test.retention'",
        (org_id,),
    )


def test_retention_drops_only_whole_old_months(scratch_db):
    db = scratch_db
    org_id = db.fetch_value("test.org", "INSERT INTO organizations (name) VALUES ('retention') RETURNING id")
    # A scratch database, because dropping partitions would remove other tests' rows.
    now = datetime.now(timezone.utc) + timedelta(days=900)
    ensure_partitions(db, now - timedelta(days=120), now)
    old = now - timedelta(days=100)
    recent = now - timedelta(days=1)
    _insert(db, org_id, old)
    _insert(db, org_id, recent)

    would_drop = apply_retention(db, keep_months=2, now=now, dry_run=True)
    old_partition = f"audit_logs_{old:%Y_%m}"
    recent_partition = f"audit_logs_{recent:%Y_%m}"
    assert old_partition in would_drop
    assert recent_partition not in would_drop
    assert _count(db, org_id) == 2

    dropped = apply_retention(db, keep_months=2, now=now)
    assert dropped == would_drop
    remaining = {p.name for p in list_partitions(db)}
    assert old_partition not in remaining
    assert recent_partition in remaining
    assert _count(db, org_id) == 1


@pytest.mark.parametrize("bad", [0, -1, 1.5, "3"])
def test_retention_rejects_bad_keep_months(db, bad):
    with pytest.raises(ValidationError, match="keep_months"):
        apply_retention(db, keep_months=bad)
