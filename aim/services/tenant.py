"""Reading one row of a tenant table by id, scoped to its organization."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg

from aim.db.pool import Database
from aim.errors import NotFound
from aim.services import audit
from aim.services.actor import Actor


def fetch_owned_row(
    db: Database, query_name: str, table: str, columns: str, organization_id: uuid.UUID, row_id: uuid.UUID,
    kind: str, *, conn: psycopg.Connection | None = None, lock: bool = False,
) -> dict[str, Any]:
    """Return the row `row_id` of `table` that belongs to `organization_id`, or raise NotFound naming `kind`.

    Another organization's row is NotFound too, so an id never reveals that it exists elsewhere.
    With `lock`, the row is held FOR UPDATE until `conn`'s transaction ends. `table` and `columns`
    are constants of the calling service, never request input.
    """
    query = f"SELECT {columns} FROM {table} WHERE organization_id = %s AND id = %s" + (" FOR UPDATE" if lock else "")
    row = db.fetch_one(query_name, query, (organization_id, row_id), conn=conn)
    if row is None:
        raise NotFound(kind, row_id)
    return row


def update_owned_row(
    db: Database, query_prefix: str, table: str, columns: str, organization_id: uuid.UUID, row_id: uuid.UUID,
    kind: str, changes: dict[str, Any], *, actor: Actor, action: str, resource_type: str,
) -> dict[str, Any]:
    """Set the validated `changes` (column to value) on an owned row, audit the change, and return the row.

    The row is locked first, so a missing or foreign row raises NotFound before anything is written.
    The audit row names the changed fields, not their values. A unique violation propagates as
    psycopg.errors.UniqueViolation for the caller to turn into a Conflict with its own wording.
    """
    assignments = ", ".join(f"{column} = %s" for column in changes)
    with db.transaction() as conn:
        fetch_owned_row(db, f"{query_prefix}.lock", table, columns, organization_id, row_id, kind, conn=conn, lock=True)
        row = db.fetch_one(
            f"{query_prefix}.update",
            f"UPDATE {table} SET {assignments}, updated_at = now() WHERE id = %s RETURNING {columns}",
            (*changes.values(), row_id),
            conn=conn,
        )
        audit.record(conn, organization_id, actor, action, resource_type, str(row_id),
                     details={"fields": sorted(changes)})
    assert row is not None
    return row
