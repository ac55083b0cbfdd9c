"""The quantization pipeline: an ordered list of pure stages built from the config.

Each stage takes a `State` and returns a new one; none changes its input. Print the
stages of a config with `[stage.name for stage in build_stages(config)]`, or pass your
own list to `run_stages`.

load -> remove input initializers -> simplify -> convert opset -> float-graph rules ->
cross-layer equalization -> prepare (names, shapes) -> select -> calibrate -> plan ->
refine bias -> materialize -> verify -> save
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import onnx
import onnx_ir as ir
import onnxruntime.capi.onnxruntime_pybind11_state as ort_errors

from qrewrite.config import CalibMethod, CLEConfig, DataType, QConfig, QTensorConfig, ScaleType
from qrewrite.errors import CalibrationDataError, ConfigError, ModelInputError
from qrewrite.evaluation import evaluate_with_options, evaluation_source
from qrewrite.model.fixed_shapes import fix_shapes, parse_fixed_shapes
from qrewrite.model.float16 import convert_float16_to_float32, has_float16
from qrewrite.model.io import SourceFiles, check_output_path, load_model, save_model_atomic
from qrewrite.model.layout import convert_nchw_to_nhwc
from qrewrite.model.names import name_unnamed_nodes, restore_node_names
from qrewrite.model.opset import convert_for_config
from qrewrite.model.shapes import infer_shapes
from qrewrite.model.verify import verify_model_file, verify_model_proto
from qrewrite.quantization.bias import bias_from_own_range, refine_bias
from qrewrite.quantization.int16_scale import snap_plan_scales
from qrewrite.quantization.materialize import materialize
from qrewrite.quantization.npu import adjust_npu_positions, log_report, npu_violations
from qrewrite.quantization.plan import Plan, make_plan
from qrewrite.quantization.selection import Selection, calibration_specs, select
from qrewrite.rules import float_graph_rules
from qrewrite.rules.dpu import DPU_RULES
from qrewrite.rules.hardswish import has_hard_swish_gate
from qrewrite.rules.qdq_removal import qdq_removal_rules
from qrewrite.run_context import run_context
from qrewrite.summary import QuantizationSummary, summarize

logger = logging.getLogger(__name__)

# onnxslim's own BatchNorm folding would bypass the FoldBatchNorm option.
_ONNXSLIM_SKIPPED_FUSIONS = ["FusionConvBN", "FusionConvTransposeBN"]


@attrs.frozen
class State:
    """The values passed between stages. Later stages fill the later fields."""

    config: QConfig
    proto: onnx.ModelProto
    reader: Any = None
    output_path: str | os.PathLike[str] | None = None
    # Once set, `model` is the current model and `proto` may be older. The float-graph
    # rules set it with shapes inferred, which `prepare` then keeps.
    model: ir.Model | None = None
    selection: Selection | None = None
    ranges: dict[str, Any] | None = None
    # Per-channel peaks for KeepOutlierTensorsFloat; None when that rule is off.
    channel_peaks: dict[str, Any] | None = None
    plan: Plan | None = None
    notes: tuple[str, ...] = ()


@attrs.frozen
class Stage:
    """One named, pure step of the pipeline."""

    name: str
    run: Callable[[State], State]


def _copy(proto: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    return copy


def reject_float16_input(state: State) -> State:
    """Raise ModelInputError for a float16 model, which needs ConvertFP16ToFP32."""
    if has_float16(state.proto):
        raise ModelInputError(
            "the model has float16 inputs, outputs or weights; set ConvertFP16ToFP32=True "
            "to quantize a float32 copy of it (QuantizeFP16 is not built yet)"
        )
    return state


def float16_to_float32(state: State) -> State:
    """Turn a float16 model into float32 (ConvertFP16ToFP32)."""
    return attrs.evolve(state, proto=convert_float16_to_float32(state.proto))


def nchw_to_nhwc(state: State) -> State:
    """Make 4-D float inputs take NHWC data (ConvertNCHWToNHWC)."""
    return attrs.evolve(state, proto=convert_nchw_to_nhwc(state.proto))


def _float_reference(proto: onnx.ModelProto, options: Any) -> onnx.ModelProto:
    """Return the float model with the input changes of the options, for EvalMetrics."""
    if options.ConvertFP16ToFP32:
        proto = convert_float16_to_float32(proto)
    if options.ConvertNCHWToNHWC:
        proto = convert_nchw_to_nhwc(proto)
    return proto


def fix_input_output_shapes(state: State) -> State:
    """Give the graph inputs and outputs the shapes that FixShapes lists."""
    shapes = parse_fixed_shapes(state.config.options.FixShapes)
    return attrs.evolve(state, proto=fix_shapes(state.proto, shapes))


def remove_input_initializers(state: State) -> State:
    """Drop graph inputs that are initializers, so they count as constants."""
    initializers = {init.name for init in state.proto.graph.initializer}
    if not any(value.name in initializers for value in state.proto.graph.input):
        return state
    proto = _copy(state.proto)
    kept = [value for value in proto.graph.input if value.name not in initializers]
    del proto.graph.input[:]
    proto.graph.input.extend(kept)
    return attrs.evolve(state, proto=proto)


def simplify(state: State) -> State:
    """Simplify with onnxslim: constant folding, dead code removal, shape cleanup.

    onnxslim's own shape inference is skipped because `prepare` infers shapes anyway. On
    PP-OCRv4 det that halves the stage (0.54 s to 0.30 s, onnxslim 0.1.98, 2-core x86_64).
    """
    import onnxslim

    try:
        proto = onnxslim.slim(
            _copy(state.proto),
            skip_fusion_patterns=_ONNXSLIM_SKIPPED_FUSIONS,
            no_shape_infer=True,
        )
    except Exception as error:  # onnxslim raises many types; a failure must not stop the run
        logger.warning("onnxslim could not simplify the model (%s); continuing without it", error)
        return state
    finally:
        _release_onnxslim_matches()
    if not isinstance(proto, onnx.ModelProto):
        logger.warning("onnxslim returned no model; continuing without simplification")
        return state
    restore_node_names(state.proto, proto)
    return attrs.evolve(state, proto=proto)


def _release_onnxslim_matches() -> None:
    """Drop the nodes that onnxslim's pattern matchers keep from their last match.

    In onnxslim 0.1.98 each matcher in the module-level registry stores the nodes it
    matched as attributes named after its pattern nodes. They keep the whole simplified
    graph alive, weights included, until the next onnxslim call: 90 MB on MiniLM-L6.
    """
    from onnxslim.core.pattern.registry import DEFAULT_FUSION_PATTERNS

    for matchers in DEFAULT_FUSION_PATTERNS.values():
        for matcher in matchers:
            for name in getattr(matcher, "pattern_dict", {}):
                vars(matcher).pop(name, None)


def convert_to_target_opset(state: State) -> State:
    """Convert to the opset the config needs (or ConvertOpsetVersion), or 14 for HardSwish."""
    options = state.config.options
    fusion = None
    if options.OptimizeModel and options.FuseHardSwish and has_hard_swish_gate(state.proto):
        fusion = "FuseHardSwish can fuse the decomposed hard swish"
    proto, note = convert_for_config(state.proto, state.config, fusion)
    notes = state.notes if note is None else (*state.notes, note)
    return attrs.evolve(state, proto=proto, notes=notes)


def apply_float_rules(state: State) -> State:
    """Apply the float-graph rule packs that the options select."""
    from qrewrite.rewrite import apply_rules

    options = state.config.options
    rules = float_graph_rules(options)
    simulating = bool(options.enable_npu_cnn and options.SimulateDPU)
    result = apply_rules(ir.from_proto(state.proto), rules, explain=simulating)
    notes = list(state.notes)
    reports = result.rules.items()
    matched = [f"{name} {report.matches}" for name, report in reports if report.matches]
    if matched:
        notes.append(f"float-graph rules: {', '.join(matched)}")
    if simulating:
        notes += _unsimulated_notes(result.rules)
    return attrs.evolve(state, model=result.model, notes=tuple(notes))


def equalize_cross_layer(state: State) -> State:
    """Rescale the channels of consecutive layers (CLEConfig in algo_config)."""
    from qrewrite.algorithms.cle import equalize

    model = state.model if state.model is not None else ir.from_proto(state.proto)
    notes = list(state.notes)
    for algorithm in state.config.algo_config:
        if isinstance(algorithm, CLEConfig):
            result = equalize(model, algorithm)
            model = result.model
            notes.append(result.summary_line())
    return attrs.evolve(state, proto=ir.to_proto(model), model=None, notes=tuple(notes))


def _unsimulated_notes(reports: Mapping[str, Any]) -> list[str]:
    """Return a line per DPU rule that found its op but matched nothing, with its reason."""
    notes = []
    for rule in DPU_RULES:
        report = reports.get(rule.name)
        if report is None or report.matches or not report.reasons:
            continue
        reason = report.reasons[0].removeprefix("at ")
        notes.append(f"{rule.name} did not apply: {reason}")
    return notes


_ONNXRUNTIME_RUN_ERRORS = (
    ort_errors.Fail,
    ort_errors.InvalidArgument,
    ort_errors.RuntimeException,
)

_QUANTIZED_OP_TYPES = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "QLinearConv",
        "QLinearMatMul",
        "MatMulInteger",
        "ConvInteger",
        "MatMulNBits",
    }
)


def reject_quantized_input(state: State) -> State:
    """Raise ModelInputError for a model that already contains quantization ops."""
    found = sorted({node.op_type for node in state.proto.graph.node} & _QUANTIZED_OP_TYPES)
    if found:
        raise ModelInputError(
            f"the model is already quantized (it contains {', '.join(found)}); "
            "quantize the float model instead"
        )
    return state


def prepare(state: State) -> State:
    """Move to onnx_ir, name every node and infer shapes and types.

    A model from the float-graph rules has its shapes inferred already, and a second
    inference would only repeat that work (0.03 s to 0.07 s CPU time on PP-OCRv4 rec).
    """
    if state.model is not None:
        model = state.model.clone()
        name_unnamed_nodes(model)
        return attrs.evolve(state, model=model)
    model = ir.from_proto(state.proto).clone()
    name_unnamed_nodes(model)
    infer_shapes(model)
    return attrs.evolve(state, model=model)


def select_targets(state: State) -> State:
    """Decide which tensors get quantized and how."""
    assert state.model is not None
    return attrs.evolve(state, selection=select(state.model.graph, state.config))


def _range_request(spec: QTensorConfig) -> Any:
    from qrewrite.calibration import PowerOfTwoMethod, RangeRequest

    method: Any = spec.calibration_method
    if spec.scale_type is ScaleType.PowerOf2 and spec.calibration_method is CalibMethod.MinMSE:
        method = PowerOfTwoMethod.MinMSE
    return RangeRequest(
        method,
        bits=spec.data_type.bits,
        signed=spec.data_type.signed,
        symmetric=spec.symmetric,
    )


def apply_selection_rules(state: State) -> State:
    """Apply the planner rules that need no calibrated ranges."""
    return _apply_planner(state, after_calibration=False)


def apply_range_rules(state: State) -> State:
    """Apply the planner rules that read calibrated ranges."""
    return _apply_planner(state, after_calibration=True)


def _apply_planner(state: State, *, after_calibration: bool) -> State:
    from qrewrite.quantization.planner import PlannerContext, apply_planner_rules
    from qrewrite.quantization.planner.rules import PLANNER_RULES

    assert state.model is not None
    assert state.selection is not None
    context = PlannerContext(
        graph=state.model.graph,
        config=state.config,
        selection=state.selection,
        ranges=state.ranges,
        channel_peaks=state.channel_peaks,
    )
    selection = apply_planner_rules(PLANNER_RULES, context, after_calibration=after_calibration)
    return attrs.evolve(state, selection=selection)


def calibrate_ranges(state: State) -> State:
    """Run the float model on the calibration samples and collect ranges."""
    assert state.model is not None
    assert state.selection is not None
    requests = {
        tensor: _range_request(spec)
        for tensor, spec in calibration_specs(state.selection, state.model.graph).items()
    }
    options = state.config.options
    if not requests:
        return _calibrate_proto(state, ir.to_proto(state.model), requests, None)
    with tempfile.TemporaryDirectory(prefix="qrewrite-weights-", dir=options.TmpDir) as folder:
        proto = _proto_with_external_weights(state.model, folder)
        return _calibrate_proto(state, proto, requests, folder)


def _proto_with_external_weights(model: ir.Model, folder: str) -> onnx.ModelProto:
    """Save `model` to `folder` with weights over 1 KiB as external data, and return its proto.

    The calibration graph is built from this proto, so its copies, shape inference and the
    model bytes for onnxruntime hold no weight data, and onnxruntime maps the weights from
    the file. On MiniLM-L6 the calibrate stage peaked at 515 MB instead of 932 MB.
    """
    path = os.path.join(folder, "model.onnx")
    ir.save(model, path, external_data="model.onnx.data", size_threshold_bytes=1024)
    return onnx.load(path, load_external_data=False)


def _calibrate_proto(
    state: State, proto: onnx.ModelProto, requests: Mapping[str, Any], data_folder: str | None
) -> State:
    """Calibrate `requests` on `proto`, whose external data files lie in `data_folder`."""
    from qrewrite.calibration import samples_from
    from qrewrite.calibration.channel_peaks import channel_peak_ranks
    from qrewrite.calibration.engine import calibrate_with_channel_peaks
    from qrewrite.calibration.figures import histogram_folder_for
    from qrewrite.calibration.samples import require_samples

    assert state.model is not None
    options = state.config.options
    if not requests:
        # Nothing to calibrate. A reader that was given is still read once, so a broken
        # one is reported; without one, weight-only configs need no samples.
        if state.reader is not None or options.UseRandomData:
            next(iter(samples_from(state.reader, proto, options)), None)
        return attrs.evolve(state, ranges={})
    # Checked before the progress bar starts, so the error is the only output.
    require_samples(state.reader, options)
    samples: Iterator[Mapping[str, Any]] = samples_from(state.reader, proto, options)
    histogram_folder = None
    if state.config.options.SaveTensorHistFig and state.output_path is not None:
        histogram_folder = histogram_folder_for(os.fspath(state.output_path))
    # Channel peaks come from the same onnxruntime run as the ranges.
    peak_ranks: dict[str, int] = {}
    if state.config.options.KeepOutlierTensorsFloat:
        peak_ranks = channel_peak_ranks(state.model.graph, requests)
    try:
        calibration = calibrate_with_channel_peaks(
            proto,
            requests,
            samples,
            state.config.options,
            peak_ranks,
            histogram_folder,
            data_folder,
        )
    except _ONNXRUNTIME_RUN_ERRORS as error:
        # The model passed the checker, so a failed run means the samples do not fit it,
        # such as an image size the model's strides do not divide.
        detail = re.sub(r"\x1b\[[0-9;]*m", "", " ".join(str(error).split()))
        raise CalibrationDataError(
            f"onnxruntime could not run the model on a calibration sample: {detail}; check "
            "that the samples have the shapes and value ranges the model expects"
        ) from error
    channel_peaks: dict[str, Any] | None = calibration.channel_peaks
    if not state.config.options.KeepOutlierTensorsFloat:
        channel_peaks = None
    return attrs.evolve(
        state,
        ranges=dict(calibration.ranges),
        channel_peaks=channel_peaks,
        notes=(*state.notes, *calibration.notes),
    )


def plan_parameters(state: State) -> State:
    """Compute scales and zero points."""
    assert state.model is not None
    assert state.selection is not None
    assert state.ranges is not None
    return attrs.evolve(state, plan=make_plan(state.selection, state.model.graph, state.ranges))


def refine_npu_scale_positions(state: State) -> State:
    """Move power-of-two positions into the NPU's shift limits (NPULimitationCheck)."""
    assert state.model is not None
    assert state.plan is not None
    result = adjust_npu_positions(state.plan, state.model.graph, state.config.options)
    log_report(result.report)
    return attrs.evolve(
        state, plan=result.plan, notes=(*state.notes, result.report.summary_line())
    )


def report_npu_limits(state: State) -> State:
    """With NPULimitationCheck off, count the NPU limits the plan breaks, changing nothing."""
    assert state.model is not None
    assert state.plan is not None
    broken = npu_violations(state.plan, state.model.graph, state.config.options)
    for violation in broken[:10]:
        logger.warning("NPU limit broken (NPULimitationCheck=False): %s", violation.describe())
    note = f"NPU position checks are off (NPULimitationCheck=False): {len(broken)} limit(s) broken"
    return attrs.evolve(state, notes=(*state.notes, note))


def snap_scales_to_int16(state: State) -> State:
    """Replace every activation and weight scale by the nearest M / 2^N (Int16Scale)."""
    assert state.plan is not None
    return attrs.evolve(state, plan=snap_plan_scales(state.plan))


def refine_bias_scales(state: State) -> State:
    """Set bias scales to input scale x weight scale, widening weights on overflow."""
    assert state.plan is not None
    bias_type = DataType.Int16 if state.config.options.Int16Bias else DataType.Int32
    if not state.config.options.AdjustBiasScale:
        return attrs.evolve(state, plan=bias_from_own_range(state.plan, bias_type))
    return attrs.evolve(state, plan=refine_bias(state.plan, bias_type))


def write_qdq(state: State) -> State:
    """Insert the Q/DQ nodes and integer initializers."""
    assert state.model is not None
    assert state.plan is not None
    model = materialize(
        state.model, state.plan, qdq_pair_for_constants=state.config.options.AddQDQPairToWeight
    )
    return attrs.evolve(state, model=model)


def write_matmul_nbits(state: State) -> State:
    """Replace MatMul nodes with a constant B by MatMulNBits (UseMatMulNBits)."""
    from qrewrite.quantization.matmul_nbits import rewrite_matmuls

    assert state.model is not None
    result = rewrite_matmuls(state.model, state.config)
    return attrs.evolve(
        state, model=result.model, plan=result.plan, notes=(*state.notes, result.note)
    )


def remove_qdq_pairs(state: State) -> State:
    """Remove the Q/DQ pairs that the RemoveQDQ* options name, from the quantized model."""
    from qrewrite.rewrite import apply_rules

    assert state.model is not None
    result = apply_rules(state.model, qdq_removal_rules(state.config.options))
    notes = tuple(
        f"{name}: removed {report.matches} Q/DQ pair(s)"
        for name, report in result.rules.items()
        if report.matches
    )
    return attrs.evolve(state, model=result.model, notes=state.notes + notes)


def _removes_qdq_pairs(options: Any) -> bool:
    return len(qdq_removal_rules(options)) > 0


def build_stages(config: QConfig) -> list[Stage]:
    """Return the stage list for `config`, in order."""
    options = config.options
    stages: list[Stage] = [Stage("reject quantized input", reject_quantized_input)]
    if options.ConvertFP16ToFP32:
        stages.append(Stage("float16 to float32", float16_to_float32))
    else:
        stages.append(Stage("reject float16 input", reject_float16_input))
    if options.ConvertNCHWToNHWC:
        stages.append(Stage("NCHW to NHWC", nchw_to_nhwc))
    if options.FixShapes is not None:
        stages.append(Stage("fix shapes", fix_input_output_shapes))
    if options.RemoveInputInit:
        stages.append(Stage("remove input initializers", remove_input_initializers))
    if options.SimplifyModel:
        stages.append(Stage("simplify", simplify))
    stages.append(Stage("convert opset", convert_to_target_opset))
    if len(float_graph_rules(options)) > 0:
        stages.append(Stage("float-graph rules", apply_float_rules))
    if any(isinstance(algorithm, CLEConfig) for algorithm in config.algo_config):
        stages.append(Stage("cross-layer equalization", equalize_cross_layer))
    if options.UseMatMulNBits:
        # Weight-only and data-free: no selection, calibration or Q/DQ nodes.
        return [*stages, Stage("prepare", prepare), Stage("MatMulNBits", write_matmul_nbits)]
    stages += [
        Stage("prepare", prepare),
        Stage("select", select_targets),
        Stage("planner rules", apply_selection_rules),
        Stage("calibrate", calibrate_ranges),
        Stage("planner rules on ranges", apply_range_rules),
        Stage("plan", plan_parameters),
    ]
    if options.enable_npu_cnn and options.NPULimitationCheck:
        # Before the bias: refine_bias then derives int32 bias scales from final positions.
        stages.append(Stage("NPU positions", refine_npu_scale_positions))
    elif options.enable_npu_cnn:
        stages.append(Stage("NPU limits report", report_npu_limits))
    if options.Int16Scale:
        stages.append(Stage("int16 scales", snap_scales_to_int16))
    stages += [
        Stage("refine bias", refine_bias_scales),
        Stage("materialize", write_qdq),
    ]
    if _removes_qdq_pairs(options):
        stages.append(Stage("remove Q/DQ pairs", remove_qdq_pairs))
    return stages


def run_stages(stages: Sequence[Stage], state: State) -> State:
    """Run `stages` in order and return the final state, logging each stage's wall time."""
    for stage in stages:
        logger.debug("stage: %s", stage.name)
        start = time.perf_counter()
        state = stage.run(state)
        logger.debug("stage %s took %.3f s", stage.name, time.perf_counter() - start)
    return state


def quantize(
    config: QConfig,
    model_input: str | os.PathLike[str] | onnx.ModelProto,
    model_output: str | os.PathLike[str] | None,
    reader: Any,
) -> onnx.ModelProto:
    """Quantize one model with `config`; see `ModelQuantizer.quantize_model`."""
    with run_context(config):
        if config.options.CryptoMode and not isinstance(model_input, onnx.ModelProto):
            raise ConfigError("CryptoMode needs the model as an onnx.ModelProto, not a path")
        loaded = load_model(model_input)
        if model_output is not None:
            check_output_path(model_output, loaded)
        eval_source = None
        if config.options.EvalMetrics:
            # Checked first, so a missing evaluation set fails before any work is done.
            eval_source = evaluation_source(
                config.options.EvalDataReader, reader, config.options.UseRandomData
            )

        size_before = loaded.proto.ByteSize()
        source = SourceFiles(loaded.source_files)
        # EvalMetrics compares against the input model. Without it, only the first State
        # refers to the input, and `first.pop()` passes that State on without a local name.
        # So the input is freed once a stage replaces it (on MiniLM, 90 MB from simplify on).
        float_model = loaded.proto if config.options.EvalMetrics else None
        first = [State(config=config, proto=loaded.proto, reader=reader, output_path=model_output)]
        del loaded
        state = run_stages(build_stages(config), first.pop())
        assert state.model is not None
        assert state.plan is not None
        proto = ir.to_proto(state.model)
        notes = state.plan.selection.notes + state.notes + _nothing_quantized_notes(state)
        if config.options.EvalMetrics:
            # Before saving, so bad evaluation samples leave no output file behind.
            assert float_model is not None
            reference = _float_reference(float_model, config.options)
            report = evaluate_with_options(reference, proto, eval_source, config.options)
            notes += report.lines()

        if model_output is None:
            verify_model_proto(proto)
        else:
            save_model_atomic(
                proto,
                model_output,
                use_external_data=config.use_external_data_format,
                verify=verify_model_file,
                source=source,
            )

        summary = summarize(state.model, state.plan, size_before, proto.ByteSize(), notes)
        if config.options.prints_summary():
            print(summary.format())
        selection = state.plan.selection
        logger.info(
            "quantized %d nodes, and weights of %d nodes inside If, Loop or Scan bodies",
            len(selection.quantized_nodes),
            len(selection.body_nodes),
        )
        return proto


def _body_weight_nodes(graph: ir.Graph) -> int:
    """Count the nodes with a weight role inside If, Loop and Scan bodies of `graph`."""
    count = 0
    for node in ir.traversal.RecursiveGraphIterator(graph):
        if node.graph is not graph and node.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul"):
            count += 1
    return count


def _nothing_quantized_notes(state: State) -> tuple[str, ...]:
    """Warn when the run quantized nothing, and point to EnableSubgraph where it would help."""
    assert state.model is not None
    assert state.plan is not None
    selection = state.plan.selection
    if selection.quantized_nodes or selection.body_nodes or state.plan.params:
        return ()
    message = "nothing was quantized: no node of the main graph has a quantizable role"
    in_bodies = 0 if state.config.options.EnableSubgraph else _body_weight_nodes(state.model.graph)
    if in_bodies:
        message += (
            f"; {in_bodies} Conv, Gemm or MatMul node(s) sit inside If, Loop or Scan bodies, "
            "which EnableSubgraph=True quantizes"
        )
    if not state.config.options.prints_summary():
        logger.warning("%s", message)
    return (message,)


__all__ = ["QuantizationSummary", "Stage", "State", "build_stages", "quantize", "run_stages"]
