"""Canonical bytes of a signed request (RFC 8785, JSON Canonicalization Scheme).

The signature covers the request fields without `signature`, serialised by the `rfc8785` package.
It sorts object keys by their UTF-16 code units and writes no whitespace. Strings are UTF-8 with
minimal escaping, and numbers take the ECMAScript shortest round-trip form (`1.0` becomes `1`,
`1e21` becomes `1e+21`). Client and server must produce identical bytes, so nothing here may add,
drop or coerce values beyond removing `signature`.
"""

from __future__ import annotations

from collections.abc import Mapping

import rfc8785

from aim.errors import ValidationError

SIGNATURE_FIELD = "signature"

_EXPECTED_VALUES = (
    "expected a JSON object of strings, integers within +/-(2**53 - 1), finite floats, booleans, "
    "null, lists and objects with string keys"
)


def canonical_request(fields: Mapping[str, object], field: str = "request") -> bytes:
    """Return the RFC 8785 bytes of `fields` without its top-level `signature` entry.

    Raise `ValidationError(field, ...)` when `fields` is not a mapping or contains a value that
    RFC 8785 cannot represent, such as NaN, an integer beyond 2**53 - 1, bytes or a non-string key.
    """
    if not isinstance(fields, Mapping):
        raise ValidationError(field, f"{_EXPECTED_VALUES}; got a value of type {type(fields).__name__}")
    unsigned = {key: value for key, value in fields.items() if key != SIGNATURE_FIELD}
    try:
        return rfc8785.dumps(unsigned)
    except rfc8785.CanonicalizationError as exc:
        raise ValidationError(field, f"{_EXPECTED_VALUES}; got a value that RFC 8785 rejects: {exc}") from None
