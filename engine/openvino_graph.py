"""The graph bit-trt's OpenVINO models run: the bundle's file as OpenVINO reads it, then rewritten in memory where
OpenVINO runs another form of the same arithmetic faster.

- each GroupNorm on per-channel statistics instead of the grouped reshape (engine/openvino_group_norm.py);
- the stem's zero Pad folded into its MaxPool (engine/openvino_pad_pool.py).

The files on disk, their checksums and what ONNX Runtime and TensorRT read stay as exported, and the rewritten
model passes the same parity checks (bit-check, the bf16 gate). The OpenVINO runner, bit-triton's OpenVINO IR and
(in C++) bit::Classifier run this graph.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import openvino_group_norm, openvino_pad_pool


@dataclass(frozen=True)
class Rewrites:
    """How many of each rewrite one model received."""

    group_norms: int = 0
    pad_pools: int = 0

    def describe(self) -> str:
        """What runs differently from the file, as describe() lines say it ("49 GroupNorms on channel statistics,
        1 zero Pad in its MaxPool"); empty where nothing was rewritten."""
        parts = []
        if self.group_norms:
            parts.append(f"{self.group_norms} GroupNorms on channel statistics")
        if self.pad_pools == 1:
            parts.append("1 zero Pad in its MaxPool")
        elif self.pad_pools:
            parts.append(f"{self.pad_pools} zero Pads in their MaxPools")
        return ", ".join(parts)


def rewrite(model) -> Rewrites:
    """Apply every rewrite to `model` (an ov.Model, changed in place)."""
    return Rewrites(group_norms=openvino_group_norm.rewrite(model), pad_pools=openvino_pad_pool.rewrite(model))


def read(core, path: str):
    """The file at `path` as bit-trt's OpenVINO models run it: read by `core` (an ov.Core), then rewritten. Returns
    the ov.Model and its Rewrites."""
    model = core.read_model(path)
    return model, rewrite(model)
