"""The eight trust factors as pure functions of plain counts.

Each function returns a `FactorResult` whose value is in [0, 1], or None with provenance `no data`
when nothing was observed. Inputs that cannot occur (negative counts, a part larger than its whole)
raise `ValidationError` naming the argument. The functions never read the clock or the database:
`aim.trust.gather` collects the counts and `aim.trust.score` turns the results into a score.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from aim.errors import ValidationError

MEASURED = "measured"
NO_DATA = "no data"
PROVENANCES = (MEASURED, NO_DATA)

VERIFICATION = "verification"
UPTIME = "uptime"
SUCCESS_RATE = "success_rate"
SECURITY_ALERTS = "security_alerts"
COMPLIANCE = "compliance"
AGE = "age"
DRIFT = "drift"
FEEDBACK = "feedback"

# Base weights, which sum to 1. A factor without data drops out and the rest are renormalised.
WEIGHTS: dict[str, float] = {
    VERIFICATION: 0.25,
    UPTIME: 0.15,
    SUCCESS_RATE: 0.15,
    SECURITY_ALERTS: 0.15,
    COMPLIANCE: 0.10,
    AGE: 0.10,
    DRIFT: 0.05,
    FEEDBACK: 0.05,
}
FACTOR_NAMES = tuple(WEIGHTS)

# Verification, success rate and compliance look at this many days of verification events.
EVENT_WINDOW_DAYS = 30

# Uptime splits the last UPTIME_WINDOWS days into one-day windows counted back from the scoring time.
UPTIME_WINDOW_SECONDS = 86_400
UPTIME_WINDOWS = 7

# An identity reaches the full age factor after this many days.
AGE_FULL_DAYS = 90

# Penalty per unresolved alert. Five open low alerts, or two critical ones, take the factor to 0.
ALERT_SEVERITY_PENALTIES: dict[str, float] = {
    "critical": 0.5,
    "high": 0.25,
    "medium": 0.1,
    "low": 0.05,
    "info": 0.0,
}

# Penalty per drift event, so four events take the factor to 0.
DRIFT_EVENT_PENALTY = 0.25


@dataclass(frozen=True)
class FactorResult:
    """One factor's outcome: `value` in [0, 1], or None when `provenance` is `no data`.

    `weight` is the base weight from `WEIGHTS`, before renormalisation. `detail` is a short
    sentence for people, such as "48 of 50 signatures valid in the last 30 days".
    """

    name: str
    value: float | None
    provenance: str
    weight: float
    detail: str

    @property
    def measured(self) -> bool:
        return self.provenance == MEASURED

    def to_json(self) -> dict[str, Any]:
        """Return the JSON object stored per factor in `agents.trust_factors` and the history."""
        value = None if self.value is None else round(self.value, 4)
        return {"value": value, "provenance": self.provenance, "weight": self.weight, "detail": self.detail}


def measured(name: str, value: float, detail: str) -> FactorResult:
    """Build a measured result for factor `name`, clamping `value` into [0, 1]."""
    if name not in WEIGHTS:
        raise ValidationError("name", f"unknown trust factor {name!r}; expected one of {', '.join(FACTOR_NAMES)}")
    if math.isnan(value):
        raise ValidationError(name, "factor value is NaN; expected a number from 0 to 1")
    return FactorResult(name, min(1.0, max(0.0, value)), MEASURED, WEIGHTS[name], detail)


def no_data(name: str, detail: str) -> FactorResult:
    """Build a `no data` result for factor `name`."""
    if name not in WEIGHTS:
        raise ValidationError("name", f"unknown trust factor {name!r}; expected one of {', '.join(FACTOR_NAMES)}")
    return FactorResult(name, None, NO_DATA, WEIGHTS[name], detail)


def _check_count(field: str, count: int) -> None:
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        raise ValidationError(field, f"invalid count {count!r}; expected a whole number >= 0")


def _check_part(part_field: str, part: int, total_field: str, total: int) -> None:
    _check_count(part_field, part)
    _check_count(total_field, total)
    if part > total:
        raise ValidationError(part_field, f"{part} is larger than {total_field}={total}; expected at most {total}")


def verification(valid_signatures: int, total_events: int) -> FactorResult:
    """Score the share of verification events with a valid signature over the event window.

    Every event counts, whatever its decision, so forged or malformed requests in the agent's name
    lower the factor. No events means no data.
    """
    _check_part("valid_signatures", valid_signatures, "total_events", total_events)
    if total_events == 0:
        return no_data(VERIFICATION, f"no verification events in the last {EVENT_WINDOW_DAYS} days")
    return measured(
        VERIFICATION,
        valid_signatures / total_events,
        f"{valid_signatures} of {total_events} signatures valid in the last {EVENT_WINDOW_DAYS} days",
    )


def uptime_eligible_windows(age_seconds: float) -> int:
    """Return how many of the uptime windows lie wholly inside the agent's lifetime.

    Windows count back from the scoring time, so an agent aged 2.5 days has 2 eligible windows.
    Windows the agent only partly existed in are left out, so a new agent is not marked absent
    for the hours before it was registered.
    """
    if math.isnan(age_seconds) or age_seconds < 0:
        raise ValidationError("age_seconds", f"invalid age {age_seconds!r}; expected seconds >= 0")
    return min(UPTIME_WINDOWS, int(age_seconds // UPTIME_WINDOW_SECONDS))


def active_windows(activity_mask: int, eligible_windows: int) -> int:
    """Count the eligible windows in which the agent was seen.

    Bit i of `activity_mask` is set when the agent was seen between i and i+1 windows before the
    scoring time. Bits at or above `eligible_windows` are ignored.
    """
    _check_count("activity_mask", activity_mask)
    _check_count("eligible_windows", eligible_windows)
    return (activity_mask & ((1 << eligible_windows) - 1)).bit_count()


def uptime(seen_windows: int, eligible_windows: int) -> FactorResult:
    """Score the share of eligible one-day windows in which the agent was seen.

    An agent counts as seen on a heartbeat (`last_seen_at`), a verification request with a valid
    signature, or an MCP attestation. An agent younger than one window has no eligible window and
    so no data.
    """
    _check_part("seen_windows", seen_windows, "eligible_windows", eligible_windows)
    if eligible_windows == 0:
        return no_data(UPTIME, "identity younger than one day; no complete day to measure")
    return measured(UPTIME, seen_windows / eligible_windows, f"seen on {seen_windows} of the last {eligible_windows} days")


def success_rate(allowed: int, attempted: int) -> FactorResult:
    """Score the share of the agent's own requests that were allowed.

    `attempted` counts validly signed requests in the event window, so forgeries by others do not
    count here (they lower the verification factor instead). Denials for `trust_below_threshold`
    are left out of both counts by the caller: counting them would let a low score lower itself
    further each time the agent retried.
    """
    _check_part("allowed", allowed, "attempted", attempted)
    if attempted == 0:
        return no_data(SUCCESS_RATE, f"no signed requests in the last {EVENT_WINDOW_DAYS} days")
    return measured(
        SUCCESS_RATE, allowed / attempted, f"{allowed} of {attempted} requests allowed in the last {EVENT_WINDOW_DAYS} days"
    )


def security_alerts(open_by_severity: Mapping[str, int]) -> FactorResult:
    """Score 1 minus the summed severity penalties of the agent's unresolved alerts, clamped at 0.

    Always measured: every alert AIM raises is in the alerts table, so finding none is a
    measurement and gives 1. Each alert counts once whatever its `occurrences`, so one noisy
    repeated alert does not outweigh several distinct ones.
    """
    penalty = 0.0
    parts = []
    for severity, count in open_by_severity.items():
        if severity not in ALERT_SEVERITY_PENALTIES:
            raise ValidationError(
                "severity", f"unknown alert severity {severity!r}; expected one of {', '.join(ALERT_SEVERITY_PENALTIES)}"
            )
        _check_count(f"open_by_severity[{severity}]", count)
        if count:
            penalty += ALERT_SEVERITY_PENALTIES[severity] * count
            parts.append(f"{count} {severity}")
    detail = "unresolved alerts: " + ", ".join(parts) if parts else "no unresolved alerts"
    return measured(SECURITY_ALERTS, 1.0 - penalty, detail)


def compliance(violations: int, capability_checks: int) -> FactorResult:
    """Score 1 minus the share of capability checks that failed (`capability_not_granted`).

    `capability_checks` counts requests that reached the capability check in the event window.
    No checks means no data.
    """
    _check_part("violations", violations, "capability_checks", capability_checks)
    if capability_checks == 0:
        return no_data(COMPLIANCE, f"no capability checks in the last {EVENT_WINDOW_DAYS} days")
    return measured(
        COMPLIANCE,
        1.0 - violations / capability_checks,
        f"{violations} capability violations in {capability_checks} checks in the last {EVENT_WINDOW_DAYS} days",
    )


def age(age_days: float) -> FactorResult:
    """Score the identity's age linearly, reaching 1 at `AGE_FULL_DAYS` days. Always measured."""
    if math.isnan(age_days) or age_days < 0:
        raise ValidationError("age_days", f"invalid age {age_days!r}; expected days >= 0")
    return measured(AGE, age_days / AGE_FULL_DAYS, f"identity is {age_days:.1f} days old")


def drift(drift_events: int, mcp_connected: bool) -> FactorResult:
    """Score 1 minus `DRIFT_EVENT_PENALTY` per drift event, clamped at 0.

    Drift events are capability-drift alerts on MCP servers the agent uses that are unresolved or
    were resolved in the event window. An agent that never connected to or attested an MCP server
    and has no drift events has no data, because drift cannot be observed for it.
    """
    _check_count("drift_events", drift_events)
    if not mcp_connected and drift_events == 0:
        return no_data(DRIFT, "never connected to an MCP server")
    return measured(DRIFT, 1.0 - DRIFT_EVENT_PENALTY * drift_events, f"{drift_events} drift events")


def feedback(rating_count: int, rating_sum: int) -> FactorResult:
    """Score the mean analyst rating mapped from 1..5 onto 0..1, as mean(rating - 1) / 4.

    Every rating counts, whatever its age. No ratings means no data.
    """
    _check_count("rating_count", rating_count)
    _check_count("rating_sum", rating_sum)
    if rating_count == 0:
        if rating_sum != 0:
            raise ValidationError("rating_sum", f"{rating_sum} with no ratings; expected 0")
        return no_data(FEEDBACK, "no analyst ratings")
    if not rating_count <= rating_sum <= 5 * rating_count:
        raise ValidationError(
            "rating_sum",
            f"{rating_sum} is impossible for {rating_count} ratings of 1 to 5; "
            f"expected {rating_count} to {5 * rating_count}",
        )
    mean = rating_sum / rating_count
    return measured(FEEDBACK, (mean - 1.0) / 4.0, f"mean rating {mean:.2f} of 5 from {rating_count} ratings")
