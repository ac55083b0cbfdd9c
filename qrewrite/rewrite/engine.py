"""Apply a `RuleSet` to a model: a pure function from a model to a new model and a report.

For each stage of the set, the engine repeats sweeps of the onnxscript rewriter until a
sweep changes nothing. One sweep visits every node of the main graph, of each If, Loop
and Scan body, and of each model-local function, and tries the stage's rules in order
at each node. Two bounds turn a rule that never stops matching into an error that names
it, instead of a hang:

- Within one sweep, a rule may match at most twice as many times as the model has
  nodes, plus a small constant. The rewriter visits new nodes later in the same sweep,
  so this catches a replacement that matches its own pattern.
- A stage may change the model in at most `max_rounds` sweeps, which catches rules
  that undo each other across sweeps.

Each pattern variant first compares its root op type with the node's, so a sweep costs
about one op type comparison per node and variant plus the full matcher where the root
op type matches.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from typing import Any, TypeVar

import attrs
import onnx
import onnx_ir as ir
from onnx_ir.passes.common import RemoveUnusedNodesPass

from qrewrite.model.shapes import infer_shapes
from qrewrite.rewrite._onnxscript import (
    MatchingTracer,
    MatchResult,
    MatchStatus,
    RewriteRuleClassBase,
    RewriteRuleSet,
    RootFilteredRule,
    commuted_variants,
)
from qrewrite.rewrite.helpers import forget_names
from qrewrite.rewrite.rule import Rule, RuleSet

logger = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", onnx.ModelProto, ir.Model)

DEFAULT_MAX_ROUNDS = 8

# Matches one rule may make in one sweep, per node the model had when the sweep began.
_MATCHES_PER_NODE_LIMIT = 2
_MATCHES_LIMIT_SLACK = 16


class RuleDidNotConvergeError(RuntimeError):
    """Error for a rule that keeps matching, because its replacement matches again or
    because rules undo each other."""


@attrs.frozen
class RuleReport:
    """Outcome of one rule: its number of matches, their root nodes, and why it did not match.

    `nodes` names the root node of each match (the node whose output the replacement
    takes over), in the order of the matches. `reasons` is filled only when the caller
    asked for explanations and the rule never matched. It contains the failure messages
    of the rule's most advanced attempts.
    """

    name: str
    matches: int = 0
    nodes: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


@attrs.frozen
class RewriteResult:
    """The rewritten model, of the same type as the input, and a report per rule."""

    model: Any
    rules: Mapping[str, RuleReport]
    rounds: int

    @property
    def total_matches(self) -> int:
        """The number of matches of all rules together."""
        return sum(report.matches for report in self.rules.values())

    def matches(self, name: str) -> int:
        """Return the number of matches of the named rule. Raises KeyError for an unknown name."""
        return self.rules[name].matches


class _Recorder:
    """Counts matches per rule during a sweep, and enforces the per-sweep limit."""

    def __init__(self, names: list[str]) -> None:
        self.nodes: dict[str, list[str]] = {name: [] for name in names}
        self.pending: dict[str, ir.Node] = {}
        self.sweep_counts: dict[str, int] = {}
        self.limit = 0
        self.enabled = True

    def start_sweep(self, node_count: int) -> None:
        self.sweep_counts = dict.fromkeys(self.nodes, 0)
        self.limit = _MATCHES_PER_NODE_LIMIT * node_count + _MATCHES_LIMIT_SLACK

    def record(self, name: str) -> None:
        if not self.enabled:
            return
        root = self.pending.pop(name, None)
        self.nodes[name].append(_node_label(root))
        self.sweep_counts[name] += 1
        if self.sweep_counts[name] > self.limit:
            raise RuleDidNotConvergeError(
                f"rule {name!r} matched {self.sweep_counts[name]} times in one sweep over a "
                f"model of fewer nodes. Its replacement probably matches its own pattern: "
                f"make the check reject the nodes the rule produces."
            )


def _node_label(node: ir.Node | None) -> str:
    if node is None:
        return "<unknown>"
    return node.name or f"<unnamed {node.op_type}>"


def _opset_failure(rule: Rule, context: Any) -> MatchResult | None:
    version = context.model.opset_imports.get("")
    if version is None or not rule.min_opset <= version <= rule.max_opset:
        return MatchResult().fail(
            f"rule {rule.name} needs an ONNX opset in [{rule.min_opset}, {rule.max_opset}], "
            f"the model imports {version}"
        )
    return None


def _checked(
    rule: Rule, pattern: RewriteRuleClassBase, recorder: _Recorder, context: Any, **bindings: Any
) -> Any:
    failure = _opset_failure(rule, context)
    if failure is not None:
        return failure
    result = pattern.check(context, **bindings)
    if result:
        recorder.pending[rule.name] = context.root
    return result


def _rewritten(
    rule: Rule, pattern: RewriteRuleClassBase, recorder: _Recorder, op: Any, **bindings: Any
) -> Any:
    outputs = pattern.rewrite(op, **bindings)
    failed = outputs is None or outputs is False
    if isinstance(outputs, MatchResult) and not outputs:
        failed = True
    if not failed:
        recorder.record(rule.name)
    return outputs


def _compile(rule: Rule, recorder: _Recorder) -> list[RootFilteredRule]:
    """Build the onnxscript rules of `rule`, with the opset guard and match recording."""
    compiled = []
    for pattern in rule.patterns:
        onnxscript_rule = RootFilteredRule(
            pattern.pattern,
            functools.partial(_rewritten, rule, pattern, recorder),
            functools.partial(_checked, rule, pattern, recorder),
            name=rule.name,
            remove_nodes=pattern.remove_nodes,
            graph_pre_visitor=pattern.setup,
            graph_post_visitor=pattern.cleanup,
        )
        if rule.commute:
            compiled.extend(commuted_variants(onnxscript_rule))
        else:
            compiled.append(onnxscript_rule)
    return compiled


def _count_nodes(model: ir.Model) -> int:
    count = sum(1 for _ in ir.traversal.RecursiveGraphIterator(model.graph))
    for function in model.functions.values():
        count += sum(1 for _ in function)
    return count


def _to_working_copy(model: onnx.ModelProto | ir.Model) -> ir.Model:
    if isinstance(model, onnx.ModelProto):
        # Deserializing builds new IR objects. Tensors wrap the proto's data without
        # copying it, and no rule writes into a tensor, so the input proto stays intact.
        return ir.serde.deserialize_model(model)
    if isinstance(model, ir.Model):
        return model.clone()
    raise TypeError(f"expected an onnx.ModelProto or onnx_ir.Model, got {type(model).__name__}")


def _explain(
    model: ir.Model, stage: tuple[Rule, ...], recorder: _Recorder
) -> dict[str, tuple[str, ...]]:
    """Dry-run the rules that never matched and return the reasons of their best attempts."""
    reasons: dict[str, tuple[str, ...]] = {}
    recorder.enabled = False
    try:
        for rule in stage:
            if recorder.nodes[rule.name]:
                continue
            tracer = MatchingTracer()
            compiled = _compile(rule, recorder)
            RewriteRuleSet(compiled).apply_to_model(model, tracer=tracer)
            messages = []
            for onnxscript_rule in compiled:
                for info in tracer.best_matches_map.get(onnxscript_rule, []):
                    if info.status != MatchStatus.SUCCESS and info.match_result.reason:
                        label = _node_label(info.root_node)
                        messages.append(f"at {label}: {info.match_result.reason}")
            reasons[rule.name] = tuple(dict.fromkeys(messages))
    finally:
        recorder.enabled = True
    return reasons


def apply_rules(
    model: ModelT,
    rules: RuleSet,
    *,
    max_rounds: int = DEFAULT_MAX_ROUNDS,
    explain: bool = False,
) -> RewriteResult:
    """Apply `rules` stage by stage and return a new model with a report per rule.

    `model` is an `onnx.ModelProto` or an `onnx_ir.Model`, and the result has the same
    type. The input is never changed. The values of the result carry the shapes and
    types that onnx shape inference found for the final graph, unless inference failed
    (a warning is logged). When any rule matched, onnx_ir's RemoveUnusedNodesPass runs
    afterwards. It removes nodes that no longer contribute to a graph output (in
    subgraphs too), unused main-graph initializers, unused optional outputs and
    trailing empty inputs, including any that the input already had.

    `max_rounds` bounds the sweeps that change the model in each stage. With
    `explain=True` the report also gives, for each rule that never matched, the failure
    reasons the rewriter recorded. That costs one extra dry sweep per such rule.

    Raises RuleDidNotConvergeError, naming the rule, when a rule keeps matching.
    """
    if max_rounds < 1:
        raise ValueError(f"max_rounds must be at least 1, got {max_rounds}")
    work = _to_working_copy(model)
    recorder = _Recorder(list(rules.names))
    reasons: dict[str, tuple[str, ...]] = {}
    rounds = 0
    shapes_stale = True

    for stage in rules.stages:
        rule_set = RewriteRuleSet([r for rule in stage for r in _compile(rule, recorder)])
        # One sweep more than max_rounds: the last one confirms that nothing matches.
        for _ in range(max_rounds + 1):
            if shapes_stale:
                infer_shapes(work)
                shapes_stale = False
            forget_names(work)
            recorder.start_sweep(_count_nodes(work))
            rounds += 1
            count = rule_set.apply_to_model(work)
            logger.debug("stage %s: %d matches in sweep %d", [r.name for r in stage], count, rounds)
            if count == 0:
                break
            shapes_stale = True
        else:
            busy = [name for name, count in recorder.sweep_counts.items() if count]
            raise RuleDidNotConvergeError(
                f"rules {busy} still matched after {max_rounds} sweeps. They probably undo "
                f"each other or re-create their own pattern: put them in separate stages "
                f"or make their checks reject what the other rule produces."
            )
        if explain:
            reasons.update(_explain(work, stage, recorder))

    if shapes_stale:
        # Only a RuleSet without stages gets here without a sweep.
        infer_shapes(work)
    # Removing nodes leaves the shapes of the remaining values valid.
    if recorder.nodes and any(recorder.nodes.values()):
        RemoveUnusedNodesPass()(work)
    forget_names(work)

    report = {
        name: RuleReport(name, len(nodes), tuple(nodes), reasons.get(name, ()))
        for name, nodes in recorder.nodes.items()
    }
    output: Any = ir.serde.serialize_model(work) if isinstance(model, onnx.ModelProto) else work
    return RewriteResult(output, report, rounds)
