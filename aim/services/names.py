"""Display names of agents, MCP servers and other named records."""

from __future__ import annotations

from aim.errors import ValidationError


def validate_display_name(value: object, field: str, max_length: int) -> str:
    """Return `value` without surrounding spaces, or raise ValidationError naming `field`.

    A display name is a string of 1 to `max_length` characters after stripping, with no control
    characters.
    """
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string of 1 to {max_length} characters")
    name = value.strip()
    if not 1 <= len(name) <= max_length:
        raise ValidationError(field, f"has {len(name)} characters; expected 1 to {max_length}")
    if any(ord(ch) < 32 for ch in name):
        raise ValidationError(field, "contains control characters; expected printable text")
    return name
