"""What ONNX Runtime answers for a set of uint8 images: the export's own verification runs (parity, FP16
island search, INT8 gate and sensitivity), in batches, with a runner that is made and dropped per call."""

from __future__ import annotations

import numpy as np

from ..engine.ort_runner import OrtRunner
from ..engine.preprocess import scale_uint8


def batched(fn, images_u8: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([fn(scale_uint8(images_u8[i : i + batch])) for i in range(0, len(images_u8), batch)])


def ort_logits(
    model, images_u8: np.ndarray, batch: int = 4, threads: int | None = None, low_memory: bool = False
) -> np.ndarray:
    """`model`: an onnx.ModelProto, serialized bytes, or a path."""
    runner = OrtRunner(
        model.SerializeToString() if hasattr(model, "SerializeToString") else model,
        threads=threads,
        low_memory=low_memory,
    )
    with runner:
        runner.model = None  # ORT holds its own copy now: let the serialized bytes go
        return batched(runner.infer, images_u8, batch)
