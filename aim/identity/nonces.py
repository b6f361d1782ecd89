"""Request nonces: generation and format validation.

A nonce makes each signed request unique, so the verifier can reject a replay. Only the format is
checked here, and the verifier keeps the record of used nonces.
"""

from __future__ import annotations

import re
import secrets

from aim.errors import ValidationError

NONCE_BYTES = 16  # 128 bits from the CSPRNG, 22 characters of base64url
NONCE_MIN_LENGTH = 16
NONCE_MAX_LENGTH = 128

# The URL-safe base64 alphabet. It also covers hex digits and UUIDs, the other nonces clients send.
_NONCE_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_EXPECTED = (
    f"expected {NONCE_MIN_LENGTH} to {NONCE_MAX_LENGTH} characters from A-Z, a-z, 0-9, '-' and '_', "
    "such as 22 characters of base64url from 16 random bytes"
)


def new_nonce() -> str:
    """Return a new nonce of 128 random bits as unpadded base64url (22 characters)."""
    return secrets.token_urlsafe(NONCE_BYTES)


def validate_nonce(value: object, field: str = "nonce") -> str:
    """Return `value` when it is a well-formed nonce, else raise `ValidationError(field, ...)`."""
    if not isinstance(value, str):
        raise ValidationError(field, f"{_EXPECTED}; got a value of type {type(value).__name__}")
    if not NONCE_MIN_LENGTH <= len(value) <= NONCE_MAX_LENGTH:
        raise ValidationError(field, f"{_EXPECTED}; got {len(value)} characters")
    if _NONCE_PATTERN.fullmatch(value) is None:
        position, char = next((i, c) for i, c in enumerate(value) if _NONCE_PATTERN.fullmatch(c) is None)
        raise ValidationError(field, f"{_EXPECTED}; got {char!r} at position {position}")
    return value
