"""Calibration data: a directory of images through exactly the manifest's preprocessing.

JPEG/PNG/BMP/WebP/TIFF of any size; grayscale and RGBA become RGB (see engine/preprocess.py). Corrupt files
are skipped and counted; past `max_bad_fraction` the set is refused, as it is when too few images remain.
Synthetic calibration images exist only when asked for, and the manifest says so.
"""

from __future__ import annotations

import hashlib
import os
import random

import numpy as np

from ..engine.errors import BitError
from ..engine.preprocess import InputSpec, read_image, resize_to

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
MIN_IMAGES = 8


def list_images(directory: str) -> list[str]:
    if not os.path.isdir(directory):
        raise BitError(f"calibration directory {directory!r} does not exist")
    found = []
    try:
        for root, _, files in os.walk(directory, onerror=_raise):
            found += [os.path.join(root, f) for f in files if f.lower().endswith(IMAGE_SUFFIXES)]
    except OSError as exc:
        raise BitError(f"calibration directory {directory!r} is unreadable ({exc.strerror})") from None
    if not found:
        raise BitError(f"calibration directory {directory!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return sorted(found)


def _raise(exc):
    raise exc


def load(
    directory: str, spec: InputSpec, count: int, seed: int = 0, max_bad_fraction: float = 0.1, progress=lambda msg: None
) -> tuple[np.ndarray, dict]:
    """uint8 NHWC calibration images and a record for the manifest (files, skipped, digest)."""
    paths = list_images(directory)
    random.Random(seed).shuffle(paths)
    images, bad, used = [], [], []
    for path in paths:
        if len(images) == count:
            break
        try:
            images.append(resize_to(read_image(path), spec))
            used.append(os.path.relpath(path, directory))
        except BitError:
            bad.append(os.path.relpath(path, directory))
        if len(images) % 16 == 0 and images:
            progress(f"calibration images: {len(images)}/{count} ({len(bad)} skipped)")
    tried = len(images) + len(bad)
    if bad and len(bad) > max_bad_fraction * tried:
        raise BitError(
            f"calibration set {directory!r}: {len(bad)} of {tried} files are not decodable images "
            f"(first: {bad[0]}); more than {max_bad_fraction:.0%} is refused"
        )
    if len(images) < min(count, MIN_IMAGES):
        raise BitError(
            f"calibration set {directory!r} has {len(images)} usable images; at least "
            f"{min(count, MIN_IMAGES)} are needed"
        )
    batch = np.stack(images)
    record = {
        "kind": "directory",
        "path": os.path.abspath(directory),
        "count": len(images),
        "seed": seed,
        "skipped_corrupt": len(bad),
        "skipped_files": bad[:20],
        "sha256": digest(batch),
    }
    return batch, record


def synthetic(spec: InputSpec, count: int, seed: int = 0) -> tuple[np.ndarray, dict]:
    from .parity_images import synthetic_images

    batch = synthetic_images(count, spec.resolution, seed=10_000 + seed)  # never the parity images' seed
    return batch, {
        "kind": "synthetic",
        "count": count,
        "seed": seed,
        "sha256": digest(batch),
        "warning": "SYNTHETIC calibration images: ranges may not match real photographs",
    }


def digest(images_u8: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(images_u8).tobytes()).hexdigest()
