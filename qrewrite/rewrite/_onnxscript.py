"""The onnxscript rewriter names that qrewrite uses, in one place.

Several of them are private in onnxscript 0.7.2, so an upgrade that moves them needs
changes in this file only.
"""

from __future__ import annotations

from collections.abc import Sequence

import onnx_ir as ir
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
        replacement = super().try_rewrite(model, graph_or_function, node, **kwargs)
        if replacement is not None:
            carry_names(replacement.match.nodes, replacement.new_nodes)
        return replacement


def carry_names(matched: Sequence[ir.Node], created: Sequence[ir.Node]) -> None:
    """Give a created node the name of the matched node it replaces, where that is clear.

    Where exactly one matched node and exactly one created node share an op type and
    domain (the Conv of a Conv + BatchNormalization fold, say), the created node takes
    the matched node's name. The rewriter removes every matched node, so the name stays
    unique, and names that users wrote in exclude lists or layer configs keep matching.
    """
    old: dict[tuple[str, str], list[ir.Node]] = {}
    new: dict[tuple[str, str], list[ir.Node]] = {}
    for node in matched:
        old.setdefault((node.domain, node.op_type), []).append(node)
    for node in created:
        new.setdefault((node.domain, node.op_type), []).append(node)
    for key, nodes in new.items():
        sources = old.get(key, [])
        if len(nodes) == 1 and len(sources) == 1 and sources[0].name:
            nodes[0].name = sources[0].name


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
