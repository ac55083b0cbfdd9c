"""The `qrewrite` command line.

    qrewrite quantize IN.onnx OUT.onnx [options]
    qrewrite demo

Exit codes: 0 when the command finished, 2 for bad usage or bad input (argument errors
and every `QrewriteError`), 1 for an internal failure, and 130 when interrupted with
Ctrl-C. An error prints one line on stderr. The traceback is printed only with --debug.
"""

from __future__ import annotations

import argparse
import copy
import signal
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from qrewrite import __version__
from qrewrite.config import CalibMethod, QConfig, QLayerConfig, ScaleType
from qrewrite.config.files import config_from_mapping, read_config_file, spec_to_mapping
from qrewrite.errors import MissingCalibrationDataError, QrewriteError
from qrewrite.recommended import TARGETS, recommended_layer_config

EXIT_OK = 0
EXIT_INTERNAL_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, the shell convention

TYPE_CHOICES = (
    "Int4",
    "UInt4",
    "Int8",
    "UInt8",
    "XInt8",
    "Int16",
    "UInt16",
    "Int32",
    "UInt32",
    "BFloat16",
    "BFP16",
    "float",
)


class UsageError(Exception):
    """A command-line argument that is missing, malformed or contradicts another one."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see {self.prog} --help)")


def default_layer_config() -> QLayerConfig:
    """Return the activation and weight specs used when no config file or flag sets them.

    These are the types of `qrewrite.recommended_config()` for onnxruntime on CPU: uint8
    asymmetric activations and int8 symmetric per-channel weights, whose integer kernels
    onnxruntime fuses there. QConfig() itself keeps int8 for both.
    """
    return recommended_layer_config("cpu")


def build_parser() -> argparse.ArgumentParser:
    """Build the parser of `qrewrite` and its subcommands."""
    parser = _Parser(
        prog="qrewrite",
        description="Post-training quantization of ONNX models to QDQ models for onnxruntime.",
    )
    parser.add_argument("--version", action="version", version=f"qrewrite {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    quantize = commands.add_parser(
        "quantize",
        help="quantize a float ONNX model",
        description=(
            "Quantize a float ONNX model to a QDQ model. Settings come from QConfig's "
            "defaults with the recommended onnxruntime CPU types (uint8 asymmetric "
            "activations, int8 symmetric per-channel weights), then --config, then the "
            "flags below, each overriding the one before."
        ),
    )
    _add_quantize_arguments(quantize)
    quantize.set_defaults(handler=run_quantize)

    demo = commands.add_parser(
        "demo",
        help="quantize the bundled digits CNN and print its accuracy",
        description="Quantize the bundled digits CNN and print float and quantized accuracy.",
    )
    demo.add_argument("--debug", action="store_true", help="print tracebacks of errors")
    demo.set_defaults(handler=run_demo)
    return parser


def _add_quantize_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", metavar="IN.onnx", help="float ONNX model to quantize")
    parser.add_argument("output", metavar="OUT.onnx", help="path of the quantized model")

    types = parser.add_argument_group("data types and scales")
    types.add_argument(
        "--activation-type",
        choices=TYPE_CHOICES,
        metavar="TYPE",
        help=f"data type of activations, or 'float' to keep them float: {', '.join(TYPE_CHOICES)}",
    )
    types.add_argument(
        "--weight-type",
        choices=TYPE_CHOICES,
        metavar="TYPE",
        help="data type of weights, or 'float' to keep them float (same choices)",
    )
    symmetry = types.add_mutually_exclusive_group()
    symmetry.add_argument(
        "--symmetric",
        dest="symmetric",
        action="store_const",
        const=True,
        help="symmetric ranges (zero point 0) for activations and weights",
    )
    symmetry.add_argument(
        "--asymmetric",
        dest="symmetric",
        action="store_const",
        const=False,
        help="asymmetric ranges for activations and weights",
    )
    granularity = types.add_mutually_exclusive_group()
    granularity.add_argument(
        "--per-tensor",
        dest="granularity",
        action="store_const",
        const="Tensor",
        help="one weight scale per tensor",
    )
    granularity.add_argument(
        "--per-channel",
        dest="granularity",
        action="store_const",
        const="Channel",
        help="one weight scale per output channel",
    )
    types.add_argument(
        "--scale-type",
        choices=[member.name for member in ScaleType],
        help="representation of activation and weight scales",
    )
    types.add_argument(
        "--calibration-method",
        choices=[member.name for member in CalibMethod],
        help="how activation ranges are chosen from the calibration data",
    )

    data = parser.add_argument_group("calibration data")
    source = data.add_mutually_exclusive_group()
    source.add_argument(
        "--calibration-data",
        metavar="PATH",
        help="a .npz file with NAME/INDEX keys, or a folder with one .npz or .npy file per sample",
    )
    source.add_argument(
        "--random-data",
        action="store_true",
        help="calibrate on seeded random data instead of real samples",
    )
    data.add_argument(
        "--input-shape",
        action="append",
        default=[],
        metavar="NAME=D1,D2,...",
        help="shape of the random data for one input, like x=1,3,224,224 (repeatable)",
    )
    data.add_argument(
        "--input-range",
        action="append",
        default=[],
        metavar="NAME=LOW,HIGH",
        help="value range of the random data for one input, like x=-1,1 (repeatable)",
    )
    data.add_argument(
        "--calibration-size",
        type=_positive_int,
        metavar="N",
        help="use at most N calibration samples",
    )

    other = parser.add_argument_group("other settings")
    other.add_argument(
        "--target",
        choices=TARGETS,
        default=None,
        help="hardware to tune the default types and rules for: cpu (onnxruntime on CPU, "
        "the default) or npu_cnn (AMD NPU: XInt8 types, enable_npu_cnn)",
    )
    other.add_argument(
        "--config",
        metavar="FILE",
        help="JSON or TOML file with any QConfig field and extra option",
    )
    other.add_argument(
        "--eval-data",
        metavar="PATH",
        help="samples in the --calibration-data formats to compare the quantized model with "
        "the float one on (turns on EvalMetrics: cosine and L2 of every output in the summary)",
    )
    other.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="NAME",
        help="node name or regular expression to keep in float (repeatable)",
    )
    other.add_argument(
        "--external-data",
        action="store_true",
        help="save the weights in OUT.onnx.data next to the model",
    )
    verbosity = other.add_mutually_exclusive_group()
    verbosity.add_argument(
        "--debug", action="store_true", help="log at DEBUG level and print tracebacks of errors"
    )
    verbosity.add_argument(
        "--quiet", action="store_true", help="print only errors, with no summary table"
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_input_shapes(entries: Sequence[str]) -> dict[str, list[int]]:
    """Parse `NAME=D1,D2,...` entries into a dict of input name to shape."""
    shapes: dict[str, list[int]] = {}
    for entry in entries:
        name, values = _split_entry(entry, "--input-shape", "x=1,3,224,224")
        try:
            shape = [int(value) for value in values]
        except ValueError:
            raise UsageError(
                f"--input-shape {entry!r}: dimensions must be integers, like x=1,3,224,224"
            ) from None
        if any(dim < 0 for dim in shape):
            raise UsageError(f"--input-shape {entry!r}: dimensions must not be negative")
        shapes[name] = shape
    return shapes


def parse_input_ranges(entries: Sequence[str]) -> dict[str, list[float]]:
    """Parse `NAME=LOW,HIGH` entries into a dict of input name to [low, high]."""
    ranges: dict[str, list[float]] = {}
    for entry in entries:
        name, values = _split_entry(entry, "--input-range", "x=-1,1")
        try:
            bounds = [float(value) for value in values]
        except ValueError:
            raise UsageError(
                f"--input-range {entry!r}: bounds must be numbers, like x=-1,1"
            ) from None
        if len(bounds) != 2 or not bounds[0] <= bounds[1]:
            raise UsageError(f"--input-range {entry!r}: give LOW,HIGH with LOW <= HIGH")
        ranges[name] = bounds
    return ranges


def _split_entry(entry: str, flag: str, example: str) -> tuple[str, list[str]]:
    name, separator, values = entry.rpartition("=")
    if not separator or not name or not values:
        raise UsageError(f"{flag} {entry!r} must have the form NAME=VALUES, like {example}")
    return name, values.split(",")


def build_config(args: argparse.Namespace, options: Mapping[str, Any] | None = None) -> QConfig:
    """Build the QConfig of `qrewrite quantize` from --config, the flags and `options`.

    The config file is validated alone first, so an error in it names the file. The
    flags then override the file's values, and `options` (extra options that need
    Python objects, such as EvalDataReader) override both.
    """
    data: dict[str, Any] = {}
    if args.config is not None:
        data = read_config_file(args.config)
        config_from_mapping(data, source=args.config)
    merged = apply_flags(data, args)
    for name, value in (options or {}).items():
        _set_option(merged, name, value)
    return config_from_mapping(merged)


def apply_flags(data: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Return a copy of the config mapping `data` with the command-line flags applied."""
    merged = copy.deepcopy(data)
    if args.target == "npu_cnn":
        _set_option(merged, "enable_npu_cnn", True)
    elif args.target == "cpu" and _get_option(merged, "enable_npu_cnn"):
        raise UsageError("--target cpu contradicts enable_npu_cnn in the config file")
    _apply_spec_flags(merged, args)

    if args.exclude:
        merged["exclude"] = [*(merged.get("exclude") or []), *args.exclude]
    if args.external_data:
        merged["use_external_data_format"] = True
    if args.calibration_size is not None:
        _set_option(merged, "CalibDataSize", args.calibration_size)
    if args.random_data:
        _set_option(merged, "UseRandomData", True)
    if args.input_shape:
        shapes = dict(_get_option(merged, "RandomDataReaderInputShape") or {})
        shapes.update(parse_input_shapes(args.input_shape))
        _set_option(merged, "RandomDataReaderInputShape", shapes)
    if args.input_range:
        ranges = dict(_get_option(merged, "RandomDataReaderInputDataRange") or {})
        ranges.update(parse_input_ranges(args.input_range))
        _set_option(merged, "RandomDataReaderInputDataRange", ranges)
    if args.debug:
        _set_option(merged, "DebugMode", True)
    if args.quiet:
        _set_option(merged, "LogSeverityLevel", 3)
        _set_option(merged, "PrintSummary", False)
    return merged


def _apply_spec_flags(merged: dict[str, Any], args: argparse.Namespace) -> None:
    """Fill in `default_layer_config` when the file sets no global_config, then apply flags."""
    spec_flags = (
        args.activation_type,
        args.weight_type,
        args.symmetric,
        args.granularity,
        args.scale_type,
        args.calibration_method,
    )
    default = (
        recommended_layer_config("npu_cnn")
        if _get_option(merged, "enable_npu_cnn")
        else default_layer_config()
    )
    if "global_config" not in merged:
        merged["global_config"] = {}
    if isinstance(merged["global_config"], dict):
        # A role the file leaves out gets the command line's default type, not QConfig's.
        for role in ("activation", "weight"):
            if role not in merged["global_config"]:
                merged["global_config"][role] = spec_to_mapping(getattr(default, role))
    if all(flag is None for flag in spec_flags):
        return

    layer = merged["global_config"]
    if not isinstance(layer, dict):
        raise UsageError("global_config in the config file must be a table to apply type flags")

    for role, type_name in (("activation", args.activation_type), ("weight", args.weight_type)):
        if type_name == "float":
            layer[role] = None
        elif type_name is not None:
            spec = layer.get(role)
            layer[role] = {**(spec if isinstance(spec, dict) else {}), "type": type_name}

    if _get_option(merged, "enable_npu_cnn") and args.scale_type is None:
        # The NPU needs power-of-two scales, so a type flag keeps them.
        for role, type_name in (("activation", args.activation_type), ("weight", args.weight_type)):
            if type_name not in (None, "float") and isinstance(layer.get(role), dict):
                layer[role]["scale_type"] = "PowerOf2"

    symmetry_flag = "--symmetric" if args.symmetric else "--asymmetric"
    _set_spec_field(layer, ("activation", "weight"), "symmetric", args.symmetric, symmetry_flag)
    granularity_flag = "--per-channel" if args.granularity == "Channel" else "--per-tensor"
    _set_spec_field(layer, ("weight",), "quant_granularity", args.granularity, granularity_flag)
    _set_spec_field(layer, ("activation", "weight"), "scale_type", args.scale_type, "--scale-type")
    _set_spec_field(
        layer,
        ("activation",),
        "calibration_method",
        args.calibration_method,
        "--calibration-method",
    )


def _set_spec_field(
    layer: dict[str, Any], roles: Sequence[str], key: str, value: Any, flag: str
) -> None:
    """Set `key` on the specs of `roles` that are quantized; float specs are left alone."""
    if value is None:
        return
    quantized = [role for role in roles if isinstance(layer.get(role), dict)]
    if not quantized:
        raise UsageError(
            f"{flag} has no effect because {' and '.join(roles)} stay float; set "
            f"--{roles[0]}-type as well"
        )
    for role in quantized:
        layer[role][key] = value


def _get_option(merged: dict[str, Any], name: str) -> Any:
    table = merged.get("options")
    if isinstance(table, dict) and name in table:
        return table[name]
    return merged.get(name)


def _set_option(merged: dict[str, Any], name: str, value: Any) -> None:
    """Set an extra option at top level, removing it from the options table if present."""
    table = merged.get("options")
    if isinstance(table, dict):
        table.pop(name, None)
    merged[name] = value


def run_quantize(args: argparse.Namespace) -> int:
    """Run `qrewrite quantize`: check the paths, build the config and quantize."""
    from qrewrite import ModelQuantizer
    from qrewrite.calibration.files import read_calibration_data
    from qrewrite.model.io import check_output_path, inspect_model_file

    if (args.input_shape or args.input_range) and args.calibration_data is not None:
        raise UsageError(
            "--input-shape and --input-range apply only to random data, not to --calibration-data"
        )
    config = build_config(args)

    # Check the paths before any work, so a wrong path fails at once.
    model_file = inspect_model_file(args.input)
    check_output_path(args.output, model_file)

    reader = None
    if args.calibration_data is not None:
        reader = read_calibration_data(args.calibration_data, model_file.input_names)
    if args.eval_data is not None:
        evaluation = read_calibration_data(args.eval_data, model_file.input_names)
        config = build_config(args, {"EvalMetrics": True, "EvalDataReader": evaluation})

    # Weight-only configs need no samples; the pipeline raises when a config needs them.
    try:
        ModelQuantizer(config).quantize_model(args.input, args.output, reader)
    except MissingCalibrationDataError:
        raise UsageError(
            "no calibration data: give --calibration-data PATH (a .npz file or a folder) or "
            "--random-data"
        ) from None
    if not args.quiet:
        print(f"Quantized model written to {args.output}")
    return EXIT_OK


def run_demo(args: argparse.Namespace) -> int:
    """Run `qrewrite demo`."""
    from qrewrite.demo import run

    # An empty list, so that the demo parses no arguments rather than this process's.
    return int(run.main([]) or EXIT_OK)


def _interrupt_on_terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (sys.argv[1:] when None) and return the exit code."""
    if argv is None:
        # SIGTERM unwinds like Ctrl-C, so temporary folders and partial files are removed.
        signal.signal(signal.SIGTERM, _interrupt_on_terminate)
    debug = False
    try:
        args = build_parser().parse_args(argv)
        debug = args.debug
        return int(args.handler(args))
    except SystemExit as exit_request:
        # argparse exits after --help and --version; the demo may call sys.exit too.
        code = exit_request.code
        if code is None:
            return EXIT_OK
        if isinstance(code, int):
            return code
        return EXIT_USAGE
    except UsageError as error:
        _print_error(str(error), debug)
        return EXIT_USAGE
    except QrewriteError as error:
        _print_error(str(error), debug)
        return EXIT_USAGE
    except KeyboardInterrupt:
        _print_error("interrupted", debug)
        return EXIT_INTERRUPTED
    except Exception as error:
        hint = "" if debug else "; rerun with --debug for the traceback"
        _print_error(
            f"internal error: {type(error).__name__}: {error}{hint}. Please report it with "
            "the model and the command",
            debug,
        )
        return EXIT_INTERNAL_ERROR


def _print_error(message: str, debug: bool) -> None:
    if debug:
        traceback.print_exc(file=sys.stderr)
    # Collapse line breaks, such as those in onnx checker messages, into one line.
    text = " ".join(message.split())
    print(f"qrewrite: error: {text}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
