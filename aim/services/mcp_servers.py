"""MCP servers: registration, listing, signed attestations, capability drift and confidence.

A server is registered by URL, unique per organization. Agents attest the servers they use with a
signed statement of the capabilities they found. The first attestation of a server without known
capabilities defines its baseline. A later attestation that reports a different set is capability
drift: it flags the server, raises a `capability_drift` alert linked to every connected agent and
recalculates those agents' trust. Each write runs in one transaction together with its audit row,
and the MCP server list cache is invalidated after the commit. Registry imports live in
`aim.services.mcp_registry`, and its public names are also importable from here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Iterable, Mapping, NamedTuple
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
import rfc8785
from psycopg.types.json import Jsonb

from aim import identity, trust
from aim.db import keyset
from aim.db.pool import Database
from aim.errors import Conflict, NotFound, PermissionDenied, ValidationError
from aim.services import alerts, audit, cache_hooks, verification
from aim.services.actor import Actor, system
from aim.services.capabilities import validate_capability
from aim.services.names import validate_display_name
from aim.services.tenant import fetch_owned_row, update_owned_row

logger = logging.getLogger(__name__)

STATUSES = ("active", "inactive", "deprecated")
SOURCES = ("manual", "registry")
URL_SCHEMES = ("http", "https", "ws", "wss")
MAX_URL_LENGTH = 2048
MAX_NAME_LENGTH = 300
MAX_DESCRIPTION_LENGTH = 10_000
MAX_VERSION_LENGTH = 200
MAX_CAPABILITIES = 1000
URL_EXAMPLE = "https://mcp.example.com/sse"

CAPABILITY_DRIFT_ALERT = "capability_drift"
# Matches the column default of mcp_attestations.expires_at.
ATTESTATION_LIFETIME = timedelta(days=30)
CONFIDENCE_HALF_LIFE = timedelta(days=7)
CONFIDENCE_QUANTUM = Decimal("0.0001")  # numeric(5, 4)

SERVER_COLUMNS = """
    id, organization_id, name, url, description, version, source, registry_id, status, known_capabilities,
    manifest_hash, confidence, drift_detected, last_drift_at, last_attested_at, metadata, created_at, updated_at
"""

_LIST_COLUMNS = (
    "id", "name", "url", "description", "version", "source", "registry_id", "status", "known_capabilities",
    "confidence", "drift_detected", "last_drift_at", "last_attested_at", "created_at", "updated_at",
)
_LIST_FILTERS = {"status": "status", "drift_detected": "drift_detected", "source": "source"}
# Served by mcp_servers_list_by_name and mcp_servers_list_by_confidence.
LIST_BY_NAME = keyset.ListSpec(
    name="mcp_servers.list_by_name", table="mcp_servers", columns=_LIST_COLUMNS, sort="lower(name)",
    sort_type="text", descending=False, equality=_LIST_FILTERS, prefix_column="name",
)
LIST_BY_CONFIDENCE = keyset.ListSpec(
    name="mcp_servers.list_by_confidence", table="mcp_servers", columns=_LIST_COLUMNS, sort="confidence",
    sort_type="numeric", descending=True, equality=_LIST_FILTERS, prefix_column="name",
)
LIST_SORTS = {"name": LIST_BY_NAME, "confidence": LIST_BY_CONFIDENCE}


# --- validation -------------------------------------------------------------------------------


def normalize_url(value: object, field: str = "url") -> str:
    """Return `value` as a server URL with scheme and host in lowercase, or raise ValidationError(field).

    Accepted: http, https, ws and wss URLs with a host, at most 2048 characters, without
    whitespace and without `user:password@` credentials. Path, query and fragment are kept as given.
    """
    expected = f"expected an http, https, ws or wss URL with a host, such as {URL_EXAMPLE}"
    if not isinstance(value, str):
        raise ValidationError(field, f"{expected}; got a value of type {type(value).__name__}")
    url = value.strip()
    if not url:
        raise ValidationError(field, f"is empty; {expected}")
    if len(url) > MAX_URL_LENGTH:
        raise ValidationError(field, f"has {len(url)} characters; expected at most {MAX_URL_LENGTH}")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in url):
        raise ValidationError(field, f"{url!r} contains whitespace or control characters; {expected}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValidationError(field, f"{url!r} is invalid ({exc}); {expected}") from None
    scheme = parts.scheme.lower()
    if scheme not in URL_SCHEMES:
        raise ValidationError(field, f"{url!r} has scheme {parts.scheme!r}; {expected}")
    host = parts.hostname
    if not host:
        raise ValidationError(field, f"{url!r} has no host; {expected}")
    if parts.username is not None or parts.password is not None:
        raise ValidationError(field, f"{scheme}://{host}... contains credentials; expected a URL without user:password@")
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    normalized = urlunsplit((scheme, netloc, parts.path, parts.query, parts.fragment))
    if len(normalized) > MAX_URL_LENGTH:
        raise ValidationError(field, f"has {len(normalized)} characters; expected at most {MAX_URL_LENGTH}")
    return normalized


def validate_server_name(value: object, field: str = "name") -> str:
    return validate_display_name(value, field, MAX_NAME_LENGTH)


def validate_description(value: object, field: str = "description") -> str:
    if not isinstance(value, str) or len(value) > MAX_DESCRIPTION_LENGTH:
        raise ValidationError(field, f"expected a string of at most {MAX_DESCRIPTION_LENGTH} characters")
    return value


def validate_capability_list(values: object, field: str = "capabilities") -> list[str]:
    """Return the capabilities sorted and without duplicates, or raise ValidationError naming the bad item.

    Each item is a capability string such as `files:read` or a tool name such as `search_issues`.
    Wildcards are rejected, because a server reports the capabilities it has, not a prefix of them.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, set, frozenset)):
        raise ValidationError(field, f"expected a list of capability strings; got {type(values).__name__}")
    if len(values) > MAX_CAPABILITIES:
        raise ValidationError(field, f"has {len(values)} items; expected at most {MAX_CAPABILITIES}")
    result = set()
    for index, value in enumerate(values):
        capability = validate_capability(value, f"{field}[{index}]")
        if capability.endswith("*"):
            raise ValidationError(f"{field}[{index}]", f"{capability!r} is a wildcard; expected one exact capability")
        result.add(capability)
    return sorted(result)


def manifest_hash(capabilities: Iterable[str]) -> str:
    """Return the SHA-256 hex digest of the RFC 8785 form of the sorted, de-duplicated capability list."""
    return hashlib.sha256(rfc8785.dumps(sorted(set(capabilities)))).hexdigest()


# --- registration and reads -------------------------------------------------------------------


def get_server(db: Database, organization_id: uuid.UUID, server_id: uuid.UUID, *, conn=None) -> dict[str, Any]:
    """Return one server of the organization, or raise NotFound (also for another organization's server)."""
    return fetch_owned_row(db, "mcp_servers.get", "mcp_servers", SERVER_COLUMNS, organization_id, server_id,
                           "MCP server", conn=conn)


def _lock_server(db: Database, conn: psycopg.Connection, organization_id: uuid.UUID, server_id: uuid.UUID) -> dict:
    return fetch_owned_row(db, "mcp_servers.lock", "mcp_servers", SERVER_COLUMNS, organization_id, server_id,
                           "MCP server", conn=conn, lock=True)


def register_server(
    db: Database,
    organization_id: uuid.UUID,
    actor: Actor,
    *,
    name: str,
    url: str,
    description: str = "",
    known_capabilities: Iterable[str] = (),
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Register a server by URL and return its row. Raise Conflict when the URL is already registered.

    Non-empty `known_capabilities` become the baseline that attestations are compared with. Without
    them, the first attestation defines the baseline.
    """
    name = validate_server_name(name)
    url = normalize_url(url)
    description = validate_description(description)
    capabilities = validate_capability_list(list(known_capabilities), "known_capabilities")
    if metadata is not None and not isinstance(metadata, dict):
        raise ValidationError("metadata", "expected a JSON object")
    baseline_hash = manifest_hash(capabilities) if capabilities else None

    try:
        with db.transaction() as conn:
            server = db.fetch_one(
                "mcp_servers.insert",
                f"""INSERT INTO mcp_servers (organization_id, name, url, description, known_capabilities,
                                             manifest_hash, metadata)
                    VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING {SERVER_COLUMNS}""",
                (organization_id, name, url, description, capabilities, baseline_hash, Jsonb(metadata or {})),
                conn=conn,
            )
            assert server is not None
            audit.record(
                conn, organization_id, actor, "mcp_server.register", "mcp_server", str(server["id"]),
                details={"name": name, "url": url, "known_capabilities": capabilities},
            )
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"an MCP server with URL {url!r} is already registered in this organization") from None
    cache_hooks.mcp_servers_changed()
    logger.info("MCP server %s registered at %s by %s", server["id"], url, actor.label)
    return server


def list_servers(
    db: Database,
    organization_id: uuid.UUID,
    *,
    sort: str = "name",
    name_prefix: str | None = None,
    status: str | None = None,
    drift_detected: bool | None = None,
    source: str | None = None,
    cursor: str | None = None,
    limit: int = keyset.DEFAULT_LIMIT,
    count: bool = True,
    secret: bytes | None = None,
    use_cache: bool = True,
) -> keyset.Page:
    """Return one keyset page of servers, sorted by name (A to Z) or by confidence (highest first).

    Filters: a case-insensitive name prefix, status, drift_detected and source. `cursor` comes from
    an earlier page of the same request. `secret` signs the cursors and defaults to the runtime's
    secret key. Pages are cached in the `mcp_server_list` cache (TTL 10 min), which every server
    write invalidates. Raises ValidationError for a bad sort, filter or limit and InvalidCursor for
    a bad cursor.
    """
    if sort not in LIST_SORTS:
        raise ValidationError("sort", f"{sort!r} is invalid; expected one of {', '.join(LIST_SORTS)}")
    if status is not None and status not in STATUSES:
        raise ValidationError("status", f"{status!r} is invalid; expected one of {', '.join(STATUSES)}")
    if source is not None and source not in SOURCES:
        raise ValidationError("source", f"{source!r} is invalid; expected one of {', '.join(SOURCES)}")
    if drift_detected is not None and not isinstance(drift_detected, bool):
        raise ValidationError("drift_detected", f"{drift_detected!r} is invalid; expected true or false")
    keyset.validate_limit(limit)
    if secret is None:
        from aim.runtime import get_runtime

        secret = get_runtime().secret_key
    spec = LIST_SORTS[sort]
    filters = {"prefix": name_prefix, "status": status, "drift_detected": drift_detected, "source": source}
    scope = {"organization_id": organization_id}

    def fetch() -> keyset.Page:
        return keyset.fetch_page(
            db, spec, scope=scope, filters=filters, cursor=cursor, limit=limit, secret=secret, count=count
        )

    def compute() -> dict[str, Any]:
        # A shallow dict: the cache encodes it at once, so dataclasses.asdict's deep copy of every
        # row would only cost time (it was half the CPU of an uncached page in a py-spy profile).
        page = fetch()
        return {field.name: getattr(page, field.name) for field in dataclasses.fields(page)}

    if not use_cache:
        return fetch()
    from aim.cache import get_cache

    key_material = {
        "organization_id": str(organization_id), "sort": sort, "filters": {k: v for k, v in filters.items()},
        "cursor": cursor, "limit": limit, "count": count,
    }
    key = f"{organization_id}:{hashlib.sha256(rfc8785.dumps(key_material)).hexdigest()[:32]}"
    return keyset.Page(**get_cache().get_or_compute(cache_hooks.MCP_SERVER_LIST, key, compute))


UPDATABLE_FIELDS = ("name", "url", "description", "version", "status", "metadata")


def update_server(
    db: Database, organization_id: uuid.UUID, server_id: uuid.UUID, actor: Actor, changes: Mapping[str, Any],
    *, action: str = "mcp_server.update",
) -> dict[str, Any]:
    """Change name, url, description, version, status or metadata and return the row.

    Unknown fields raise ValidationError, and a URL that another server has raises Conflict.
    """
    unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
    if unknown:
        raise ValidationError(unknown[0], f"cannot be changed here; expected only {', '.join(UPDATABLE_FIELDS)}")
    clean: dict[str, Any] = {}
    if "name" in changes:
        clean["name"] = validate_server_name(changes["name"])
    if "url" in changes:
        clean["url"] = normalize_url(changes["url"])
    if "description" in changes:
        clean["description"] = validate_description(changes["description"])
    if "version" in changes:
        version = changes["version"]
        if version is not None and (not isinstance(version, str) or len(version) > MAX_VERSION_LENGTH):
            raise ValidationError("version", f"expected null or a string of at most {MAX_VERSION_LENGTH} characters")
        clean["version"] = version
    if "status" in changes:
        if changes["status"] not in STATUSES:
            raise ValidationError("status", f"{changes['status']!r} is invalid; expected one of {', '.join(STATUSES)}")
        clean["status"] = changes["status"]
    if "metadata" in changes:
        if not isinstance(changes["metadata"], dict):
            raise ValidationError("metadata", "expected a JSON object")
        clean["metadata"] = Jsonb(changes["metadata"])
    if not clean:
        return get_server(db, organization_id, server_id)

    try:
        server = update_owned_row(db, "mcp_servers", "mcp_servers", SERVER_COLUMNS, organization_id, server_id,
                                  "MCP server", clean, actor=actor, action=action, resource_type="mcp_server")
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"an MCP server with URL {clean.get('url')!r} is already registered in this organization") from None
    cache_hooks.mcp_servers_changed()
    return server


def deactivate_server(
    db: Database, organization_id: uuid.UUID, server_id: uuid.UUID, actor: Actor
) -> dict[str, Any]:
    """Set the server's status to `inactive`. Attestations of an inactive server are still accepted."""
    return update_server(db, organization_id, server_id, actor, {"status": "inactive"}, action="mcp_server.deactivate")


def accept_capabilities(
    db: Database, organization_id: uuid.UUID, server_id: uuid.UUID, actor: Actor,
    capabilities: Iterable[str] | None = None,
) -> dict[str, Any]:
    """Make the drifted capability set the server's new baseline and clear `drift_detected`.

    Without `capabilities`, the set of the server's latest drift attestation is accepted. Raises
    Conflict when the server shows no drift and no set is given. The drift alerts stay as they
    are, because resolving them is a separate, audited step in `aim.services.alerts`.
    """
    chosen = None if capabilities is None else validate_capability_list(list(capabilities), "capabilities")
    with db.transaction() as conn:
        server = _lock_server(db, conn, organization_id, server_id)
        if chosen is None:
            if not server["drift_detected"]:
                raise Conflict(f"MCP server {server_id} shows no capability drift; there is no drifted set to accept")
            latest = db.fetch_one(
                "mcp_attestations.latest_drift",
                """SELECT capabilities_found FROM mcp_attestations
                   WHERE mcp_server_id = %s AND organization_id = %s AND drift
                   ORDER BY attested_at DESC, id DESC LIMIT 1""",
                (server_id, organization_id),
                conn=conn,
            )
            if latest is None:
                raise Conflict(f"MCP server {server_id} has no drift attestation to accept")
            chosen = sorted(set(latest["capabilities_found"]))
        updated = db.fetch_one(
            "mcp_servers.accept_capabilities",
            f"""UPDATE mcp_servers SET known_capabilities = %s, manifest_hash = %s, drift_detected = false,
                       updated_at = now()
                WHERE id = %s RETURNING {SERVER_COLUMNS}""",
            (chosen, manifest_hash(chosen), server_id),
            conn=conn,
        )
        audit.record(
            conn, organization_id, actor, "mcp_server.accept_capabilities", "mcp_server", str(server_id),
            details={"previous": sorted(server["known_capabilities"]), "accepted": chosen},
        )
    cache_hooks.mcp_servers_changed()
    logger.info("MCP server %s: %d capabilities accepted as baseline by %s", server_id, len(chosen), actor.label)
    assert updated is not None
    return updated


# --- attestations -----------------------------------------------------------------------------

ATTESTATION_REQUIRED = ("agent_id", "capabilities_found", "healthy", "timestamp", "nonce", "signature")
ATTESTATION_OPTIONAL = ("mcp_server_id", "url", "latency_ms", "key_id")


class AttestationRejected(ValidationError):
    """A signed attestation failed a security check and was not stored.

    `reason` is `unknown_key`, `bad_signature`, `stale_timestamp` or `replay`, as in verification.
    """

    def __init__(self, field: str, reason: str, message: str) -> None:
        super().__init__(field, message)
        self.reason = reason


@dataclass(frozen=True)
class AttestationResult:
    """A stored attestation and what it changed on the server."""

    attestation_id: uuid.UUID
    server_id: uuid.UUID
    agent_id: uuid.UUID
    capabilities: list[str]
    manifest_hash: str
    baseline_set: bool
    drift: bool
    added: list[str]
    removed: list[str]
    alert_id: uuid.UUID | None
    confidence: Decimal
    key_id: str


@dataclass(frozen=True)
class _Attestation:
    agent_id: uuid.UUID
    capabilities: list[str]
    healthy: bool
    latency_ms: float | None
    timestamp: datetime
    nonce: str
    key_id: str | None


class _NonceReused(Exception):
    """The attestation nonce is already in PostgreSQL, though Redis did not know it."""


def validate_attestation(request: Mapping[str, Any], server: Mapping[str, Any]) -> _Attestation:
    """Check the attestation's shape and that it names `server`, or raise ValidationError naming the first bad field."""
    if not isinstance(request, Mapping):
        raise ValidationError("body", "expected a JSON object")
    missing = [name for name in ATTESTATION_REQUIRED if name not in request]
    if missing:
        raise ValidationError(missing[0], "is required")
    unknown = sorted(set(request) - set(ATTESTATION_REQUIRED) - set(ATTESTATION_OPTIONAL))
    if unknown:
        raise ValidationError(
            unknown[0],
            f"is not a field of an attestation; expected only {', '.join(ATTESTATION_REQUIRED + ATTESTATION_OPTIONAL)}",
        )
    try:
        agent_id = uuid.UUID(str(request["agent_id"]))
    except ValueError:
        raise ValidationError("agent_id", f"{request['agent_id']!r} is invalid; expected an agent UUID") from None

    if "mcp_server_id" not in request and "url" not in request:
        raise ValidationError("mcp_server_id", "is required (or url); expected the attested server's id or URL")
    if "mcp_server_id" in request and str(request["mcp_server_id"]) != str(server["id"]):
        raise ValidationError(
            "mcp_server_id", f"{request['mcp_server_id']!r} does not match the server {server['id']} in the path"
        )
    if "url" in request and normalize_url(request["url"]) != server["url"]:
        raise ValidationError("url", f"{request['url']!r} is not the URL of server {server['id']} ({server['url']})")

    capabilities = validate_capability_list(request["capabilities_found"], "capabilities_found")
    if not isinstance(request["healthy"], bool):
        raise ValidationError("healthy", f"{request['healthy']!r} is invalid; expected true or false")
    latency = request.get("latency_ms")
    if latency is not None:
        if isinstance(latency, bool) or not isinstance(latency, (int, float)) or not math.isfinite(latency) or latency < 0:
            raise ValidationError("latency_ms", f"{latency!r} is invalid; expected null or milliseconds >= 0")
        latency = float(latency)
    if not isinstance(request["signature"], str):
        raise ValidationError("signature", "expected a base64 string of a 64-byte Ed25519 signature")
    key_id = request.get("key_id")
    if key_id is not None and not isinstance(key_id, str):
        raise ValidationError("key_id", "expected a key id string such as 'ed25519:...'")
    nonce = identity.validate_nonce(request["nonce"])
    # Same accepted forms as verification: RFC 3339 with an offset, or Unix seconds.
    timestamp = verification.parse_timestamp(request["timestamp"])
    return _Attestation(agent_id, capabilities, request["healthy"], latency, timestamp, nonce, key_id)


def _check_attestation(
    state: Mapping[str, Any], request: Mapping[str, Any], fields: _Attestation, now: datetime,
    client: redis.Redis, prefix: str,
) -> tuple[str, bytes]:
    """Run the key, signature, timestamp, nonce and status checks in verification's order.

    Return (key id that verified, signature bytes). Raise AttestationRejected or PermissionDenied.
    """
    current = bytes(state["public_key"])
    previous = bytes(state["previous_public_key"]) if state["previous_public_key"] is not None else None
    usable = identity.select_verification_keys(current, previous, state["previous_key_valid_until"], now)
    keys = [(state["key_id"], current)]
    if previous is not None and previous in usable[1:]:
        keys.append((state["previous_key_id"], previous))
    if fields.key_id is not None:
        keys = [(kid, key) for kid, key in keys if kid == fields.key_id]
        if not keys:
            raise AttestationRejected("key_id", "unknown_key", f"key {fields.key_id!r} is not a current key of this agent")

    signature = identity.decode_signature(request["signature"])
    message = identity.canonical_request(request)
    verified_by = None
    if signature is not None:
        verified_by = next((kid for kid, key in keys if identity.verify_signature(key, message, signature)), None)
    if verified_by is None:
        raise AttestationRejected(
            "signature", "bad_signature", "the signature does not verify with the agent's current or grace-period key"
        )

    skew = fields.timestamp - now
    tolerance = verification.TIMESTAMP_TOLERANCE
    if abs(skew) > tolerance:
        raise AttestationRejected(
            "timestamp", "stale_timestamp",
            f"timestamp is {abs(skew.total_seconds()):.0f} s from server time; expected within "
            f"{tolerance.total_seconds():.0f} s",
        )

    # The same Redis key as verification, so one nonce serves one signed request of either kind.
    if verification.claim_nonce(client, prefix, fields.agent_id, fields.nonce) is False:
        raise AttestationRejected("nonce", "replay", "this nonce was already used by this agent")

    if state["status"] != "verified":
        raise PermissionDenied(f"agent {fields.agent_id} is {state['status']}; only verified agents may attest")
    assert signature is not None
    return verified_by, signature


def _record_rejection(
    db: Database, organization_id: uuid.UUID, actor: Actor, server_id: uuid.UUID, agent_id: uuid.UUID,
    reason: str, detail: str,
) -> None:
    """Audit a rejected attestation and, for a bad signature or a replay, raise an alert and recalculate trust."""
    alerting = verification.ALERTING_REASONS.get(reason)
    with db.transaction() as conn:
        audit.record(
            conn, organization_id, actor, "mcp_server.attest", "mcp_server", str(server_id), result="denied",
            details={"agent_id": str(agent_id), "reason": reason, "detail": detail},
        )
        if alerting is not None:
            alert_type, severity, title = alerting
            alerts.raise_alert(
                db, conn, organization_id, alert_type=alert_type, severity=severity,
                title=f"{title} from agent {agent_id}", description=detail, resource_type="agent",
                resource_id=str(agent_id), related_agent_ids=[agent_id],
                details={"attestation_of": str(server_id)},
            )
            trust.recalculate_agent(
                db, organization_id, agent_id, reason=f"attestation rejected: {reason}",
                actor=system("mcp-attestation").label, conn=conn,
            )
    if alerting is not None:
        cache_hooks.agent_changed(agent_id)
    logger.info("attestation of MCP server %s by agent %s rejected: %s", server_id, agent_id, reason)


def attest(
    db: Database,
    redis_client: redis.Redis,
    redis_prefix: str,
    organization_id: uuid.UUID,
    server_id: uuid.UUID,
    request: Mapping[str, Any],
    *,
    actor: Actor | None = None,
    now: datetime | None = None,
) -> AttestationResult:
    """Verify and store an agent's signed attestation of a server, detecting capability drift.

    `request` contains agent_id, mcp_server_id or url, capabilities_found, healthy, latency_ms
    (optional), timestamp, nonce, signature and optionally key_id. The signature is Ed25519 over the
    RFC 8785 form of every field but `signature`, checked against the agent's current key or its
    previous key within the rotation grace period. The timestamp must be within 300 s of `now`
    and the nonce unused.

    Raises ValidationError for a malformed request, NotFound for a server or agent outside the
    organization, AttestationRejected (a ValidationError) for an unknown key, a bad signature, a
    stale timestamp or a replayed nonce, and PermissionDenied when the agent is not verified.
    A rejected attestation is audited and not stored. A bad signature or a replay also raises an
    alert on the agent, as verification does.

    On success one transaction stores the attestation, the agent's connection to the server, the
    server's baseline or drift state, a drift alert and the connected agents' new trust scores,
    the audit row and the recomputed confidence.
    """
    server = get_server(db, organization_id, server_id)
    fields = validate_attestation(request, server)
    state = verification.load_agent_state(db, organization_id, fields.agent_id)
    now = now or datetime.now(timezone.utc)
    actor = actor or Actor("agent", str(fields.agent_id))

    try:
        key_id, signature = _check_attestation(state, request, fields, now, redis_client, redis_prefix)
    except AttestationRejected as rejected:
        _record_rejection(db, organization_id, actor, server_id, fields.agent_id, rejected.reason, rejected.message)
        raise
    except PermissionDenied as denied:
        _record_rejection(db, organization_id, actor, server_id, fields.agent_id, "agent_not_verified", str(denied))
        raise

    try:
        result, recalculated = _store_attestation(
            db, organization_id, server_id, fields, signature, key_id, actor
        )
    except _NonceReused:
        rejected = AttestationRejected("nonce", "replay", "this nonce was already used by this agent")
        _record_rejection(db, organization_id, actor, server_id, fields.agent_id, rejected.reason, rejected.message)
        raise rejected from None

    cache_hooks.mcp_servers_changed()
    for agent_id in recalculated:
        cache_hooks.agent_changed(agent_id)
    if fields.agent_id not in recalculated:
        # The attestation counts as activity and MCP use in the agent's trust factors.
        verification.mark_trust_dirty(redis_client, redis_prefix, fields.agent_id)
    logger.info(
        "MCP server %s attested by agent %s: %d capabilities, drift=%s, confidence %s",
        server_id, fields.agent_id, len(fields.capabilities), result.drift, result.confidence,
    )
    return result


def _store_attestation(
    db: Database, organization_id: uuid.UUID, server_id: uuid.UUID, fields: _Attestation, signature: bytes,
    key_id: str, actor: Actor,
) -> tuple[AttestationResult, list[uuid.UUID]]:
    """Write an accepted attestation and its consequences in one transaction.

    Return the result and the agents whose trust was recalculated. Raise _NonceReused when the
    nonce is already stored.
    """
    found = fields.capabilities
    digest = manifest_hash(found)
    with db.transaction() as conn:
        # The row lock serialises attestations of one server, so two drifts cannot both read the old baseline.
        server = _lock_server(db, conn, organization_id, server_id)
        known = sorted(server["known_capabilities"])
        baseline_set = server["manifest_hash"] is None and not known
        drift = not baseline_set and found != known
        added = sorted(set(found) - set(known)) if drift else []
        removed = sorted(set(known) - set(found)) if drift else []

        try:
            with conn.transaction():
                attestation_id = db.fetch_value(
                    "mcp_attestations.insert",
                    """INSERT INTO mcp_attestations (organization_id, mcp_server_id, agent_id, capabilities_found,
                                                     manifest_hash, latency_ms, healthy, drift, signature, key_id,
                                                     nonce, expires_at)
                       VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, now() + %s) RETURNING id""",
                    (organization_id, server_id, fields.agent_id, found, digest, fields.latency_ms, fields.healthy,
                     drift, signature, key_id, fields.nonce, ATTESTATION_LIFETIME),
                    conn=conn,
                )
        except psycopg.errors.UniqueViolation as exc:
            if exc.diag.constraint_name == "mcp_attestations_unique_nonce":
                raise _NonceReused() from None
            raise
        db.execute(
            "agent_mcp_connections.upsert",
            """INSERT INTO agent_mcp_connections (organization_id, agent_id, mcp_server_id)
               VALUES (%s, %s, %s)
               ON CONFLICT (agent_id, mcp_server_id) DO UPDATE SET last_seen_at = now()""",
            (organization_id, fields.agent_id, server_id),
            conn=conn,
        )
        db.execute(
            "mcp_servers.attested",
            """UPDATE mcp_servers SET
                   last_attested_at = now(),
                   known_capabilities = CASE WHEN %(baseline)s THEN %(found)s ELSE known_capabilities END,
                   manifest_hash = CASE WHEN %(baseline)s THEN %(digest)s ELSE manifest_hash END,
                   drift_detected = drift_detected OR %(drift)s,
                   last_drift_at = CASE WHEN %(drift)s THEN now() ELSE last_drift_at END,
                   updated_at = now()
               WHERE id = %(server_id)s""",
            {"baseline": baseline_set, "found": found, "digest": digest, "drift": drift, "server_id": server_id},
            conn=conn,
        )

        alert_id = None
        recalculated: list[uuid.UUID] = []
        if drift:
            alert_id, recalculated = _raise_drift(
                db, conn, organization_id, server, fields.agent_id, attestation_id, found, known, added, removed,
                digest,
            )
        audit.record(
            conn, organization_id, actor, "mcp_server.attest", "mcp_server", str(server_id),
            details={
                "agent_id": str(fields.agent_id), "attestation_id": str(attestation_id), "manifest_hash": digest,
                "capabilities": len(found), "healthy": fields.healthy, "latency_ms": fields.latency_ms,
                "baseline_set": baseline_set, "drift": drift, "added": added, "removed": removed,
            },
        )
        confidence, _ = _recompute_locked(db, conn, organization_id, server_id, reason="attestation", as_of=None)

    result = AttestationResult(
        attestation_id=attestation_id, server_id=server_id, agent_id=fields.agent_id, capabilities=found,
        manifest_hash=digest, baseline_set=baseline_set, drift=drift, added=added, removed=removed,
        alert_id=alert_id, confidence=confidence, key_id=key_id,
    )
    return result, recalculated


def _raise_drift(
    db: Database, conn: psycopg.Connection, organization_id: uuid.UUID, server: Mapping[str, Any],
    reporter_id: uuid.UUID, attestation_id: uuid.UUID, found: list[str], known: list[str], added: list[str],
    removed: list[str], digest: str,
) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """Raise the drift alert for every agent connected to the server and recalculate their trust.

    One alert per server and drifted manifest: a repeat of the same drift while the alert is
    unresolved bumps its count, and only agents newly linked to it are recalculated, because the
    trust drift factor counts alerts, not occurrences. Return (alert id, recalculated agent ids).
    """
    server_id = server["id"]
    connected = [
        row["agent_id"]
        for row in db.fetch_all(
            "agent_mcp_connections.by_server",
            """SELECT agent_id FROM agent_mcp_connections
               WHERE mcp_server_id = %s AND organization_id = %s ORDER BY agent_id""",
            (server_id, organization_id),
            conn=conn,
        )
    ]
    dedup_key = f"{CAPABILITY_DRIFT_ALERT}:mcp_server:{server_id}:{digest[:16]}"
    already_linked = db.fetch_value(
        "alerts.related_by_dedup",
        """SELECT related_agent_ids FROM alerts
           WHERE organization_id = %s AND dedup_key = %s AND status <> 'resolved'""",
        (organization_id, dedup_key),
        conn=conn,
    ) or []
    raised = alerts.raise_alert(
        db, conn, organization_id,
        alert_type=CAPABILITY_DRIFT_ALERT, severity="high",
        title=f"Capability drift on MCP server {server['name']}",
        description=(
            f"agent {reporter_id} reported {len(added)} added and {len(removed)} removed capabilities "
            f"compared with the known set of {len(known)}"
        ),
        resource_type="mcp_server", resource_id=str(server_id), related_agent_ids=connected,
        details={
            "added": added, "removed": removed, "known_capabilities": known, "capabilities_found": found,
            "manifest_hash": digest, "attestation_id": str(attestation_id), "reported_by": str(reporter_id),
            "url": server["url"],
        },
        dedup_key=dedup_key, actor=system("mcp-attestation"),
    )
    linked_before = {uuid.UUID(str(agent_id)) for agent_id in already_linked}
    # `connected` is in agent id order, so concurrent drifts on servers that share agents lock them in one order.
    to_recalculate = [agent_id for agent_id in connected if agent_id not in linked_before]
    # NOTE: every newly linked agent is recalculated inside this transaction, so a server with
    # thousands of connected agents makes its first drift attestation slow.
    for agent_id in to_recalculate:
        trust.recalculate_agent(
            db, organization_id, agent_id, reason=f"capability drift on MCP server {server_id}",
            actor=system("mcp-attestation").label, conn=conn,
        )
    logger.warning(
        "capability drift on MCP server %s reported by agent %s: +%d -%d, alert %s, %d agents recalculated",
        server_id, reporter_id, len(added), len(removed), raised.id, len(to_recalculate),
    )
    return raised.id, to_recalculate


# --- confidence -------------------------------------------------------------------------------


class ConfidenceSample(NamedTuple):
    """The latest live attestation of one distinct agent, with that agent's trust score."""

    trust_score: float
    healthy: bool
    attested_at: datetime


def compute_confidence(
    samples: Iterable[ConfidenceSample], as_of: datetime, half_life: timedelta = CONFIDENCE_HALF_LIFE
) -> Decimal:
    """Return the confidence in [0, 1], rounded to 4 places, from one sample per distinct attesting agent.

    With trust t_i of agent i, age a_i of its latest attestation and h_i = 1 when that attestation
    reported the server healthy (else 0):

        w_i = t_i * 0.5 ** (a_i / half_life)          trust-weighted recency, half-life 7 days
        W   = sum(w_i)                                 effective number of attesting agents
        confidence = (1 - 0.5 ** W) * sum(w_i * h_i) / W,   and 0 when W = 0

    More distinct agents raise W, which saturates towards 1: one fresh attestation by an agent of
    trust 1.0 gives 0.5, two give 0.75. Low trust and old attestations count for less, and the
    factor sum(w_i * h_i) / W is the weighted share of agents that found the server healthy.
    """
    half_life_s = half_life.total_seconds()
    total_weight = 0.0
    healthy_weight = 0.0
    for sample in samples:
        age_s = max((as_of - sample.attested_at).total_seconds(), 0.0)
        weight = max(float(sample.trust_score), 0.0) * 0.5 ** (age_s / half_life_s)
        total_weight += weight
        if sample.healthy:
            healthy_weight += weight
    if total_weight <= 0.0:
        return Decimal("0").quantize(CONFIDENCE_QUANTUM)
    value = (1.0 - 0.5**total_weight) * healthy_weight / total_weight
    return Decimal(repr(min(max(value, 0.0), 1.0))).quantize(CONFIDENCE_QUANTUM, rounding=ROUND_HALF_EVEN)


def _recompute_locked(
    db: Database, conn: psycopg.Connection, organization_id: uuid.UUID, server_id: uuid.UUID, *, reason: str,
    as_of: datetime | None,
) -> tuple[Decimal, bool]:
    """Recompute and store the confidence inside `conn`'s transaction. Return (confidence, changed)."""
    current = db.fetch_one(
        "mcp_servers.lock_confidence",
        "SELECT confidence, now() AS now FROM mcp_servers WHERE organization_id = %s AND id = %s FOR UPDATE",
        (organization_id, server_id),
        conn=conn,
    )
    if current is None:
        raise NotFound("MCP server", server_id)
    as_of = as_of or current["now"]

    # The latest live attestation per agent, so a chatty agent counts once. Only verified agents
    # vouch for a server, and the attestations of a suspended or revoked agent no longer count.
    rows = db.fetch_all(
        "mcp_attestations.confidence_samples",
        """SELECT latest.healthy, latest.attested_at, a.trust_score
           FROM (SELECT DISTINCT ON (m.agent_id) m.agent_id, m.healthy, m.attested_at
                 FROM mcp_attestations m
                 WHERE m.mcp_server_id = %(server_id)s AND m.organization_id = %(organization_id)s
                   AND NOT m.expired AND m.expires_at > %(as_of)s AND m.attested_at <= %(as_of)s
                 ORDER BY m.agent_id, m.attested_at DESC, m.id DESC) AS latest
           JOIN agents a ON a.id = latest.agent_id AND a.status = 'verified'""",
        {"server_id": server_id, "organization_id": organization_id, "as_of": as_of},
        conn=conn,
    )
    samples = [ConfidenceSample(float(row["trust_score"]), row["healthy"], row["attested_at"]) for row in rows]
    confidence = compute_confidence(samples, as_of)
    if confidence == current["confidence"]:
        return confidence, False

    db.execute(
        "mcp_servers.set_confidence",
        "UPDATE mcp_servers SET confidence = %s, updated_at = now() WHERE id = %s",
        (confidence, server_id),
        conn=conn,
    )
    db.execute(
        "mcp_confidence_history.insert",
        "INSERT INTO mcp_confidence_history (organization_id, mcp_server_id, confidence, reason) VALUES (%s, %s, %s, %s)",
        (organization_id, server_id, confidence, reason),
        conn=conn,
    )
    return confidence, True


def recompute_confidence(
    db: Database, organization_id: uuid.UUID, server_id: uuid.UUID, conn: psycopg.Connection | None = None, *,
    reason: str = "recompute", as_of: datetime | None = None,
) -> Decimal:
    """Recompute the server's confidence (see `compute_confidence`), store it and return it.

    A changed value also writes an mcp_confidence_history row with `reason`. `as_of` defaults to
    the database's transaction time. With `conn` the work joins the caller's transaction, and the
    caller invalidates the MCP server list cache after its commit. Raises NotFound.
    NOTE: the stored value ages only when something recomputes it (an attestation, expiry or a call
    to this function), so between events it does not reflect the recency decay.
    """
    if conn is not None:
        with conn.transaction():
            return _recompute_locked(db, conn, organization_id, server_id, reason=reason, as_of=as_of)[0]
    with db.transaction() as own:
        confidence, changed = _recompute_locked(db, own, organization_id, server_id, reason=reason, as_of=as_of)
    if changed:
        cache_hooks.mcp_servers_changed()
    return confidence


def expire_attestations(db: Database, now: datetime | None = None, *, batch_size: int = 1000) -> int:
    """Mark attestations of every organization past `expires_at` as expired and return how many.

    Meant for a scheduled job. Each batch of up to `batch_size` attestations commits in its own
    transaction together with the recomputed confidence of the servers it touched. `now`, a
    timezone-aware datetime, defaults to the database clock.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or not 1 <= batch_size <= 100_000:
        raise ValidationError("batch_size", f"{batch_size!r} is invalid; expected a whole number from 1 to 100000")
    if now is not None and now.utcoffset() is None:
        raise ValidationError("now", f"{now.isoformat()} is a naive datetime; expected a timezone-aware one")
    total = 0
    servers_touched = 0
    while True:
        with db.transaction() as conn:
            cutoff = now or db.fetch_value("mcp_attestations.clock", "SELECT now()", conn=conn)
            rows = db.fetch_all(
                "mcp_attestations.expire",
                """UPDATE mcp_attestations SET expired = true
                   WHERE id IN (SELECT id FROM mcp_attestations
                                WHERE NOT expired AND expires_at <= %s
                                ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED)
                   RETURNING organization_id, mcp_server_id""",
                (cutoff, batch_size),
                conn=conn,
            )
            servers = sorted({(row["organization_id"], row["mcp_server_id"]) for row in rows})
            for organization_id, server_id in servers:
                _recompute_locked(db, conn, organization_id, server_id, reason="attestations expired", as_of=cutoff)
        total += len(rows)
        servers_touched += len(servers)
        if len(rows) < batch_size:
            break
    if total:
        cache_hooks.mcp_servers_changed()
        logger.info("expired %d MCP attestations on %d servers", total, servers_touched)
    return total


# The registry import module imports this one, so its names are resolved on first access (PEP 562).
_REGISTRY_NAMES = frozenset(
    ("ImportReport", "RegistryError", "fetch_registry_pages", "import_registry", "load_registry_file")
)


def __getattr__(name: str) -> Any:
    if name in _REGISTRY_NAMES:
        from aim.services import mcp_registry

        return getattr(mcp_registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
