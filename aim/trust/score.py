"""Combine factor results into one trust score in [0, 1].

Measured factors are averaged with their weights renormalised to sum to 1. The result is then
capped at the score the agent would get if every `no data` factor were 0.5, so hiding a factor can
only move the score towards what a neutral 0.5 would give, never above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any, Iterable

from aim.errors import ValidationError
from aim.trust import factors
from aim.trust.factors import FactorResult

# Value assumed for each missing factor when computing the cap.
NO_DATA_SUBSTITUTE = 0.5

# agents.trust_score is numeric(5, 4).
SCORE_QUANTUM = Decimal("0.0001")

# Float noise when weights do not sum to exactly 1 must not flag a score as capped.
_CAP_TOLERANCE = 1e-12


@dataclass(frozen=True)
class TrustScore:
    """A trust score rounded to 4 decimals, the eight factors behind it, and whether the cap applied.

    `capped` is True when the no-data cap lowered the renormalised score, or when no factor was
    measured and the score is the cap itself.
    """

    score: float
    factors: tuple[FactorResult, ...]
    capped: bool

    def factors_json(self) -> dict[str, dict[str, Any]]:
        """Return the factors keyed by name, as stored in `agents.trust_factors`."""
        return {factor.name: factor.to_json() for factor in self.factors}

    def factor(self, name: str) -> FactorResult:
        """Return the factor called `name`."""
        for factor in self.factors:
            if factor.name == name:
                return factor
        raise ValidationError("name", f"unknown trust factor {name!r}; expected one of {', '.join(factors.FACTOR_NAMES)}")


def round_score(value: float) -> float:
    """Round to 4 decimals, half away from zero as PostgreSQL numeric does, and clamp to [0, 1]."""
    # Rounding the shortest decimal repr, not the exact binary value, rounds 0.85005 up to 0.8501.
    rounded = float(Decimal(str(value)).quantize(SCORE_QUANTUM, rounding=ROUND_HALF_UP))
    return min(1.0, max(0.0, rounded))


def _validate(factor: FactorResult) -> None:
    if factor.name not in factors.WEIGHTS:
        raise ValidationError(
            "factors", f"unknown trust factor {factor.name!r}; expected one of {', '.join(factors.FACTOR_NAMES)}"
        )
    if factor.weight != factors.WEIGHTS[factor.name]:
        raise ValidationError(
            factor.name, f"weight {factor.weight} differs from the defined weight {factors.WEIGHTS[factor.name]}"
        )
    if factor.provenance == factors.MEASURED:
        if factor.value is None or math.isnan(factor.value) or not 0.0 <= factor.value <= 1.0:
            raise ValidationError(factor.name, f"measured value {factor.value!r} is invalid; expected 0 to 1")
    elif factor.provenance == factors.NO_DATA:
        if factor.value is not None:
            raise ValidationError(factor.name, f"value {factor.value!r} given with provenance 'no data'; expected None")
    else:
        raise ValidationError(
            factor.name, f"unknown provenance {factor.provenance!r}; expected one of {', '.join(factors.PROVENANCES)}"
        )


def combine(results: Iterable[FactorResult]) -> TrustScore:
    """Combine factor results into a `TrustScore`.

    A factor that is absent from `results` counts as `no data`. Raises `ValidationError` for an
    unknown or repeated factor name, a weight that differs from `factors.WEIGHTS`, or a value that
    does not match its provenance.
    """
    by_name: dict[str, FactorResult] = {}
    for factor in results:
        _validate(factor)
        if factor.name in by_name:
            raise ValidationError("factors", f"trust factor {factor.name!r} given twice; expected each at most once")
        by_name[factor.name] = factor

    complete = tuple(
        by_name.get(name) or factors.no_data(name, "not evaluated") for name in factors.FACTOR_NAMES
    )
    measured = [factor for factor in complete if factor.measured]
    measured_weight = math.fsum(factor.weight for factor in measured)
    missing_weight = math.fsum(factor.weight for factor in complete if not factor.measured)
    weighted_sum = math.fsum(factor.weight * factor.value for factor in measured)

    cap = weighted_sum + NO_DATA_SUBSTITUTE * missing_weight
    if measured_weight == 0.0:
        return TrustScore(round_score(cap), complete, True)

    renormalised = weighted_sum / measured_weight
    capped = renormalised - cap > _CAP_TOLERANCE
    return TrustScore(round_score(min(renormalised, cap)), complete, capped)
