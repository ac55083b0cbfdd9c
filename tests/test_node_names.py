"""restore_node_names: names of the user's model survive a simplifier's renames."""

from __future__ import annotations

from onnx import helper

from qrewrite.model.names import restore_node_names
from tests.qmodels import make_model


def graph_of(*nodes):
    return make_model(list(nodes), [("x", [2, 3]), ("z", [2, 3])], [n.output[0] for n in nodes])


def test_renamed_node_gets_original_name():
    original = graph_of(helper.make_node("Relu", ["x"], ["a"], name="first_relu"))
    simplified = graph_of(helper.make_node("Relu", ["x"], ["a"], name="a_renamed"))

    assert restore_node_names(original, simplified) == 1
    assert simplified.graph.node[0].name == "first_relu"


def test_ambiguous_or_taken_names_stay():
    original = graph_of(
        helper.make_node("Relu", ["x"], ["a"], name="relu_a"),
        helper.make_node("Relu", ["x"], ["b"], name="relu_b"),
        helper.make_node("Neg", ["z"], ["c"], name="neg"),
    )
    simplified = graph_of(
        helper.make_node("Relu", ["x"], ["a"], name="fused_relu"),
        helper.make_node("Neg", ["z"], ["c"], name="neg"),
        helper.make_node("Neg", ["z"], ["d"], name="second_neg"),
    )

    assert restore_node_names(original, simplified) == 0
    assert [node.name for node in simplified.graph.node] == ["fused_relu", "neg", "second_neg"]
