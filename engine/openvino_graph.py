"""The graph bit-trt's OpenVINO models run: the bundle's file as OpenVINO reads it, then rewritten in memory where
OpenVINO runs another form of the same arithmetic faster.

- each GroupNorm on per-channel statistics instead of the grouped reshape, with its gamma and beta in one multiply-add
  (engine/openvino_group_norm.py);
- the stem's zero Pad folded into its MaxPool (engine/openvino_pad_pool.py);
- where the float layers run in bf16, each residual sum of quantized convolutions (INT8) taken from the
  convolutions before their quantize (engine/openvino_requantized_sum.py).

The files on disk, their checksums and what ONNX Runtime and TensorRT read stay as exported, and the rewritten
model passes the same parity checks (bit-check, the bf16 gate). The OpenVINO runner, bit-triton's OpenVINO IR and
(in C++) bit::Classifier run this graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import openvino_group_norm, openvino_pad_pool, openvino_requantized_sum


@dataclass(frozen=True)
class Rewrites:
    """How many of each rewrite one model received."""

    group_norms: int = 0
    group_norms_folded: int = 0  # of those, with their gamma and beta in one multiply-add
    pad_pools: int = 0
    requantized_sums: int = 0
    sums_written_once: int = 0  # of those, read through one Maximum (engine/openvino_requantized_sum.py)

    def describe(self) -> str:
        """What runs differently from the file, as describe() lines say it ("49 GroupNorms on channel statistics,
        49 with gamma and beta in one multiply-add, 1 zero Pad in its MaxPool"); empty where nothing was rewritten."""
        parts = []
        if self.group_norms:
            parts.append(f"{self.group_norms} GroupNorms on channel statistics")
        if self.group_norms_folded:
            parts.append(f"{self.group_norms_folded} with gamma and beta in one multiply-add")
        if self.pad_pools == 1:
            parts.append("1 zero Pad in its MaxPool")
        elif self.pad_pools:
            parts.append(f"{self.pad_pools} zero Pads in their MaxPools")
        if self.requantized_sums == 1:
            parts.append("1 sum of convolutions without their Q/DQ")
        elif self.requantized_sums:
            parts.append(f"{self.requantized_sums} sums of convolutions without their Q/DQ")
        if self.sums_written_once:
            parts.append(f"{self.sums_written_once} of them through one reader")
        return ", ".join(parts)


def rewrite(model, bf16: bool = False) -> Rewrites:
    """Apply every rewrite to `model` (an ov.Model, changed in place). bf16: the model will be compiled with its
    float layers in bf16, where the requantized sums' rewrite pays (in f32 it does not)."""
    group_norms, folded = openvino_group_norm.rewrite(model)
    pad_pools = openvino_pad_pool.rewrite(model)
    fed, once = openvino_requantized_sum.rewrite(model) if bf16 else (0, 0)
    return Rewrites(group_norms, folded, pad_pools, requantized_sums=fed, sums_written_once=once)


def read(core, path: str, bf16: bool = False):
    """The file at `path` as bit-trt's OpenVINO models run it: read by `core` (an ov.Core), then rewritten for the
    float arithmetic it will be compiled in (`bf16`). Returns the ov.Model and its Rewrites."""
    model = core.read_model(path)
    return model, rewrite(model, bf16)
