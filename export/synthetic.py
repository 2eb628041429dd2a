"""Seeded synthetic weights: the offline default. Not trained; every report says so.

The statistics are chosen so that activations stay in a trained network's range through any depth
(GroupNorm renormalizes every unit) and the head gives well-separated logits, so parity top-1 is meaningful
as a parity check even though the classes are not.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from .checkpoint import expected_shapes
from .variants import Variant


def synthetic_weights(variant: Variant, num_classes: int, seed: int = 0) -> OrderedDict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    weights: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, shape in expected_shapes(variant, num_classes).items():
        normal = rng.standard_normal(shape, dtype=np.float32)  # float32 draws: R50x3 takes 1 s, not 10
        if key.endswith("/gamma"):
            w = 1.0 + 0.1 * normal
        elif key.endswith("/beta"):
            w = 0.1 * normal
        elif key.endswith("head/conv2d/bias"):
            w = 0.01 * normal
        elif key.endswith("head/conv2d/kernel"):
            w = normal * np.float32(4.0 / np.sqrt(shape[2]))
        else:  # standardized conv kernels: scale is irrelevant after weight standardization, offset is not
            w = normal + 0.05 * rng.standard_normal(shape[-1:], dtype=np.float32)
        weights[key] = w.astype(np.float32, copy=False)
    return weights
