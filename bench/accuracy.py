"""What a configuration's speed costs in accuracy: its agreement with TensorFlow on the bundle's stored parity set.

The same images and TF logits bit-check uses (recorded at export, so TF is not needed here), run through
the very Classifier being timed. INT8 variants also carry the verdict of their export-time accuracy gate.
"""

from __future__ import annotations

from ..engine import compare
from ..engine.bundle import Bundle
from ..engine.parity_set import load_parity_set


def agreement(bundle: Bundle, classifier, flavour: str | None) -> dict:
    """flavour: the artifact the classifier loaded (its INT8 gate verdict is reported); None when unknown."""
    images, _, tf_logits = load_parity_set(bundle)
    metrics = compare.measure(classifier.infer_uint8(images), tf_logits)
    result = {
        "samples": metrics["samples"],
        "rel_l2": round(metrics["rel_l2"], 6),
        "cosine": round(metrics["cosine_min"], 6),
        "top1_agreement": round(metrics["top1_agreement"], 4),
        "gate": None,
    }
    if flavour is not None:
        gate = bundle.artifacts("onnx").get(flavour, {}).get("gate")
        if gate is not None:
            result["gate"] = "pass" if gate.get("passed") else "fail"
    return result
