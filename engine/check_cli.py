"""`bit-check BUNDLE --backend B`: prove a deployed engine on the host it runs on.

Runs the bundle's parity images (stored in the bundle, already at the manifest resolution) through the
chosen backend and compares the logits with the TensorFlow reference: computed live when TF and the
export source are on this host (`--reference tf`), else the TF logits recorded at export
(`--reference stored`). `auto` uses TF when it can and says which it used. Exit 0: within tolerance;
1: parity broken (the report says which metric); 2: could not run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from .errors import BitError
from .preprocess import scale_uint8


def load_parity_set(bundle) -> tuple[np.ndarray, list[str], np.ndarray]:
    ref = bundle.manifest.get("reference")
    if not ref:
        raise BitError(f"bundle {bundle.path!r} records no parity set")
    bundle.verify_file({"file": ref["file"], "sha256": ref["sha256"]})
    with np.load(os.path.join(bundle.path, ref["file"])) as data:
        return data["images"], [str(n) for n in data["names"]], data["tf_logits"]


def reference_logits(bundle, images: np.ndarray, stored: np.ndarray, which: str) -> tuple[np.ndarray, str]:
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


def run_backend(clf, images: np.ndarray) -> np.ndarray:
    """The parity images through the classifier's runner, the way predict feeds it (device path included)."""
    runner = clf.runner
    if getattr(runner, "preprocesses_on_device", False):
        return runner.infer_uint8(list(images))
    return runner.infer(scale_uint8(images))


def main(argv=None) -> int:
    from .classify_cli import add_backend_arguments, open_classifier
    from .compare import report, tolerance_for

    p = argparse.ArgumentParser(prog="bit-check", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", help="bundle directory written by bit-export")
    add_backend_arguments(p)
    p.add_argument(
        "--reference",
        choices=["auto", "tf", "stored"],
        default="auto",
        help="auto: live TF when available, else the logits stored in the bundle",
    )
    p.add_argument("--json", help="also write the report to this file")
    args = p.parse_args(argv)
    clf = open_classifier(args, "bit-check")
    if clf is None:
        return 2
    precision = "int8" if args.precision.startswith("int8") else args.precision
    try:
        with clf:
            images, names, stored = load_parity_set(clf.bundle)
            logits = run_backend(clf, images)
            ref, ref_what = reference_logits(clf.bundle, images, stored, args.reference)
            backend = clf.runner.describe()
        verdict = report(logits, ref, tolerance_for(precision))  # a shape mismatch is a BitError too
    except BitError as exc:
        if args.debug:
            raise
        print(f"bit-check: error: {exc}", file=sys.stderr)
        return 2
    top1 = logits.argmax(1) == ref.argmax(1)
    full = {
        "bundle": os.path.abspath(args.bundle),
        "backend": backend,
        "precision": args.precision,
        "reference": ref_what,
        "images": names,
        "top1_equal": top1.tolist(),
        **verdict,
    }
    print(f"bit-check {args.bundle}: {backend}, {args.precision}, against {ref_what}")
    for name, ok in zip(names, top1):
        print(f"  {'=' if ok else 'x'} {name}")
    print(
        f"  rel L2 {verdict['rel_l2']:.3g}  cosine min {verdict['cosine_min']:.6f}  max abs {verdict['max_abs']:.3g}"
        f"  top-1 {verdict['top1_agreement']:.3f}"
    )
    print("PASS" if verdict["passed"] else "FAIL: " + "; ".join(verdict["failures"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(full, f, indent=1)
    return 0 if verdict["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
