"""`bit-classify BUNDLE IMAGE...`: top-5 readable labels per image, on any backend."""

from __future__ import annotations

import argparse
import sys

from .errors import BitError


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """--backend/--precision/--threads: shared by bit-classify and bit-check."""
    import inspect

    from .backends import BACKEND_CHOICES
    from .classifier import Classifier
    from .precision import FLAVOURS, PRECISIONS

    defaults = {name: param.default for name, param in inspect.signature(Classifier).parameters.items()}
    exact = [f for f in FLAVOURS if f not in PRECISIONS]
    p.add_argument(
        "--backend",
        default=defaults["backend"],
        choices=BACKEND_CHOICES,
        help=f"auto picks the fastest that works here and says which (default {defaults['backend']})",
    )
    p.add_argument(
        "--precision",
        default=defaults["precision"],
        help=f"{', '.join(PRECISIONS)}, or an exact artifact flavour ({', '.join(exact)}); "
        f"default {defaults['precision']}",
    )
    p.add_argument(
        "--threads", type=int, default=defaults["threads"], help="CPU threads for CPU backends (default: all cores)"
    )
    add_static_shapes_argument(p)
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def add_static_shapes_argument(p: argparse.ArgumentParser) -> None:
    """--static-shapes: the openvino runner's bound on models compiled for one batch shape (engine/openvino_runner.py).
    Unset, the runner's own default; with auto, it goes to openvino only."""
    import inspect

    from .openvino_runner import OpenVinoRunner

    default = inspect.signature(OpenVinoRunner).parameters["static_shapes"].default
    p.add_argument(
        "--static-shapes",
        type=non_negative_int,
        default=None,
        metavar="N",
        help=f"openvino: how many batch shapes get a model compiled for that shape alone, faster by 4-10%% and "
        f"each holding its own copy of the weights (R50x3: about 1 GB apiece); 0: one dynamic model, the least "
        f"memory (default {default})",
    )


def backend_options(args) -> dict:
    """The runner settings given on the command line (only those given: the rest keep the runner's defaults)."""
    from .backends import given_settings

    return given_settings(static_shapes=getattr(args, "static_shapes", None))


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1."""
    return _int_at_least(text, 1, "a positive integer")


def non_negative_int(text: str) -> int:
    """argparse type: an integer of at least 0."""
    return _int_at_least(text, 0, "a whole number, 0 or more")


def _int_at_least(text: str, least: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def add_image_limit_arguments(
    p: argparse.ArgumentParser, max_image_pixels: int | None = None, max_decode_mb: int | None = None
) -> None:
    """--max-image-pixels, --max-decode-mb: for the tools that decode images they are sent (bit-classify, bit-serve,
    and bit-triton's preprocessing model). Defaults: the caller's options dataclass, else the engine's."""
    from .preprocess import DEFAULT_DECODE_BUDGET, DEFAULT_MAX_IMAGE_PIXELS

    pixels = DEFAULT_MAX_IMAGE_PIXELS if max_image_pixels is None else max_image_pixels
    decode_mb = DEFAULT_DECODE_BUDGET >> 20 if max_decode_mb is None else max_decode_mb
    side = int(pixels**0.5)
    p.add_argument(
        "--max-image-pixels",
        type=positive_int,
        default=pixels,
        help="refuse an encoded image whose header declares more pixels, before decoding it "
        f"(default {pixels}" + (f": {side}x{side})" if side * side == pixels else ")"),
    )
    p.add_argument(
        "--max-decode-mb",
        type=positive_int,
        default=decode_mb,
        help="memory for decoding images at once, all requests together; decodes wait for their share, and an "
        f"image that needs more alone is refused (default {decode_mb})",
    )


def open_classifier(args, prog: str):
    """A Classifier from the shared arguments, or None after printing the error."""
    try:
        from .classifier import Classifier

        limit = {}
        if hasattr(args, "max_image_pixels"):
            from .preprocess import set_decode_budget

            set_decode_budget(args.max_decode_mb << 20)
            limit["max_image_pixels"] = args.max_image_pixels
        # bit-serve's --throughput: every request path it runs at once (its image workers and the float model)
        concurrency = args.image_workers + 1 if getattr(args, "throughput", False) else 1
        clf = Classifier(
            args.bundle,
            backend=args.backend,
            precision=args.precision,
            threads=args.threads,
            concurrency=concurrency,
            **limit,
            **backend_options(args),
        )
        print(f"backend: {clf.backend}", file=sys.stderr)
        for reason in clf.skipped:
            print(f"  (auto skipped {reason.splitlines()[0]})", file=sys.stderr)
        return clf
    except BitError as exc:
        if args.debug:
            raise
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return None


# Bulk classification on a Ray cluster lives in scale/ (Ray is no part of the light core): bit-classify hands a
# command line holding --ray over to it by name, as backends.RUNNERS names the `tf` reference.
BULK_CLI = "bit_trt.scale.bulk_cli"


def main(argv=None) -> int:
    given = sys.argv[1:] if argv is None else argv
    if any(a == "--ray" or a.startswith("--ray=") for a in given):
        import importlib

        return importlib.import_module(BULK_CLI).main(given)
    p = argparse.ArgumentParser(prog="bit-classify", description="Classify images with an exported bit-trt bundle.")
    p.add_argument("bundle", help="bundle directory written by bit-export")
    p.add_argument("images", nargs="+", help="image files (JPEG, PNG, ...; any size)")
    p.add_argument("--top", type=int, default=5, help="how many classes to print (default 5)")
    p.add_argument("--ray", metavar="ADDRESS", help="classify on a Ray cluster instead (bit-classify --ray X --help)")
    add_backend_arguments(p)
    add_image_limit_arguments(p)
    args = p.parse_args(argv)
    clf = open_classifier(args, "bit-classify")
    if clf is None:
        return 1
    if not clf.bundle.manifest["model"].get("trained", True):
        print("note: this bundle has SYNTHETIC (untrained) weights; the labels below are meaningless", file=sys.stderr)
    failed = 0
    with clf:
        for path in args.images:
            try:
                top = clf.predict([path]).top(args.top)[0]
            except BitError as exc:
                if args.debug:
                    raise
                failed += 1
                print(f"bit-classify: error: {exc}", file=sys.stderr)
                continue
            print(path)
            for name, prob in top:
                print(f"  {prob:7.2%}  {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
