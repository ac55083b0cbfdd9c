"""Quantize the bundled digits CNN and compare float and quantized accuracy.

`qrewrite demo` calls `main()`. The model and data ship inside the package, so this runs
from an installed wheel without scikit-learn or torch, and it writes no files.
"""

from __future__ import annotations

import argparse
import io
from dataclasses import dataclass
from importlib import resources

import numpy as np
import onnx
import onnxruntime as ort

from qrewrite import Int8Spec, ModelQuantizer, QConfig, QLayerConfig, QuantGranularity, UInt8Spec

MODEL_RESOURCE = "digits_cnn.onnx"
DATA_RESOURCE = "digits_split.npz"
# The model's input is the raw digits pixels (0 to 16) divided by this value.
PIXEL_MAX = 16.0
CALIBRATION_BATCH = 20


@dataclass(frozen=True)
class DemoResult:
    """Accuracy and size of the float demo model and its quantized version."""

    float_accuracy: float
    quantized_accuracy: float
    float_size: int
    quantized_size: int
    eval_count: int
    calibration_count: int

    @property
    def accuracy_drop(self) -> float:
        """Float minus quantized top-1 accuracy, as a fraction (0.01 is one point)."""
        return self.float_accuracy - self.quantized_accuracy


def load_demo_model() -> bytes:
    """Return the serialized float demo model bundled with the package."""
    return resources.files("qrewrite.demo").joinpath(MODEL_RESOURCE).read_bytes()


def load_demo_data() -> dict[str, np.ndarray]:
    """Return the calibration and evaluation splits as uint8 images and labels."""
    raw = resources.files("qrewrite.demo").joinpath(DATA_RESOURCE).read_bytes()
    with np.load(io.BytesIO(raw)) as archive:
        return {name: archive[name] for name in archive.files}


def to_model_input(images: np.ndarray) -> np.ndarray:
    """Convert uint8 pixels [N, 8, 8] to the model's float32 input [N, 1, 8, 8]."""
    return (images.astype(np.float32) / PIXEL_MAX)[:, None, :, :]


def top1_accuracy(model_bytes: bytes, images: np.ndarray, labels: np.ndarray) -> float:
    """Run `model_bytes` in onnxruntime on CPU and return the fraction classified right."""
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    (logits,) = session.run(None, {input_name: to_model_input(images)})
    return float((np.argmax(logits, axis=1) == labels).mean())


def int8_per_channel_config() -> QConfig:
    """Build the demo's setting: uint8 activations, int8 per-channel weights."""
    return QConfig(
        global_config=QLayerConfig(
            activation=UInt8Spec(),
            weight=Int8Spec(quant_granularity=QuantGranularity.Channel),
        )
    )


def quantize_demo(model: onnx.ModelProto, calibration_images: np.ndarray) -> onnx.ModelProto:
    """Quantize the demo model in memory with calibration batches of the given images."""
    inputs = to_model_input(calibration_images)
    batches = [
        {"image": inputs[start : start + CALIBRATION_BATCH]}
        for start in range(0, len(inputs), CALIBRATION_BATCH)
    ]
    return ModelQuantizer(int8_per_channel_config()).quantize_model(model, None, batches)


def run_demo() -> DemoResult:
    """Quantize the bundled model and measure both versions on the evaluation split."""
    float_bytes = load_demo_model()
    data = load_demo_data()
    quantized = quantize_demo(onnx.load_from_string(float_bytes), data["calib_images"])
    quantized_bytes = quantized.SerializeToString()

    eval_images, eval_labels = data["eval_images"], data["eval_labels"]
    return DemoResult(
        float_accuracy=top1_accuracy(float_bytes, eval_images, eval_labels),
        quantized_accuracy=top1_accuracy(quantized_bytes, eval_images, eval_labels),
        float_size=len(float_bytes),
        quantized_size=len(quantized_bytes),
        eval_count=len(eval_labels),
        calibration_count=len(data["calib_images"]),
    )


def format_result(result: DemoResult) -> str:
    """Format the demo result as a small text table."""
    return "\n".join(
        [
            "Digits CNN (Conv, BatchNormalization, Relu, residual Add, MaxPool, Gemm)",
            f"calibrated on {result.calibration_count} images in batches of "
            f"{CALIBRATION_BATCH} (one calibration sample per batch), "
            f"evaluated on {result.eval_count} held-out images",
            "setting: uint8 activations, int8 per-channel weights, MinMax calibration",
            "",
            f"{'model':<10} {'top-1 accuracy':>15} {'size (bytes)':>13}",
            f"{'float':<10} {result.float_accuracy:>15.2%} {result.float_size:>13,}",
            f"{'quantized':<10} {result.quantized_accuracy:>15.2%} {result.quantized_size:>13,}",
            "",
            # Adding 0.0 turns -0.0 into 0.0, so an unchanged accuracy prints as +0.00.
            f"accuracy change: {-100 * result.accuracy_drop + 0.0:+.2f} points, "
            f"size ratio: {result.quantized_size / result.float_size:.2f}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Run the demo, print the accuracy and size table and return the exit code."""
    parser = argparse.ArgumentParser(
        prog="qrewrite demo",
        description="Quantize the bundled digits CNN and print float and quantized accuracy.",
    )
    parser.parse_args(argv)
    print(format_result(run_demo()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
