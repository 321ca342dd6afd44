"""Release gates: policies of rules on scorecard metrics, exact McNemar regressions, JUnit, markdown.

No torch import: gates read only a :class:`~robustlab.scorecard.Scorecard`.
"""

from .rules import EXIT_FAIL, EXIT_INCONCLUSIVE, EXIT_PASS, EXIT_USAGE, GateReport, Outcome, RuleResult, evaluate_policy
from .policy import Action, Bound, McNemarSpec, Missing, Op, Policy, Requirement, Rule, load_policy, parse_policy

__all__ = [
    "EXIT_FAIL", "EXIT_INCONCLUSIVE", "EXIT_PASS", "EXIT_USAGE", "Action", "Bound", "GateReport", "McNemarSpec",
    "Missing", "Op", "Outcome", "Policy", "Requirement", "Rule", "RuleResult", "evaluate_policy", "load_policy", "parse_policy",
]
