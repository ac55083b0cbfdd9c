"""The onnxscript rewriter names that qrewrite uses, in one place.

Several of them are private in onnxscript 0.7.2, so an upgrade that moves them needs
changes in this file only.
"""

from __future__ import annotations

from onnxscript.rewriter import MatchingTracer, MatchResult, RewriteRule, RewriteRuleSet
from onnxscript.rewriter._basics import MatchFailureError, MatchStatus
from onnxscript.rewriter._pattern_ir import OpPatternBuilder, StringPattern
from onnxscript.rewriter.pattern import RewriteRuleClassBase


class RootFilteredRule(RewriteRule):
    """A RewriteRule that rejects a node at once when the pattern's root cannot match it.

    onnxscript 0.7.2 runs the full matcher for every rule at every node. Checking the
    root's op type and domain first gives the same matches at a fraction of the cost.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        pattern = self._target_pattern
        self._root = pattern.output_nodes[0] if pattern.has_single_output_node else None

    def try_rewrite(self, model, graph_or_function, node, **kwargs):
        root = self._root
        if root is not None and not (
            root.op.matches(node.op_type) and root.domain.matches(node.domain)
        ):
            return None
        return super().try_rewrite(model, graph_or_function, node, **kwargs)


def commuted_variants(rule: RewriteRule) -> list[RootFilteredRule]:
    """Return `rule` with the operands of its commutative ops swapped in every combination."""
    return [
        RootFilteredRule(
            variant._target_pattern,
            variant._replacement_pattern,
            variant._condition_function,
            name=variant.name,
            remove_nodes=variant.remove_nodes,
            graph_pre_visitor=variant.graph_pre_visitor,
            graph_post_visitor=variant.graph_post_visitor,
        )
        for variant in rule.commute()
    ]


__all__ = [
    "MatchFailureError",
    "MatchResult",
    "MatchStatus",
    "MatchingTracer",
    "OpPatternBuilder",
    "RewriteRule",
    "RewriteRuleClassBase",
    "RewriteRuleSet",
    "RootFilteredRule",
    "StringPattern",
    "commuted_variants",
]
