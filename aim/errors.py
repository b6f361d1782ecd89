"""The AIM exception tree.

Fronts map these to their own forms: the API to `application/problem+json` bodies, the dashboard to
an in-page message, the CLI to one line on stderr.
"""

from __future__ import annotations


class AIMError(Exception):
    """Base class of every error AIM raises on purpose."""


class ConfigError(AIMError):
    """An AIM_* environment variable has a bad value."""


class BackendUnavailable(AIMError):
    """PostgreSQL or Redis could not be reached or started."""


class MigrationError(AIMError):
    """A schema migration failed or the migration files are inconsistent."""


class ValidationError(AIMError):
    """Input failed validation. `field` names the offending input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidCursor(ValidationError):
    """A keyset cursor was tampered with, truncated, or issued for another query."""

    def __init__(self, message: str) -> None:
        super().__init__("cursor", message)


class NotFound(AIMError):
    """The resource does not exist in the caller's organization."""

    def __init__(self, resource: str, resource_id: object) -> None:
        super().__init__(f"{resource} {resource_id} not found")
        self.resource = resource
        self.resource_id = resource_id


class Conflict(AIMError):
    """The change collides with existing state, such as a duplicate name or URL."""


class PermissionDenied(AIMError):
    """The caller's role or scope does not allow the action."""
