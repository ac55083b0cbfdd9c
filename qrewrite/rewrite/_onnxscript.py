"""The onnxscript rewriter names that qrewrite uses, in one place.

Several of them are private in onnxscript 0.7.2, so an upgrade that moves them needs
changes in this file only.
"""

from __future__ import annotations

from onnxscript.rewriter import MatchingTracer, MatchResult, RewriteRule, RewriteRuleSet
from onnxscript.rewriter._basics import MatchFailureError, MatchStatus
from onnxscript.rewriter._pattern_ir import OpPatternBuilder, StringPattern
from onnxscript.rewriter.pattern import RewriteRuleClassBase

__all__ = [
    "MatchFailureError",
    "MatchResult",
    "MatchStatus",
    "MatchingTracer",
    "OpPatternBuilder",
    "RewriteRule",
    "RewriteRuleClassBase",
    "RewriteRuleSet",
    "StringPattern",
]
