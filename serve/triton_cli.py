"""`bit-triton BUNDLE OUT`: a Triton model repository that a stock tritonserver serves (serve/triton_repository.py)."""

from __future__ import annotations

import argparse
import sys

from ..engine.classify_cli import add_image_limit_arguments, positive_int
from ..engine.errors import BitError
from ..engine.options import field_defaults, options_from
from ..engine.precision import PRECISIONS
from .batching import DEFAULT_MAX_BATCH
from .triton_models import TRITON_BACKENDS
from .triton_repository import RepositoryOptions, serve_command, write_repository

EPILOG = f"""
models (NAME defaults to bit_<variant>, e.g. bit_r50x3):
  NAME_<backend>_<precision>        float32 NHWC batch (dims without the batch: [R, R, 3]) -> logits,
                                    labels attached (Triton's classification extension returns names)
  NAME_<backend>_<precision>_image  ensemble: encoded image bytes (TYPE_STRING, dims [1]) -> logits
  NAME_preprocess                   Python backend: image bytes -> float32 NHWC, bit-trt's own preprocessing

backends: tensorrt (the bundle's TensorRT plans, cc_model_filenames per GPU architecture), onnxruntime,
openvino (both read the bundle's ONNX). auto (default): tensorrt if the bundle has TensorRT plans, else
onnxruntime. TensorRT-RTX engines do not run on Triton.

serve it:
  {serve_command("$PWD/OUT")}
"""


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in _csv(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def parser() -> argparse.ArgumentParser:
    d = field_defaults(RepositoryOptions)
    p = argparse.ArgumentParser(
        prog="bit-triton",
        description="Write a Triton Inference Server model repository from a bit-trt bundle.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("bundle", help="bundle directory written by bit-export")
    p.add_argument("out", help="the model repository to write (refused if it exists, unless --force)")
    p.add_argument(
        "--backend",
        dest="backends",
        type=_csv,
        default=d["backends"],
        help=f"comma-separated: auto, all, {', '.join(TRITON_BACKENDS)} (default {','.join(d['backends'])})",
    )
    p.add_argument(
        "--precision",
        dest="precisions",
        type=_csv,
        default=d["precisions"],
        help=f"comma-separated {', '.join(PRECISIONS)} (default: all the bundle has)",
    )
    p.add_argument("--name", default=d["name"], help="model name prefix (default bit_<variant>)")
    p.add_argument(
        "--max-batch",
        type=positive_int,
        default=d["max_batch"],
        help=f"max_batch_size (default: a TensorRT plan's profile max; {DEFAULT_MAX_BATCH} for ONNX models)",
    )
    p.add_argument(
        "--preferred-batch",
        type=_ints,
        default=d["preferred_batch"],
        help="dynamic batcher's preferred sizes (default: opt and max)",
    )
    p.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=d["max_queue_delay_us"],
        help=f"dynamic batcher's wait (default {d['max_queue_delay_us']})",
    )
    p.add_argument(
        "--instances",
        type=positive_int,
        default=d["instances"],
        help=f"instances of each classifier (default {d['instances']})",
    )
    p.add_argument(
        "--preprocess-instances",
        type=positive_int,
        default=d["preprocess_instances"],
        help=f"preprocessing model instances (default {d['preprocess_instances']})",
    )
    p.add_argument(
        "--onnxruntime-device",
        choices=("cpu", "gpu"),
        default=d["onnxruntime_device"],
        help=f"ONNX Runtime models' instance kind (default {d['onnxruntime_device']})",
    )
    p.add_argument(
        "--openvino-hint",
        choices=("LATENCY", "THROUGHPUT"),
        default=d["openvino_hint"],
        help=f"OpenVINO's PERFORMANCE_HINT (default {d['openvino_hint']})",
    )
    p.add_argument("--no-ensembles", action="store_true", help="classifiers only, no preprocessing model")
    add_image_limit_arguments(p, d["max_image_pixels"], d["max_decode_mb"])  # the preprocessing model's
    p.add_argument("--force", action="store_true", help="replace OUT if it exists")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def options_from_args(args: argparse.Namespace) -> RepositoryOptions:
    return options_from(RepositoryOptions, args, ensembles=not args.no_ensembles)


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    options = options_from_args(args)
    try:
        from ..engine.bundle import load_bundle

        written = write_repository(load_bundle(args.bundle), args.out, options, force=args.force)
    except (BitError, OSError) as exc:
        if args.debug:
            raise
        print(f"bit-triton: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}:")
    for name, what in written.items():
        print(f"  {name}: {what}")
    print(f"serve it: {serve_command(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
