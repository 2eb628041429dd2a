"""Precision benchmark: what FP16 and INT8 cost in accuracy and buy in ONNX Runtime CPU speed.

    python -m tools.precision_bench digits            # trained tiny BiT: real top-1 per variant/method
    python -m tools.precision_bench speed --variant r50x1 --calib 64,512
    python -m tools.precision_bench calibration --variant r50x3 --bundle out/r50x3 --calib 512 --batch 2

`digits` trains BiT-tiny on scikit-learn's digits and exports every variant with each calibration method,
then scores each on the 450 held-out digits (the calibration default is chosen from this table).
`speed` exports synthetic R50x1/R50x3 at 480 with all variants, times calibration (wall, peak RSS) for each
calibration-set size in a fresh process, then measures ORT CPU latency of FP32/FP16/INT8 side by side
(interleaved rounds, 2 threads) and profiles the INT8 graph by op type.
`calibration` times calibration alone on an existing bundle's FP32 model and adds the rows to that variant's
results file (for set sizes too slow to repeat inside `speed`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

import numpy as np

from bit_trt.engine.atomic_write import write_json_atomic
from bit_trt.engine.memory import gigabytes
from bit_trt.engine.precision import FLAVOURS, flavour_of
from tools import RESULTS
from tools.child import child_main, run_child

# 2: `flavours` and each latency row's `flavour` (the artifact, fp32 ... int8-ort). The files without a `schema`
# field were written before it and say `variants` / `variant` for the same things.
SCHEMA = "precision-bench/2"


def _export(args: list, env=None) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "bit_trt.export.cli", "--quiet", *map(str, args)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    if proc.returncode != 0:
        raise SystemExit(f"export failed:\n{proc.stderr[-3000:]}")
    out = args[args.index("--out") + 1]
    with open(os.path.join(out, "manifest.json")) as f:
        return json.load(f)


def digits(out_dir: str) -> dict:
    import cv2

    from bit_trt.engine.bundle import load_bundle
    from bit_trt.engine.ort_runner import OrtRunner
    from bit_trt.export.checkpoint import save_npz
    from tools import trained_tiny

    t0 = time.perf_counter()
    weights, tf_acc = trained_tiny.train(steps=300)
    train_s = time.perf_counter() - t0
    x_tr, _, x_te, y_te = trained_tiny.digits_rgb()
    result = {
        "schema": SCHEMA,
        "model": "BiT-tiny trained on sklearn digits (1347 train / 450 test, 32x32 RGB)",
        "train_s": round(train_s, 1),
        "tf_top1": tf_acc,
        "methods": {},
    }
    with tempfile.TemporaryDirectory() as work:
        save_npz(os.path.join(work, "w.npz"), weights)
        with open(os.path.join(work, "labels.txt"), "w") as f:
            f.write("\n".join(trained_tiny.DIGIT_NAMES))
        for name, imgs in (("calib", x_tr[:64]), ("eval", x_te[:200])):
            os.makedirs(os.path.join(work, name))
            for i, img in enumerate(imgs):
                cv2.imwrite(os.path.join(work, name, f"{i:04d}.png"), img[:, :, ::-1])
        for method in ("minmax", "entropy", "percentile"):
            out = os.path.join(work, f"b-{method}")
            m = _export(
                [
                    "--model",
                    os.path.join(work, "w.npz"),
                    "--resolution",
                    32,
                    "--labels",
                    os.path.join(work, "labels.txt"),
                    "--precision",
                    "all",
                    "--calib-images",
                    os.path.join(work, "calib"),
                    "--eval-images",
                    os.path.join(work, "eval"),
                    "--eval-count",
                    200,
                    "--calib-method",
                    method,
                    "--engine",
                    "none",
                    "--out",
                    out,
                ],
                env={"BIT_TRT_CACHE": os.path.join(work, "cache")},
            )
            bundle = load_bundle(out)
            row = {}
            for art in m["artifacts"]:
                variant = flavour_of(art)
                with OrtRunner(bundle.artifact_path(variant)) as r:
                    logits = r.infer(x_te.astype(np.float32) / 255)
                row[variant] = {"top1": float((logits.argmax(1) == y_te).mean()), "bytes": art["bytes"]}
                if art["precision"] == "int8":
                    row[variant]["float_layers"] = len(art["float_layers"])
                    row[variant]["rel_l2_vs_fp32"] = art["gate"]["vs_fp32"]["rel_l2"]
            result["methods"][method] = row
    path = os.path.join(out_dir, "precision_tiny_digits.json")
    _write(path, result)
    return result


def _calibration_run(fp32_path: str, count: int, method: str, resolution: int, batch: int = 2) -> dict:
    """Calibration alone in a fresh process: its wall time and peak RSS are its own."""
    result, proc = run_child("tools.precision_bench", fp32_path, count, method, resolution, batch)
    if result is None:
        return {"images": count, "method": method, "failed": proc.stderr[-500:]}
    return result


def calibration_child(fp32_path: str, count: int, method: str, resolution: int, batch: int) -> dict:
    """The child of _calibration_run (`--child FP32_PATH COUNT METHOD RESOLUTION BATCH`): calibrate, then time,
    tensors and peak RSS."""
    from bit_trt.engine.memory import peak_rss_bytes
    from bit_trt.engine.preprocess import InputSpec
    from bit_trt.export import calibration, int8

    images, _ = calibration.synthetic(InputSpec(resolution=resolution), count)
    t0 = time.perf_counter()
    ranges = int8.compute_ranges(fp32_path, images, method, batch, lambda m: None)
    return {
        "images": count,
        "batch": batch,
        "method": method,
        "wall_s": round(time.perf_counter() - t0, 1),
        "peak_rss_gb": gigabytes(peak_rss_bytes()),
        "tensors": len(ranges["data"]) if "data" in ranges else len(ranges),
    }


def _profile(path: str, x: np.ndarray, threads: int) -> list[dict]:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "prof")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    for _ in range(2):
        sess.run(None, {"images": x})
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    by_op = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time"):
            by_op[e["args"].get("op_name", "?")] += e["dur"] / 2 / 1000  # ms per run
    total = sum(by_op.values())
    return [
        {"op": op, "ms_per_run": round(ms, 1), "share": round(ms / total, 3)}
        for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:10]
    ]


def speed(variant: str, calib_sizes: list[int], threads: int, rounds: int, out_dir: str) -> dict:
    from bit_trt.engine.bundle import load_bundle
    from bit_trt.engine.ort_runner import OrtRunner

    result = {
        "schema": SCHEMA,
        "variant": variant,
        "resolution": 480,
        "weights": "synthetic (seed 0)",
        "threads": threads,
    }
    with tempfile.TemporaryDirectory() as work:
        out = os.path.join(work, "b")
        t0 = time.perf_counter()
        m = _export(
            ["--variant", variant, "--precision", "all", "--calib-synthetic", "--engine", "none", "--out", out],
            env={"BIT_TRT_CACHE": os.path.join(work, "cache")},
        )
        result["export_all_s"] = round(time.perf_counter() - t0, 1)
        result["export_peak_rss_gb"] = gigabytes(m["export"]["peak_rss_bytes"])
        result["export_steps_s"] = m["export"]["steps_s"]
        result["flavours"] = {}
        for art in m["artifacts"]:
            v = flavour_of(art)
            par = art.get("gate") or art["parity"]
            result["flavours"][v] = {
                "bytes": art["bytes"],
                "rel_l2_vs_tf": par["rel_l2"],
                "cosine_min": par["cosine_min"],
                "top1_agreement": par["top1_agreement"],
                "top5_overlap": par["top5_overlap"],
                "max_abs": par["max_abs"],
                "passed": par["passed"],
            }
        fp32_path = os.path.join(out, "model.fp32.onnx")
        result["calibration"] = [_calibration_run(fp32_path, n, "minmax", 480) for n in calib_sizes]
        bundle = load_bundle(out)
        runners = {v: OrtRunner(bundle.artifact_path(v), threads=threads).activate() for v in FLAVOURS}
        rows = []
        for batch in (1, 8):
            x = np.random.default_rng(batch).random((batch, 480, 480, 3), dtype=np.float32)
            times = {v: [] for v in runners}
            for r in runners.values():
                r.infer(x)
            for _ in range(rounds):
                for v, r in runners.items():
                    t = time.perf_counter()
                    r.infer(x)
                    times[v].append((time.perf_counter() - t) * 1000)
            base = statistics.median(times["fp32"])
            for v, ts in times.items():
                med = statistics.median(ts)
                rows.append(
                    {
                        "batch": batch,
                        "flavour": v,
                        "median_ms": round(med, 1),
                        "min_ms": round(min(ts), 1),
                        "max_ms": round(max(ts), 1),
                        "speedup_vs_fp32": round(base / med, 2),
                    }
                )
        result["latency_ort_cpu"] = rows
        for r in runners.values():
            r.deactivate()
        x1 = np.random.default_rng(0).random((1, 480, 480, 3), dtype=np.float32)
        result["profile_int8_ort_b1"] = _profile(bundle.artifact_path("int8-ort"), x1, threads)
        result["profile_fp32_b1"] = _profile(bundle.artifact_path("fp32"), x1, threads)
    _write(os.path.join(out_dir, f"precision_{variant}_480.json"), result)
    return result


def calibration_only(variant: str, bundle: str, calib_sizes: list[int], batch: int, out_dir: str) -> dict:
    path = os.path.join(out_dir, f"precision_{variant}_480.json")
    with open(path) as f:
        result = json.load(f)
    fp32_path = os.path.join(bundle, "model.fp32.onnx")
    rows = [_calibration_run(fp32_path, n, "minmax", 480, batch) for n in calib_sizes]
    done = {(r["images"], r.get("batch")) for r in rows}
    result["calibration"] = [r for r in result["calibration"] if (r["images"], r.get("batch")) not in done] + rows
    _write(path, result)
    return result


def _write(path, result):
    result["measured"] = time.strftime("%Y-%m-%d", time.gmtime())
    from bit_trt.engine.tool_versions import tool_versions

    result["tools"] = tool_versions()
    write_json_atomic(path, result, "precision benchmark")
    print(f"wrote {path}", file=sys.stderr)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if child_main(argv, calibration_child, str, int, str, int, int):  # _calibration_run's child
        return
    p = argparse.ArgumentParser(prog="python -m tools.precision_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["digits", "speed", "calibration"])
    p.add_argument("--variant", default="r50x1")
    p.add_argument("--calib", default="64", help="calibration-set sizes to time, comma-separated")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=RESULTS)
    p.add_argument("--bundle", help="calibration: an existing bundle of --variant at 480")
    p.add_argument("--batch", type=int, default=2, help="calibration: images per calibration batch")
    args = p.parse_args(argv)
    if args.what == "digits":
        print(json.dumps(digits(args.out), indent=1))
    elif args.what == "calibration":
        if not args.bundle:
            p.error("calibration needs --bundle")
        print(
            json.dumps(
                calibration_only(
                    args.variant, args.bundle, [int(c) for c in args.calib.split(",")], args.batch, args.out
                )["calibration"],
                indent=1,
            )
        )
    else:
        print(
            json.dumps(
                speed(args.variant, [int(c) for c in args.calib.split(",")], args.threads, args.rounds, args.out),
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
