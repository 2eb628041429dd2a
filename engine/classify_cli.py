"""`bit-classify BUNDLE IMAGE...`: top-5 readable labels per image, through ONNX Runtime."""
from __future__ import annotations

import argparse
import sys

from .errors import BitError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bit-classify", description="Classify images with an exported bit-trt bundle.")
    p.add_argument("bundle", help="bundle directory written by bit-export")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...; any size)")
    p.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    p.add_argument("--variant", default="fp32", help="fp32, fp16, int8-ort or int8-trt (those the bundle holds)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    args = p.parse_args(argv)
    try:
        from .classifier import Classifier

        clf = Classifier(args.bundle, variant=args.variant, threads=args.threads)
    except BitError as exc:
        if args.debug:
            raise
        print(f"bit-classify: error: {exc}", file=sys.stderr)
        return 1
    if not clf.bundle.manifest["model"].get("trained", True):
        print("note: this bundle has SYNTHETIC (untrained) weights; the labels below are meaningless", file=sys.stderr)
    failed = 0
    with clf:
        for path in args.images:
            try:
                top = clf.predict([path]).top(args.top)[0]
            except BitError as exc:
                failed += 1
                print(f"bit-classify: error: {exc}", file=sys.stderr)
                continue
            print(path)
            for name, prob in top:
                print(f"  {prob:7.2%}  {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
