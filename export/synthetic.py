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
        # float32 draws (float64's would take ten times as long), scaled and shifted in place: no second copy of the
        # 870 MB of R50x3's kernels to allocate (R50x3 10.6-11.2 s -> 9.2-9.8 s on a VM whose fresh pages are slow)
        w = rng.standard_normal(shape, dtype=np.float32)
        if key.endswith("/gamma"):
            w *= np.float32(0.1)
            w += np.float32(1.0)
        elif key.endswith("/beta"):
            w *= np.float32(0.1)
        elif key.endswith("head/conv2d/bias"):
            w *= np.float32(0.01)
        elif key.endswith("head/conv2d/kernel"):
            w *= np.float32(4.0 / np.sqrt(shape[2]))
        else:  # standardized conv kernels: scale is irrelevant after weight standardization, offset is not
            w += np.float32(0.05) * rng.standard_normal(shape[-1:], dtype=np.float32)
        weights[key] = w
    return weights
