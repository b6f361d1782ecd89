"""Traffic targets: the seam between the live action loop and AIM.

`TrafficTarget` is what the action loop calls. `LocalTarget` calls the services in this process
(`aim.services.verification.verify` and `aim.services.mcp_servers.attest`). A target that sends
the same signed requests over HTTP to `POST /api/v1/agents/{id}/verify` and the attestation
endpoint implements the same two methods and returns the same `Outcome`s, so `--via-api URL` only
has to construct a different target.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Mapping, Protocol

from aim.errors import PermissionDenied, ValidationError
from aim.runtime import Runtime

logger = logging.getLogger(__name__)

VERIFICATION = "verification"
ATTESTATION = "attestation"


@dataclass(frozen=True)
class Outcome:
    """The result of one request.

    For a verification, `decision` is `allowed` or `denied` and `reason` is the verifier's reason
    (`ok`, `bad_signature`, `replay`, ...). For an attestation, `decision` is `accepted` or
    `rejected`, `reason` is `ok` or the rejection reason, and `drift` tells whether the server's
    capability set changed. A request the service rejected as malformed has reason `invalid_request`.
    """

    kind: str
    decision: str
    reason: str
    drift: bool = False


class TrafficTarget(Protocol):
    def verify(self, agent_id: uuid.UUID, request: Mapping[str, Any]) -> Outcome:
        """Send one signed verification request and return the decision."""

    def attest(self, server_id: uuid.UUID, request: Mapping[str, Any]) -> Outcome:
        """Send one signed attestation of MCP server `server_id` and return whether it was stored."""


class LocalTarget:
    """Calls the verification and MCP services in this process, on `runtime`'s database and Redis."""

    def __init__(self, runtime: Runtime, organization_id: uuid.UUID) -> None:
        self.runtime = runtime
        self.organization_id = organization_id

    def verify(self, agent_id: uuid.UUID, request: Mapping[str, Any]) -> Outcome:
        from aim.services import verification

        rt = self.runtime
        try:
            decision = verification.verify(
                rt.db, rt.redis, rt.settings.redis_prefix, self.organization_id, agent_id, request
            )
        except ValidationError as exc:
            logger.warning("verification request of agent %s rejected as malformed: %s", agent_id, exc)
            return Outcome(VERIFICATION, "denied", "invalid_request")
        return Outcome(VERIFICATION, decision.decision, decision.reason)

    def attest(self, server_id: uuid.UUID, request: Mapping[str, Any]) -> Outcome:
        from aim.services import mcp_servers

        rt = self.runtime
        try:
            result = mcp_servers.attest(
                rt.db, rt.redis, rt.settings.redis_prefix, self.organization_id, server_id, request
            )
        except mcp_servers.AttestationRejected as rejected:
            return Outcome(ATTESTATION, "rejected", rejected.reason)
        except PermissionDenied:
            return Outcome(ATTESTATION, "rejected", "agent_not_verified")
        except ValidationError as exc:
            logger.warning("attestation of MCP server %s rejected as malformed: %s", server_id, exc)
            return Outcome(ATTESTATION, "rejected", "invalid_request")
        return Outcome(ATTESTATION, "accepted", "ok", drift=result.drift)


class HttpTarget:
    """Sends the same signed requests to a running AIM API, so its latency panels show real requests.

    It authenticates with an API key. Rejections come back as problem+json bodies whose `reason`
    field carries the verifier's reason.
    """

    def __init__(self, base_url: str, api_key: str, timeout_s: float = 10.0) -> None:
        import httpx

        self.base_url = base_url.rstrip("/")
        # trust_env=False keeps proxies from environment variables away from a loopback API.
        self._client = httpx.Client(
            base_url=self.base_url, headers={"Authorization": f"Bearer {api_key}"}, timeout=timeout_s,
            trust_env=False,
        )

    def close(self) -> None:
        self._client.close()

    def verify(self, agent_id: uuid.UUID, request: Mapping[str, Any]) -> Outcome:
        response = self._client.post(f"/api/v1/agents/{agent_id}/verify", json=dict(request))
        if response.status_code == 200:
            body = response.json()
            return Outcome(VERIFICATION, body["decision"], body["reason"])
        logger.warning("verify of agent %s returned HTTP %d: %s", agent_id, response.status_code, response.text[:200])
        return Outcome(VERIFICATION, "denied", _problem_reason(response, "invalid_request"))

    def attest(self, server_id: uuid.UUID, request: Mapping[str, Any]) -> Outcome:
        response = self._client.post(f"/api/v1/mcp-servers/{server_id}/attest", json=dict(request))
        if response.status_code in (200, 201):
            body = response.json()
            return Outcome(ATTESTATION, "accepted", "ok", drift=bool(body.get("drift")))
        if response.status_code == 403:
            return Outcome(ATTESTATION, "rejected", "agent_not_verified")
        return Outcome(ATTESTATION, "rejected", _problem_reason(response, "invalid_request"))


def _problem_reason(response: Any, default: str) -> str:
    try:
        return str(response.json().get("reason") or default)
    except ValueError:
        return default
