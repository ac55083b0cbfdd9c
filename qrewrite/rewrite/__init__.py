"""The rule DSL and engine on top of onnxscript's rewriter.

Write a rule as a `RewritePattern` (an onnxscript `RewriteRuleClassBase` with pattern,
check and rewrite methods), wrap it in a `Rule` with a name and a `Contract`, combine rules into a
`RuleSet`, and run `apply_rules`. The helpers in `qrewrite.rewrite.helpers` read true
constants, attributes and opsets and allocate fresh names.
"""

from qrewrite.rewrite._onnxscript import MatchResult, RewriteRuleClassBase
from qrewrite.rewrite.engine import (
    DEFAULT_MAX_ROUNDS,
    RewriteResult,
    RuleDidNotConvergeError,
    RuleReport,
    apply_rules,
)
from qrewrite.rewrite.rule import Contract, RewritePattern, Rule, RuleSet

__all__ = [
    "DEFAULT_MAX_ROUNDS",
    "Contract",
    "MatchResult",
    "RewritePattern",
    "RewriteResult",
    "RewriteRuleClassBase",
    "Rule",
    "RuleDidNotConvergeError",
    "RuleReport",
    "RuleSet",
    "apply_rules",
]
