"""The bundle's parity set: the images every variant was checked on at export and TF's logits for them, and
the check a deployment host repeats on them (`bit-check`, `bit-engine` after a build, bit-bench's accuracy column).

The set is stored in the bundle (uint8, already at the manifest resolution), so a host without TensorFlow can
re-check any backend; where TF and the export source are present the reference can be recomputed live.
"""

from __future__ import annotations

import glob
import importlib.util
import os

import numpy as np

from .compare import report, tolerance_for
from .errors import BitError
from .precision import precision_of
from .preprocess import scale_uint8

REFERENCES = ("auto", "tf", "stored")


def real_photo_paths() -> list[str]:
    """The two photographs that ship with scikit-learn (empty without it): the parity set's real images, and
    the default requests of bit-bench. Found without importing scikit-learn, whose import takes seconds."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        return []
    folders = [os.path.join(where, "datasets", "images") for where in spec.submodule_search_locations]
    return sorted(path for folder in folders for path in glob.glob(os.path.join(folder, "*.jpg")))


def load_parity_set(bundle) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(uint8 NHWC images, their names, TF's logits recorded at export), the file checked against its sha256."""
    ref = bundle.manifest.get("reference")
    if not ref:
        raise BitError(f"bundle {bundle.path!r} records no parity set")
    bundle.verify_file({"file": ref["file"], "sha256": ref["sha256"]})
    with np.load(os.path.join(bundle.path, ref["file"])) as data:
        return data["images"], [str(n) for n in data["names"]], data["tf_logits"]


def reference_logits(bundle, images: np.ndarray, stored: np.ndarray, which: str) -> tuple[np.ndarray, str]:
    """TF's logits for the parity images and where they came from: `stored` (recorded at export), `tf` (computed
    here, or an error), `auto` (computed here when TF and the source are present, else stored)."""
    if which not in REFERENCES:
        raise BitError(f"unknown reference {which!r}; choose from: {', '.join(REFERENCES)}")
    if which == "stored":
        return stored, "TF logits recorded at export"
    from .backends import create

    try:
        with create(bundle, "tf") as tf:
            return tf.infer(scale_uint8(images)), "TF, computed here"
    except BitError as exc:
        if which == "tf":
            raise
        return stored, f"TF logits recorded at export (live TF unavailable: {str(exc).splitlines()[0]})"


def check(classifier, precision: str, reference: str = "auto") -> dict:
    """The parity set through `classifier` (preprocessed as predict would, on the device for trt) against TF.

    precision: what the classifier was opened with (a precision or an exact flavour); it picks the tolerance, with
    the arithmetic the backend chose here (bf16: compare.BF16_PARITY).
    Returns the report of engine/compare.py plus backend, reference, images and top1_equal."""
    images, names, stored = load_parity_set(classifier.bundle)
    logits = classifier.infer_uint8(images)
    ref, ref_what = reference_logits(classifier.bundle, images, stored, reference)
    tolerance = tolerance_for(precision_of(precision), classifier.compute)
    verdict = report(logits, ref, tolerance)  # a shape mismatch is a BitError too
    return {
        "backend": classifier.backend,
        "compute": classifier.compute,
        "reference": ref_what,
        "images": names,
        "top1_equal": (logits.argmax(1) == ref.argmax(1)).tolist(),
        **verdict,
    }


def summary(bundle_path: str, precision: str, result: dict) -> list[str]:
    """The report as bit-check prints it: what ran against what, one line per image (= top-1 agrees, x differs),
    the metrics, PASS or FAIL with why."""
    lines = [f"bit-check {bundle_path}: {result['backend']}, {precision}, against {result['reference']}"]
    lines += [f"  {'=' if ok else 'x'} {name}" for name, ok in zip(result["images"], result["top1_equal"])]
    lines.append(
        f"  rel L2 {result['rel_l2']:.3g}  cosine min {result['cosine_min']:.6f}  max abs {result['max_abs']:.3g}"
        f"  top-1 {result['top1_agreement']:.3f}"
    )
    lines.append("PASS" if result["passed"] else "FAIL: " + "; ".join(result["failures"]))
    return lines
