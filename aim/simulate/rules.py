"""The verifier's decision rules, applied to planned actions without sending them.

The backfill writes history in bulk, so it cannot call `verification.verify` for each row (that
stamps events with the current time). It decides each row with these rules instead. They use the
same building blocks as the verifier (`grants`, `classify`, `risk_threshold`) in the same order:
signature, timestamp, nonce, status, capability, trust. The backfill also really signs a sample
of requests and checks their signatures (see `aim.simulate.backfill`).
"""

from __future__ import annotations

from typing import Iterable

from aim import trust
from aim.services.capabilities import grants
from aim.simulate.scenario import REPLAYED_NONCE, STALE_TIMESTAMP, TAMPERED_SIGNATURE

# Reasons decided after the nonce check, so the verifier stores the request's nonce with the event.
NONCE_STORED_REASONS = frozenset({"agent_not_verified", "capability_not_granted", "trust_below_threshold", "ok"})
# Reasons decided before the signature was found valid.
INVALID_SIGNATURE_REASONS = frozenset({"bad_signature", "unknown_key"})


def expected_reason(
    kind: str, *, status: str, capabilities: Iterable[str], action: str, risk_class: str, trust_score: float
) -> str:
    """Return the reason the verifier gives a request of planned `kind` (`ok` when allowed)."""
    if kind == TAMPERED_SIGNATURE:
        return "bad_signature"
    if kind == STALE_TIMESTAMP:
        return "stale_timestamp"
    if kind == REPLAYED_NONCE:
        return "replay"
    if status != "verified":
        return "agent_not_verified"
    if not grants(capabilities, action):
        return "capability_not_granted"
    if trust_score < trust.risk_threshold(risk_class):
        return "trust_below_threshold"
    return "ok"


def denial_detail(reason: str, action: str) -> str:
    """Return the verifier's detail text for an alerting denial `reason` of `action`."""
    if reason == "bad_signature":
        return "the signature does not verify with the agent's current or grace-period key"
    if reason == "replay":
        return "this nonce was already used by this agent"
    if reason == "capability_not_granted":
        return f"no granted capability covers {action!r}"
    return reason
