"""Trust factor curves, their combination and the risk thresholds. No database needed."""

from __future__ import annotations

import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aim.errors import ValidationError
from aim.trust import factors
from aim.trust.factors import MEASURED, NO_DATA, FactorResult
from aim.trust.inputs import FactorInputs, evaluate_factors
from aim.trust.risk import RISK_CLASSES, passes, risk_threshold
from aim.trust.score import NO_DATA_SUBSTITUTE, combine, round_score

DAY = 86_400


def _assert_factor(result: FactorResult, name: str, expected: float | None) -> None:
    assert result.name == name
    assert result.weight == factors.WEIGHTS[name]
    assert result.detail
    if expected is None:
        assert result.value is None
        assert result.provenance == NO_DATA
    else:
        assert result.provenance == MEASURED
        assert result.value == pytest.approx(expected)


def test_weights_sum_to_one():
    assert math.fsum(factors.WEIGHTS.values()) == pytest.approx(1.0)
    assert len(factors.WEIGHTS) == 8


@pytest.mark.parametrize(
    ("valid", "total", "expected"),
    [
        (0, 0, None),
        (0, 1, 0.0),
        (0, 50, 0.0),
        (1, 1, 1.0),
        (50, 50, 1.0),
        (49, 50, 0.98),
        (1, 3, 1 / 3),
    ],
)
def test_verification_cases(valid, total, expected):
    _assert_factor(factors.verification(valid, total), factors.VERIFICATION, expected)


@pytest.mark.parametrize(
    ("seen", "eligible", "expected"),
    [
        (0, 0, None),
        (0, 1, 0.0),
        (1, 1, 1.0),
        (0, 7, 0.0),
        (5, 7, 5 / 7),
        (7, 7, 1.0),
    ],
)
def test_uptime_cases(seen, eligible, expected):
    _assert_factor(factors.uptime(seen, eligible), factors.UPTIME, expected)


@pytest.mark.parametrize(
    ("age_seconds", "expected"),
    [
        (0, 0),
        (DAY - 1, 0),
        (DAY, 1),
        (2.5 * DAY, 2),
        (7 * DAY, 7),
        (400 * DAY, 7),
    ],
)
def test_uptime_eligible_windows(age_seconds, expected):
    assert factors.uptime_eligible_windows(age_seconds) == expected


@pytest.mark.parametrize(
    ("mask", "eligible", "expected"),
    [
        (0, 7, 0),
        (0b1111111, 7, 7),
        (0b1111111, 3, 3),
        (0b1010101, 7, 4),
        (0b1000000, 6, 0),
        (0b1, 0, 0),
    ],
)
def test_active_windows_cases(mask, eligible, expected):
    assert factors.active_windows(mask, eligible) == expected


@pytest.mark.parametrize(
    ("allowed", "attempted", "expected"),
    [
        (0, 0, None),
        (0, 10, 0.0),
        (10, 10, 1.0),
        (9, 10, 0.9),
        (1, 4, 0.25),
    ],
)
def test_success_rate_cases(allowed, attempted, expected):
    _assert_factor(factors.success_rate(allowed, attempted), factors.SUCCESS_RATE, expected)


@pytest.mark.parametrize(
    ("open_alerts", "expected"),
    [
        ({}, 1.0),
        ({"info": 0, "low": 0, "medium": 0, "high": 0, "critical": 0}, 1.0),
        ({"info": 25}, 1.0),
        ({"low": 1}, 0.95),
        ({"medium": 1}, 0.9),
        ({"high": 1}, 0.75),
        ({"critical": 1}, 0.5),
        ({"critical": 2}, 0.0),
        ({"critical": 3}, 0.0),
        ({"low": 20}, 0.0),
        ({"high": 1, "medium": 2, "low": 1}, 0.5),
    ],
)
def test_security_alerts_cases(open_alerts, expected):
    _assert_factor(factors.security_alerts(open_alerts), factors.SECURITY_ALERTS, expected)


@pytest.mark.parametrize(
    ("violations", "checks", "expected"),
    [
        (0, 0, None),
        (0, 10, 1.0),
        (10, 10, 0.0),
        (1, 10, 0.9),
        (1, 1, 0.0),
    ],
)
def test_compliance_cases(violations, checks, expected):
    _assert_factor(factors.compliance(violations, checks), factors.COMPLIANCE, expected)


@pytest.mark.parametrize(
    ("age_days", "expected"),
    [
        (0, 0.0),
        (0.5, 0.5 / 90),
        (45, 0.5),
        (90, 1.0),
        (89.99, 89.99 / 90),
        (1000, 1.0),
    ],
)
def test_age_cases(age_days, expected):
    _assert_factor(factors.age(age_days), factors.AGE, expected)


@pytest.mark.parametrize(
    ("events", "connected", "expected"),
    [
        (0, False, None),
        (0, True, 1.0),
        (1, True, 0.75),
        (2, True, 0.5),
        (4, True, 0.0),
        (9, True, 0.0),
        (1, False, 0.75),
    ],
)
def test_drift_cases(events, connected, expected):
    _assert_factor(factors.drift(events, connected), factors.DRIFT, expected)


@pytest.mark.parametrize(
    ("count", "total", "expected"),
    [
        (0, 0, None),
        (1, 1, 0.0),
        (1, 5, 1.0),
        (3, 15, 1.0),
        (2, 6, 0.5),
        (4, 10, 0.375),
    ],
)
def test_feedback_cases(count, total, expected):
    _assert_factor(factors.feedback(count, total), factors.FEEDBACK, expected)


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: factors.verification(2, 1), "valid_signatures"),
        (lambda: factors.verification(-1, 1), "valid_signatures"),
        (lambda: factors.verification(1, -1), "total_events"),
        (lambda: factors.verification(1.5, 2), "valid_signatures"),
        (lambda: factors.uptime(8, 7), "seen_windows"),
        (lambda: factors.uptime_eligible_windows(-1), "age_seconds"),
        (lambda: factors.uptime_eligible_windows(float("nan")), "age_seconds"),
        (lambda: factors.active_windows(-1, 7), "activity_mask"),
        (lambda: factors.success_rate(3, 2), "allowed"),
        (lambda: factors.security_alerts({"severe": 1}), "severity"),
        (lambda: factors.security_alerts({"high": -1}), "open_by_severity[high]"),
        (lambda: factors.compliance(5, 4), "violations"),
        (lambda: factors.age(-0.1), "age_days"),
        (lambda: factors.drift(-1, True), "drift_events"),
        (lambda: factors.feedback(2, 11), "rating_sum"),
        (lambda: factors.feedback(2, 1), "rating_sum"),
        (lambda: factors.feedback(0, 3), "rating_sum"),
        (lambda: factors.feedback(-1, 0), "rating_count"),
    ],
)
def test_factor_rejects_bad_input(call, field):
    with pytest.raises(ValidationError) as caught:
        call()
    assert caught.value.field == field


def _all_measured(value: float) -> list[FactorResult]:
    return [factors.measured(name, value, "test") for name in factors.FACTOR_NAMES]


def _with(results: list[FactorResult], name: str, value: float | None) -> list[FactorResult]:
    replacement = factors.no_data(name, "test") if value is None else factors.measured(name, value, "test")
    return [replacement if result.name == name else result for result in results]


def test_combine_all_measured_is_weighted_mean():
    results = _all_measured(1.0)
    results = _with(results, factors.VERIFICATION, 0.6)
    results = _with(results, factors.UPTIME, 0.2)
    score = combine(results)
    expected = 1.0 - 0.25 * 0.4 - 0.15 * 0.8
    assert score.score == pytest.approx(expected)
    assert score.capped is False


def test_combine_renormalises_below_cap():
    # Measured mean below 0.5 stays below the cap, so the renormalised mean is the score.
    results = _with(_all_measured(0.2), factors.FEEDBACK, None)
    score = combine(results)
    assert score.score == pytest.approx(0.2)
    assert score.capped is False


def test_combine_caps_at_substitute():
    results = _with(_with(_all_measured(1.0), factors.DRIFT, None), factors.FEEDBACK, None)
    score = combine(results)
    assert score.score == pytest.approx(0.95)
    assert score.capped is True


def test_combine_cap_versus_renormalised():
    results = _with(_all_measured(0.8), factors.VERIFICATION, None)
    score = combine(results)
    renormalised = 0.8
    cap = 0.8 * 0.75 + 0.5 * 0.25
    assert score.score == pytest.approx(min(renormalised, cap))
    assert score.score == pytest.approx(0.725)
    assert score.capped is True


def test_combine_nothing_measured_is_neutral():
    score = combine([factors.no_data(name, "test") for name in factors.FACTOR_NAMES])
    assert score.score == NO_DATA_SUBSTITUTE
    assert score.capped is True


def test_combine_absent_factor_counts_as_no_data():
    results = [result for result in _all_measured(1.0) if result.name != factors.AGE]
    score = combine(results)
    assert score.factor(factors.AGE).provenance == NO_DATA
    assert score.score == pytest.approx(0.95)
    assert [result.name for result in score.factors] == list(factors.FACTOR_NAMES)


def test_combine_rounds_to_four_decimals():
    results = _with(_all_measured(1.0), factors.VERIFICATION, 1 / 3)
    score = combine(results)
    assert score.score == 0.8333
    assert Decimal(str(score.score)).as_tuple().exponent >= -4


@pytest.mark.parametrize(
    ("results", "field"),
    [
        ([factors.measured(factors.AGE, 1.0, "a"), factors.measured(factors.AGE, 0.5, "b")], "factors"),
        ([FactorResult("luck", 1.0, MEASURED, 0.1, "x")], "factors"),
        ([FactorResult(factors.AGE, 1.0, MEASURED, 0.5, "x")], factors.AGE),
        ([FactorResult(factors.AGE, 1.5, MEASURED, 0.1, "x")], factors.AGE),
        ([FactorResult(factors.AGE, None, MEASURED, 0.1, "x")], factors.AGE),
        ([FactorResult(factors.AGE, 0.5, NO_DATA, 0.1, "x")], factors.AGE),
        ([FactorResult(factors.AGE, 0.5, "guessed", 0.1, "x")], factors.AGE),
    ],
)
def test_combine_rejects_bad_results(results, field):
    with pytest.raises(ValidationError) as caught:
        combine(results)
    assert caught.value.field == field


def test_missing_compliance_not_above_measured():
    base = _all_measured(1.0)
    measured_score = combine(_with(base, factors.COMPLIANCE, 0.9)).score
    missing_score = combine(_with(base, factors.COMPLIANCE, None)).score
    assert missing_score <= measured_score


def test_missing_compliance_not_above_measured_partial():
    base = _with(_with(_all_measured(0.9), factors.DRIFT, None), factors.FEEDBACK, None)
    measured_score = combine(_with(base, factors.COMPLIANCE, 0.9)).score
    missing_score = combine(_with(base, factors.COMPLIANCE, None)).score
    assert missing_score <= measured_score


def _trusted_inputs(**overrides) -> FactorInputs:
    values = dict(
        age_seconds=365 * DAY,
        signatures_total=500,
        signatures_valid=500,
        requests_attempted=500,
        requests_allowed=500,
        capability_checks=500,
        capability_violations=0,
        activity_mask=0b1111111,
        open_alerts={},
        drift_events=0,
        mcp_connected=True,
        rating_count=4,
        rating_sum=20,
    )
    values.update(overrides)
    return FactorInputs(**values)


def test_trusted_agent_scores_top():
    score = combine(evaluate_factors(_trusted_inputs()))
    assert score.score == 1.0
    assert score.capped is False
    assert all(result.provenance == MEASURED for result in score.factors)


@pytest.mark.parametrize("risk_class", RISK_CLASSES)
def test_trusted_agent_passes_every_class(risk_class):
    score = combine(evaluate_factors(_trusted_inputs()))
    assert passes(score.score, risk_class)


@pytest.mark.parametrize("risk_class", RISK_CLASSES)
def test_clean_agent_without_mcp_or_ratings_passes(risk_class):
    score = combine(evaluate_factors(_trusted_inputs(mcp_connected=False, rating_count=0, rating_sum=0)))
    assert score.score >= 0.95
    assert passes(score.score, risk_class)


def test_clean_agent_after_one_day_passes_critical():
    inputs = _trusted_inputs(age_seconds=DAY, activity_mask=1, mcp_connected=False, rating_count=0, rating_sum=0)
    score = combine(evaluate_factors(inputs))
    assert score.score == 0.8511
    assert passes(score.score, "critical")


def test_new_agent_without_requests_is_neutral():
    score = combine(evaluate_factors(FactorInputs(age_seconds=60)))
    provenances = {result.name: result.provenance for result in score.factors}
    assert provenances[factors.SECURITY_ALERTS] == MEASURED
    assert provenances[factors.AGE] == MEASURED
    assert provenances[factors.VERIFICATION] == NO_DATA
    assert provenances[factors.UPTIME] == NO_DATA
    assert score.score == pytest.approx(0.525, abs=1e-4)
    assert not passes(score.score, "high")


def test_forged_requests_lower_score():
    clean = combine(evaluate_factors(_trusted_inputs())).score
    forged = combine(evaluate_factors(_trusted_inputs(signatures_total=1000))).score
    assert forged < clean
    assert forged == pytest.approx(1.0 - 0.25 * 0.5)


def test_critical_alerts_lower_score():
    score = combine(evaluate_factors(_trusted_inputs(open_alerts={"critical": 2}))).score
    assert score == pytest.approx(0.85)


@pytest.mark.parametrize(
    ("risk_class", "threshold"),
    [("low", 0.30), ("medium", 0.50), ("high", 0.70), ("critical", 0.85)],
)
def test_risk_threshold_values(risk_class, threshold):
    assert risk_threshold(risk_class) == threshold


@pytest.mark.parametrize(
    ("score", "risk_class", "expected"),
    [
        (0.85, "critical", True),
        (0.8499, "critical", False),
        (Decimal("0.8500"), "critical", True),
        (0.7, "high", True),
        (0.6999, "high", False),
        (0.5, "medium", True),
        (0.3, "low", True),
        (0.2999, "low", False),
        (0.0, "low", False),
        (1.0, "critical", True),
    ],
)
def test_passes_cases(score, risk_class, expected):
    assert passes(score, risk_class) is expected


@pytest.mark.parametrize("risk_class", ["extreme", "", "LOW", None])
def test_unknown_risk_class_rejected(risk_class):
    with pytest.raises(ValidationError) as caught:
        risk_threshold(risk_class)
    assert caught.value.field == "risk_class"


@pytest.mark.parametrize("score", [-0.1, 1.01, float("nan")])
def test_passes_rejects_bad_score(score):
    with pytest.raises(ValidationError) as caught:
        passes(score, "low")
    assert caught.value.field == "trust_score"


@pytest.mark.parametrize(("value", "expected"), [(0.85005, 0.8501), (0.85004, 0.85), (1.00004, 1.0), (-0.0, 0.0)])
def test_round_score_cases(value, expected):
    assert round_score(value) == expected


factor_value = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1.0, allow_nan=False))
factor_values = st.fixed_dictionaries({name: factor_value for name in factors.FACTOR_NAMES})


def _results(values: dict[str, float | None]) -> list[FactorResult]:
    return [
        factors.no_data(name, "test") if value is None else factors.measured(name, value, "test")
        for name, value in values.items()
    ]


def _substitute_cap(values: dict[str, float | None]) -> float:
    substituted = {name: NO_DATA_SUBSTITUTE if value is None else value for name, value in values.items()}
    return round_score(math.fsum(factors.WEIGHTS[name] * value for name, value in substituted.items()))


@settings(max_examples=300, deadline=None)
@given(values=factor_values)
def test_score_within_unit_interval(values):
    score = combine(_results(values)).score
    assert 0.0 <= score <= 1.0


@settings(max_examples=300, deadline=None)
@given(values=factor_values)
def test_score_never_above_substitute_cap(values):
    assert combine(_results(values)).score <= _substitute_cap(values)


@settings(max_examples=300, deadline=None)
@given(values=factor_values, data=st.data())
def test_withholding_factor_never_beats_cap(values, data):
    measured_names = [name for name, value in values.items() if value is not None]
    if not measured_names:
        return
    name = data.draw(st.sampled_from(measured_names))
    withheld = {**values, name: None}
    assert combine(_results(withheld)).score <= _substitute_cap(withheld)


@settings(max_examples=300, deadline=None)
@given(values=factor_values, data=st.data())
def test_withholding_good_factor_never_raises(values, data):
    # Hiding a factor that is at least the neutral 0.5 must not raise the score.
    good_names = [name for name, value in values.items() if value is not None and value >= NO_DATA_SUBSTITUTE]
    if not good_names:
        return
    name = data.draw(st.sampled_from(good_names))
    withheld = {**values, name: None}
    assert combine(_results(withheld)).score <= combine(_results(values)).score
