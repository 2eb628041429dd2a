"""Parity: the exported ONNX against the TF reference on the same inputs, judged by explicit tolerances.

Inputs are seeded synthetic images plus real photographs (the two that ship with scikit-learn), passed
through the manifest's preprocessing and kept as uint8, so the bundle can store them with the TF logits
and a deployment host can re-check an engine without TensorFlow.
"""
from __future__ import annotations

import glob
import os

import numpy as np

from ..engine import compare
from ..engine.errors import BitError
from ..engine.ort_runner import OrtRunner
from ..engine.preprocess import InputSpec, read_image, resize_to, scale_uint8


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


def real_photo_paths() -> list[str]:
    try:
        import sklearn
    except ImportError:
        return []
    return sorted(glob.glob(os.path.join(os.path.dirname(sklearn.__file__), "datasets", "images", "*.jpg")))


def parity_inputs(spec: InputSpec, synthetic: int, seed: int = 1234) -> tuple[np.ndarray, list[str]]:
    """uint8 NHWC images at the manifest resolution, and a name for each."""
    photos = real_photo_paths()
    images = [resize_to(read_image(p), spec) for p in photos]
    names = [f"photo:{os.path.basename(p)}" for p in photos]
    images += list(synthetic_images(synthetic, spec.resolution, seed))
    names += [f"synthetic:{i}" for i in range(synthetic)]
    return np.stack(images), names


def batched(fn, images_u8: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([fn(scale_uint8(images_u8[i:i + batch])) for i in range(0, len(images_u8), batch)])


def ort_logits(model, images_u8: np.ndarray, batch: int = 4, threads: int | None = None,
               low_memory: bool = False) -> np.ndarray:
    """`model`: an onnx.ModelProto, serialized bytes, or a path."""
    runner = OrtRunner(model.SerializeToString() if hasattr(model, "SerializeToString") else model,
                       threads=threads, low_memory=low_memory)
    with runner:
        runner.model = None  # ORT holds its own copy now: let the serialized bytes go
        return batched(runner.infer, images_u8, batch)


def judge(test_logits, reference_logits, tolerance: compare.Tolerance, what: str) -> dict:
    """The metrics plus verdict; a BitError carrying the report when the tolerance is broken."""
    metrics = compare.measure(test_logits, reference_logits)
    failures = tolerance.check(metrics)
    report = {**metrics, "tolerance": tolerance.to_dict(), "passed": not failures, "failures": failures}
    if failures:
        raise ParityError(what, report)
    return report


class ParityError(BitError):
    def __init__(self, what: str, report: dict):
        self.report = report
        lines = "; ".join(report["failures"])
        super().__init__(f"{what} breaks parity: {lines} (top-1 agreement {report['top1_agreement']:.3f}, "
                         f"cosine {report['cosine_min']:.6f}, rel L2 {report['rel_l2']:.3g})")


def _reference_worker(model: str, handle, variant, num_classes: int, seed: int, images_u8: np.ndarray, batch: int):
    from . import sources

    loaded = sources.load(model, variant, num_classes=num_classes, seed=seed, handle=handle)
    return batched(loaded.reference, images_u8, batch)


def tf_reference_logits(model: str, handle, variant, num_classes: int, seed: int, images_u8: np.ndarray,
                        batch: int = 2) -> tuple[np.ndarray, int]:
    """TF logits computed in a child process; returns them and the child's peak RSS in bytes.

    A child, because TF keeps most of what it allocated (R50x3 at 480: over 3 GB) until the process exits;
    run in the exporting process it would sit under every later step's peak.
    """
    import multiprocessing
    import resource
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            logits = pool.submit(_reference_worker, model, handle, variant, num_classes, seed,
                                       images_u8, batch).result()
        except BrokenProcessPool:
            raise BitError("the TF reference process died (out of memory?); nothing was written") from None
    return logits, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
