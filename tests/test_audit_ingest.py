"""Audit ingest against real PostgreSQL: COPY round trip, partitions, all-or-nothing, insert_audit."""

from __future__ import annotations

import ipaddress
import json
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from aim.db import audit_ingest
from aim.db.audit_ingest import AUDIT_COLUMNS, ingest_audit_rows, insert_audit
from aim.errors import ValidationError

pytestmark = pytest.mark.integration

NOW = datetime.now(timezone.utc)


def _row(org, index=0, **changes):
    row = {
        "organization_id": org,
        "occurred_at": NOW - timedelta(minutes=index),
        "actor_type": "user",
        "actor_id": f"user-{index % 7}",
        "action": "agent.update",
        "resource_type": "agent",
        "resource_id": f"agent-{index}",
        "result": "success",
    }
    row.update(changes)
    return row


def _stored(db, org):
    return db.fetch_all(
        "test.audit_rows",
        f"SELECT {', '.join(AUDIT_COLUMNS)} FROM audit_logs WHERE organization_id = %s ORDER BY occurred_at, id",
        (org,),
    )


def _count(db, org):
    return db.fetch_value("test.audit_count", "SELECT count(*) FROM audit_logs WHERE organization_id = %s", (org,))


def _partition_exists(db, name):
    return db.fetch_value("test.partition", "SELECT to_regclass(%s) IS NOT NULL", (name,))


def test_copy_round_trip(db, org_id):
    full = {
        "organization_id": str(org_id),
        "occurred_at": datetime(2025, 6, 1, 8, 30, 15, 123456, tzinfo=timezone.utc),
        "actor_type": "agent",
        "actor_id": "agent-7",
        "action": "verify",
        "resource_type": "capability",
        "resource_id": "db:read",
        "result": "denied",
        "ip_address": "2001:db8::1",
        "user_agent": "aim-client/1.0 \"quoted\"\ttab",
        "request_id": "req-1",
        "details": {"reason": "trust below threshold", "score": 0.41, "nested": {"list": [1, "two", None]}},
    }
    minimal = _row(org_id, occurred_at=datetime(2025, 6, 1, 9, 0, tzinfo=timezone.utc))
    as_tuple = (org_id, datetime(2025, 6, 1, 10, 0, tzinfo=timezone.utc), "system", "scheduler", "retention.run",
                "partition", None, "failure", ipaddress.ip_address("10.1.2.3"), None, None, None)

    written = ingest_audit_rows(db, [full, minimal, as_tuple])
    stored = _stored(db, org_id)

    assert written == 3
    assert len(stored) == 3
    first = stored[0]
    assert first["organization_id"] == org_id
    assert first["occurred_at"] == full["occurred_at"]
    for column in ("actor_type", "actor_id", "action", "resource_type", "resource_id", "result", "user_agent",
                   "request_id", "details"):
        assert first[column] == full[column], column
    assert str(first["ip_address"]) == "2001:db8::1"
    assert stored[1]["resource_id"] == "agent-0"
    assert stored[1]["ip_address"] is None
    assert stored[1]["details"] == {}
    assert stored[2]["resource_id"] == ""
    assert str(stored[2]["ip_address"]) == "10.1.2.3"
    assert stored[2]["actor_type"] == "system"


def test_copy_streams_generator_in_batches(db, org_id):
    rows = (_row(org_id, index) for index in range(2_500))

    written = ingest_audit_rows(db, rows, batch_size=700)

    assert written == 2_500
    assert _count(db, org_id) == 2_500


def test_copy_of_nothing_writes_nothing(db, org_id):
    assert ingest_audit_rows(db, iter([])) == 0
    assert _count(db, org_id) == 0


def test_copy_creates_partitions_for_old_months(db, org_id):
    february = datetime(2019, 2, 27, 23, 59, 59, tzinfo=timezone.utc)
    april = datetime(2019, 4, 1, 0, 0, tzinfo=timezone.utc)
    assert not _partition_exists(db, "audit_logs_2019_02")
    assert not _partition_exists(db, "audit_logs_2019_04")

    written = ingest_audit_rows(db, [_row(org_id, occurred_at=february), _row(org_id, occurred_at=april),
                                     _row(org_id, occurred_at=february)])

    assert written == 3
    assert _partition_exists(db, "audit_logs_2019_02")
    assert _partition_exists(db, "audit_logs_2019_04")
    assert [row["occurred_at"] for row in _stored(db, org_id)] == [february, february, april]


def test_copy_partition_month_is_utc(db, org_id):
    # 00:30 on 1 May at UTC+02:00 is still 30 April in UTC, so it belongs to the April partition.
    plus_two = timezone(timedelta(hours=2))
    when = datetime(2018, 5, 1, 0, 30, tzinfo=plus_two)

    ingest_audit_rows(db, [_row(org_id, occurred_at=when)])

    assert _partition_exists(db, "audit_logs_2018_04")
    assert not _partition_exists(db, "audit_logs_2018_05")


@pytest.mark.parametrize(
    ("changes", "field", "expected"),
    [
        ({"actor_type": "robot"}, "actor_type", "expected one of agent, api_key, system, user"),
        ({"result": "ok"}, "result", "expected one of denied, failure, success"),
        ({"organization_id": "org-1"}, "organization_id", "expected a UUID"),
        ({"occurred_at": datetime(2025, 1, 1)}, "occurred_at", "timezone-aware"),
        ({"occurred_at": "2025-01-01T00:00:00Z"}, "occurred_at", "timezone-aware"),
        ({"ip_address": "999.1.1.1"}, "ip_address", "IPv4 or IPv6"),
        ({"ip_address": "fe80::1%eth0"}, "ip_address", "IPv4 or IPv6"),
        ({"ip_address": 167772161}, "ip_address", "IPv4 or IPv6"),
        ({"details": ["not", "a", "dict"]}, "details", "dict of JSON values"),
        ({"details": {"when": datetime(2025, 1, 1)}}, "details", "JSON values only"),
        ({"actor_id": ""}, "actor_id", "non-empty text"),
        ({"action": None}, "action", "non-empty text"),
        ({"user_agent": 42}, "user_agent", "text or None"),
        ({"request_id": "a\x00b"}, "request_id", "NUL"),
        ({"colour": "red"}, "row", "unknown columns"),
    ],
)
def test_bad_row_is_rejected_and_nothing_written(db, org_id, changes, field, expected):
    rows = [_row(org_id, index) for index in range(1_200)]
    rows[1_100] = _row(org_id, 1_100, **changes)

    with pytest.raises(ValidationError) as caught:
        ingest_audit_rows(db, rows, batch_size=500)

    assert caught.value.field == f"rows[1100].{field}"
    assert expected in caught.value.message
    assert _count(db, org_id) == 0


@pytest.mark.parametrize(
    "row",
    [("too", "short"), "a string", 42, None],
)
def test_row_of_wrong_shape_is_rejected(db, org_id, row):
    with pytest.raises(ValidationError) as caught:
        ingest_audit_rows(db, [_row(org_id), row])

    assert caught.value.field == "rows[1].row"
    assert _count(db, org_id) == 0


def test_missing_required_column_is_rejected(db, org_id):
    row = _row(org_id)
    del row["result"]

    with pytest.raises(ValidationError, match="missing required columns") as caught:
        ingest_audit_rows(db, [row])

    assert caught.value.field == "rows[0].row"


def test_row_rejected_by_postgresql_writes_nothing(db, org_id):
    # PostgreSQL's jsonb cannot store \u0000, which only the server detects, in the third batch.
    rows = [_row(org_id, index) for index in range(1_200)]
    rows[1_100]["details"] = {"note": "nul \x00 inside"}

    with pytest.raises(ValidationError) as caught:
        ingest_audit_rows(db, rows, batch_size=500)

    assert caught.value.field == "rows[1100]"
    assert "nothing from this call was written" in caught.value.message
    assert _count(db, org_id) == 0


@pytest.mark.parametrize("batch_size", [0, -5, 1_000_001, 2.5, True])
def test_bad_batch_size_is_rejected(db, org_id, batch_size):
    with pytest.raises(ValidationError) as caught:
        ingest_audit_rows(db, [_row(org_id)], batch_size=batch_size)

    assert caught.value.field == "batch_size"


def test_copy_in_callers_transaction_rolls_back_with_it(db, org_id):
    with pytest.raises(RuntimeError, match="change failed"):
        with db.transaction() as conn:
            ingest_audit_rows(db, [_row(org_id, index) for index in range(10)], conn=conn)
            raise RuntimeError("change failed")

    assert _count(db, org_id) == 0


def test_copy_in_callers_transaction_commits_with_it(db, org_id):
    with db.transaction() as conn:
        written = ingest_audit_rows(db, [_row(org_id, index) for index in range(10)], conn=conn)
        db.execute("test.org_touch", "UPDATE organizations SET settings = '{\"touched\": true}' WHERE id = %s",
                   (org_id,), conn=conn)

    assert written == 10
    assert _count(db, org_id) == 10


# --- insert_audit -------------------------------------------------------------------------------


def test_insert_audit_commits_with_change(db, org_id):
    with db.transaction() as conn:
        db.execute("test.org_rename", "UPDATE organizations SET name = %s WHERE id = %s",
                   (f"renamed-{org_id.hex[:8]}", org_id), conn=conn)
        row_id = insert_audit(conn, organization_id=org_id, actor_type="user", actor_id="u-1",
                              action="organization.rename", resource_type="organization", resource_id=str(org_id),
                              ip_address="192.0.2.7", details={"from": "a", "to": "b"})
        transaction_time = db.fetch_value("test.now", "SELECT now()", conn=conn)

    stored = db.fetch_one("test.audit_row", "SELECT * FROM audit_logs WHERE id = %s", (row_id,))
    assert stored["organization_id"] == org_id
    assert stored["result"] == "success"
    assert stored["occurred_at"] == transaction_time
    assert str(stored["ip_address"]) == "192.0.2.7"
    assert stored["details"] == {"from": "a", "to": "b"}


def test_insert_audit_rolls_back_with_change(db, org_id):
    with pytest.raises(RuntimeError, match="change failed"):
        with db.transaction() as conn:
            insert_audit(conn, organization_id=org_id, actor_type="system", actor_id="job",
                         action="agent.suspend", resource_type="agent")
            raise RuntimeError("change failed")

    assert _count(db, org_id) == 0


def test_insert_audit_on_plain_connection(settings, db, org_id):
    with psycopg.connect(settings.database_url) as conn:
        row_id = insert_audit(conn, organization_id=str(org_id), actor_type="api_key", actor_id="key-1",
                              action="agents.list", resource_type="agent", result="denied")

    assert isinstance(row_id, int)
    assert _count(db, org_id) == 1


def test_insert_audit_partition_survives_rolled_back_creation(db, org_id):
    when = datetime(2017, 8, 15, tzinfo=timezone.utc)
    audit_ingest._months_ready.discard((2017, 8))

    # The first call creates the partition inside a transaction that rolls back, taking it along.
    with pytest.raises(RuntimeError):
        with db.transaction() as conn:
            insert_audit(conn, organization_id=org_id, actor_type="user", actor_id="u", action="a",
                         resource_type="r", occurred_at=when)
            raise RuntimeError("roll back")
    assert not _partition_exists(db, "audit_logs_2017_08")

    with db.transaction() as conn:
        insert_audit(conn, organization_id=org_id, actor_type="user", actor_id="u", action="a",
                     resource_type="r", occurred_at=when)

    assert _partition_exists(db, "audit_logs_2017_08")
    assert _count(db, org_id) == 1


def test_insert_audit_remembers_committed_month(db, org_id):
    when = datetime(2016, 3, 3, tzinfo=timezone.utc)
    audit_ingest._months_ready.discard((2016, 3))
    with db.transaction() as conn:
        insert_audit(conn, organization_id=org_id, actor_type="user", actor_id="u", action="a",
                     resource_type="r", occurred_at=when)
    assert (2016, 3) not in audit_ingest._months_ready

    with db.transaction() as conn:
        insert_audit(conn, organization_id=org_id, actor_type="user", actor_id="u", action="a",
                     resource_type="r", occurred_at=when)

    assert (2016, 3) in audit_ingest._months_ready


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"actor_type": "robot"}, "actor_type"),
        ({"result": "maybe"}, "result"),
        ({"organization_id": "not-a-uuid"}, "organization_id"),
        ({"occurred_at": datetime(2025, 1, 1)}, "occurred_at"),
    ],
)
def test_insert_audit_rejects_bad_value(db, org_id, changes, field):
    arguments = {"organization_id": org_id, "actor_type": "user", "actor_id": "u", "action": "a",
                 "resource_type": "r", **changes}

    with pytest.raises(ValidationError) as caught:
        with db.transaction() as conn:
            insert_audit(conn, **arguments)

    assert caught.value.field == field
    assert _count(db, org_id) == 0


@pytest.mark.parametrize("details", [{"score": float("nan")}, {"nested": [1, {"limit": float("inf")}]}])
def test_non_finite_details_rejected(details):
    with pytest.raises(ValidationError) as failure:
        audit_ingest.normalize_audit_row({**_row(uuid.uuid4()), "details": details})
    assert failure.value.field == "details"
    assert "NaN or Infinity" in str(failure.value)


def test_null_details_value_kept():
    row = audit_ingest.normalize_audit_row({**_row(uuid.uuid4()), "details": {"reason": None, "score": 0.5}})
    assert json.loads(row[-1]) == {"reason": None, "score": 0.5}


@pytest.mark.parametrize("field", ["actor_id", "action", "resource_type", "resource_id", "user_agent", "request_id"])
def test_nul_in_any_text_column_is_rejected(field):
    with pytest.raises(ValidationError) as failure:
        audit_ingest.normalize_audit_row(_row(uuid.uuid4(), **{field: "a\x00b"}))
    assert failure.value.field == field
    assert "NUL" in failure.value.message


def test_plain_and_object_values_normalize_alike():
    # Plain values take the fast path; an ipaddress object and a UUID string take the per-field one.
    org = uuid.uuid4()
    plain = _row(org, ip_address="10.1.2.3", user_agent="cli/1", details={"k": [1, "x"]})
    objects = {**plain, "organization_id": str(org), "ip_address": ipaddress.ip_address("10.1.2.3")}

    assert audit_ingest.normalize_audit_row(plain) == audit_ingest.normalize_audit_row(objects)
    assert audit_ingest.normalize_audit_row(tuple(plain.get(column) for column in AUDIT_COLUMNS)) == (
        audit_ingest.normalize_audit_row(objects)
    )
