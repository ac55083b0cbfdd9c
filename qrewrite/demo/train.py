"""Train the bundled demo CNN on scikit-learn's digits and export it to ONNX.

Run from the repository root with torch and scikit-learn installed:

    python -m qrewrite.demo.train

It rewrites `digits_cnn.onnx` and `digits_split.npz` next to this file. The run is
seeded (two runs on one machine wrote identical files) and took about 10 seconds on a
2-core x86_64 CPU.

Data split: the 1797 digits images are split once, stratified by label, with
`train_test_split(test_size=0.3, random_state=0)` into 1257 training images and 540
held-out evaluation images. The calibration split is 100 images drawn from the training
images (`random_state=1`, stratified). The evaluation images are never used for training
or calibration. The npz stores the raw pixel values (integers 0 to 16) as uint8, and the
model expects float32 pixels divided by 16, shape [N, 1, 8, 8].
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

DEMO_DIR = Path(__file__).resolve().parent
MODEL_FILE = "digits_cnn.onnx"
DATA_FILE = "digits_split.npz"
PIXEL_MAX = 16.0
SEED = 0
CALIBRATION_SIZE = 100
OPSET = 17


class DigitsCNN(nn.Module):
    """Conv-BN-Relu stem, one residual block, max pooling and a linear classifier."""

    def __init__(self, channels: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        self.block = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(channels * 4 * 4, classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        stem = self.stem(image)
        residual = self.relu(self.block(stem) + stem)
        return self.classifier(self.flatten(self.pool(residual)))


def split_digits() -> dict[str, np.ndarray]:
    """Split the digits into training, calibration and evaluation arrays (uint8 pixels)."""
    digits = load_digits()
    images = digits.images.astype(np.uint8)
    labels = digits.target.astype(np.uint8)
    train_images, eval_images, train_labels, eval_labels = train_test_split(
        images, labels, test_size=0.3, random_state=SEED, stratify=labels
    )
    _, calib_images, _, calib_labels = train_test_split(
        train_images,
        train_labels,
        test_size=CALIBRATION_SIZE,
        random_state=1,
        stratify=train_labels,
    )
    return {
        "train_images": train_images,
        "train_labels": train_labels,
        "calib_images": calib_images,
        "calib_labels": calib_labels,
        "eval_images": eval_images,
        "eval_labels": eval_labels,
    }


def to_model_input(images: np.ndarray) -> np.ndarray:
    """Convert uint8 pixel arrays [N, 8, 8] to the model's float32 input [N, 1, 8, 8]."""
    return (images.astype(np.float32) / PIXEL_MAX)[:, None, :, :]


def train(model: nn.Module, images: np.ndarray, labels: np.ndarray, epochs: int) -> None:
    """Train `model` in place with Adam and cross-entropy."""
    inputs = torch.from_numpy(to_model_input(images))
    targets = torch.from_numpy(labels.astype(np.int64))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(SEED)

    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            loss = loss_fn(model(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
        scheduler.step()
    model.eval()


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    with torch.no_grad():
        logits = model(torch.from_numpy(to_model_input(images)))
    return float((logits.argmax(dim=1).numpy() == labels).mean())


def export(model: nn.Module, path: Path) -> None:
    """Export to ONNX with a dynamic batch axis and BatchNormalization kept as nodes.

    TrainingMode.PRESERVE exports the module in its current (eval) mode but skips the
    exporter's eval-mode pass that folds BatchNormalization into the preceding Conv, so
    the demo graph exercises BatchNormalization folding in qrewrite.
    """
    example = torch.zeros(1, 1, 8, 8)
    with warnings.catch_warnings():
        # torch 2.9 and later warn that the TorchScript exporter is legacy. It is used on
        # purpose, because only it keeps BatchNormalization unfolded.
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=False,
            dynamo=False,
        )
    exported = onnx.load(str(path))
    onnx.checker.check_model(exported, full_check=True)
    op_types = {node.op_type for node in exported.graph.node}
    required = {"Conv", "BatchNormalization", "Relu", "MaxPool", "Add", "Flatten", "Gemm"}
    missing = required - op_types
    if missing:
        raise RuntimeError(f"exported graph lacks {sorted(missing)}; it has {sorted(op_types)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40, help="training epochs")
    parser.add_argument(
        "--out-dir", type=Path, default=DEMO_DIR, help="folder for the .onnx and .npz files"
    )
    args = parser.parse_args(argv)

    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    split = split_digits()
    model = DigitsCNN()
    train(model, split["train_images"], split["train_labels"], args.epochs)
    print(f"train accuracy {accuracy(model, split['train_images'], split['train_labels']):.4f}")
    print(f"eval accuracy  {accuracy(model, split['eval_images'], split['eval_labels']):.4f}")

    args.out_dir.mkdir(parents=True, exist_ok=True)
    export(model, args.out_dir / MODEL_FILE)
    np.savez_compressed(
        args.out_dir / DATA_FILE,
        calib_images=split["calib_images"],
        calib_labels=split["calib_labels"],
        eval_images=split["eval_images"],
        eval_labels=split["eval_labels"],
    )
    print(f"wrote {args.out_dir / MODEL_FILE} and {args.out_dir / DATA_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
