"""Parts shared by the sync and async clients: signed bodies, the retry policy and response handling.

Requests are retried with exponential backoff and jitter (tenacity) on connection errors, timeouts
and 503 responses, and never on any 4xx. A signed body is built anew for every attempt, with a fresh
nonce and timestamp, because a retry of a request the server did receive would otherwise be
refused as a replay.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterable

import httpx
import tenacity

from aim import identity
from aim.client.errors import APIError

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_RETRIES = 3
BACKOFF_INITIAL_S = 0.2
BACKOFF_MAX_S = 5.0
USER_AGENT = "aim-client/1"

BodyFactory = Callable[[], dict[str, Any] | None]


class RetryableStatus(Exception):
    """A 503 response, raised inside the retry loop so tenacity retries it."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def _is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, (httpx.TransportError, RetryableStatus))


def _log_retry(state: tenacity.RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    sleep = state.next_action.sleep if state.next_action else 0.0
    logger.warning("AIM request failed (%s), attempt %d; retrying in %.2f s", exc, state.attempt_number, sleep)


def retry_policy(retries: int, *, asynchronous: bool = False) -> tenacity.BaseRetrying:
    """Build the tenacity policy: `retries` retries after the first attempt, backoff 0.2 s doubling to 5 s, with jitter."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries={retries!r} is invalid; expected a whole number >= 0")
    kwargs = dict(
        retry=tenacity.retry_if_exception(_is_retryable),
        stop=tenacity.stop_after_attempt(retries + 1),
        wait=tenacity.wait_random_exponential(multiplier=BACKOFF_INITIAL_S, max=BACKOFF_MAX_S),
        before_sleep=_log_retry,
        reraise=True,
    )
    return tenacity.AsyncRetrying(**kwargs) if asynchronous else tenacity.Retrying(**kwargs)


def raise_for_problem(response: httpx.Response) -> None:
    """Raise APIError for a 4xx or 5xx response, with the problem details when the body has them."""
    if response.status_code < 400:
        return
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {}
    title = str(problem.get("title") or response.reason_phrase or "HTTP error")
    detail = str(problem.get("detail") or response.text[:200] or "no detail")
    raise APIError(response.status_code, title, detail, problem)


def decode(response: httpx.Response) -> Any:
    raise_for_problem(response)
    if response.status_code == 204 or not response.content:
        return None
    return response.json()


def timestamp_now() -> str:
    """Return the current time in RFC 3339 with a Z suffix, a form the verifier accepts."""
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def signed_verification(agent_id: uuid.UUID, key_id: str, private_key: object, action: str, resource: str,
                        context: dict[str, Any] | None, timestamp: str | None = None) -> dict[str, Any]:
    """Build a verification request signed over its RFC 8785 form, with a fresh nonce.

    The timestamp is the current time unless `timestamp` (RFC 3339) gives the time the request is
    planned to be sent. The server accepts a timestamp within 300 s of its clock.
    """
    fields: dict[str, Any] = {"agent_id": str(agent_id), "action": action, "resource": resource,
                              "timestamp": timestamp or timestamp_now(), "nonce": identity.new_nonce(),
                              "key_id": key_id}
    if context is not None:
        fields["context"] = context
    fields["signature"] = identity.sign_request(private_key, fields)
    return fields


def signed_attestation(agent_id: uuid.UUID, key_id: str, private_key: object, server_id: str,
                       capabilities_found: Iterable[str], latency_ms: float | None, healthy: bool) -> dict[str, Any]:
    """Build an MCP attestation signed over its RFC 8785 form, with a fresh nonce and timestamp."""
    fields: dict[str, Any] = {
        "agent_id": str(agent_id), "mcp_server_id": str(server_id), "capabilities_found": sorted(set(capabilities_found)),
        "healthy": bool(healthy), "latency_ms": latency_ms, "timestamp": timestamp_now(),
        "nonce": identity.new_nonce(), "key_id": key_id,
    }
    fields["signature"] = identity.sign_request(private_key, fields)
    return fields


def as_server_id(url_or_id: str | uuid.UUID) -> str | None:
    """Return the server id when `url_or_id` is a UUID, else None (it is a URL to look up)."""
    try:
        return str(uuid.UUID(str(url_or_id)))
    except ValueError:
        return None


@dataclass(frozen=True)
class VerificationResult:
    """AIM's answer to a verification request."""

    decision: str
    reason: str
    detail: str
    verification_id: str
    risk_class: str
    trust_score: float

    @property
    def allowed(self) -> bool:
        return self.decision == "allowed"

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> "VerificationResult":
        return cls(body["decision"], body["reason"], body.get("detail", ""), body["verification_id"],
                   body.get("risk_class", ""), float(body.get("trust_score", 0.0)))
