"""`bit-export`: turn BiT weights into a verified artifact bundle."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

from ..engine.errors import BitError
from ..engine.options import field_defaults as _defaults
from ..engine.precision import PRECISIONS
from ..engine.preprocess import INTERPOLATIONS
from . import int8, tf2onnx_route, trt_engine
from .variants import VARIANTS

# What --precision X exports: fp32 always (it is the parity anchor), X beside it; `all` is every precision.
EXPORTED = {p: tuple(dict.fromkeys(("fp32", p))) for p in PRECISIONS} | {"all": PRECISIONS}

EPILOG = """examples:
  bit-export --out out/r50x3                                 # synthetic R50x3 (offline default)
  bit-export --model ~/bit_s_r50x3_savedmodel --out out/hub  # a TF Hub module on disk
  bit-export --model google/bit/s-r50x3/ilsvrc2012_classification/1 --out out/hub   # download (online)
  bit-export --model BiT-S-R50x3.npz --out out/npz           # official checkpoint
  bit-classify out/r50x3 photo.jpg

The bundle holds model.fp32.onnx, labels.json, parity_inputs.npz and manifest.json; it is written
atomically: a failed export leaves nothing at --out.
"""


def build_parser() -> argparse.ArgumentParser:
    from .exporter import ExportOptions

    d, q8 = _defaults(ExportOptions), _defaults(int8.Int8Options)
    p = argparse.ArgumentParser(
        prog="bit-export",
        description="Export a BiT classifier to a verified ONNX bundle.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--model",
        default=d["model"],
        help="'synthetic' (seeded weights, default), a SavedModel directory, an official .npz, "
        "or a TF Hub handle such as google/bit/s-r50x3/ilsvrc2012_classification/1",
    )
    p.add_argument(
        "--variant",
        default=d["variant"],
        metavar="VARIANT",
        help=f"one of {', '.join(VARIANTS)}; inferred from real weights, r50x3 for synthetic",
    )
    precision = next(name for name, kept in EXPORTED.items() if kept == d["precisions"])
    p.add_argument(
        "--precision",
        default=precision,
        choices=EXPORTED,
        help="fp32 (always written, the parity anchor); fp16 adds model.fp16.onnx; int8 adds the Q/DQ "
        "variants; all = every one",
    )
    p.add_argument("--out", required=True, help="bundle directory to create (must not exist)")
    p.add_argument(
        "--resolution",
        type=int,
        default=d["resolution"],
        help=f"input size H=W recorded in the manifest (default {d['resolution']}, the BiT reference resize)",
    )
    p.add_argument("--resize", default=d["resize"], choices=INTERPOLATIONS)
    p.add_argument("--dynamic-spatial", action="store_true", help="leave H and W dynamic in the ONNX (batch always is)")
    p.add_argument("--opset", type=int, default=d["opset"], choices=tf2onnx_route.SUPPORTED_OPSETS)
    p.add_argument("--num-classes", type=int, default=d["num_classes"], help="head size for synthetic weights")
    p.add_argument(
        "--labels",
        dest="labels_file",
        default=d["labels_file"],
        help="labels file (one name per line, or a JSON list) for fine-tuned heads",
    )
    p.add_argument("--seed", type=int, default=d["seed"], help="seed of synthetic weights")
    p.add_argument(
        "--parity-images",
        dest="parity_synthetic",
        type=int,
        default=d["parity_synthetic"],
        help="synthetic images in the parity set, besides the photos",
    )
    p.add_argument(
        "--threads", type=int, default=d["threads"], help="ONNX Runtime threads for verification (default: all cores)"
    )
    q = p.add_argument_group("INT8 (explicit Q/DQ from calibrated ranges, behind an accuracy gate)")
    q.add_argument(
        "--calib-images", default=q8["calib_images"], metavar="DIR", help="calibration images (JPEG/PNG/..., any size)"
    )
    q.add_argument("--calib-count", type=int, default=q8["calib_count"])
    q.add_argument(
        "--calib-batch",
        type=int,
        default=q8["calib_batch"],
        help=f"images per calibration run (default {q8['calib_batch']}: memory grows with it, speed does not)",
    )
    q.add_argument("--calib-seed", type=int, default=q8["calib_seed"], help="which images are drawn from DIR")
    q.add_argument("--calib-method", dest="method", default=q8["method"], choices=int8.METHODS)
    q.add_argument(
        "--calib-synthetic", action="store_true", help="calibrate on synthetic images (flagged in the manifest)"
    )
    q.add_argument(
        "--calib-cache",
        dest="cache",
        default=q8["cache"],
        metavar="FILE",
        help="calibration range cache (default: keyed by model, calibration set and method in ~/.cache/bit-trt)",
    )
    q.add_argument(
        "--eval-images", default=q8["eval_images"], metavar="DIR", help="extra gate images, never the calibration set"
    )
    q.add_argument("--eval-count", type=int, default=q8["eval_count"])
    q.add_argument(
        "--max-top1-drop",
        type=float,
        default=q8["max_top1_drop"],
        help="largest allowed drop of top-1 agreement with TF on the samples TF is confident about "
        f"(top-1 probability >= {int8.CONFIDENT_PROBABILITY}), as a fraction "
        f"(default {q8['max_top1_drop']})",
    )
    q.add_argument(
        "--int8-sensitivity",
        dest="force_sensitivity",
        action="store_true",
        help="measure and record per-layer sensitivity even when the gate passes",
    )
    add_build_arguments(p, engine=d["engine"])
    p.add_argument("--json", action="store_true", help="print the manifest as JSON instead of the summary")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def add_build_arguments(p: argparse.ArgumentParser, engine: str) -> None:
    """The engine flags; defaults from trt_engine.BuildOptions (a later bit-engine verb shares them)."""
    b = _defaults(trt_engine.BuildOptions)
    eng = p.add_argument_group("TensorRT engines (built from every ONNX variant when a builder is installed)")
    eng.add_argument(
        "--engine",
        default=engine,
        choices=trt_engine.ENGINE_CHOICES,
        help="auto: TensorRT on a GPU host, else TensorRT-RTX (builds on a CPU-only host for RTX GPUs)",
    )
    eng.add_argument("--require-engine", action="store_true", help="fail when no engine can be built")
    eng.add_argument("--min-batch", type=int, default=b["min_batch"])
    eng.add_argument("--opt-batch", type=int, default=b["opt_batch"])
    eng.add_argument("--max-batch", type=int, default=b["max_batch"])
    eng.add_argument(
        "--builder-opt-level",
        dest="optimization_level",
        type=int,
        default=b["optimization_level"],
        help=f"0-5 (default {b['optimization_level']})",
    )
    eng.add_argument("--workspace-mb", type=int, default=b["workspace_mb"], help="builder workspace limit")
    eng.add_argument(
        "--tf32",
        action="store_true",
        help="let FP32 layers use TF32 tensor cores (TensorRT's own default; off here because FP32 "
        "parity assumes full FP32)",
    )
    eng.add_argument(
        "--group-norm",
        dest="group_norm",
        default=b["group_norm"],
        choices=trt_engine.GROUP_NORM_FORMS,
        help="the GroupNorm form plans are built from: native (ONNX GroupNormalization-21, rewritten in memory "
        "and checked against TF on ONNX Runtime first) or instance-norm (the bundle's files as written) "
        f"(default {b['group_norm']})",
    )
    eng.add_argument(
        "--version-compatible", action="store_true", help="TensorRT plan that later TensorRT versions can run"
    )
    eng.add_argument(
        "--hardware-compat",
        dest="hardware_compatibility",
        default=b["hardware_compatibility"],
        choices=trt_engine.HARDWARE_COMPATIBILITY,
    )
    eng.add_argument(
        "--rtx-cc",
        dest="rtx_compute_capabilities",
        action="append",
        default=[],
        metavar="SM89",
        help="TensorRT-RTX target compute capability (repeatable; default: the library's)",
    )
    eng.add_argument(
        "--timing-cache",
        default=b["timing_cache"],
        help="timing cache file, read if present and saved after the build (default: in ~/.cache/bit-trt)",
    )


def _pick(cls, args: argparse.Namespace, **overrides):
    """`cls` built from the parsed arguments named like its fields."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**values, **overrides})


def build_options_from_args(args: argparse.Namespace) -> trt_engine.BuildOptions:
    """The engine flags of add_build_arguments, as BuildOptions (bit-export and bit-engine)."""
    return _pick(trt_engine.BuildOptions, args, rtx_compute_capabilities=tuple(args.rtx_compute_capabilities))


def options_from_args(args: argparse.Namespace):
    from .exporter import ExportOptions

    return _pick(
        ExportOptions,
        args,
        precisions=EXPORTED[args.precision],
        build=build_options_from_args(args),
        int8=_pick(int8.Int8Options, args),
    )


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def _parity_line(par: dict) -> str:
    n = par["samples"]
    return (
        f"vs TF on {n} images: rel L2 {par['rel_l2']:.1e}, cos {par['cosine_min']:.7f}, "
        f"top-1 {round(par['top1_agreement'] * n)}/{n}, top-5 {par['top5_overlap'] * 100:.0f}%  "
        f"{'PASS' if par['passed'] else 'FAIL'}"
    )


def summary(manifest: dict, out: str) -> str:
    m, ex = manifest["model"], manifest["export"]
    fp32 = manifest["artifacts"][0]
    graph = fp32["graph"]
    trained = "trained weights" if m["trained"] else "SYNTHETIC weights: NOT trained, predictions are meaningless"
    lines = [
        f"bit-export: {m['variant']} ({m['parameters'] / 1e6:.1f}M params, {m['num_classes']} classes, {trained})",
        f"  source   {m['source']['description']}",
        f"  bundle   {out}",
    ]
    for art in manifest["artifacts"]:
        size = art["bytes"] + sum(d["bytes"] for d in art.get("data_files", []))
        if art["kind"] == "onnx":
            detail = _parity_line(art.get("gate") or art["parity"])  # an INT8 variant's parity is its gate
            if art["precision"] == "fp16":
                detail += f" (FP32 islands: {', '.join(art['fp32_islands']) or 'none'})"
            if art["precision"] == "int8":
                detail += (
                    f" (for {art['runtime']}; top-1 drop {art['gate']['top1_drop']:+.3f} on "
                    f"{art['gate']['confident_samples']} confident samples, max {art['gate']['max_top1_drop']}; "
                    f"{len(art['float_layers'])} layers in float)"
                )
        else:
            p = art["profile"]
            detail = (
                f"{art['library']} {art['library_version']}, batch {p['min']}/{p['opt']}/{p['max']}, from {art['from']}"
            )
        lines.append(f"    {art['file']:<40} {_size(size):>9}  {detail}")
    for f in (
        {"file": "labels.json", "bytes": os.path.getsize(os.path.join(out, "labels.json"))},
        manifest["reference"],
    ):
        lines.append(f"    {f['file']:<40} {_size(f['bytes']):>9}")
    lines.append(
        f"  graph    {graph['before_cleanup']['nodes']} -> {graph['after_cleanup']['nodes']} nodes; "
        f"{graph['after_cleanup']['layout_transposes']} layout Transpose (the NHWC input); "
        f"{graph['group_norms_fused']} GroupNorms fused; weight standardization folded"
    )
    lines.append(
        f"  time     {ex['wall_s']:.1f} s ("
        + ", ".join(f"{k} {v:.1f}" for k, v in ex["steps_s"].items())
        + f"); peak RSS {ex['peak_rss_bytes'] / 1e9:.2f} GB"
    )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # TensorFlow's C++ start-up chatter would bury the progress lines; errors still reach stderr.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "3")
    start = time.perf_counter()

    def progress(msg: str):
        if not args.quiet:
            print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        from .exporter import export

        manifest = export(options_from_args(args), progress=progress)
    except BitError as exc:
        if args.debug:
            raise
        report = getattr(exc, "report", None)
        if report:
            print(
                "parity report: "
                + ", ".join(f"{k}={v}" for k, v in report.items() if k not in ("tolerance", "failures")),
                file=sys.stderr,
            )
        print(f"bit-export: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bit-export: interrupted; nothing was written", file=sys.stderr)
        return 130
    if args.json:
        import json

        print(json.dumps(manifest, indent=1))
    else:
        print(summary(manifest, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
