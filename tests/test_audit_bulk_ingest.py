"""Bulk path of the audit ingest against real PostgreSQL: a month loaded into an empty partition.

Each test uses a migrated database of its own, because the bulk path replaces partitions.
"""

from __future__ import annotations

import threading
import uuid
from datetime import datetime, timedelta, timezone

import psycopg
import pytest

from aim.db import audit_ingest, staging
from aim.db.audit_ingest import BULK_MIN_ROWS, ingest_audit_rows, insert_audit
from aim.errors import ValidationError

pytestmark = pytest.mark.integration

MONTH_START = datetime(2016, 3, 1, tzinfo=timezone.utc)
PARTITION = "audit_logs_2016_03"
ROWS = BULK_MIN_ROWS + 5_000


def _row(org, index, **changes):
    row = {
        "organization_id": org,
        # Spread over the month in time order, one row every 30 seconds.
        "occurred_at": MONTH_START + timedelta(seconds=30 * index),
        "actor_type": "agent",
        "actor_id": f"agent-{index % 50}",
        "action": "agent.verify",
        "resource_type": "agent",
        "resource_id": f"agent-{index % 300}",
        "result": "success",
        "request_id": f"req-{index}",
    }
    row.update(changes)
    return row


@pytest.fixture
def db(scratch_db):
    """A database of its own whose partition for MONTH_START exists and is empty."""
    scratch_db.fetch_value(
        "test.ensure_month", "SELECT aim_ensure_audit_partitions(%s, %s)", (MONTH_START, MONTH_START)
    )
    return scratch_db


def _rows(org, count):
    return [_row(org, index) for index in range(count)]


def _org(db):
    return db.fetch_value(
        "test.org", "INSERT INTO organizations (name) VALUES (%s) RETURNING id", (f"org-{uuid.uuid4().hex[:10]}",)
    )


def _partition_oid(db):
    return db.fetch_value("test.partition_oid", "SELECT %s::regclass::oid", (PARTITION,))


def _month_count(db):
    return db.fetch_value(
        "test.month_count",
        "SELECT count(*) FROM audit_logs WHERE occurred_at >= %s AND occurred_at < %s",
        (MONTH_START, datetime(2016, 4, 1, tzinfo=timezone.utc)),
    )


def _staging_tables(db):
    return db.fetch_value(
        "test.staging", "SELECT count(*) FROM pg_class WHERE relkind = 'r' AND relname LIKE 'audit_logs_%%_load_%%'"
    )


def _insert_one(db, org, index):
    with db.transaction() as conn:
        insert_audit(
            conn, organization_id=org, actor_type="user", actor_id="concurrent", action="agent.update",
            resource_type="agent", resource_id=f"concurrent-{index}",
            occurred_at=MONTH_START + timedelta(days=20, seconds=index),
        )


def test_bulk_load_writes_every_row_once(db):
    org = _org(db)
    before = _partition_oid(db)

    written = ingest_audit_rows(db, _rows(org, ROWS))

    assert written == ROWS
    assert _partition_oid(db) != before, "the empty partition was not replaced by the loaded table"
    stored = db.fetch_all(
        "test.request_ids", f"SELECT id, request_id FROM {PARTITION} WHERE organization_id = %s", (org,)
    )
    assert len(stored) == ROWS
    assert sorted(int(row["request_id"][4:]) for row in stored) == list(range(ROWS))
    assert len({row["id"] for row in stored}) == ROWS
    assert _staging_tables(db) == 0


def test_bulk_loaded_month_is_frozen(db):
    ingest_audit_rows(db, _rows(_org(db), ROWS))

    pages = db.fetch_one(
        "test.visibility", "SELECT relpages, relallvisible FROM pg_class WHERE oid = %s::regclass", (PARTITION,)
    )
    # Without FREEZE no page is all-visible until a VACUUM. With it, PostgreSQL marks most of them
    # (259 of 330 pages here on PostgreSQL 15).
    assert pages["relpages"] > 0
    assert pages["relallvisible"] > pages["relpages"] // 2


def test_bulk_load_into_missing_partition(scratch_db):
    db = scratch_db
    org = _org(db)
    assert db.fetch_value("test.missing", "SELECT to_regclass(%s) IS NULL", (PARTITION,))

    written = ingest_audit_rows(db, _rows(org, ROWS))

    assert written == ROWS
    assert _month_count(db) == ROWS
    assert _staging_tables(db) == 0


def test_bulk_load_attaches_indexes_to_parent(db):
    org = _org(db)
    parent_indexes = db.fetch_all(
        "test.parent_indexes",
        "SELECT indexrelid::regclass::text AS name FROM pg_index WHERE indrelid = 'audit_logs'::regclass",
    )
    names_before = db.fetch_all(
        "test.index_names", "SELECT indexrelid::regclass::text AS name FROM pg_index WHERE indrelid = %s::regclass",
        (PARTITION,),
    )

    ingest_audit_rows(db, _rows(org, ROWS))

    attached = db.fetch_all(
        "test.attached",
        """SELECT child.indexrelid::regclass::text AS name, link.inhparent::regclass::text AS parent,
                  child.indisvalid AS valid
           FROM pg_index child JOIN pg_inherits link ON link.inhrelid = child.indexrelid
           WHERE child.indrelid = %s::regclass""",
        (PARTITION,),
    )
    all_indexes = db.fetch_value(
        "test.index_count", "SELECT count(*) FROM pg_index WHERE indrelid = %s::regclass", (PARTITION,)
    )
    assert len(parent_indexes) == 4
    assert sorted(row["parent"] for row in attached) == sorted(row["name"] for row in parent_indexes)
    assert all(row["valid"] for row in attached)
    assert all_indexes == len(parent_indexes)
    assert sorted(row["name"] for row in attached) == sorted(row["name"] for row in names_before)
    constraints = db.fetch_value(
        "test.bounds_check",
        "SELECT count(*) FROM pg_constraint WHERE conrelid = %s::regclass AND conname LIKE '%%_bounds'",
        (PARTITION,),
    )
    assert constraints == 0


def test_bulk_loaded_month_is_append_only(db):
    org = _org(db)
    ingest_audit_rows(db, _rows(org, ROWS))

    for statement in (
        "UPDATE audit_logs SET action = 'x' WHERE organization_id = %s",
        "DELETE FROM audit_logs WHERE organization_id = %s",
        f"UPDATE {PARTITION} SET action = 'x' WHERE organization_id = %s",
        f"DELETE FROM {PARTITION} WHERE organization_id = %s",
    ):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            db.execute("test.change", statement, (org,))
    assert _month_count(db) == ROWS


def test_bulk_load_bad_row_writes_nothing(db):
    org = _org(db)
    before = _partition_oid(db)
    rows = _rows(org, ROWS)
    rows[ROWS - 10] = _row(org, ROWS - 10, result="maybe")

    with pytest.raises(ValidationError) as caught:
        ingest_audit_rows(db, rows)

    assert caught.value.field == f"rows[{ROWS - 10}].result"
    assert _month_count(db) == 0
    assert _partition_oid(db) == before
    assert _staging_tables(db) == 0


def test_bulk_load_server_rejected_row(db):
    org = _org(db)
    rows = _rows(org, ROWS)
    # jsonb cannot store \u0000, which only PostgreSQL detects, here in a COPY into the staging table.
    bad = BULK_MIN_ROWS + 1_234
    rows[bad]["details"] = {"note": "nul \x00 inside"}

    with pytest.raises(ValidationError) as caught:
        ingest_audit_rows(db, rows)

    assert caught.value.field == f"rows[{bad}]"
    assert _month_count(db) == 0
    assert _staging_tables(db) == 0


@pytest.mark.parametrize(
    ("existing_rows", "new_rows", "bulk"),
    [(1, ROWS, True), (0, BULK_MIN_ROWS - 1, True), (0, ROWS, False)],
    ids=["month-not-empty", "too-few-rows", "bulk-off"],
)
def test_plain_copy_keeps_partition(db, existing_rows, new_rows, bulk):
    org = _org(db)
    for index in range(existing_rows):
        _insert_one(db, org, index)
    before = _partition_oid(db)

    written = ingest_audit_rows(db, _rows(org, new_rows), bulk=bulk)

    assert written == new_rows
    assert _partition_oid(db) == before
    assert _month_count(db) == existing_rows + new_rows
    assert _staging_tables(db) == 0


def test_month_written_during_load_falls_back(db):
    org = _org(db)
    before = _partition_oid(db)

    def rows():
        for index in range(ROWS):
            if index == BULK_MIN_ROWS + 100:
                # The staging table exists by now. A committed row makes the month non-empty.
                _insert_one(db, org, 0)
            yield _row(org, index)

    written = ingest_audit_rows(db, rows())

    assert written == ROWS
    assert _partition_oid(db) == before
    assert _month_count(db) == ROWS + 1
    assert _staging_tables(db) == 0


def test_uncommitted_writer_forces_fallback(db):
    org = _org(db)
    before = _partition_oid(db)

    with db.pool.connection() as writer:
        with writer.transaction():
            insert_audit(
                writer, organization_id=org, actor_type="user", actor_id="open", action="agent.update",
                resource_type="agent", occurred_at=MONTH_START + timedelta(days=3),
            )
            # The swap waits SWAP_LOCK_TIMEOUT for this transaction's lock, then inserts instead.
            written = ingest_audit_rows(db, _rows(org, ROWS))

    assert written == ROWS
    assert _partition_oid(db) == before
    assert _month_count(db) == ROWS + 1


def test_concurrent_inserts_during_bulk_kept(db):
    org = _org(db)
    rows_sent = threading.Event()
    load_done = threading.Event()
    inserted: list[int] = []
    errors: list[BaseException] = []

    def writer():
        rows_sent.wait(timeout=60)
        index = 0
        after_load = 0
        # Keep inserting while the index builds and the swap run, then three more times.
        while after_load < 3:
            if load_done.is_set():
                after_load += 1
            try:
                _insert_one(db, org, index)
            except BaseException as exc:  # noqa: BLE001 - any error here fails the test below
                errors.append(exc)
                return
            inserted.append(index)
            index += 1

    def rows():
        yield from _rows(org, ROWS)
        rows_sent.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        written = ingest_audit_rows(db, rows())
    finally:
        load_done.set()
        rows_sent.set()
        thread.join(timeout=60)

    assert errors == []
    assert written == ROWS
    assert len(inserted) >= 1
    assert _month_count(db) == ROWS + len(inserted)
    concurrent = db.fetch_value(
        "test.concurrent_count",
        "SELECT count(*) FROM audit_logs WHERE organization_id = %s AND actor_id = 'concurrent'",
        (org,),
    )
    assert concurrent == len(inserted)


def test_bulk_load_restores_statement_timeout(db):
    org = _org(db)
    with db.transaction() as conn:
        timeout_before = conn.execute("SHOW statement_timeout").fetchone()
        ingest_audit_rows(db, _rows(org, ROWS), conn=conn)
        timeout_after = conn.execute("SHOW statement_timeout").fetchone()

    assert timeout_after == timeout_before
    assert audit_ingest.BULK_STATEMENT_TIMEOUT != next(iter(timeout_before.values()))


# --- helper sessions (aim.db.staging) -----------------------------------------------------------

NEXT_MONTH = datetime(2016, 4, 1, tzinfo=timezone.utc)


def _helper_log_count(caplog):
    return sum("for the index builds of" in record.getMessage() for record in caplog.records)


def test_revisited_month_loads_through_helpers(db, caplog):
    db.fetch_value("test.ensure_next", "SELECT aim_ensure_audit_partitions(%s, %s)", (NEXT_MONTH, NEXT_MONTH))
    org = _org(db)
    before = _partition_oid(db)
    first = _rows(org, BULK_MIN_ROWS)
    second = [_row(org, index, occurred_at=NEXT_MONTH + timedelta(seconds=index)) for index in range(BULK_MIN_ROWS)]
    # Rows of the first month again, after its table was committed and its index builds queued.
    again = [_row(org, index) for index in range(BULK_MIN_ROWS, BULK_MIN_ROWS + 3_000)]
    caplog.set_level("INFO", logger="aim.db.staging")

    written = ingest_audit_rows(db, first + second + again)

    assert written == 2 * BULK_MIN_ROWS + 3_000
    assert _month_count(db) == BULK_MIN_ROWS + 3_000
    assert _partition_oid(db) != before
    assert _staging_tables(db) == 0
    assert _helper_log_count(caplog) == 1
    ids = db.fetch_value("test.distinct_ids", "SELECT count(DISTINCT id) FROM audit_logs")
    assert ids == written
    found = db.fetch_value(
        "test.index_scan", "SELECT count(*) FROM audit_logs WHERE organization_id = %s AND request_id = %s",
        (org, f"req-{BULK_MIN_ROWS + 2_999}"),
    )
    assert found == 1


def test_repeatable_read_caller_skips_helpers(db, caplog):
    org = _org(db)
    caplog.set_level("INFO", logger="aim.db.staging")

    with db.transaction() as conn:
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        written = ingest_audit_rows(db, _rows(org, ROWS), conn=conn)
        inside = conn.execute("SELECT count(*) AS n FROM audit_logs").fetchone()["n"]

    assert written == ROWS
    assert inside == ROWS
    assert _month_count(db) == ROWS
    assert _helper_log_count(caplog) == 0


def test_rolled_back_caller_leftovers_swept(db):
    org = _org(db)

    with pytest.raises(RuntimeError):
        with db.transaction() as conn:
            ingest_audit_rows(db, _rows(org, ROWS), conn=conn)
            raise RuntimeError("the caller fails after the ingest")
    assert _month_count(db) == 0
    assert _staging_tables(db) == 1

    written = ingest_audit_rows(db, _rows(org, ROWS))

    assert written == ROWS
    assert _month_count(db) == ROWS
    assert _staging_tables(db) == 0


def test_sweep_keeps_running_ingest_tables(db):
    with db.transaction() as owner:
        xid = owner.execute("SELECT pg_current_xact_id()::text AS xid").fetchone()["xid"]
        name = f"{PARTITION}_load_{xid}_0123abcd"
        with psycopg.connect(db.url, autocommit=True) as other:
            other.execute(f'CREATE TABLE "{name}" (id bigint)')
            with db.pool.connection() as conn:
                assert staging.sweep_orphans(db, conn) == []
            assert _staging_tables(db) == 1

    with db.pool.connection() as conn:
        assert staging.sweep_orphans(db, conn) == [name]
    assert _staging_tables(db) == 0
