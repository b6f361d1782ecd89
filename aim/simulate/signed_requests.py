"""Signed verification requests and MCP attestations, as a real agent client builds them.

Each function signs the RFC 8785 form of the fields with the agent's Ed25519 key through
`aim.identity.sign_request`, the same code the Python client uses. The misbehaving variants change a
correctly built request the way an attacker or a broken client would.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from aim import identity
from aim.simulate.scenario import SimAgent, SimServer

# Offset of a stale timestamp: twice the verifier's 300 s tolerance, so it is rejected whatever the
# clock difference between the simulator and the server.
STALE_OFFSET = timedelta(minutes=10)


def rfc3339(moment: datetime) -> str:
    """Return `moment` as RFC 3339 in UTC with milliseconds, such as 2026-01-31T12:00:00.000Z."""
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def verification_request(
    agent: SimAgent, action: str, resource: str, *, timestamp: datetime, nonce: str
) -> dict[str, Any]:
    """Return a verification request for `action` on `resource`, signed with the agent's key."""
    fields: dict[str, Any] = {
        "agent_id": str(agent.agent_id),
        "action": action,
        "resource": resource,
        "timestamp": rfc3339(timestamp),
        "nonce": nonce,
        "key_id": agent.key_id,
    }
    fields["signature"] = identity.sign_request(agent.private_key, fields)
    return fields


def tampered(request: dict[str, Any]) -> dict[str, Any]:
    """Return a copy of a signed request whose resource was changed after signing."""
    changed = dict(request)
    changed["resource"] = f"{request.get('resource', '')}/export-all"
    return changed


def stale_request(agent: SimAgent, action: str, resource: str, *, now: datetime, nonce: str) -> dict[str, Any]:
    """Return a correctly signed request whose timestamp lies `STALE_OFFSET` before `now`."""
    return verification_request(agent, action, resource, timestamp=now - STALE_OFFSET, nonce=nonce)


def attestation_request(
    agent: SimAgent, server: SimServer, capabilities: list[str], *, healthy: bool, timestamp: datetime, nonce: str
) -> dict[str, Any]:
    """Return a signed attestation that `server` exposes `capabilities`.

    `latency_ms` is left out because the simulator does not connect to the servers, and a latency
    it did not measure must not be reported.
    """
    fields: dict[str, Any] = {
        "agent_id": str(agent.agent_id),
        "mcp_server_id": str(server.server_id),
        "capabilities_found": sorted(capabilities),
        "healthy": healthy,
        "timestamp": rfc3339(timestamp),
        "nonce": nonce,
        "key_id": agent.key_id,
    }
    fields["signature"] = identity.sign_request(agent.private_key, fields)
    return fields
