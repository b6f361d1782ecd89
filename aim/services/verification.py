"""Signed action verification: may this agent do action X on resource Y now?

The checks run in this order, and the first failure decides the denial reason:

1. key        `unknown_key`            the request names a key id the agent does not hold
2. signature  `bad_signature`          Ed25519 over the RFC 8785 form of every field but `signature`
3. timestamp  `stale_timestamp`        more than 300 s from the server clock, either way
4. nonce      `replay`                 seen before (Redis SET NX, backed by a unique index)
5. status     `agent_not_verified`     the agent is pending, suspended or revoked
6. capability `capability_not_granted` no grant covers the action
7. trust      `trust_below_threshold`  the score is under the action's risk class threshold

Every decision writes a verification event and an audit row in one transaction. A bad signature, a
replay or a capability violation also raises an alert and recalculates the agent's trust at once.
Other decisions queue the agent for the periodic trust job.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, Mapping

import redis
from psycopg.types.json import Jsonb

from aim import identity, trust
from aim.cache.throttle import RateLimitedWarning
from aim.db.audit_ingest import audit_month_ready, ensure_audit_month
from aim.db.pool import Database
from aim.errors import NotFound, ValidationError
from aim.services import alerts, cache_hooks
from aim.services.actor import Actor, system
from aim.services.capabilities import grants
from aim.services.risk_classes import classify

logger = logging.getLogger(__name__)
_redis_warning = RateLimitedWarning(logger, interval_s=30.0)

TIMESTAMP_TOLERANCE = timedelta(seconds=300)
# Redis keeps a nonce for twice the timestamp window. After that the timestamp check rejects the
# request anyway, and the unique index in PostgreSQL still catches a replay.
NONCE_TTL_S = 600
REQUIRED_FIELDS = ("agent_id", "action", "timestamp", "nonce", "signature")
OPTIONAL_FIELDS = ("resource", "context", "key_id")
MAX_ACTION_LENGTH = 128
MAX_RESOURCE_LENGTH = 1024

ALERTING_REASONS = {
    "bad_signature": ("invalid_signature", "high", "Invalid signature"),
    "replay": ("replayed_nonce", "high", "Replayed request nonce"),
    "capability_not_granted": ("capability_violation", "medium", "Capability violation"),
}


@dataclass(frozen=True)
class Decision:
    decision: str
    reason: str
    detail: str
    verification_id: uuid.UUID
    agent_id: uuid.UUID
    risk_class: str
    trust_score: float
    latency_ms: float

    @property
    def allowed(self) -> bool:
        return self.decision == "allowed"


@dataclass(frozen=True)
class _Outcome:
    reason: str
    detail: str
    nonce_stored: bool = False

    @property
    def decision(self) -> str:
        return "allowed" if self.reason == "ok" else "denied"


def parse_timestamp(value: Any) -> datetime:
    if isinstance(value, bool):
        value = None
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value), tz=timezone.utc)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None:
            return parsed
    raise ValidationError(
        "timestamp", f"{value!r} is invalid; expected RFC 3339 with a UTC offset (2026-01-31T12:00:00Z) or Unix seconds"
    )


def validate_request(request: Mapping[str, Any], agent_id: uuid.UUID) -> dict[str, Any]:
    """Check the request's shape; raise ValidationError naming the first bad field."""
    if not isinstance(request, Mapping):
        raise ValidationError("body", "expected a JSON object")
    missing = [name for name in REQUIRED_FIELDS if name not in request]
    if missing:
        raise ValidationError(missing[0], "is required")
    unknown = sorted(set(request) - set(REQUIRED_FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise ValidationError(
            unknown[0], f"is not a field of a verification request; expected only {', '.join(REQUIRED_FIELDS + OPTIONAL_FIELDS)}"
        )
    if str(request["agent_id"]) != str(agent_id):
        raise ValidationError("agent_id", f"{request['agent_id']!r} does not match the agent {agent_id} in the path")
    action = request["action"]
    if not isinstance(action, str) or not 1 <= len(action) <= MAX_ACTION_LENGTH:
        raise ValidationError("action", f"expected a capability-style string of 1 to {MAX_ACTION_LENGTH} characters")
    resource = request.get("resource", "")
    if not isinstance(resource, str) or len(resource) > MAX_RESOURCE_LENGTH:
        raise ValidationError("resource", f"expected a string of at most {MAX_RESOURCE_LENGTH} characters")
    if "context" in request and not isinstance(request["context"], dict):
        raise ValidationError("context", "expected a JSON object")
    if not isinstance(request["signature"], str):
        raise ValidationError("signature", "expected a base64 string of a 64-byte Ed25519 signature")
    if "key_id" in request and not isinstance(request["key_id"], str):
        raise ValidationError("key_id", "expected a key id string such as 'ed25519:...'")
    identity.validate_nonce(request["nonce"])
    fields = dict(request)
    fields["_timestamp"] = parse_timestamp(request["timestamp"])
    return fields


def load_agent_state(db: Database, organization_id: uuid.UUID, agent_id: uuid.UUID) -> dict[str, Any]:
    """Return the keys, status, capabilities and risk overrides of an agent, from the agent_metadata cache.

    The dict is shared with other callers, so it must not be changed.
    """
    from aim.cache import get_cache

    def compute() -> dict[str, Any] | None:
        return db.fetch_one(
            "verification.load_agent",
            """SELECT a.id, a.organization_id, a.name, a.status, a.public_key, a.key_id, a.previous_public_key,
                      a.previous_key_id, a.previous_key_valid_until, a.capabilities,
                      coalesce(o.settings -> 'risk_classes', '{}'::jsonb) AS risk_overrides
               FROM agents a JOIN organizations o ON o.id = a.organization_id
               WHERE a.organization_id = %s AND a.id = %s""",
            (organization_id, agent_id),
        )

    state = get_cache().get_or_compute(cache_hooks.AGENT_METADATA, str(agent_id), compute, shared=True)
    if state is None or str(state["organization_id"]) != str(organization_id):
        raise NotFound("agent", agent_id)
    return state


def load_trust_score(db: Database, agent_id: uuid.UUID) -> float:
    """Return the stored trust score of an agent, from the trust_scores cache (TTL 1 min)."""
    from aim.cache import get_cache

    def compute() -> Decimal | None:
        return db.fetch_value("verification.load_trust", "SELECT trust_score FROM agents WHERE id = %s", (agent_id,))

    value = get_cache().get_or_compute(cache_hooks.TRUST_SCORES, str(agent_id), compute, shared=True)
    return float(value or 0)


def claim_nonce(
    client: redis.Redis, prefix: str, agent_id: uuid.UUID, nonce: str, *, mark_dirty: bool = False
) -> bool | None:
    """SET NX the nonce. True: first use. False: seen before. None: Redis unreachable.

    With `mark_dirty`, the agent is queued for the trust job in the same round trip. An agent whose
    request is then denied is only recalculated once more, which is harmless.
    """
    try:
        with client.pipeline(transaction=False) as pipe:
            pipe.set(f"{prefix}nonce:{agent_id}:{nonce}", b"1", nx=True, ex=NONCE_TTL_S)
            if mark_dirty:
                pipe.sadd(f"{prefix}trust:dirty", str(agent_id))
            return bool(pipe.execute()[0])
    except redis.RedisError as exc:
        _redis_warning.warning("nonce check falls back to PostgreSQL only, Redis failed: %s", exc)
        return None


def _evaluate(state: dict[str, Any], fields: dict[str, Any], now: datetime, trust_score: float, risk_class: str,
              client: redis.Redis, prefix: str, agent_id: uuid.UUID) -> _Outcome:
    current = bytes(state["public_key"])
    previous = bytes(state["previous_public_key"]) if state["previous_public_key"] is not None else None
    usable = identity.select_verification_keys(current, previous, state["previous_key_valid_until"], now)
    keys = [(state["key_id"], current)]
    if previous is not None and previous in usable[1:]:
        keys.append((state["previous_key_id"], previous))
    requested_key = fields.get("key_id")
    if requested_key is not None:
        keys = [(kid, key) for kid, key in keys if kid == requested_key]
        if not keys:
            return _Outcome("unknown_key", f"key {requested_key!r} is not a current key of this agent")

    signature = identity.decode_signature(fields["signature"])
    message = identity.canonical_request({k: v for k, v in fields.items() if not k.startswith("_")})
    if signature is None or not any(identity.verify_signature(key, message, signature) for _, key in keys):
        return _Outcome("bad_signature", "the signature does not verify with the agent's current or grace-period key")

    skew = fields["_timestamp"] - now
    if abs(skew) > TIMESTAMP_TOLERANCE:
        return _Outcome(
            "stale_timestamp",
            f"timestamp is {abs(skew.total_seconds()):.0f} s from server time; expected within "
            f"{TIMESTAMP_TOLERANCE.total_seconds():.0f} s",
        )

    claimed = claim_nonce(client, prefix, agent_id, fields["nonce"], mark_dirty=True)
    if claimed is False:
        return _Outcome("replay", "this nonce was already used by this agent")

    if state["status"] != "verified":
        return _Outcome("agent_not_verified", f"agent status is {state['status']}; expected verified", True)
    if not grants(state["capabilities"], fields["action"]):
        return _Outcome("capability_not_granted", f"no granted capability covers {fields['action']!r}", True)
    threshold = trust.risk_threshold(risk_class)
    if trust_score < threshold:
        return _Outcome(
            "trust_below_threshold",
            f"trust score {trust_score:.2f} is below {threshold:.2f} required for {risk_class}-risk actions",
            True,
        )
    return _Outcome("ok", f"{risk_class}-risk action allowed", True)


def verify(
    db: Database,
    client: redis.Redis,
    redis_prefix: str,
    organization_id: uuid.UUID,
    agent_id: uuid.UUID,
    request: Mapping[str, Any],
    actor: Actor | None = None,
    now: datetime | None = None,
) -> Decision:
    """Run the ordered checks on a signed request and record the decision.

    Raises ValidationError for a request that is not shaped like one (a missing field, a bad
    timestamp form) and NotFound for an agent outside the organization. A malformed signature is a
    denial, never an exception.
    """
    started = time.perf_counter()
    fields = validate_request(request, agent_id)
    state = load_agent_state(db, organization_id, agent_id)
    now = now or datetime.now(timezone.utc)
    risk_class = classify(fields["action"], state["risk_overrides"])
    trust_score = load_trust_score(db, agent_id)
    outcome = _evaluate(state, fields, now, trust_score, risk_class, client, redis_prefix, agent_id)
    actor = actor or Actor("agent", str(agent_id))

    event_id: uuid.UUID | None = None
    if outcome.reason not in ALERTING_REASONS:
        event_id = _record_quietly(db, organization_id, agent_id, fields, outcome, risk_class, trust_score, actor,
                                   started)
        if event_id is None:
            # PostgreSQL knew the nonce although Redis did not (for example after a flush).
            outcome = _Outcome("replay", "this nonce was already used by this agent")
    if event_id is None:
        event_id, trust_score = _record_with_alert(
            db, organization_id, agent_id, fields, outcome, risk_class, trust_score, actor, started,
            agent_name=state.get("name"),
        )
        cache_hooks.agent_changed(agent_id)
    elif not outcome.nonce_stored:
        # Allowed and nonce-claiming denials were queued together with the nonce claim.
        mark_trust_dirty(client, redis_prefix, agent_id)

    latency_ms = (time.perf_counter() - started) * 1000.0
    return Decision(outcome.decision, outcome.reason, outcome.detail, event_id, agent_id, risk_class, trust_score,
                    latency_ms)


# One statement records the event, its audit row and the agent's last-seen time, so the common
# path costs one round trip and is atomic on its own. When the nonce is already stored the event
# insert does nothing, the audit insert selects no row, and the caller records a replay instead.
_RECORD_SQL = """
WITH event AS (
    INSERT INTO verification_events (id, organization_id, agent_id, action, resource, risk_class, decision, reason,
                                     nonce, key_id, signature_valid, request_timestamp, trust_score, latency_ms)
    VALUES (%(id)s, %(org)s, %(agent)s, %(action)s, %(resource)s, %(risk_class)s, %(decision)s, %(reason)s,
            %(nonce)s, %(key_id)s, %(signature_valid)s, %(request_timestamp)s, %(trust_score)s, %(latency_ms)s)
    ON CONFLICT (agent_id, nonce) WHERE nonce IS NOT NULL DO NOTHING
    RETURNING id
), audit AS (
    INSERT INTO audit_logs (organization_id, actor_type, actor_id, action, resource_type, resource_id, result,
                            ip_address, user_agent, request_id, details)
    SELECT %(org)s, %(actor_type)s, %(actor_id)s, 'agent.verify', 'agent', %(agent_text)s, %(result)s,
           %(ip)s, %(user_agent)s, %(request_id)s, %(details)s
    FROM event
    RETURNING id
), touch AS (
    UPDATE agents SET last_seen_at = now()
    WHERE id = %(agent)s AND (last_seen_at IS NULL OR last_seen_at < now() - interval '1 minute')
      AND EXISTS (SELECT 1 FROM event)
    RETURNING id
)
SELECT (SELECT id FROM event) AS event_id, EXISTS (SELECT 1 FROM touch) AS touched
"""


def _event_params(organization_id, agent_id, fields, outcome: _Outcome, risk_class, trust_score, actor: Actor,
                  started: float, event_id: uuid.UUID, *, store_nonce: bool) -> dict[str, Any]:
    return {
        "id": event_id,
        "org": organization_id,
        "agent": agent_id,
        "agent_text": str(agent_id),
        "action": fields["action"],
        "resource": fields.get("resource", ""),
        "risk_class": risk_class,
        "decision": outcome.decision,
        "reason": outcome.reason,
        "nonce": fields["nonce"] if store_nonce else None,
        "key_id": fields.get("key_id"),
        "signature_valid": outcome.reason not in ("bad_signature", "unknown_key"),
        "request_timestamp": fields["_timestamp"],
        "trust_score": round(trust_score, 4),
        "latency_ms": (time.perf_counter() - started) * 1000.0,
        "actor_type": actor.actor_type,
        "actor_id": actor.actor_id,
        "result": "success" if outcome.decision == "allowed" else "denied",
        "ip": actor.ip_address,
        "user_agent": actor.user_agent,
        "request_id": actor.request_id,
        "details": Jsonb({"action": fields["action"], "resource": fields.get("resource", ""),
                          "reason": outcome.reason, "risk_class": risk_class, "verification_id": str(event_id)}),
    }


def _record_quietly(db, organization_id, agent_id, fields, outcome: _Outcome, risk_class, trust_score,
                    actor: Actor, started: float) -> uuid.UUID | None:
    """Record a decision that raises no alert. Return None when the nonce was already stored."""
    event_id = uuid.uuid4()
    params = _event_params(organization_id, agent_id, fields, outcome, risk_class, trust_score, actor, started,
                           event_id, store_nonce=outcome.nonce_stored)
    now = datetime.now(timezone.utc)
    if audit_month_ready(now):
        # One statement is atomic on its own, so the common path skips BEGIN and COMMIT round trips.
        row = db.fetch_one("verification.record", _RECORD_SQL, params)
    else:
        with db.transaction() as conn:
            ensure_audit_month(conn, now)
            row = db.fetch_one("verification.record", _RECORD_SQL, params, conn=conn)
    assert row is not None
    if row["touched"]:
        # last_seen_at changed, and agent lists show it.
        cache_hooks.agent_list_changed()
    return row["event_id"]


def _record_with_alert(db, organization_id, agent_id, fields, outcome: _Outcome, risk_class, trust_score,
                       actor: Actor, started: float, agent_name: str | None = None) -> tuple[uuid.UUID, float]:
    """Record a denial that raises an alert and recalculates trust, all in one transaction."""
    with db.transaction() as conn:
        ensure_audit_month(conn, datetime.now(timezone.utc))
        event_id = uuid.uuid4()
        params = _event_params(organization_id, agent_id, fields, outcome, risk_class, trust_score, actor, started,
                               event_id, store_nonce=outcome.nonce_stored)
        recorded = db.fetch_value("verification.record", _RECORD_SQL, params, conn=conn)
        if recorded is None:
            outcome = _Outcome("replay", "this nonce was already used by this agent")
            event_id = uuid.uuid4()
            params = _event_params(organization_id, agent_id, fields, outcome, risk_class, trust_score, actor,
                                   started, event_id, store_nonce=False)
            db.fetch_value("verification.record", _RECORD_SQL, params, conn=conn)
        alert_type, severity, title = ALERTING_REASONS[outcome.reason]
        alerts.raise_alert(
            db, conn, organization_id, alert_type=alert_type, severity=severity,
            # Named for the analyst reading the alert list; resource_id keeps the agent's id.
            title=f"{title} from agent {agent_name or agent_id}", description=outcome.detail,
            resource_type="agent", resource_id=str(agent_id), related_agent_ids=[agent_id],
            details={"action": fields["action"], "verification_id": str(event_id)},
        )
        score = trust.recalculate_agent(
            db, organization_id, agent_id, reason=f"verification denied: {outcome.reason}",
            actor=system("verification").label, conn=conn,
        )
    return event_id, float(score.score)


def mark_trust_dirty(client: redis.Redis, prefix: str, agent_id: uuid.UUID) -> None:
    """Queue the agent for the periodic trust job; a Redis failure only delays the recalculation."""
    try:
        client.sadd(f"{prefix}trust:dirty", str(agent_id))
    except redis.RedisError as exc:
        _redis_warning.warning("could not queue agent %s for trust recalculation: %s", agent_id, exc)
