"""`bit-export`: turn BiT weights into a verified artifact bundle."""
from __future__ import annotations

import argparse
import os
import sys
import time

from bit_trt.engine.errors import BitError
from .variants import DEFAULT_RESOLUTION, VARIANTS

PRECISIONS = ("fp32", "fp16", "int8", "all")

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
    p = argparse.ArgumentParser(prog="bit-export", description="Export a BiT classifier to a verified ONNX bundle.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="synthetic",
                   help="'synthetic' (seeded weights, default), a SavedModel directory, an official .npz, "
                        "or a TF Hub handle such as google/bit/s-r50x3/ilsvrc2012_classification/1")
    p.add_argument("--variant", default=None, metavar="VARIANT",
                   help=f"one of {', '.join(VARIANTS)}; inferred from real weights, r50x3 for synthetic")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--out", required=True, help="bundle directory to create (must not exist)")
    p.add_argument("--resolution", type=int, default=DEFAULT_RESOLUTION,
                   help=f"input size H=W recorded in the manifest (default {DEFAULT_RESOLUTION}, the BiT reference resize)")
    p.add_argument("--resize", default="bilinear", choices=["bilinear", "area", "bicubic", "nearest"])
    p.add_argument("--dynamic-spatial", action="store_true", help="leave H and W dynamic in the ONNX (batch always is)")
    p.add_argument("--opset", type=int, default=17, choices=[17, 18])
    p.add_argument("--num-classes", type=int, default=1000, help="head size for synthetic weights")
    p.add_argument("--labels", default=None, help="labels file (one name per line, or a JSON list) for fine-tuned heads")
    p.add_argument("--seed", type=int, default=0, help="seed of synthetic weights")
    p.add_argument("--parity-images", type=int, default=4, help="synthetic images in the parity set, besides the photos")
    p.add_argument("--threads", type=int, default=None, help="ONNX Runtime threads for verification (default: all cores)")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON instead of the summary")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000


def summary(manifest: dict, out: str) -> str:
    m, art = manifest["model"], manifest["artifacts"][0]
    par, graph, ex = art["parity"], art["graph"], manifest["export"]
    trained = "trained weights" if m["trained"] else "SYNTHETIC weights: NOT trained, predictions are meaningless"
    lines = [f"bit-export: {m['variant']} ({m['parameters'] / 1e6:.1f}M params, {m['num_classes']} classes, {trained})",
             f"  source   {m['source']['description']}",
             f"  bundle   {out}"]
    files = [art] + art.get("data_files", []) + [{"file": "labels.json", "bytes": os.path.getsize(os.path.join(out, "labels.json"))},
                                                  manifest["reference"]]
    for f in files:
        lines.append(f"    {f['file']:<22} {_size(f['bytes']):>9}")
    lines.append(f"  graph    {graph['before_cleanup']['nodes']} -> {graph['after_cleanup']['nodes']} nodes; "
                 f"{graph['after_cleanup']['layout_transposes']} layout Transpose (the NHWC input); "
                 f"{graph['group_norms_fused']} GroupNorms fused; weight standardization folded")
    n = par["samples"]
    lines.append(f"  parity   FP32 ONNX vs TF on {n} images: rel L2 {par['rel_l2']:.2e}, max abs {par['max_abs']:.2e}, "
                 f"cosine {par['cosine_min']:.7f}, top-1 {round(par['top1_agreement'] * n)}/{n}, "
                 f"top-5 {par['top5_overlap'] * 100:.0f}%  {'PASS' if par['passed'] else 'FAIL'}")
    lines.append(f"  time     {ex['wall_s']:.1f} s (" + ", ".join(f"{k} {v:.1f}" for k, v in ex['steps_s'].items())
                 + f"); peak RSS {ex['peak_rss_bytes'] / 1e9:.2f} GB")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    # TensorFlow's C++ start-up chatter would bury the progress lines; errors still reach stderr.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("GLOG_minloglevel", "3")
    if args.precision != "fp32":
        print(f"bit-export: --precision {args.precision} is not yet available (fp32 only for now)", file=sys.stderr)
        return 2
    start = time.perf_counter()

    def progress(msg: str):
        if not args.quiet:
            print(f"[{time.perf_counter() - start:6.1f}s] {msg}", file=sys.stderr, flush=True)

    try:
        from .exporter import export

        manifest = export(model=args.model, out=args.out, variant=args.variant, resolution=args.resolution,
                          dynamic_spatial=args.dynamic_spatial, opset=args.opset, num_classes=args.num_classes,
                          seed=args.seed, parity_synthetic=args.parity_images, labels_file=args.labels,
                          resize=args.resize, threads=args.threads, progress=progress)
    except BitError as exc:
        if args.debug:
            raise
        report = getattr(exc, "report", None)
        if report:
            print("parity report: " + ", ".join(f"{k}={v}" for k, v in report.items() if k not in ("tolerance", "failures")),
                  file=sys.stderr)
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
