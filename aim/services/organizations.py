"""Organizations (tenants) and their settings."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from psycopg.types.json import Jsonb

from aim.db.pool import Database
from aim.errors import NotFound, ValidationError
from aim.services import audit
from aim.services.actor import Actor
from aim.services.risk_classes import validate_overrides

logger = logging.getLogger(__name__)

MAX_NAME_LENGTH = 200


def validate_org_name(value: object) -> str:
    if not isinstance(value, str) or not 1 <= len(value.strip()) <= MAX_NAME_LENGTH:
        raise ValidationError("organization", f"expected a name of 1 to {MAX_NAME_LENGTH} characters")
    return value.strip()


def get_or_create(db: Database, name: str) -> dict[str, Any]:
    """Return the organization called `name`, creating it when missing (safe under concurrency)."""
    name = validate_org_name(name)
    row = db.fetch_one(
        "organizations.upsert",
        """INSERT INTO organizations (name) VALUES (%s)
           ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
           RETURNING id, name, settings, created_at, (xmax = 0) AS created""",
        (name,),
    )
    assert row is not None
    if row.pop("created"):
        logger.info("organization %s created: %s", row["id"], name)
    return row


def get_by_name(db: Database, name: str) -> dict[str, Any]:
    row = db.fetch_one(
        "organizations.by_name", "SELECT id, name, settings, created_at FROM organizations WHERE name = %s", (name,)
    )
    if row is None:
        raise NotFound("organization", name)
    return row


def get(db: Database, organization_id: uuid.UUID) -> dict[str, Any]:
    row = db.fetch_one(
        "organizations.get", "SELECT id, name, settings, created_at FROM organizations WHERE id = %s",
        (organization_id,),
    )
    if row is None:
        raise NotFound("organization", organization_id)
    return row


def set_risk_classes(db: Database, organization_id: uuid.UUID, actor: Actor, overrides: dict[str, str]) -> dict:
    """Replace the organization's action-pattern -> risk-class overrides. Audited."""
    clean = validate_overrides(overrides)
    with db.transaction() as conn:
        row = db.fetch_one(
            "organizations.set_risk_classes",
            """UPDATE organizations SET settings = jsonb_set(settings, '{risk_classes}', %s)
               WHERE id = %s RETURNING id, name, settings, created_at""",
            (Jsonb(clean), organization_id),
            conn=conn,
        )
        if row is None:
            raise NotFound("organization", organization_id)
        audit.record(conn, organization_id, actor, "organization.set_risk_classes", "organization",
                     str(organization_id), details={"risk_classes": clean})
    from aim.cache import get_cache

    # Verification caches each agent's view of the overrides.
    get_cache().invalidate_all("agent_metadata")
    return row
