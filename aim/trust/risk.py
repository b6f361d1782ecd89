"""Risk classes of actions and the minimum trust score each one requires."""

from __future__ import annotations

import math
from decimal import Decimal

from aim.errors import ValidationError

# Every class is passable by a clean agent: with every factor measured it scores 1.0, and with no
# MCP use and no ratings (drift and feedback missing) it is capped at 0.95. A new clean agent
# passes "high" once it has signed requests (0.775) and "critical" after one full day (0.8511).
RISK_THRESHOLDS: dict[str, float] = {
    "low": 0.30,
    "medium": 0.50,
    "high": 0.70,
    "critical": 0.85,
}
RISK_CLASSES = tuple(RISK_THRESHOLDS)


def risk_threshold(risk_class: str) -> float:
    """Return the minimum trust score for `risk_class`, or raise `ValidationError` for an unknown class."""
    try:
        return RISK_THRESHOLDS[risk_class]
    except (KeyError, TypeError):
        raise ValidationError(
            "risk_class", f"unknown risk class {risk_class!r}; expected one of {', '.join(RISK_CLASSES)}"
        ) from None


def passes(score: float | Decimal, risk_class: str) -> bool:
    """Return whether a trust score of `score` may perform actions of `risk_class`.

    The threshold itself passes. Raises `ValidationError` for an unknown class or a score outside [0, 1].
    """
    threshold = risk_threshold(risk_class)
    value = float(score)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise ValidationError("trust_score", f"invalid trust score {score!r}; expected a number from 0 to 1")
    return value >= threshold
