"""Map action names such as `db:read` to risk classes, with per-organization overrides.

Rules are shell-style patterns (`fnmatch`), checked in order: the organization's overrides from
`organizations.settings["risk_classes"]` first, then the defaults below. The first match wins, and
an action that matches nothing is `medium`.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from typing import Any, Mapping

from aim.errors import ValidationError
from aim.trust import RISK_CLASSES

DEFAULT_RISK_CLASS = "medium"
DEFAULT_RULES: tuple[tuple[str, str], ...] = (
    ("secrets:*", "critical"),
    ("payments:*", "critical"),
    ("*:admin", "critical"),
    ("*:delete", "high"),
    ("*:execute", "high"),
    ("*:deploy", "high"),
    ("*:write", "medium"),
    ("*:update", "medium"),
    ("*:create", "medium"),
    ("*:read", "low"),
    ("*:list", "low"),
    ("*:search", "low"),
)
MAX_OVERRIDES = 200


def validate_overrides(value: Any, field: str = "risk_classes") -> dict[str, str]:
    """Check an override mapping {pattern: class}; raise ValidationError naming the bad entry."""
    if not isinstance(value, Mapping):
        raise ValidationError(field, 'expected an object such as {"db:*": "high"}')
    if len(value) > MAX_OVERRIDES:
        raise ValidationError(field, f"has {len(value)} rules; expected at most {MAX_OVERRIDES}")
    clean: dict[str, str] = {}
    for pattern, risk_class in value.items():
        if not isinstance(pattern, str) or not 1 <= len(pattern) <= 128:
            raise ValidationError(f"{field}.{pattern}", "expected an action pattern of 1 to 128 characters")
        if risk_class not in RISK_CLASSES:
            raise ValidationError(
                f"{field}.{pattern}", f"{risk_class!r} is invalid; expected one of {', '.join(RISK_CLASSES)}"
            )
        clean[pattern] = risk_class
    return clean


def classify(action: str, overrides: Mapping[str, str] | None = None) -> str:
    """Return the risk class of `action` under the organization's `overrides` and the defaults."""
    for pattern, risk_class in (overrides or {}).items():
        if fnmatchcase(action, pattern):
            return risk_class
    for pattern, risk_class in DEFAULT_RULES:
        if fnmatchcase(action, pattern):
            return risk_class
    return DEFAULT_RISK_CLASS
