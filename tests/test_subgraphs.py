"""EnableSubgraph: weights inside If and Loop bodies stored as integers, activations float."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from qmodels import cosine, run, tensor

from qrewrite import Int8Spec, ModelQuantizer, QConfig, QLayerConfig, QuantGranularity, UInt8Spec

RNG = np.random.default_rng(11)
# Lowest cosine to float accepted for the small models: int8 per-channel weights in the
# bodies and uint8 activations in the main graph.
MIN_COSINE = 0.99


def _w(*shape: int, scale: float = 0.3) -> np.ndarray:
    return (RNG.normal(size=shape) * scale).astype(np.float32)


def _constant(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node(
        "Constant", [], [name], value=numpy_helper.from_array(array, name), name=f"{name}_const"
    )


def _output(name: str, shape: list[int]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _finish(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def if_model() -> onnx.ModelProto:
    """Conv weights in both If branches and in a nested If, stored in three ways.

    The then branch stores its weight and bias as body initializers, the else branch as
    Constant nodes, and both branches end with a Conv whose weight `w_shared` is a
    main-graph initializer they read from the outer scope. The else branch nests an If
    on `inner` whose branches hold a Conv weight each.
    """

    def nested_branch(name: str) -> onnx.GraphProto:
        nodes = [helper.make_node("Conv", ["e2", f"{name}_w"], [f"{name}_y"], name="conv")]
        return helper.make_graph(
            nodes,
            name,
            [],
            [_output(f"{name}_y", [1, 4, 8, 8])],
            [tensor(f"{name}_w", _w(4, 4, 1, 1))],
        )

    then_nodes = [
        helper.make_node("Conv", ["c0", "w_then", "b_then"], ["t1"], pads=[1] * 4, name="conv"),
        helper.make_node("Relu", ["t1"], ["t2"], name="relu"),
        helper.make_node("Conv", ["t2", "w_shared"], ["then_y"], name="conv_shared"),
    ]
    then_branch = helper.make_graph(
        then_nodes,
        "then",
        [],
        [_output("then_y", [1, 2, 8, 8])],
        [tensor("w_then", _w(4, 4, 3, 3)), tensor("b_then", _w(4))],
    )
    else_nodes = [
        _constant("w_else", _w(4, 4, 3, 3)),
        _constant("b_else", _w(4)),
        helper.make_node("Conv", ["c0", "w_else", "b_else"], ["e1"], pads=[1] * 4, name="conv"),
        helper.make_node("Relu", ["e1"], ["e2"], name="relu"),
        helper.make_node(
            "If",
            ["inner"],
            ["e3"],
            then_branch=nested_branch("inner_then"),
            else_branch=nested_branch("inner_else"),
            name="inner_if",
        ),
        helper.make_node("Conv", ["e3", "w_shared"], ["else_y"], name="conv_shared"),
    ]
    else_branch = helper.make_graph(else_nodes, "else", [], [_output("else_y", [1, 2, 8, 8])])
    nodes = [
        helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1] * 4, name="conv0"),
        helper.make_node(
            "If", ["cond"], ["y"], then_branch=then_branch, else_branch=else_branch, name="if"
        ),
    ]
    graph = helper.make_graph(
        nodes,
        "if_model",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("inner", TensorProto.BOOL, []),
        ],
        [_output("y", [1, 2, 8, 8])],
        [tensor("w0", _w(4, 3, 3, 3)), tensor("b0", _w(4)), tensor("w_shared", _w(2, 4, 1, 1))],
    )
    return _finish(graph)


def loop_model() -> onnx.ModelProto:
    """A Loop of three steps, each a MatMul with a body initializer weight and Tanh."""
    body_nodes = [
        helper.make_node("Identity", ["cond_in"], ["cond_out"], name="keep_going"),
        helper.make_node("MatMul", ["v_in", "w_step"], ["m"], name="matmul"),
        helper.make_node("Tanh", ["m"], ["v_out"], name="tanh"),
    ]
    body = helper.make_graph(
        body_nodes,
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [2, 16]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [2, 16]),
        ],
        [tensor("w_step", _w(16, 16))],
    )
    nodes = [
        helper.make_node("Loop", ["steps", "true", "x"], ["y"], body=body, name="loop"),
    ]
    graph = helper.make_graph(
        nodes,
        "loop_model",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [_output("y", [2, 16])],
        [
            tensor("steps", np.array(3, np.int64)),
            tensor("true", np.array(True)),
        ],
    )
    return _finish(graph)


def scan_model() -> onnx.ModelProto:
    """A Scan over 3 steps of [2, 16] rows: a MatMul with a Constant weight, summed up."""
    body_nodes = [
        _constant("w_row", _w(16, 16)),
        helper.make_node("MatMul", ["row", "w_row"], ["product"], name="matmul"),
        helper.make_node("Add", ["sum_in", "product"], ["sum_out"], name="add"),
        helper.make_node("Tanh", ["product"], ["row_out"], name="tanh"),
    ]
    row_type = [2, 16]
    body = helper.make_graph(
        body_nodes,
        "scan_body",
        [
            helper.make_tensor_value_info("sum_in", TensorProto.FLOAT, row_type),
            helper.make_tensor_value_info("row", TensorProto.FLOAT, row_type),
        ],
        [
            helper.make_tensor_value_info("sum_out", TensorProto.FLOAT, row_type),
            helper.make_tensor_value_info("row_out", TensorProto.FLOAT, row_type),
        ],
    )
    nodes = [
        helper.make_node(
            "Scan", ["start", "x"], ["total", "rows"], body=body, num_scan_inputs=1, name="scan"
        )
    ]
    graph = helper.make_graph(
        nodes,
        "scan_model",
        [
            helper.make_tensor_value_info("start", TensorProto.FLOAT, row_type),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, *row_type]),
        ],
        [_output("total", row_type), _output("rows", [3, *row_type])],
    )
    return _finish(graph)


def if_feeds(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Feeds that take every branch: `cond` and `inner` cycle through all four pairs."""
    rng = np.random.default_rng(seed)
    return [
        {
            "x": rng.normal(size=(1, 3, 8, 8)).astype(np.float32),
            "cond": np.array(index % 2 == 0),
            "inner": np.array(index % 4 < 2),
        }
        for index in range(count)
    ]


def loop_feeds(count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"x": rng.normal(size=(2, 16)).astype(np.float32)} for _ in range(count)]


def quantize(model: onnx.ModelProto, feeds: list[dict], **options: object) -> onnx.ModelProto:
    config = QConfig(
        global_config=QLayerConfig(
            activation=UInt8Spec(),
            weight=Int8Spec(quant_granularity=QuantGranularity.Channel),
        ),
        PrintSummary=False,
        **options,
    )
    return ModelQuantizer(config).quantize_model(model, None, feeds)


def bodies(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    """Every subgraph of `graph` at any depth, outer ones first."""
    found = []
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                found.append(attribute.g)
                found.extend(bodies(attribute.g))
    return found


def bodies_by_name(graph: onnx.GraphProto) -> dict[str, onnx.GraphProto]:
    return {body.name: body for body in bodies(graph)}


def _clear_value_info(graph: onnx.GraphProto) -> None:
    del graph.value_info[:]
    for body in bodies(graph):
        del body.value_info[:]


def body_bytes(model: onnx.ModelProto) -> list[bytes]:
    """Each body of `model` serialized without value_info, which shape inference adds."""
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    _clear_value_info(graph)
    return [body.SerializeToString() for body in bodies(graph)]


def float_weights(graph: onnx.GraphProto) -> list[str]:
    """Names of float initializers and Constant outputs of rank 2 or more in `graph`."""
    found = [
        init.name
        for init in graph.initializer
        if init.data_type == TensorProto.FLOAT and len(init.dims) >= 2
    ]
    for node in graph.node:
        if node.op_type != "Constant":
            continue
        value = numpy_helper.to_array(node.attribute[0].t)
        if value.dtype == np.float32 and value.ndim >= 2:
            found.append(node.output[0])
    return found


def int8_dequantized(graph: onnx.GraphProto, visible: dict[str, onnx.TensorProto]) -> set[str]:
    """Outputs of the DequantizeLinear nodes in `graph` that read int8 initializers.

    `visible` contains the initializers of the enclosing graphs, which a body may read.
    """
    initializers = {**visible, **{init.name: init for init in graph.initializer}}
    return {
        node.output[0]
        for node in graph.node
        if node.op_type == "DequantizeLinear"
        and node.input[0] in initializers
        and initializers[node.input[0]].data_type == TensorProto.INT8
    }


def conv_and_matmul_weights(graph: onnx.GraphProto) -> list[str]:
    return [node.input[1] for node in graph.node if node.op_type in ("Conv", "MatMul", "Gemm")]


def worst_cosine(
    float_model: onnx.ModelProto, quantized: onnx.ModelProto, feeds: list[dict]
) -> float:
    return min(cosine(run(float_model, feed)[0], run(quantized, feed)[0]) for feed in feeds)


@pytest.fixture(scope="module", params=[False, True], ids=["as_built", "simplified"])
def quantized_if(request) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """The If model and its quantization, with and without onnxslim first.

    onnxslim (0.1.98) copies the outer-scope `w_shared` into each branch, so only the
    unsimplified model keeps a weight that the branches read from the main graph.
    """
    model = if_model()
    return model, quantize(model, if_feeds(8), EnableSubgraph=True, SimplifyModel=request.param)


def test_if_bodies_store_int8_weights(quantized_if) -> None:
    _, quantized = quantized_if
    main_dequantized = int8_dequantized(quantized.graph, {})
    main_initializers = {init.name: init for init in quantized.graph.initializer}
    branches = bodies(quantized.graph)
    assert len(branches) == 4
    for branch in branches:
        dequantized = int8_dequantized(branch, main_initializers) | main_dequantized
        weights = conv_and_matmul_weights(branch)
        assert weights, f"no Conv in branch {branch.name}"
        for weight in weights:
            assert weight in dequantized, f"{branch.name}: {weight} is not an int8 DQ output"


def test_body_weights_dequantized_inside_body(quantized_if) -> None:
    _, quantized = quantized_if
    for branch in bodies(quantized.graph):
        assert any(node.op_type == "DequantizeLinear" for node in branch.node), branch.name


def test_outer_scope_weight_dequantized_where_defined() -> None:
    quantized = quantize(if_model(), if_feeds(4), EnableSubgraph=True, SimplifyModel=False)
    main_dequantized = int8_dequantized(quantized.graph, {})
    shared = [
        node.output[0]
        for node in quantized.graph.node
        if node.op_type == "DequantizeLinear" and node.input[0].startswith("w_shared")
    ]
    assert len(shared) == 1
    assert shared[0] in main_dequantized
    branches = bodies_by_name(quantized.graph)
    for branch in (branches["then"], branches["else"]):
        conv = next(node for node in branch.node if node.name == "conv_shared")
        assert conv.input[1] == shared[0]
    assert "w_shared" not in {init.name for init in quantized.graph.initializer}
    onnx.checker.check_model(quantized, full_check=True)


def test_if_leaves_no_float_weights(quantized_if) -> None:
    _, quantized = quantized_if
    for graph in (quantized.graph, *bodies(quantized.graph)):
        assert float_weights(graph) == [], graph.name


def test_if_body_bias_stays_float(quantized_if) -> None:
    _, quantized = quantized_if
    branches = bodies_by_name(quantized.graph)
    then_biases = {init.name: init for init in branches["then"].initializer}
    assert then_biases["b_then"].data_type == TensorProto.FLOAT
    else_initializers = {init.name: init for init in branches["else"].initializer}
    else_constants = {
        node.output[0] for node in branches["else"].node if node.op_type == "Constant"
    }
    # onnxslim turns Constant nodes into initializers; either way b_else stays float.
    if "b_else" in else_initializers:
        assert else_initializers["b_else"].data_type == TensorProto.FLOAT
    else:
        assert "b_else" in else_constants


def test_if_activations_in_bodies_stay_float(quantized_if) -> None:
    _, quantized = quantized_if
    for branch in bodies(quantized.graph):
        assert not any(node.op_type == "QuantizeLinear" for node in branch.node), branch.name


def test_if_every_branch_close_to_float(quantized_if) -> None:
    model, quantized = quantized_if
    for feed in if_feeds(4, seed=1):
        expected = run(model, feed)[0]
        actual = run(quantized, feed)[0]
        branch = f"cond={bool(feed['cond'])}, inner={bool(feed['inner'])}"
        assert cosine(expected, actual) > MIN_COSINE, branch


def test_if_model_passes_full_check(quantized_if) -> None:
    _, quantized = quantized_if
    onnx.checker.check_model(quantized, full_check=True)


def test_if_weights_shrink_model(quantized_if) -> None:
    model, quantized = quantized_if
    float_bytes = sum(
        init.ByteSize()
        for graph in (model.graph, *bodies(model.graph))
        for init in graph.initializer
    )
    quantized_bytes = sum(
        init.ByteSize()
        for graph in (quantized.graph, *bodies(quantized.graph))
        for init in graph.initializer
    )
    assert quantized_bytes < float_bytes


def test_subgraph_option_off_leaves_bodies() -> None:
    model = if_model()
    quantized = quantize(model, if_feeds(4), SimplifyModel=False)
    assert body_bytes(quantized) == body_bytes(model)
    # The main-graph Conv is still quantized.
    assert any(node.op_type == "DequantizeLinear" for node in quantized.graph.node)


def test_loop_body_stores_int8_weight() -> None:
    model = loop_model()
    # onnxslim would move the loop-invariant weight out of the body.
    quantized = quantize(model, loop_feeds(8), EnableSubgraph=True, SimplifyModel=False)
    (body,) = bodies(quantized.graph)

    (weight,) = conv_and_matmul_weights(body)
    assert weight in int8_dequantized(body, {})
    assert float_weights(body) == []
    dequantize = next(node for node in body.node if node.output[0] == weight)
    axis = next(attribute.i for attribute in dequantize.attribute if attribute.name == "axis")
    assert axis == 1
    onnx.checker.check_model(quantized, full_check=True)
    assert worst_cosine(model, quantized, loop_feeds(4, seed=1)) > MIN_COSINE


def test_loop_simplified_weight_quantized() -> None:
    model = loop_model()
    quantized = quantize(model, loop_feeds(8), EnableSubgraph=True)
    for graph in (quantized.graph, *bodies(quantized.graph)):
        assert float_weights(graph) == [], graph.name
    assert worst_cosine(model, quantized, loop_feeds(4, seed=1)) > MIN_COSINE


def test_loop_option_off_leaves_body() -> None:
    model = loop_model()
    quantized = quantize(model, loop_feeds(4), SimplifyModel=False)
    assert body_bytes(quantized) == body_bytes(model)


def test_scan_body_stores_int8_weight() -> None:
    model = scan_model()
    rng = np.random.default_rng(0)
    feeds = [
        {
            "start": rng.normal(size=(2, 16)).astype(np.float32),
            "x": rng.normal(size=(3, 2, 16)).astype(np.float32),
        }
        for _ in range(4)
    ]
    quantized = quantize(model, feeds, EnableSubgraph=True, SimplifyModel=False)
    (body,) = bodies(quantized.graph)

    (weight,) = conv_and_matmul_weights(body)
    assert weight in int8_dequantized(body, {})
    assert float_weights(body) == []
    onnx.checker.check_model(quantized, full_check=True)
    for feed in feeds:
        for expected, actual in zip(run(model, feed), run(quantized, feed), strict=True):
            assert cosine(expected, actual) > MIN_COSINE


def test_excluded_if_keeps_bodies_float() -> None:
    model = if_model()
    quantized = quantize(
        model, if_feeds(4), EnableSubgraph=True, SimplifyModel=False, exclude=["if"]
    )
    assert body_bytes(quantized) == body_bytes(model)


def test_excluded_nested_if_keeps_its_bodies_float() -> None:
    model = if_model()
    quantized = quantize(
        model, if_feeds(4), EnableSubgraph=True, SimplifyModel=False, exclude=["inner_if"]
    )
    branches = bodies_by_name(quantized.graph)
    for name in ("inner_then", "inner_else"):
        assert float_weights(branches[name]) == [f"{name}_w"]
    assert float_weights(branches["then"]) == []
    assert float_weights(branches["else"]) == []


def test_subgraph_output_is_byte_identical(tmp_path) -> None:
    model = if_model()
    digests = []
    for index in range(2):
        path = tmp_path / f"q{index}.onnx"
        config = QConfig(
            global_config=QLayerConfig(
                activation=UInt8Spec(),
                weight=Int8Spec(quant_granularity=QuantGranularity.Channel),
            ),
            PrintSummary=False,
            EnableSubgraph=True,
        )
        ModelQuantizer(config).quantize_model(model, str(path), if_feeds(4))
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]


# Approximate formants F1, F2, F3 in Hz of six vowels of an adult male voice. The test needs
# vowel-like spectra, not exact values.
VOWEL_FORMANTS = np.array(
    [
        [730, 1090, 2440],
        [270, 2290, 3010],
        [300, 870, 2240],
        [530, 1840, 2480],
        [570, 840, 2410],
        [660, 1720, 2410],
    ],
    dtype=np.float64,
)


def speech_like_audio(sample_rate: int, seconds: float, seed: int) -> np.ndarray:
    """Voiced phrases of 0.8 to 2 s between pauses of 0.5 to 1.2 s, with faint noise.

    Each phrase is a harmonic series on a wavering pitch of 100 to 200 Hz, shaped by
    the formants of a new vowel every 120 to 250 ms and by a syllable envelope. Silero
    VAD 6.2.3 calls about a third of the frames of the 8 s test clip speech, so both
    classes occur.
    """
    rng = np.random.default_rng(seed)
    count = int(sample_rate * seconds)
    times = np.arange(count) / sample_rate
    audio = rng.normal(0.0, 0.001, count)
    position = rng.uniform(0.3, 0.8)
    while position < seconds - 0.8:
        length = rng.uniform(0.8, 2.0)
        start, stop = (
            int(position * sample_rate),
            min(count, int((position + length) * sample_rate)),
        )
        local = times[start:stop] - position
        bounds = np.concatenate([[0.0], np.cumsum(rng.uniform(0.12, 0.25, 40))])
        syllable = np.searchsorted(bounds, local, side="right") - 1
        formants = VOWEL_FORMANTS[rng.integers(0, len(VOWEL_FORMANTS), len(bounds))][syllable]
        pitch = rng.uniform(100, 200) * (1 + 0.15 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * local))
        phase = 2 * np.pi * np.cumsum(pitch) / sample_rate
        voiced = np.zeros(local.size)
        for harmonic in range(1, 40):
            frequency = harmonic * pitch
            gain = sum(
                1.0 / (1.0 + ((frequency - formants[:, j]) / (60 + 40 * j)) ** 2) for j in range(3)
            )
            audible = frequency < sample_rate / 2 - 100
            voiced += np.where(audible, gain * np.sin(harmonic * phase) / np.sqrt(harmonic), 0.0)
        progress = (local - bounds[syllable]) / (bounds[syllable + 1] - bounds[syllable])
        envelope = np.sqrt(np.sin(np.pi * np.clip(progress, 0.0, 1.0)))
        audio[start:stop] += 0.05 * voiced * envelope
        position += length + rng.uniform(0.5, 1.2)
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def silero_frames(audio: np.ndarray, sample_rate: int) -> list[np.ndarray]:
    """Model inputs of silero_vad.onnx: each frame after the last samples of the one before.

    16 kHz takes 512 new and 64 context samples per frame, 8 kHz 256 and 32, as
    silero_vad.utils_vad.OnnxWrapper (6.2.3) feeds them.
    """
    step, context = (512, 64) if sample_rate == 16000 else (256, 32)
    previous = np.zeros((1, context), np.float32)
    frames = []
    for start in range(0, audio.size - step + 1, step):
        frame = np.concatenate([previous, audio[None, start : start + step]], axis=1)
        frames.append(frame)
        previous = frame[:, -context:]
    return frames


def speech_probabilities(path: Path, audio: np.ndarray, sample_rate: int) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    state = np.zeros((2, 1, 128), np.float32)
    rate = np.array(sample_rate, np.int64)
    probabilities = []
    for frame in silero_frames(audio, sample_rate):
        probability, state = session.run(None, {"input": frame, "state": state, "sr": rate})
        probabilities.append(float(probability.reshape(-1)[0]))
    return np.asarray(probabilities)


def silero_vad_path() -> Path:
    # find_spec locates the package without importing it: its __init__ imports torch,
    # which the model file does not need.
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("silero-vad is not installed (pip install --no-deps silero-vad==6.2.3)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "silero_vad.onnx"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


@pytest.mark.parametrize("sample_rate", [16000, 8000])
def test_silero_vad_speech_probabilities_close(tmp_path, sample_rate) -> None:
    path = silero_vad_path()
    calibration = speech_like_audio(16000, 2.0, seed=1)
    feeds = [
        {"input": frame, "state": np.zeros((2, 1, 128), np.float32), "sr": np.array(16000)}
        for frame in silero_frames(calibration, 16000)[:4]
    ]
    output = tmp_path / "silero_vad_int8.onnx"
    config = QConfig(
        global_config=QLayerConfig(
            activation=UInt8Spec(),
            weight=Int8Spec(quant_granularity=QuantGranularity.Channel),
        ),
        PrintSummary=False,
        EnableSubgraph=True,
    )
    ModelQuantizer(config).quantize_model(str(path), str(output), feeds)

    quantized = onnx.load(str(output))
    onnx.checker.check_model(quantized, full_check=True)
    dequantize_nodes = sum(
        node.op_type == "DequantizeLinear" for body in bodies(quantized.graph) for node in body.node
    )
    assert dequantize_nodes >= 12
    assert output.stat().st_size < 0.7 * path.stat().st_size

    audio = speech_like_audio(sample_rate, 8.0, seed=0)
    expected = speech_probabilities(path, audio, sample_rate)
    actual = speech_probabilities(output, audio, sample_rate)
    speech_share = float(np.mean(expected > 0.5))
    assert 0.2 < speech_share < 0.9, "the audio no longer exercises both classes"
    agreement = float(np.mean((expected > 0.5) == (actual > 0.5)))
    assert agreement >= 0.95
    assert float(np.mean(np.abs(expected - actual))) < 0.03


def test_run_that_quantizes_nothing_points_to_enable_subgraph(caplog) -> None:
    model = loop_model()
    with caplog.at_level("WARNING", logger="qrewrite.pipeline"):
        quantized = quantize(model, loop_feeds(4))

    assert not any(node.op_type == "DequantizeLinear" for node in quantized.graph.node)
    messages = [record.getMessage() for record in caplog.records]
    (warning,) = [message for message in messages if "nothing was quantized" in message]
    assert "EnableSubgraph=True" in warning
