"""Exceptions of the AIM client."""

from __future__ import annotations

from typing import Any


class AIMClientError(Exception):
    """Base class of every error the client raises on purpose."""


class APIError(AIMClientError):
    """The API returned a 4xx or 5xx problem. `problem` is the RFC 9457 body (may be empty)."""

    def __init__(self, status: int, title: str, detail: str, problem: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.problem = problem or {}

    @property
    def reason(self) -> str | None:
        """The problem's machine-readable reason, such as `expired_token` or `replay`, if any."""
        return self.problem.get("reason")

    @property
    def field(self) -> str | None:
        """The first offending input named by a validation problem, if any."""
        return self.problem.get("field")


class ActionDenied(AIMClientError):
    """AIM denied a verified action. `reason` is the verification reason, such as `capability_not_granted`."""

    def __init__(self, action: str, reason: str, detail: str, verification_id: str | None = None) -> None:
        super().__init__(f"{action} denied: {reason} ({detail})")
        self.action = action
        self.reason = reason
        self.detail = detail
        self.verification_id = verification_id


class KeyStoreError(AIMClientError):
    """The agent key store is unsafe to read (mode), unreadable, malformed, or lacks the agent."""
