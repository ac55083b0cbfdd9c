"""Tests of the rewrite engine: purity, reports, bounds, subgraphs and rule sets."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_ir as ir
import pytest
from onnx import helper
from qrewrite.rules import builtin_rules, float_graph_rules
from qrewrite.rules.activations import CONVERT_CLIP_TO_RELU, FUSE_GELU
from rule_harness import build_model, constant, op_types, random_feeds, run_model

from qrewrite.config import ExtraOptions
from qrewrite.rewrite import (
    Contract,
    MatchResult,
    RewriteRuleClassBase,
    Rule,
    RuleDidNotConvergeError,
    RuleSet,
    apply_rules,
)
from qrewrite.rewrite.helpers import constant_value, unique_name


class _ReluToReluRelu(RewriteRuleClassBase):
    """A broken rule: its replacement contains its own pattern."""

    def pattern(self, op, x):
        return op.Relu(x)

    def check(self, context, x, **_):
        return MatchResult()

    def rewrite(self, op, x, **_):
        return op.Relu(op.Relu(x))


def _rule(name: str, pattern: RewriteRuleClassBase) -> Rule:
    return Rule(name=name, patterns=[pattern], matches="test", produces="test")


def _clip_model(opset: int = 13) -> onnx.ModelProto:
    nodes = [helper.make_node("Clip", ["x", "low"], ["y"], name="clip")]
    return build_model(nodes, {"x": [4]}, ["y"], [constant("low", 0.0)], opset=opset)


def test_self_matching_rule_raises():
    model = build_model([helper.make_node("Relu", ["x"], ["y"])], {"x": [2]}, ["y"])
    with pytest.raises(RuleDidNotConvergeError, match="RecursiveRelu"):
        apply_rules(model, RuleSet.of(_rule("RecursiveRelu", _ReluToReluRelu())))


def test_report_names_matched_nodes():
    result = apply_rules(_clip_model(), RuleSet.of(CONVERT_CLIP_TO_RELU))
    assert result.rules["ConvertClipToRelu"].nodes == ("clip",)
    assert result.total_matches == 1


def test_ir_model_in_ir_model_out():
    model = ir.serde.deserialize_model(_clip_model())
    before = ir.serde.serialize_model(model).SerializeToString()
    result = apply_rules(model, RuleSet.of(CONVERT_CLIP_TO_RELU))
    assert isinstance(result.model, ir.Model)
    assert result.model is not model
    assert ir.serde.serialize_model(model).SerializeToString() == before
    assert [node.op_type for node in result.model.graph] == ["Relu"]


def test_explain_gives_reasons():
    nodes = [helper.make_node("Clip", ["x", "low"], ["y"])]
    model = build_model(nodes, {"x": [4]}, ["y"], [constant("low", 1.0)], opset=13)
    result = apply_rules(model, RuleSet.of(CONVERT_CLIP_TO_RELU), explain=True)
    assert result.matches("ConvertClipToRelu") == 0
    assert any("not (0, None)" in reason for reason in result.rules["ConvertClipToRelu"].reasons)


def test_rule_applies_inside_if_branches():
    def branch(name: str) -> onnx.GraphProto:
        return helper.make_graph(
            [helper.make_node("Clip", ["x", "low"], [f"{name}_out"])],
            name,
            [],
            [helper.make_tensor_value_info(f"{name}_out", onnx.TensorProto.FLOAT, [4])],
        )

    nodes = [
        helper.make_node("ReduceSum", ["x"], ["total"], keepdims=0),
        helper.make_node("Greater", ["total", "zero"], ["cond"]),
        helper.make_node(
            "If", ["cond"], ["y"], then_branch=branch("then"), else_branch=branch("else")
        ),
    ]
    model = build_model(
        nodes, {"x": [4]}, ["y"], [constant("low", 0.0), constant("zero", 0.0)], opset=13
    )
    before = model.SerializeToString()
    result = apply_rules(model, RuleSet.of(CONVERT_CLIP_TO_RELU))

    assert model.SerializeToString() == before
    assert result.matches("ConvertClipToRelu") == 2
    onnx.checker.check_model(result.model, full_check=True)
    feeds = random_feeds(model)
    assert (run_model(result.model, feeds)[0] == run_model(model, feeds)[0]).all()


def test_rule_set_union_and_sequence():
    first, second = RuleSet.of(FUSE_GELU), RuleSet.of(CONVERT_CLIP_TO_RELU, FUSE_GELU)
    assert (first | second).names == ("FuseGelu", "ConvertClipToRelu")
    assert len((first | second).stages) == 1
    assert len((first >> RuleSet.of(CONVERT_CLIP_TO_RELU)).stages) == 2


def test_rule_set_filters_by_name():
    rules = builtin_rules()
    assert rules.only(["FuseGelu"]).names == ("FuseGelu",)
    assert "FuseGelu" not in rules.without(["FuseGelu"])
    with pytest.raises(KeyError, match="NoSuchRule"):
        rules.only(["NoSuchRule"])


def test_rule_set_rejects_duplicates():
    with pytest.raises(ValueError, match="twice"):
        RuleSet.of(FUSE_GELU) >> RuleSet.of(FUSE_GELU)


def test_unique_name_avoids_existing():
    model = ir.serde.deserialize_model(_clip_model())
    assert unique_name(model, "low") == "low_1"
    assert unique_name(model, "low") == "low_2"
    assert unique_name(model, "fresh") == "fresh"


def test_constant_value_rejects_graph_input():
    nodes = [helper.make_node("Clip", ["x", "low"], ["y"])]
    model = build_model(
        nodes, {"x": [4]}, ["y"], [constant("low", 0.0)], opset=13, input_initializers=["low"]
    )
    graph = ir.serde.deserialize_model(model).graph
    assert constant_value(graph.initializers["low"]) is None


def test_options_select_rules():
    defaults = float_graph_rules(ExtraOptions.from_kwargs({}))
    assert defaults.names == (
        "FuseGelu",
        "FuseHardSwish",
        "FuseLayerNorm",
        "FuseInstanceNorm",
        "FuseL2Norm",
        "FoldBatchNorm",
        "FoldConvAffine",
    )
    chosen = float_graph_rules(
        ExtraOptions.from_kwargs(
            {"FuseGelu": False, "ConvertBNToConv": True, "CopySharedInit": ["Conv"]}
        )
    )
    assert "FuseGelu" not in chosen
    assert chosen.names.index("FoldBatchNorm") < chosen.names.index("ConvertBNToConv")
    assert chosen.names[0] == "CopySharedInit"


def test_every_builtin_rule_states_contract():
    for rule in builtin_rules():
        assert rule.option is not None
        assert rule.contract.describe()
        assert isinstance(rule.contract, Contract)


def test_builtin_rules_keep_unmatched_model():
    model = _clip_model()
    result = apply_rules(model, builtin_rules().without(["ConvertClipToRelu"]))
    assert op_types(result.model) == ["Clip"]


def test_rule_applies_inside_loop_body():
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("Clip", ["state_in", "low"], ["state_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("iteration", onnx.TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", onnx.TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", onnx.TensorProto.FLOAT, [4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", onnx.TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", onnx.TensorProto.FLOAT, [4]),
        ],
    )
    nodes = [helper.make_node("Loop", ["trips", "", "x"], ["y"], body=body)]
    initializers = [constant("low", 0.0), constant("trips", 2, dtype=np.int64)]
    model = build_model(
        nodes, {"x": [4]}, ["y"], initializers, opset=13, output_shapes={"y": [4]}
    )
    before = model.SerializeToString()

    result = apply_rules(model, RuleSet.of(CONVERT_CLIP_TO_RELU))

    assert model.SerializeToString() == before
    assert result.matches("ConvertClipToRelu") == 1
    onnx.checker.check_model(result.model, full_check=True)
    feeds = random_feeds(model)
    assert (run_model(result.model, feeds)[0] == run_model(model, feeds)[0]).all()


class _IdentityOncePerSweep(RewriteRuleClassBase):
    """A broken rule: it re-creates its own pattern, once per sweep."""

    def setup(self):
        self._fired = False

    def pattern(self, op, x):
        return op.Identity(x)

    def check(self, context, x, **_):
        return MatchResult() if not self._fired else MatchResult().fail("fired in this sweep")

    def rewrite(self, op, x, **_):
        self._fired = True
        return op.Identity(x)


def test_rule_matching_every_sweep_raises():
    model = build_model([helper.make_node("Identity", ["x"], ["y"])], {"x": [2]}, ["y"])
    rules = RuleSet.of(_rule("IdentityForever", _IdentityOncePerSweep()))
    with pytest.raises(RuleDidNotConvergeError, match="IdentityForever"):
        apply_rules(model, rules, max_rounds=3)


def test_empty_rule_set_copies_model():
    model = _clip_model()
    result = apply_rules(model, RuleSet())
    assert result.model is not model
    assert op_types(result.model) == ["Clip"]
    assert [tensor.name for tensor in result.model.graph.initializer] == ["low"]
    assert result.total_matches == 0
