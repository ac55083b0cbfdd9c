"""The registry of extra options: every `QConfig(**kwargs)` key with its type and default.

`built` records whether qrewrite implements the option. An option that is not built accepts
only its default and raises `NotBuiltError` for any other value, so it is never accepted
and silently ignored. docs/options.md is generated from this table.
"""

from __future__ import annotations

from typing import Any

import attrs

from qrewrite.config import option_types as t


@attrs.frozen
class Option:
    """One extra option: its key, value type, default, meaning and implementation state."""

    name: str
    type: t.OptionType
    default: Any
    doc: str
    built: bool = True
    group: str = "general"


def _opt(name: str, type_: t.OptionType, default: Any, doc: str, **kw: Any) -> Option:
    return Option(name, type_, default, doc, **kw)


_GENERAL = [
    _opt(
        "OpTypesToQuantize",
        t.optional(t.STR_LIST),
        None,
        "Quantize only nodes of these op types. None quantizes every supported op type.",
    ),
    _opt(
        "ExtraOpTypesToQuantize",
        t.optional(t.STR_LIST),
        None,
        "Op types to quantize in addition to the default set; unknown op types get Q/DQ on "
        "their float inputs and outputs.",
    ),
    _opt(
        "ExecutionProviders",
        t.STR_LIST,
        ("CPUExecutionProvider",),
        "onnxruntime execution providers of the calibration session, in priority order. "
        "Each must be available in the installed onnxruntime.",
    ),
    _opt("DebugMode", t.BOOL, False, "Log at DEBUG level, whatever LogSeverityLevel says."),
    _opt(
        "CryptoMode",
        t.BOOL,
        False,
        "Keep the model in memory only: the input must be a ModelProto, nothing is logged "
        "or printed, and no file is written except the requested output.",
    ),
    _opt(
        "PrintSummary",
        t.BOOL,
        True,
        "Print a table of quantized op types, tensors per data type and model sizes.",
    ),
    _opt(
        "IgnoreWarnings",
        t.BOOL,
        True,
        "Suppress Python warnings raised by qrewrite and its dependencies during the run.",
    ),
    _opt(
        "LogSeverityLevel",
        t.LOG_LEVEL,
        1,
        "Level of the `qrewrite` logger: 0 DEBUG, 1 INFO, 2 WARNING, 3 ERROR, 4 CRITICAL.",
    ),
    _opt(
        "TmpDir",
        t.optional(t.STR),
        None,
        "Folder for temporary files; None uses the system temporary folder. qrewrite never "
        "writes to the working directory.",
    ),
    _opt(
        "EvalMetrics",
        t.BOOL,
        False,
        "After quantizing, run the float and the quantized model on EvalDataReader and "
        "report the mean and worst cosine similarity and L2 distance of every output in "
        "the summary and the log.",
        built=True,
    ),
    _opt(
        "EvalDataReader",
        t.OBJECT,
        None,
        "Samples for EvalMetrics, in the same forms as the calibration reader. None "
        "reuses the calibration samples when they are a list (or random data with "
        "UseRandomData).",
        built=True,
    ),
    _opt(
        "EncryptionAlgorithm",
        t.optional(t.choice("AES-256")),
        None,
        "Encrypt intermediate files written in CryptoMode. qrewrite writes none, so this "
        "is not needed.",
        built=False,
    ),
]

_PREPROCESS = [
    _opt(
        "OptimizeModel",
        t.BOOL,
        True,
        "Run the float-graph rule packs (BatchNorm folding and the fusions selected by "
        "their own options) before calibration. False skips all of them.",
    ),
    _opt(
        "ConvertFP16ToFP32",
        t.BOOL,
        False,
        "Convert a float16 model to float32 before quantizing: weights, constants, graph "
        "inputs and outputs and Cast targets, in subgraphs too. The quantized model then "
        "takes and returns float32.",
        built=True,
    ),
    _opt(
        "ConvertNCHWToNHWC",
        t.BOOL,
        False,
        "Declare each 4-D float graph input as NHWC and transpose it to NCHW inside the "
        "model, so the quantized model takes NHWC images. Calibration samples and FixShapes "
        "then use NHWC.",
        built=True,
    ),
    _opt(
        "RemoveInputInit",
        t.BOOL,
        True,
        "Drop initializers from the graph inputs, so they are constants rather than "
        "overridable defaults.",
    ),
    _opt(
        "SimplifyModel",
        t.BOOL,
        True,
        "Simplify the float model with onnxslim (constant folding, dead code removal).",
    ),
    _opt(
        "ConvertOpsetVersion",
        t.optional(t.OPSET),
        None,
        "Convert the model to this opset before quantizing. By default the opset is raised "
        "only as far as the requested types and granularity need.",
    ),
    _opt(
        "FixShapes",
        t.optional(t.STR),
        None,
        "Fix graph input and output shapes before quantizing, as "
        "'name:[1,3,224,224];other:[1,10]'. A shape must agree with the dimensions the "
        "model already fixes.",
        built=True,
    ),
    _opt("QuantizeFP16", t.BOOL, False, "Quantize a float16 model directly.", built=False),
    _opt(
        "UseFP32Scale",
        t.BOOL,
        True,
        "With QuantizeFP16, store scales as float32. Has no effect without QuantizeFP16.",
        built=False,
    ),
    _opt(
        "EnableSubgraph",
        t.BOOL,
        False,
        "Also quantize the weights in the bodies of If, Loop and Scan nodes, at any depth: "
        "they are stored as integers with a DequantizeLinear in the graph that defines "
        "them. Activations inside bodies stay float because calibration collects no "
        "ranges there, so an int32 bias of a body Conv or Gemm stays float too.",
    ),
]

_RULES = [
    _opt(
        "FoldBatchNorm",
        t.BOOL,
        True,
        "Fold BatchNormalization into a preceding Conv, ConvTranspose or Gemm, also through "
        "a Concat whose inputs all come from such ops.",
        group="rules",
    ),
    _opt(
        "FoldConvAffine",
        t.BOOL,
        True,
        "Fold a Mul, Add, Sub or Div by a constant with one value per output channel into "
        "the weight and bias of the Conv, ConvTranspose, Gemm or MatMul before it.",
        group="rules",
    ),
    _opt(
        "ConvertBNToConv",
        t.BOOL,
        False,
        "Turn a BatchNormalization that could not be folded into a depthwise 1x1 Conv.",
        group="rules",
    ),
    _opt(
        "ConvertReduceMeanToGlobalAvgPool",
        t.BOOL,
        False,
        "Turn ReduceMean over all spatial axes with keepdims into GlobalAveragePool.",
        group="rules",
    ),
    _opt(
        "SplitLargeKernelPool",
        t.BOOL,
        False,
        "Split a global or large-kernel AveragePool into several smaller AveragePools.",
        group="rules",
    ),
    _opt(
        "ConvertSplitToSlice",
        t.BOOL,
        False,
        "Turn Split into one Slice per output.",
        group="rules",
    ),
    _opt(
        "FuseInstanceNorm",
        t.BOOL,
        True,
        "Fuse the decomposed form of instance normalization into InstanceNormalization.",
        group="rules",
    ),
    _opt(
        "FuseL2Norm",
        t.BOOL,
        True,
        "Fuse x / sqrt(max(sum(x^2), eps)) and its variants into LpNormalization (p=2).",
        group="rules",
    ),
    _opt(
        "FuseGelu",
        t.BOOL,
        True,
        "Fuse the erf and tanh forms of GELU into the opset-20 Gelu op.",
        group="rules",
    ),
    _opt(
        "FuseHardSwish",
        t.BOOL,
        True,
        "Fuse x * Clip(x + 3, 0, 6) / 6 and x * HardSigmoid(x) (alpha 1/6) into the opset-14 "
        "HardSwish op. onnxruntime has no integer kernel for the decomposed form, so each of "
        "its steps runs in float between its own conversions. A model below opset 14 that "
        "contains the pattern is converted to opset 14 when the conversion succeeds and "
        "ConvertOpsetVersion is not set.",
        group="rules",
    ),
    _opt(
        "FuseLayerNorm",
        t.BOOL,
        True,
        "Fuse the decomposed form of layer normalization into LayerNormalization.",
        group="rules",
    ),
    _opt(
        "ConvertClipToRelu",
        t.BOOL,
        False,
        "Turn Clip with min 0 and no max into Relu.",
        group="rules",
    ),
    _opt(
        "ReplaceClip6Relu",
        t.BOOL,
        False,
        "Replace Clip(0, 6) with Relu. This changes results for inputs above 6.",
        group="rules",
    ),
    _opt(
        "CopySharedInit",
        t.optional(t.STR_LIST),
        None,
        "Give each consumer of these op types its own copy of a shared initializer; an "
        "empty list means every op type. None skips the copy.",
        group="rules",
    ),
    _opt(
        "CopyBiasInit",
        t.optional(t.STR_LIST),
        None,
        "Like CopySharedInit, for bias initializers. qrewrite already gives every use of a "
        "shared bias its own dequantization, so None is safe.",
        group="rules",
    ),
    _opt(
        "FoldRelu",
        t.BOOL,
        True,
        "Fold a Relu or Clip(0, max) into the output range of the Conv, ConvTranspose, "
        "Gemm, MatMul or Add before it: only the activation's output is quantized, so "
        "onnxruntime fuses the pair into one integer kernel. Applies when the activation "
        "is the producer's only consumer and its output spec is asymmetric.",
        group="planner",
    ),
]

_QUANTIZE = [
    _opt(
        "ActivationScaled",
        t.BOOL,
        True,
        "Scale activations to the target type's range. Only BFloat16 may turn this off.",
        built=False,
    ),
    _opt(
        "WeightScaled",
        t.BOOL,
        True,
        "Scale weights to the target type's range. Only BFloat16 may turn this off.",
        built=False,
    ),
    _opt(
        "UseUnsignedReLU",
        t.BOOL,
        False,
        "Quantize the outputs of Relu, and of Clip with min 0, asymmetrically.",
    ),
    _opt(
        "QuantizeBias",
        t.BOOL,
        True,
        "Quantize the bias of Conv, ConvTranspose and Gemm. False leaves it float.",
    ),
    _opt(
        "Int32Bias",
        t.BOOL,
        True,
        "Quantize bias to int32 with scale = input scale x weight scale. False quantizes "
        "it with the weight's spec instead.",
    ),
    _opt(
        "Int16Bias",
        t.BOOL,
        False,
        "Quantize bias to int16 with scale = input scale x weight scale (opset 21).",
    ),
    _opt(
        "ForceQuantizeNoInputCheck",
        t.BOOL,
        False,
        "Quantize data-movement ops (MaxPool, Reshape, Transpose, ...) even when their "
        "input is not quantized. By default they follow their input.",
    ),
    _opt("MatMulConstBOnly", t.BOOL, False, "Quantize only MatMul nodes whose B is constant."),
    _opt(
        "AddQDQPairToWeight",
        t.BOOL,
        False,
        "Keep weights float and insert QuantizeLinear and DequantizeLinear after them, "
        "instead of storing the quantized weight.",
    ),
    _opt(
        "OpTypesToExcludeOutputQuantization", t.STR_LIST, (), "Op types whose outputs stay float."
    ),
    _opt(
        "DedicatedQDQPair",
        t.BOOL,
        False,
        "Give every consumer of a quantized tensor its own QuantizeLinear and "
        "DequantizeLinear pair.",
    ),
    _opt(
        "QDQOpTypePerChannelSupportToAxis",
        t.AXIS_DICT,
        t.FrozenDict.of({}),
        "Channel axis of per-channel weights by op type, overriding the defaults "
        "(Conv 0, ConvTranspose 1, Gemm by transB, MatMul last).",
    ),
    _opt(
        "Int16Scale",
        t.BOOL,
        False,
        "Replace each activation and weight scale by the nearest M / 2^N with 1 <= M <= "
        "32767 and 0 <= N <= 65535 (relative change at most 3.1e-5). Bias scales stay the "
        "product of input and weight scale.",
        built=True,
    ),
    _opt(
        "QuantizeAllOpTypes",
        t.BOOL,
        False,
        "Quantize every op type, including ones outside the supported list.",
    ),
    _opt("WeightsOnly", t.BOOL, False, "Quantize weights only; activations stay float."),
    _opt(
        "AlignEltwiseQuantType",
        t.BOOL,
        True,
        "Quantize the constant operands of Mul, Add, Sub, Div, Min and Max with the "
        "activation spec, so both operands share one integer type; False uses the weight "
        "spec (per tensor). qrewrite defaults to True, unlike the option list, because "
        "onnxruntime fuses QLinearAdd and QLinearMul only when both operands have one "
        "type.",
        built=True,
    ),
    _opt(
        "AdjustBiasScale",
        t.BOOL,
        True,
        "Set the int32 (or int16) bias scale to input scale x weight scale, widening weight "
        "scales where the bias would overflow. False gives the bias a symmetric scale of "
        "its own range; onnxruntime then dequantizes it instead of fusing the node into an "
        "integer kernel.",
        built=True,
    ),
    _opt(
        "UseMatMulNBits",
        t.BOOL,
        False,
        "Replace every main-graph MatMul whose B is a constant 2-D float32 matrix by "
        "com.microsoft.MatMulNBits with 4-bit weights in blocks along K. Weight-only: "
        "activations and all other nodes stay float, global_config and calibration are "
        "not used, and exclude and specific_layer_config still leave nodes float.",
    ),
    _opt(
        "MatMulNBitsParams",
        t.MATMUL_NBITS_PARAMS,
        t.FrozenDict.of({}),
        "Settings of UseMatMulNBits. Algorithm: 'DEFAULT' (round to nearest per block) "
        "or 'HQQ' (half-quadratic search of each block's zero point, or of its scale when "
        "symmetric); 'GPTQ' is not built. GroupSize: elements per block, a power of two "
        ">= 16, default 128. Symmetric: default True (zero point 8). Bits: only 4. "
        "AccuracyLevel: MatMulNBits accuracy_level, 0 unset, 1 fp32, 2 fp16, 3 bf16, 4 "
        "int8 (onnxruntime quantizes A to int8 blocks), default 0.",
    ),
    _opt(
        "BF16WithClip",
        t.BOOL,
        False,
        "With BFloat16, clip activations before quantizing them.",
        built=False,
    ),
    _opt(
        "BF16QDQToCast",
        t.BOOL,
        False,
        "With BFloat16, express quantization as Cast nodes.",
        built=False,
    ),
    _opt(
        "EnableVaimlBF16",
        t.BOOL,
        False,
        "Store BFloat16 weights as float32 for the VAIML compiler.",
        built=False,
    ),
]

_CALIBRATION = [
    _opt(
        "UseRandomData",
        t.BOOL,
        False,
        "Calibrate on random data when no calibration reader is given.",
        group="calibration",
    ),
    _opt(
        "RandomDataReaderInputShape",
        t.SHAPE_DICT,
        t.FrozenDict.of({}),
        "Shapes of the random samples by input name; needed for inputs with dynamic dims.",
        group="calibration",
    ),
    _opt(
        "RandomDataReaderInputDataRange",
        t.optional(t.RANGE_DICT),
        None,
        "Value range [low, high] of the random samples by input name. Inputs not listed "
        "get [0, 1) for floats and their type's range for integers.",
        group="calibration",
    ),
    _opt(
        "CalibDataSize",
        t.optional(t.POSITIVE_INT),
        None,
        "Use at most this many calibration samples. None uses all.",
        group="calibration",
    ),
    _opt(
        "CalibMovingAverage",
        t.BOOL,
        False,
        "With MinMax, track the minimum and maximum as exponential moving averages over "
        "the samples instead of the global extremes.",
        group="calibration",
    ),
    _opt(
        "CalibMovingAverageConstant",
        t.FRACTION,
        0.01,
        "Smoothing factor of CalibMovingAverage: weight of each new sample.",
        group="calibration",
    ),
    _opt(
        "CalibTensorRangeSymmetric",
        t.BOOL,
        False,
        "Make every calibrated range symmetric around zero.",
        group="calibration",
        built=True,
    ),
    _opt(
        "Percentile",
        t.PERCENT,
        99.999,
        "Percentile kept by the Percentile method.",
        group="calibration",
        built=True,
    ),
    _opt(
        "LWPMetric",
        t.choice("mae", "mse"),
        "mae",
        "Error metric of LayerwisePercentile.",
        group="calibration",
        built=True,
    ),
    _opt(
        "ActivationBitWidth",
        t.BIT_WIDTH,
        8,
        "Bit width LayerwisePercentile simulates when it measures quantization error.",
        group="calibration",
        built=True,
    ),
    _opt(
        "PercentileCandidates",
        t.PERCENT_LIST,
        (99.99, 99.999, 99.9999),
        "Percentiles LayerwisePercentile tries per tensor.",
        group="calibration",
        built=True,
    ),
    _opt(
        "MinMSEModePof2Scale",
        t.choice("All", "MostCommon"),
        "All",
        "Power-of-two MinMSE: one search over all data, or one per sample with the most "
        "frequent result.",
        group="calibration",
        built=True,
    ),
    _opt(
        "CalibOptimizeMem",
        t.BOOL,
        True,
        "Cache activations on disk for methods that read the data several times. Every "
        "qrewrite method streams its statistics in one pass with bounded memory, so no "
        "activation is ever cached and both values give the same result.",
        group="calibration",
    ),
    _opt(
        "CalibWorkerNum",
        t.POSITIVE_INT,
        1,
        "Number of worker processes that share the calibration samples.",
        group="calibration",
        built=True,
    ),
    _opt(
        "TensorsRangeFile",
        t.optional(t.STR),
        None,
        "JSON file of tensor ranges: loaded when it exists, otherwise written after calibration.",
        group="calibration",
        built=True,
    ),
    _opt(
        "SaveTensorHistFig",
        t.BOOL,
        False,
        "Save a PNG histogram per tensor with its chosen range, next to the output model.",
        group="calibration",
        built=True,
    ),
]

_NPU = [
    _opt(
        "enable_npu_cnn",
        t.BOOL,
        False,
        "Target AMD NPUs for CNNs. Specs must use power-of-two scales and per-tensor "
        "weights (QConfig() without global_config then uses XInt8Spec for both, with "
        "activation ranges from the power-of-two MinMSE search). Switches "
        "on the defaults in NPU_CNN_DEFAULTS, DPU simulation (SimulateDPU), the NPU "
        "position checks (NPULimitationCheck) and the QDQ removal between Conv, Add or "
        "Gemm and its activation (RemoveQDQConv*). An option given explicitly keeps its "
        "value.",
        group="npu",
        built=True,
    ),
    _opt(
        "enable_npu_transformer",
        t.BOOL,
        False,
        "Target AMD NPUs for transformers.",
        group="npu",
        built=False,
    ),
    _opt(
        "SimulateDPU",
        t.BOOL,
        True,
        "With enable_npu_cnn, replace ops by the approximations the DPU computes.",
        group="npu",
        built=True,
    ),
    _opt(
        "ConvertLeakyReluToDPUVersion",
        t.BOOL,
        True,
        "With SimulateDPU, round LeakyRelu's alpha to the DPU's k/256 slope (0.1 becomes "
        "26/256).",
        group="npu",
        built=True,
    ),
    _opt(
        "ConvertSigmoidToHardSigmoid",
        t.BOOL,
        True,
        "With SimulateDPU, replace Sigmoid by HardSigmoid(1/6, 0.5); outputs move by up to "
        "0.069.",
        group="npu",
        built=True,
    ),
    _opt(
        "ConvertHardSigmoidToDPUVersion",
        t.BOOL,
        True,
        "With SimulateDPU, compute HardSigmoid(1/6, 0.5) as the DPU does, relu6(x + 3) x "
        "2731/16384: the HardSigmoid is followed by a Mul.",
        group="npu",
        built=True,
    ),
    _opt(
        "ConvertAvgPoolToDPUVersion",
        t.BOOL,
        True,
        "With SimulateDPU, follow AveragePool and GlobalAveragePool by a Mul so the result is "
        "the window sum times the DPU's m/2^s approximation of 1/N (3x3: 7/64).",
        group="npu",
        built=True,
    ),
    _opt(
        "ConvertClipToDPUVersion",
        t.BOOL,
        False,
        "With SimulateDPU, round Clip's bounds to integers in [-128, 127]. This matches the "
        "device only where the Clip's output scale is 1.",
        group="npu",
        built=True,
    ),
    _opt(
        "ConvertReduceMeanToDPUVersion",
        t.BOOL,
        True,
        "With SimulateDPU, follow ReduceMean by a Mul so the result is the sum times the "
        "DPU's m/2^s approximation of 1/N.",
        group="npu",
        built=True,
    ),
    _opt(
        "ConvertSoftmaxToDPUVersion",
        t.BOOL,
        False,
        "With SimulateDPU, replace Softmax (opset 13+) by the DPU's bfloat16 approximation "
        "without max subtraction, which differs from exact softmax by up to 0.054 for logits "
        "in [-32, 32] and gives NaN for logits above 88.25.",
        group="npu",
        built=True,
    ),
    _opt(
        "NPULimitationCheck",
        t.BOOL,
        True,
        "With enable_npu_cnn, move power-of-two positions (scale = 2^-p) into the NPU's shift "
        "limits before the bias is quantized; docs/design.md lists the limits.",
        group="npu",
        built=True,
    ),
    _opt(
        "MaxLoopNum",
        t.POSITIVE_INT,
        5,
        "Maximum rounds of the NPU position checks; limits still broken after the last "
        "round are logged as warnings and counted in the summary.",
        group="npu",
        built=True,
    ),
    _opt(
        "AdjustShiftCut",
        t.BOOL,
        True,
        "NPU check for Conv and Gemm: keep weight + input - output positions in [0, 16] "
        "by moving the weight position.",
        group="npu",
        built=True,
    ),
    _opt(
        "AdjustShiftBias",
        t.BOOL,
        True,
        "NPU check for Conv and Gemm: keep weight + input - bias positions in [min(0, cut - "
        "16), 15] by moving the bias position.",
        group="npu",
        built=True,
    ),
    _opt(
        "AdjustShiftRead",
        t.BOOL,
        True,
        "NPU check for Add and Sub: keep the spread of the input positions at most 7.",
        group="npu",
        built=True,
    ),
    _opt(
        "AdjustShiftWrite",
        t.BOOL,
        True,
        "NPU check: Add keeps min(inputs) - output in [-7, 25], Mul keeps sum(inputs) - "
        "output in [0, 32], by moving the output position.",
        group="npu",
        built=True,
    ),
    _opt(
        "AdjustHardSigmoid",
        t.BOOL,
        True,
        "NPU check for HardSigmoid: input position in [0, 15], output at least 7, and 14 + "
        "input - output in [0, 31].",
        group="npu",
        built=True,
    ),
    _opt(
        "AdjustShiftSwish",
        t.BOOL,
        True,
        "NPU check for Mul(x, HardSigmoid(x)): keep the two input positions minus the output "
        "position in [0, 15].",
        group="npu",
        built=True,
    ),
    _opt(
        "AlignConcat",
        t.optional(t.BOOL),
        None,
        "NPU check: give Concat inputs and output one position. None means True with "
        "power-of-two scales.",
        group="npu",
        built=True,
    ),
    _opt(
        "AlignPool",
        t.optional(t.BOOL),
        None,
        "NPU check: align pooling positions. None means True with power-of-two scales.",
        group="npu",
        built=True,
    ),
    _opt(
        "AlignPad",
        t.optional(t.BOOL),
        None,
        "NPU check: align Pad positions. None means True with power-of-two scales.",
        group="npu",
        built=True,
    ),
    _opt(
        "AlignSlice",
        t.optional(t.BOOL),
        None,
        "NPU check: align Slice positions. None means True with power-of-two scales.",
        group="npu",
        built=True,
    ),
    _opt(
        "AlignTranspose",
        t.BOOL,
        False,
        "NPU check: align Transpose positions.",
        group="npu",
        built=True,
    ),
    _opt(
        "AlignReshape",
        t.BOOL,
        False,
        "NPU check: align Reshape positions.",
        group="npu",
        built=True,
    ),
    _opt(
        "RemoveQDQConvClip",
        t.BOOL,
        True,
        "With enable_npu_cnn, remove the Q/DQ between Conv, Add or Gemm and a following "
        "Clip, which the NPU fuses into its producer.",
        group="npu",
        built=True,
    ),
    _opt(
        "RemoveQDQConvRelu",
        t.BOOL,
        True,
        "With enable_npu_cnn, remove the Q/DQ between Conv, Add or Gemm and a following "
        "Relu, which the NPU fuses into its producer.",
        group="npu",
        built=True,
    ),
    _opt(
        "RemoveQDQConvLeakyRelu",
        t.BOOL,
        True,
        "With enable_npu_cnn, remove the Q/DQ between Conv, Add or Gemm and a following "
        "LeakyRelu, which the NPU fuses into its producer.",
        group="npu",
        built=True,
    ),
    _opt(
        "RemoveQDQConvPRelu",
        t.BOOL,
        True,
        "With enable_npu_cnn, remove the Q/DQ between Conv, Add or Gemm and a following "
        "PRelu, which the NPU fuses into its producer.",
        group="npu",
        built=True,
    ),
    _opt(
        "RemoveQDQConvGelu",
        t.BOOL,
        False,
        "With enable_npu_cnn, remove the Q/DQ between Conv, Add or Gemm and a following "
        "Gelu.",
        group="npu",
        built=True,
    ),
    _opt(
        "RemoveQDQMulAdd",
        t.BOOL,
        False,
        "Remove the Q/DQ between Mul and a following Add.",
        group="npu",
        built=True,
    ),
    _opt(
        "RemoveQDQBetweenOps",
        t.optional(t.OP_PAIRS),
        None,
        "Remove the Q/DQ between each listed (producer, consumer) op type pair.",
        group="npu",
        built=True,
    ),
    _opt(
        "RemoveQDQInstanceNorm",
        t.BOOL,
        False,
        "Remove the Q/DQ between InstanceNormalization and a following activation.",
        group="npu",
        built=True,
    ),
]

# qrewrite's own planner rules, on by default; each option turns one of them off.
_PLANNER = [
    _opt(
        "PerChannelWeightsByDefault",
        t.BOOL,
        True,
        "Quantize the weights of Conv, ConvTranspose, Gemm and MatMul per channel even when "
        "the weight spec asks for per-tensor, because one scale per tensor rounds small "
        "channels (depthwise and small-weight layers) to zero. Raises the opset to 13 "
        "where needed.",
        group="planner",
    ),
    _opt(
        "KeepSentinelTensorsFloat",
        t.BOOL,
        True,
        "Leave float the tensors whose calibrated range is set by sentinel values (an "
        "attention mask adding the float32 minimum, infinities, or a peak SentinelRatio "
        "times above the rest of the data), and the attention scores they are added to.",
        group="planner",
    ),
    _opt(
        "SentinelRatio",
        t.OptionType("float > 1", t._float_in(1.0, float("inf"), open_low=True)),
        1e4,
        "How far above a tensor's robust range a peak must be to count as a sentinel. "
        "The robust range of the sum of an Add or Sub is the range of its other operand.",
        group="planner",
    ),
    _opt(
        "KeepOutlierTensorsFloat",
        t.BOOL,
        True,
        "Leave float the activations whose range a few channels dominate, and the weights "
        "of the Conv, Gemm or MatMul that reads them: the largest per-channel peak (the "
        "maximum absolute value of a slice along the last axis) is OutlierChannelRatio "
        "times the median one. Calibration then runs a second onnxruntime session on "
        "each sample to collect the per-channel peaks.",
        group="planner",
    ),
    _opt(
        "OutlierChannelRatio",
        t.OptionType("float > 1", t._float_in(1.0, float("inf"), open_low=True)),
        8.0,
        "Ratio of the largest to the median per-channel peak from which "
        "KeepOutlierTensorsFloat leaves a tensor float.",
        group="planner",
    ),
    _opt(
        "SplitOutputConcat",
        t.BOOL,
        True,
        "When a Concat writes a graph output, quantize each of its inputs with its own "
        "scale and leave the output float, so values of very different ranges (box "
        "coordinates next to class scores) keep their precision.",
        group="planner",
    ),
    _opt(
        "KeepSlowOpsFloat",
        t.BOOL,
        True,
        "Leave float the ops whose onnxruntime CPU integer kernel is slower than the float "
        "op between a DequantizeLinear and a QuantizeLinear, as measured by "
        "benchmarks/bench_kernels.py: a MaxPool that neither reads nor feeds a Conv gets "
        "separate input and output scales, and a depthwise Conv with a kernel above 3x3 or "
        "fewer than 64 channels keeps float weights where its input comes only from a Div "
        "or HardSigmoid. Applies only when ExecutionProviders is CPUExecutionProvider "
        "alone.",
        group="planner",
    ),
    _opt(
        "WarnSlowTypes",
        t.BOOL,
        True,
        "Add a note to the summary when activations are quantized to int8 while "
        "ExecutionProviders is CPUExecutionProvider alone, because onnxruntime runs int8 "
        "activations slower than uint8 there, often slower than float. The types stay as "
        "requested.",
        group="planner",
    ),
    _opt(
        "KeepSqrtLogInputsFloat",
        t.BOOL,
        True,
        "Leave float the input of each Sqrt, Log, Reciprocal and Pow with a constant "
        "exponent below 1, and the operands of the Add, Sub, ReduceSum, ReduceMean and "
        "constant Mul or Div that compute it, because these ops turn the rounding of "
        "values near zero into large errors (a magnitude Sqrt(re^2 + im^2) of quiet audio).",
        group="planner",
    ),
]

# Defaults that enable_npu_cnn switches to, unless the option is given explicitly.
# The NPU has no per-channel weights and runs the bias in the weight's type; the
# planner defaults that target onnxruntime's CPU kernels do not apply. The NPU runs
# hard swish as x * HardSigmoid(x), the form its position checks expect, so that
# form is not fused.
NPU_CNN_DEFAULTS: dict[str, Any] = {
    "ConvertBNToConv": True,
    "ConvertReduceMeanToGlobalAvgPool": True,
    "SplitLargeKernelPool": True,
    "ConvertSplitToSlice": True,
    "ConvertClipToRelu": True,
    "FuseHardSwish": False,
    "Int32Bias": False,
    "PerChannelWeightsByDefault": False,
    "KeepSlowOpsFloat": False,
    "WarnSlowTypes": False,
}

OPTIONS: dict[str, Option] = {
    option.name: option
    for option in _GENERAL + _PREPROCESS + _RULES + _QUANTIZE + _CALIBRATION + _NPU + _PLANNER
}
