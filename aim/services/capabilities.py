"""Capability strings such as `db:read`, and prefix grants such as `db:*`."""

from __future__ import annotations

import re
from typing import Iterable

from aim.errors import ValidationError

MAX_CAPABILITY_LENGTH = 128
# Letters, digits and `_ . : / -`, optionally ending in `*` to grant every capability with that prefix.
CAPABILITY_PATTERN = re.compile(r"^(?:[A-Za-z0-9_.:/-]+\*?|\*)$")
EXPECTED_FORM = "letters, digits and _ . : / -, optionally ending in * (for example db:read or db:*)"


def validate_capability(value: object, field: str = "capability") -> str:
    """Return `value` when it is a well-formed capability, else raise ValidationError naming `field`."""
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string of {EXPECTED_FORM}; got {type(value).__name__}")
    if not value or len(value) > MAX_CAPABILITY_LENGTH:
        raise ValidationError(
            field, f"{value!r} has {len(value)} characters; expected 1 to {MAX_CAPABILITY_LENGTH}"
        )
    if not CAPABILITY_PATTERN.match(value):
        raise ValidationError(field, f"{value!r} is invalid; expected {EXPECTED_FORM}")
    return value


def validate_capabilities(values: Iterable[object], field: str = "capabilities") -> list[str]:
    """Validate each capability and return them sorted without duplicates."""
    result = set()
    for index, value in enumerate(values):
        result.add(validate_capability(value, f"{field}[{index}]"))
    return sorted(result)


def grants(granted: Iterable[str], requested: str) -> bool:
    """Return True when any granted capability covers `requested`; `db:*` covers `db:read`."""
    for capability in granted:
        if capability == requested:
            return True
        if capability.endswith("*") and requested.startswith(capability[:-1]):
            return True
    return False
