"""Trust scoring for agents: eight factors, their combination, risk thresholds and recalculation.

`factors` contains the pure factor functions, `score.combine` turns their results into a score,
`risk` maps action risk classes to minimum scores, `gather` reads the factor inputs from
PostgreSQL and `recalc` stores recalculated scores with their history.
"""

from aim.trust.factors import FACTOR_NAMES, MEASURED, NO_DATA, WEIGHTS, FactorResult
from aim.trust.inputs import FactorInputs, evaluate_factors
from aim.trust.recalc import (
    RecalculationFailed, new_agent_score, recalculate_agent, recalculate_agents, recalculate_all,
    recalculate_organization, record_new_agent_score,
)
from aim.trust.risk import RISK_CLASSES, RISK_THRESHOLDS, passes, risk_threshold
from aim.trust.score import TrustScore, combine

__all__ = [
    "FACTOR_NAMES",
    "MEASURED",
    "NO_DATA",
    "RISK_CLASSES",
    "RISK_THRESHOLDS",
    "WEIGHTS",
    "FactorInputs",
    "FactorResult",
    "RecalculationFailed",
    "TrustScore",
    "combine",
    "evaluate_factors",
    "new_agent_score",
    "passes",
    "recalculate_agent",
    "recalculate_agents",
    "recalculate_all",
    "recalculate_organization",
    "record_new_agent_score",
    "risk_threshold",
]
