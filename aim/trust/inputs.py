"""The raw counts behind one agent's trust factors, and their mapping to factor results."""

from __future__ import annotations

from dataclasses import dataclass, field

from aim.trust import factors


@dataclass(frozen=True)
class FactorInputs:
    """Counts for one agent at one scoring time, as `aim.trust.gather` reads them.

    Event counts cover the `factors.EVENT_WINDOW_DAYS` days up to the scoring time. Bit i of
    `activity_mask` is set when the agent was seen in the i-th one-day window before that time.
    """

    age_seconds: float
    signatures_total: int = 0
    signatures_valid: int = 0
    requests_attempted: int = 0
    requests_allowed: int = 0
    capability_checks: int = 0
    capability_violations: int = 0
    activity_mask: int = 0
    open_alerts: dict[str, int] = field(default_factory=dict)
    drift_events: int = 0
    mcp_connected: bool = False
    rating_count: int = 0
    rating_sum: int = 0


def evaluate_factors(inputs: FactorInputs) -> list[factors.FactorResult]:
    """Compute all eight factors from `inputs`, in the order of `factors.FACTOR_NAMES`."""
    eligible = factors.uptime_eligible_windows(inputs.age_seconds)
    seen = factors.active_windows(inputs.activity_mask, eligible)
    return [
        factors.verification(inputs.signatures_valid, inputs.signatures_total),
        factors.uptime(seen, eligible),
        factors.success_rate(inputs.requests_allowed, inputs.requests_attempted),
        factors.security_alerts(inputs.open_alerts),
        factors.compliance(inputs.capability_violations, inputs.capability_checks),
        factors.age(inputs.age_seconds / 86_400),
        factors.drift(inputs.drift_events, inputs.mcp_connected),
        factors.feedback(inputs.rating_count, inputs.rating_sum),
    ]
