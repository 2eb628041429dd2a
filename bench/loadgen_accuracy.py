"""`--loadgen-mode accuracy`: LoadGen's accuracy log turned into agreement figures for exactly the samples it chose.

In accuracy mode LoadGen sends every sample of the library once and logs each response (our SUT returns the
logits as float32 bytes) in mlperf_log_accuracy.json, keyed by the sample's index. Each sample is compared with
the best reference there is for it:

- a sample that is one of the bundle's parity images (the whole, unflipped photo, resized as at export: the same
  uint8 pixels) has TF's logits, stored in the bundle at export;
- any other (crops, flips, --images) has the bundle's fp32 graph on ONNX Runtime's CPU provider, the graph the
  export checked against TF.

Each figure names its reference, so a figure against TF is never confused with one against our own fp32 graph.
"""

from __future__ import annotations

import json
import os

import numpy as np

from ..engine import compare
from ..engine.bundle import Bundle
from ..engine.errors import BitError
from ..engine.parity_set import load_parity_set
from .query_samples import QuerySamples

ACCURACY_LOG = "mlperf_log_accuracy.json"
TF_STORED = "TF logits stored in the bundle's parity set"
ORT_FP32 = "the bundle's fp32 graph on ONNX Runtime CPU"


def logged_logits(folder: str) -> dict[int, np.ndarray]:
    """{sample index: logits} from LoadGen's accuracy log (the first response of each sample)."""
    path = os.path.join(folder, ACCURACY_LOG)
    try:
        with open(path) as f:
            records = json.load(f)
    except (OSError, ValueError) as exc:
        raise BitError(f"cannot read LoadGen's accuracy log {path}: {exc}") from exc
    out = {}
    for record in records:
        out.setdefault(int(record["qsl_idx"]), np.frombuffer(bytes.fromhex(record["data"]), np.float32))
    return out


class References:
    """The reference logits of each sample, computed once per run and shared by its rows."""

    def __init__(self, bundle: Bundle, samples: QuerySamples):
        self.bundle, self.samples = bundle, samples
        self._tf: dict[int, np.ndarray] | None = None
        self._ort: dict[int, np.ndarray] = {}

    def tf(self) -> dict[int, np.ndarray]:
        """{sample index: TF's stored logits} for the samples that are parity images."""
        if self._tf is None:
            self._tf = {}
            try:
                images, _, tf_logits = load_parity_set(self.bundle)
            except BitError:  # a bundle without a parity set: every sample takes the fp32 graph
                return self._tf
            for i, sample in enumerate(self.samples.images):
                for image, logits in zip(images, tf_logits):
                    if image.shape == sample.shape and np.array_equal(image, sample):
                        self._tf[i] = logits
                        break
        return self._tf

    def ort(self, indices) -> dict[int, np.ndarray]:
        missing = sorted(set(indices) - set(self._ort))
        if missing:
            from ..engine.classifier import Classifier

            with Classifier(self.bundle, backend="ort-cpu", precision="fp32") as clf:
                logits = clf.infer_uint8(np.stack([self.samples.images[i] for i in missing]))
            self._ort.update(zip(missing, logits))
        return {i: self._ort[i] for i in indices}


def agreement(folder: str, references: References) -> list[dict]:
    """One figure per reference: the samples LoadGen logged, compared with it (engine/compare.py's metrics)."""
    logged = logged_logits(folder)
    tf = references.tf()
    groups = {TF_STORED: sorted(i for i in logged if i in tf)}
    groups[ORT_FP32] = sorted(i for i in logged if i not in tf)
    figures = []
    for reference, indices in groups.items():
        if not indices:
            continue
        ref = tf if reference == TF_STORED else references.ort(indices)
        metrics = compare.measure(np.stack([logged[i] for i in indices]), np.stack([ref[i] for i in indices]))
        figures.append(
            {
                "reference": reference,
                "samples": metrics["samples"],
                "sample_indices": indices,
                "rel_l2": round(metrics["rel_l2"], 6),
                "cosine": round(metrics["cosine_min"], 6),
                "top1_agreement": round(metrics["top1_agreement"], 4),
            }
        )
    return figures
