"""`bit-check BUNDLE --backend B`: prove a deployed engine on the host it runs on.

Runs the bundle's parity images (stored in the bundle, already at the manifest resolution) through the
chosen backend and compares the logits with the TensorFlow reference: computed live when TF and the
export source are on this host (`--reference tf`), else the TF logits recorded at export
(`--reference stored`). `auto` uses TF when it can and says which it used. Exit 0: within tolerance;
1: parity broken (the report says which metric); 2: could not run.
"""

from __future__ import annotations

import argparse
import os
import sys

from .atomic_write import write_json_atomic
from .errors import BitError
from .parity_set import REFERENCES, check, summary


def main(argv=None) -> int:
    from .classify_cli import add_backend_arguments, open_classifier

    p = argparse.ArgumentParser(prog="bit-check", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", help="bundle directory written by bit-export")
    add_backend_arguments(p)
    p.add_argument(
        "--reference",
        choices=REFERENCES,
        default="auto",
        help="auto: live TF when available, else the logits stored in the bundle",
    )
    p.add_argument("--json", help="also write the report to this file")
    args = p.parse_args(argv)
    clf = open_classifier(args, "bit-check")
    if clf is None:
        return 2
    try:
        with clf:
            result = check(clf, args.precision, args.reference)
    except BitError as exc:
        if args.debug:
            raise
        print(f"bit-check: error: {exc}", file=sys.stderr)
        return 2
    full = {"bundle": os.path.abspath(args.bundle), "backend": None, "precision": args.precision, **result}
    print("\n".join(summary(args.bundle, args.precision, result)))
    if args.json:
        write_json_atomic(args.json, full, "report")
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
