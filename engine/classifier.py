"""The engine's front door: a bundle, a backend, preprocessing and labels behind one `predict` call.

    from bit_trt.engine import Classifier
    with Classifier("out/r50x3") as clf:
        result = clf.predict(["cat.jpg", jpeg_bytes, uint8_array])
        result.top(5)[0]   # [(label, probability), ...] for the first image

Only ONNX Runtime on the CPU is wired today; the runner base is what other backends plug into.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .bundle import Bundle, load_bundle
from .errors import BitError
from .ort_runner import OrtRunner
from .preprocess import preprocess

BACKENDS = ("ort-cpu",)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass
class Prediction:
    logits: np.ndarray
    probabilities: np.ndarray
    labels: list

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        order = np.argsort(-self.probabilities, axis=1)[:, :k]
        return [[(self.labels[j]["name"], float(p[j])) for j in row] for row, p in zip(order, self.probabilities)]


class Classifier:
    def __init__(self, bundle: str | Bundle, backend: str = "ort-cpu", variant: str = "fp32", threads: int | None = None):
        """variant: fp32, fp16, int8-ort (U8S8, fast on x86 ORT) or int8-trt, as the bundle holds them."""
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        if backend not in BACKENDS:
            raise BitError(f"backend {backend!r} is not available; choose one of: {', '.join(BACKENDS)}")
        self.spec = self.bundle.input_spec
        self.labels = self.bundle.labels()
        self.runner = OrtRunner(self.bundle.artifact_path(variant), threads=threads)

    def __enter__(self):
        self.runner.activate()
        return self

    def __exit__(self, *exc):
        self.runner.deactivate()
        return False

    def predict(self, images) -> Prediction:
        batch = preprocess(images, self.spec)
        self.runner.activate()
        logits = self.runner.infer(batch)
        return Prediction(logits, softmax(logits.astype(np.float64)), self.labels)
