"""API keys: bearer secrets for integrations and agents, scoped to one organization.

A key is `aim_` followed by 43 characters of base64url (256 random bits). The secret is returned
once at creation; only its SHA-256 and its first characters (the prefix, for display) are stored.
A key has a role like a user, and may be scoped to one agent, in which case the API lets it act only
for that agent. Lookups go through the `sessions` cache, and revoking a key drops its cache entry in
every process.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from aim.db.pool import Database
from aim.errors import Conflict, NotFound, ValidationError
from aim.services import agents, audit
from aim.services.actor import Actor
from aim.services.users import SESSIONS_CACHE, AuthenticationFailed, validate_role

logger = logging.getLogger(__name__)

KEY_PREFIX = "aim_"
SECRET_BYTES = 32
# "aim_" plus 8 characters: enough to tell keys apart in a list, far too few to guess the rest.
DISPLAY_PREFIX_LENGTH = 12
MAX_KEY_LENGTH = 200
MAX_NAME_LENGTH = 200

API_KEY_COLUMNS = (
    "id, organization_id, agent_id, name, prefix, role, created_by, created_at, last_used_at, expires_at, revoked_at"
)


@dataclass(frozen=True)
class CreatedApiKey:
    """A new key's row, and its secret, which is shown once and never stored."""

    api_key: dict[str, Any]
    secret: str

    def __repr__(self) -> str:  # keeps the secret out of logs and tracebacks
        return f"CreatedApiKey(id={self.api_key['id']}, prefix={self.api_key['prefix']!r})"


def hash_key(secret: str) -> bytes:
    """Return the SHA-256 of the key text, as stored in api_keys.key_hash."""
    return hashlib.sha256(secret.encode("utf-8")).digest()


def looks_like_api_key(token: str) -> bool:
    return token.startswith(KEY_PREFIX)


def create_api_key(
    db: Database,
    organization_id: uuid.UUID,
    actor: Actor,
    *,
    name: str,
    role: str,
    agent_id: uuid.UUID | None = None,
    expires_at: datetime | None = None,
) -> CreatedApiKey:
    """Create a key and return it with its secret. Audited.

    `agent_id` scopes the key to one agent of the organization (NotFound otherwise). `expires_at`
    must be in the future. A key cannot get a role above the creator's role.
    """
    if not isinstance(name, str) or not 1 <= len(name.strip()) <= MAX_NAME_LENGTH:
        raise ValidationError("name", f"expected a name of 1 to {MAX_NAME_LENGTH} characters")
    role = validate_role(role)
    if _role_rank(role) < _role_rank(actor.role):
        raise ValidationError("role", f"{role!r} is above your own role {actor.role!r}; expected {actor.role} or lower")
    if expires_at is not None:
        if expires_at.tzinfo is None:
            raise ValidationError("expires_at", "expected a timestamp with a UTC offset, such as 2030-01-31T12:00:00Z")
        if expires_at <= datetime.now(timezone.utc):
            raise ValidationError("expires_at", f"{expires_at.isoformat()} is in the past; expected a future time")

    secret = KEY_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
    with db.transaction() as conn:
        if agent_id is not None:
            agent = agents.get_agent(db, organization_id, agent_id, conn=conn)
            if agent["status"] == "revoked":
                raise Conflict(f"agent {agent_id} is revoked; a key cannot be scoped to it")
        row = db.fetch_one(
            "api_keys.insert",
            f"""INSERT INTO api_keys (organization_id, agent_id, name, prefix, key_hash, role, created_by, expires_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {API_KEY_COLUMNS}""",
            (organization_id, agent_id, name.strip(), secret[:DISPLAY_PREFIX_LENGTH], hash_key(secret), role,
             actor.label, expires_at),
            conn=conn,
        )
        assert row is not None
        audit.record(conn, organization_id, actor, "api_key.create", "api_key", str(row["id"]),
                     details={"name": row["name"], "role": role, "agent_id": str(agent_id) if agent_id else None,
                              "prefix": row["prefix"]})
    logger.info("API key %s (%s) created with role %s by %s", row["id"], row["prefix"], role, actor.label)
    return CreatedApiKey(row, secret)


def get_api_key(db: Database, organization_id: uuid.UUID, key_id: uuid.UUID) -> dict[str, Any]:
    row = db.fetch_one(
        "api_keys.get",
        f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE organization_id = %s AND id = %s",
        (organization_id, key_id),
    )
    if row is None:
        raise NotFound("API key", key_id)
    return row


def revoke_api_key(db: Database, organization_id: uuid.UUID, key_id: uuid.UUID, actor: Actor) -> dict[str, Any]:
    """Revoke a key at once in every process. Revoking a revoked key changes nothing."""
    with db.transaction() as conn:
        row = db.fetch_one(
            "api_keys.lock",
            f"SELECT {API_KEY_COLUMNS}, key_hash FROM api_keys WHERE organization_id = %s AND id = %s FOR UPDATE",
            (organization_id, key_id),
            conn=conn,
        )
        if row is None:
            raise NotFound("API key", key_id)
        key_hash = bytes(row.pop("key_hash"))
        if row["revoked_at"] is not None:
            return row
        row = db.fetch_one(
            "api_keys.revoke",
            f"UPDATE api_keys SET revoked_at = now() WHERE id = %s RETURNING {API_KEY_COLUMNS}",
            (key_id,),
            conn=conn,
        )
        audit.record(conn, organization_id, actor, "api_key.revoke", "api_key", str(key_id))
    _cache().invalidate(SESSIONS_CACHE, _cache_key(key_hash))
    logger.info("API key %s revoked by %s", key_id, actor.label)
    assert row is not None
    return row


class _UnknownKey(Exception):
    """No row has this hash. Raised out of the cache's compute so a miss is not cached."""


def authenticate_api_key(db: Database, secret: str) -> dict[str, Any]:
    """Return the active key row for `secret`, or raise AuthenticationFailed.

    Reasons: `invalid_api_key` (unknown or malformed), `revoked_api_key`, `expired_api_key`.
    """
    key_hash = _hash_well_formed(secret)

    def compute() -> dict[str, Any]:
        row = db.fetch_one(
            "api_keys.by_hash", f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = %s", (key_hash,)
        )
        if row is None:
            raise _UnknownKey()
        return row

    try:
        row = _cache().get_or_compute(SESSIONS_CACHE, _cache_key(key_hash), compute)
    except _UnknownKey:
        raise AuthenticationFailed("invalid_api_key", "the API key is not known; check the key or create a new one") from None
    return _check_active(row)


def authenticate_api_key_from_memory(secret: str) -> dict[str, Any] | None:
    """Return what `authenticate_api_key` returns when the key is in this process's L1 cache, else None.

    Makes no Redis or PostgreSQL call, so async code may call it on the event loop. It raises
    AuthenticationFailed for a malformed, revoked or expired key, like `authenticate_api_key`. The
    dict is shared with other callers, so it must not be changed.
    """
    row = _cache().get_local(SESSIONS_CACHE, _cache_key(_hash_well_formed(secret)), shared=True)
    return None if row is None else _check_active(row)


def _hash_well_formed(secret: str) -> bytes:
    """Return the hash of `secret`, or raise AuthenticationFailed when it is not shaped like an AIM API key."""
    if not looks_like_api_key(secret) or len(secret) > MAX_KEY_LENGTH:
        raise AuthenticationFailed("invalid_api_key", "the API key is malformed; expected a key that starts with aim_")
    return hash_key(secret)


def _check_active(row: dict[str, Any]) -> dict[str, Any]:
    if row["revoked_at"] is not None:
        raise AuthenticationFailed("revoked_api_key", f"API key {row['prefix']}... was revoked; create a new key")
    if row["expires_at"] is not None and row["expires_at"] <= datetime.now(timezone.utc):
        raise AuthenticationFailed("expired_api_key", f"API key {row['prefix']}... expired; create a new key")
    return row


def touch_last_used(db: Database, key_id: uuid.UUID) -> None:
    """Record that the key was used now. Callers throttle this, because it is a write."""
    db.execute(
        "api_keys.touch",
        "UPDATE api_keys SET last_used_at = now() WHERE id = %s AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
        (key_id,),
    )


_ROLE_ORDER = ("admin", "analyst", "manager", "viewer")


def _role_rank(role: str) -> int:
    # Lower is more powerful: admin 0 ... viewer 3.
    return _ROLE_ORDER.index(role)


def _cache_key(key_hash: bytes) -> str:
    return f"api_key:{key_hash.hex()}"


def _cache():
    from aim.cache import get_cache

    return get_cache()
