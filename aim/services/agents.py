"""Agents: registration, lifecycle, key rotation and capabilities. Every change is audited.

Each write runs in one transaction together with its audit row, then drops the agent's cached
metadata on every process. A generated private key is returned once to the caller and never stored.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Iterable

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from aim import identity, trust
from aim.db.pool import Database, timed_query
from aim.errors import Conflict, NotFound, ValidationError
from aim.services import audit, cache_hooks
from aim.services.actor import Actor
from aim.services.capabilities import validate_capabilities, validate_capability
from aim.services.names import validate_display_name
from aim.services.tenant import fetch_owned_row, update_owned_row

logger = logging.getLogger(__name__)

STATUSES = ("pending", "verified", "suspended", "revoked")
MAX_NAME_LENGTH = 200
AGENT_TYPE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,49}$")
DEFAULT_KEY_GRACE = timedelta(hours=24)

AGENT_COLUMNS = """
    id, organization_id, name, agent_type, description, status, trust_score, trust_factors,
    public_key, key_id, key_created_at, key_origin, previous_public_key, previous_key_id,
    previous_key_valid_until, capabilities, metadata, last_seen_at, created_by, created_at, updated_at
"""


@dataclass(frozen=True)
class RegisteredAgent:
    """A new agent row, plus its private key in PEM when AIM generated it (shown once, never stored)."""

    agent: dict[str, Any]
    private_key_pem: str | None


@dataclass(frozen=True)
class RotatedKey:
    agent: dict[str, Any]
    private_key_pem: str | None
    previous_key_valid_until: datetime


def validate_name(value: object, field: str = "name") -> str:
    return validate_display_name(value, field, MAX_NAME_LENGTH)


def validate_agent_type(value: object, field: str = "agent_type") -> str:
    if not isinstance(value, str) or not AGENT_TYPE_PATTERN.match(value):
        raise ValidationError(
            field, f"{value!r} is invalid; expected 1 to 50 lowercase letters, digits, '_' or '-', such as 'assistant'"
        )
    return value


def get_agent(db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, *, conn=None) -> dict[str, Any]:
    """Return one agent of the organization, or raise NotFound (also for another organization's agent)."""
    return fetch_owned_row(db, "agents.get", "agents", AGENT_COLUMNS, organization_id, agent_id, "agent", conn=conn)


def _lock_agent(db: Database, conn: psycopg.Connection, organization_id: uuid.UUID, agent_id: uuid.UUID) -> dict:
    return fetch_owned_row(db, "agents.lock", "agents", AGENT_COLUMNS, organization_id, agent_id, "agent", conn=conn,
                           lock=True)


def _new_key(public_key: object | None) -> tuple[bytes, str | None, str]:
    """Return (public key bytes, private PEM or None, origin) for a supplied or generated key."""
    if public_key is None:
        pair = identity.generate_keypair()
        return pair.public_key, pair.private_key_pem(), "generated"
    return identity.parse_public_key(public_key, "public_key"), None, "supplied"


def register_agent(
    db: Database,
    organization_id: uuid.UUID,
    actor: Actor,
    *,
    name: str,
    agent_type: str = "generic",
    description: str = "",
    public_key: str | bytes | None = None,
    capabilities: Iterable[str] = (),
    metadata: dict[str, Any] | None = None,
    status: str = "verified",
    created_at: datetime | None = None,
) -> RegisteredAgent:
    """Register an agent with a supplied public key, or generate a key pair when none is given.

    `status` is `verified` (ready to act) or `pending` (waits for an admin). `created_at` lets the
    simulator's backfill place agents in the past.
    """
    name = validate_name(name)
    agent_type = validate_agent_type(agent_type)
    caps = validate_capabilities(capabilities)
    if status not in ("pending", "verified"):
        raise ValidationError("status", f"{status!r} is invalid for a new agent; expected 'pending' or 'verified'")
    key, private_pem, origin = _new_key(public_key)
    key_id = identity.compute_key_id(key)
    created_at = created_at or datetime.now(timezone.utc)

    # The id and the first trust score are made here, so no statement after the agent's INSERT needs
    # its result. The pipelined transaction then sends BEGIN and the INSERTs of the agent, its key,
    # its grants, its audit row and its trust history row in one round trip. The first fetch, at the
    # latest the audit row's id, raises a duplicate name.
    agent_id = uuid.uuid4()
    score = trust.new_agent_score()
    try:
        with db.transaction(pipelined=True) as conn, conn.cursor(row_factory=dict_row) as inserted:
            with timed_query("agents.insert"):
                inserted.execute(
                    f"""
                    INSERT INTO agents (id, organization_id, name, agent_type, description, status, trust_score,
                                        trust_factors, public_key, key_id, key_created_at, key_origin, capabilities,
                                        metadata, created_by, created_at, updated_at, last_seen_at)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL)
                    RETURNING {AGENT_COLUMNS}
                    """,
                    (
                        agent_id, organization_id, name, agent_type, description, status, Decimal(str(score.score)),
                        Jsonb(score.factors_json()), key, key_id, created_at, origin, caps, Jsonb(metadata or {}),
                        actor.label, created_at, created_at,
                    ),
                )
            db.execute(
                "agents.insert_key",
                """INSERT INTO agent_keys (organization_id, agent_id, key_id, public_key, key_origin, created_at)
                   VALUES (%s, %s, %s, %s, %s, %s)""",
                (organization_id, agent_id, key_id, key, origin, created_at),
                conn=conn,
            )
            for capability in caps:
                _insert_grant(db, conn, organization_id, agent_id, capability, actor, created_at)
            audit.record(
                conn, organization_id, actor, "agent.register", "agent", str(agent_id),
                details={"name": name, "agent_type": agent_type, "key_id": key_id, "key_origin": origin,
                         "capabilities": caps},
                occurred_at=created_at,
            )
            trust.record_new_agent_score(db, conn, organization_id, agent_id, reason="agent registered",
                                         actor=actor.label)
            agent = inserted.fetchone()
            assert agent is not None
            agent["trust_score"] = score.score
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"an agent named {name!r} already exists in this organization") from None
    cache_hooks.agent_registered()
    logger.info("agent %s registered (%s key %s) by %s", agent["id"], origin, key_id, actor.label)
    return RegisteredAgent(agent, private_pem)


def _insert_grant(db, conn, organization_id, agent_id, capability, actor: Actor, at: datetime | None = None) -> bool:
    inserted = db.execute(
        "agents.grant_capability",
        """INSERT INTO capabilities (organization_id, agent_id, capability, granted_by, granted_at)
           VALUES (%s, %s, %s, %s, coalesce(%s, now()))
           ON CONFLICT (agent_id, capability) WHERE revoked_at IS NULL DO NOTHING""",
        (organization_id, agent_id, capability, actor.label, at),
        conn=conn,
    )
    return inserted == 1


def _sync_capabilities(db: Database, conn, agent_id: uuid.UUID) -> list[str]:
    # agents.capabilities mirrors the active grants so verification reads one row.
    row = db.fetch_one(
        "agents.sync_capabilities",
        """UPDATE agents SET capabilities = ARRAY(
               SELECT capability FROM capabilities WHERE agent_id = %s AND revoked_at IS NULL ORDER BY capability),
               updated_at = now()
           WHERE id = %s RETURNING capabilities""",
        (agent_id, agent_id),
        conn=conn,
    )
    return list(row["capabilities"]) if row else []


UPDATABLE_FIELDS = ("name", "description", "agent_type", "metadata")


def update_agent(
    db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, actor: Actor, changes: dict[str, Any]
) -> dict[str, Any]:
    """Change name, description, agent_type or metadata. Unknown fields raise ValidationError."""
    unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
    if unknown:
        raise ValidationError(unknown[0], f"cannot be changed here; expected only {', '.join(UPDATABLE_FIELDS)}")
    clean: dict[str, Any] = {}
    if "name" in changes:
        clean["name"] = validate_name(changes["name"])
    if "agent_type" in changes:
        clean["agent_type"] = validate_agent_type(changes["agent_type"])
    if "description" in changes:
        if not isinstance(changes["description"], str) or len(changes["description"]) > 2000:
            raise ValidationError("description", "expected a string of at most 2000 characters")
        clean["description"] = changes["description"]
    if "metadata" in changes:
        if not isinstance(changes["metadata"], dict):
            raise ValidationError("metadata", "expected a JSON object")
        clean["metadata"] = Jsonb(changes["metadata"])
    if not clean:
        return get_agent(db, organization_id, agent_id)

    try:
        agent = update_owned_row(db, "agents", "agents", AGENT_COLUMNS, organization_id, agent_id, "agent", clean,
                                 actor=actor, action="agent.update", resource_type="agent")
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"an agent named {clean.get('name')!r} already exists in this organization") from None
    cache_hooks.agent_changed(agent_id)
    return agent


# Allowed lifecycle moves: target status -> statuses it may come from.
TRANSITIONS = {
    "verified": ("pending", "suspended"),
    "suspended": ("pending", "verified"),
    "revoked": ("pending", "verified", "suspended"),
}
ACTION_NAMES = {"verified": "agent.reactivate", "suspended": "agent.suspend", "revoked": "agent.revoke"}


def set_status(
    db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, actor: Actor, target: str,
    reason: str | None = None,
) -> dict[str, Any]:
    """Move an agent to `verified` (approve or reactivate), `suspended` or `revoked`.

    Revocation is final. Raise Conflict for a move the lifecycle does not allow.
    """
    if target not in TRANSITIONS:
        raise ValidationError("status", f"{target!r} is invalid; expected one of {', '.join(TRANSITIONS)}")
    with db.transaction() as conn:
        current = _lock_agent(db, conn, organization_id, agent_id)
        if current["status"] == target:
            return current
        if current["status"] not in TRANSITIONS[target]:
            raise Conflict(
                f"agent {agent_id} is {current['status']}; it can become {target} only from "
                f"{' or '.join(TRANSITIONS[target])}"
            )
        agent = db.fetch_one(
            "agents.set_status",
            f"UPDATE agents SET status = %s, updated_at = now() WHERE id = %s RETURNING {AGENT_COLUMNS}",
            (target, agent_id),
            conn=conn,
        )
        audit.record(
            conn, organization_id, actor, ACTION_NAMES[target], "agent", str(agent_id),
            details={"from": current["status"], "to": target, "reason": reason or ""},
        )
    cache_hooks.agent_changed(agent_id)
    logger.info("agent %s %s -> %s by %s", agent_id, current["status"], target, actor.label)
    assert agent is not None
    return agent


def suspend(db, organization_id, agent_id, actor: Actor, reason: str | None = None) -> dict[str, Any]:
    return set_status(db, organization_id, agent_id, actor, "suspended", reason)


def reactivate(db, organization_id, agent_id, actor: Actor, reason: str | None = None) -> dict[str, Any]:
    return set_status(db, organization_id, agent_id, actor, "verified", reason)


def revoke(db, organization_id, agent_id, actor: Actor, reason: str | None = None) -> dict[str, Any]:
    return set_status(db, organization_id, agent_id, actor, "revoked", reason)


def rotate_key(
    db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, actor: Actor, *,
    public_key: str | bytes | None = None, grace: timedelta = DEFAULT_KEY_GRACE,
) -> RotatedKey:
    """Replace the agent's key. The previous key keeps verifying until `grace` has passed."""
    if grace < timedelta(0) or grace > timedelta(days=30):
        raise ValidationError("grace", f"{grace} is out of range; expected 0 to 30 days")
    key, private_pem, origin = _new_key(public_key)
    key_id = identity.compute_key_id(key)
    now = datetime.now(timezone.utc)
    valid_until = now + grace
    with db.transaction() as conn:
        current = _lock_agent(db, conn, organization_id, agent_id)
        if current["status"] == "revoked":
            raise Conflict(f"agent {agent_id} is revoked; a revoked agent's key cannot be rotated")
        if current["key_id"] == key_id:
            raise Conflict(f"the new key {key_id} is the agent's current key; expected a different key")
        agent = db.fetch_one(
            "agents.rotate_key",
            f"""UPDATE agents SET previous_public_key = public_key, previous_key_id = key_id,
                       previous_key_valid_until = %s, public_key = %s, key_id = %s, key_created_at = %s,
                       key_origin = %s, updated_at = %s
                WHERE id = %s RETURNING {AGENT_COLUMNS}""",
            (valid_until, key, key_id, now, origin, now, agent_id),
            conn=conn,
        )
        db.execute(
            "agents.retire_key",
            """UPDATE agent_keys SET retired_at = %s, retire_reason = 'rotated'
               WHERE agent_id = %s AND key_id = %s AND retired_at IS NULL""",
            (valid_until, agent_id, current["key_id"]),
            conn=conn,
        )
        db.execute(
            "agents.insert_key",
            """INSERT INTO agent_keys (organization_id, agent_id, key_id, public_key, key_origin, created_at)
               VALUES (%s, %s, %s, %s, %s, %s)
               ON CONFLICT (agent_id, key_id) DO UPDATE SET retired_at = NULL, retire_reason = NULL""",
            (organization_id, agent_id, key_id, key, origin, now),
            conn=conn,
        )
        audit.record(
            conn, organization_id, actor, "agent.rotate_key", "agent", str(agent_id),
            details={"previous_key_id": current["key_id"], "key_id": key_id, "key_origin": origin,
                     "previous_key_valid_until": valid_until.isoformat()},
        )
    cache_hooks.agent_changed(agent_id)
    logger.info("agent %s key rotated %s -> %s by %s", agent_id, current["key_id"], key_id, actor.label)
    assert agent is not None
    return RotatedKey(agent, private_pem, valid_until)


def list_keys(db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID) -> list[dict[str, Any]]:
    """Key history of one agent, newest first (bounded: an agent rotates rarely)."""
    get_agent(db, organization_id, agent_id)
    return db.fetch_all(
        "agents.list_keys",
        """SELECT key_id, key_origin, created_at, retired_at, retire_reason FROM agent_keys
           WHERE agent_id = %s ORDER BY created_at DESC, id DESC LIMIT 100""",
        (agent_id,),
        stale_ok=True,
    )


def grant_capability(
    db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, capability: str, actor: Actor
) -> list[str]:
    """Grant `capability` and return the active set. Granting a capability the agent already has changes nothing."""
    capability = validate_capability(capability)
    with db.transaction() as conn:
        current = _lock_agent(db, conn, organization_id, agent_id)
        if current["status"] == "revoked":
            raise Conflict(f"agent {agent_id} is revoked; capabilities cannot be granted to it")
        added = _insert_grant(db, conn, organization_id, agent_id, capability, actor)
        active = _sync_capabilities(db, conn, agent_id)
        if added:
            audit.record(conn, organization_id, actor, "agent.grant_capability", "agent", str(agent_id),
                         details={"capability": capability})
    cache_hooks.agent_changed(agent_id)
    return active


def revoke_capability(
    db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, capability: str, actor: Actor
) -> list[str]:
    """Withdraw a granted capability. Raise NotFound when the agent does not hold it."""
    capability = validate_capability(capability)
    with db.transaction() as conn:
        _lock_agent(db, conn, organization_id, agent_id)
        removed = db.execute(
            "agents.revoke_capability",
            """UPDATE capabilities SET revoked_at = now(), revoked_by = %s
               WHERE agent_id = %s AND capability = %s AND revoked_at IS NULL""",
            (actor.label, agent_id, capability),
            conn=conn,
        )
        if removed == 0:
            raise NotFound("capability grant", f"{capability} on agent {agent_id}")
        active = _sync_capabilities(db, conn, agent_id)
        audit.record(conn, organization_id, actor, "agent.revoke_capability", "agent", str(agent_id),
                     details={"capability": capability})
    cache_hooks.agent_changed(agent_id)
    return active


def list_capabilities(db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID) -> list[dict[str, Any]]:
    get_agent(db, organization_id, agent_id)
    return db.fetch_all(
        "agents.list_capabilities",
        """SELECT capability, granted_by, granted_at FROM capabilities
           WHERE agent_id = %s AND revoked_at IS NULL ORDER BY capability LIMIT 1000""",
        (agent_id,),
    )


def request_capability(
    db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID, capability: str, actor: Actor,
    justification: str = "",
) -> dict[str, Any]:
    """File a request that an admin or analyst approves or rejects. One pending request per capability."""
    capability = validate_capability(capability)
    if len(justification) > 2000:
        raise ValidationError("justification", f"has {len(justification)} characters; expected at most 2000")
    try:
        with db.transaction() as conn:
            agent = _lock_agent(db, conn, organization_id, agent_id)
            if agent["status"] == "revoked":
                raise Conflict(f"agent {agent_id} is revoked; it cannot request capabilities")
            row = db.fetch_one(
                "capability_requests.insert",
                """INSERT INTO capability_requests (organization_id, agent_id, capability, justification, requested_by)
                   VALUES (%s, %s, %s, %s, %s) RETURNING *""",
                (organization_id, agent_id, capability, justification, actor.label),
                conn=conn,
            )
            audit.record(conn, organization_id, actor, "capability_request.create", "capability_request",
                         str(row["id"]), details={"agent_id": str(agent_id), "capability": capability})
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"agent {agent_id} already has a pending request for {capability!r}") from None
    return row


def decide_capability_request(
    db: Database, organization_id: uuid.UUID, request_id: uuid.UUID, actor: Actor, *, approve: bool,
    note: str = "",
) -> dict[str, Any]:
    """Approve (and grant) or reject a pending request. Raise Conflict when it was already decided."""
    status = "approved" if approve else "rejected"
    with db.transaction() as conn:
        request = db.fetch_one(
            "capability_requests.lock",
            "SELECT * FROM capability_requests WHERE organization_id = %s AND id = %s FOR UPDATE",
            (organization_id, request_id),
            conn=conn,
        )
        if request is None:
            raise NotFound("capability request", request_id)
        if request["status"] != "pending":
            raise Conflict(f"capability request {request_id} is already {request['status']}")
        row = db.fetch_one(
            "capability_requests.decide",
            """UPDATE capability_requests SET status = %s, decided_by = %s, decided_at = now(), decision_note = %s
               WHERE id = %s RETURNING *""",
            (status, actor.label, note, request_id),
            conn=conn,
        )
        if approve:
            _lock_agent(db, conn, organization_id, request["agent_id"])
            _insert_grant(db, conn, organization_id, request["agent_id"], request["capability"], actor)
            _sync_capabilities(db, conn, request["agent_id"])
        audit.record(conn, organization_id, actor, f"capability_request.{'approve' if approve else 'reject'}",
                     "capability_request", str(request_id),
                     details={"agent_id": str(request["agent_id"]), "capability": request["capability"]})
    cache_hooks.agent_changed(request["agent_id"])
    return row


def list_capability_requests(
    db: Database, organization_id: uuid.UUID, *, agent_id: uuid.UUID | None = None, status: str | None = "pending",
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Newest capability requests, optionally for one agent and one status (at most `limit` rows)."""
    if status is not None and status not in ("pending", "approved", "rejected"):
        raise ValidationError("status", f"{status!r} is invalid; expected pending, approved or rejected")
    return db.fetch_all(
        "capability_requests.list",
        """SELECT r.*, a.name AS agent_name FROM capability_requests r JOIN agents a ON a.id = r.agent_id
           WHERE r.organization_id = %s AND (%s::uuid IS NULL OR r.agent_id = %s)
             AND (%s::text IS NULL OR r.status = %s)
           ORDER BY r.requested_at DESC, r.id DESC LIMIT %s""",
        (organization_id, agent_id, agent_id, status, status, min(max(limit, 1), 1000)),
        stale_ok=True,
    )
