"""The parity set: which images every exported variant is checked on, against TF.

Seeded synthetic images plus real photographs (the two that ship with scikit-learn), passed through the
manifest's preprocessing and kept as uint8, so the bundle can store them with the TF logits and a
deployment host can re-check an engine without TensorFlow.
"""

from __future__ import annotations

import os

import numpy as np

from ..engine.parity_set import real_photo_paths
from ..engine.preprocess import InputSpec, read_image, resize_to


def synthetic_images(count: int, resolution: int, seed: int = 1234) -> np.ndarray:
    """Smooth gradients, blobs and noise: image-like statistics without any file."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:resolution, 0:resolution].astype(np.float32) / resolution
    out = np.empty((count, resolution, resolution, 3), np.uint8)
    for i in range(count):
        img = np.zeros((resolution, resolution, 3), np.float32)
        for c in range(3):
            a, b, f = rng.uniform(-1, 1, 3)
            img[:, :, c] = 0.5 + 0.3 * np.sin(2 * np.pi * (a * xx + b * yy) * (1 + 3 * abs(f)))
        for _ in range(4):
            cy, cx, r = rng.uniform(0, 1, 3)
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 < (0.05 + 0.2 * r) ** 2
            img[mask] = rng.uniform(0, 1, 3)
        img += rng.normal(0, 0.05, img.shape)
        out[i] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return out


def parity_inputs(spec: InputSpec, synthetic: int, seed: int = 1234) -> tuple[np.ndarray, list[str]]:
    """uint8 NHWC images at the manifest resolution, and a name for each."""
    photos = real_photo_paths()
    images = [resize_to(read_image(p), spec) for p in photos]
    names = [f"photo:{os.path.basename(p)}" for p in photos]
    images += list(synthetic_images(synthetic, spec.resolution, seed))
    names += [f"synthetic:{i}" for i in range(synthetic)]
    return np.stack(images), names
