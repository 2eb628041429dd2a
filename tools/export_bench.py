"""Export benchmark: wall time, peak RSS and graph size of `bit-export`, and ORT FP32 CPU latency of our
cleaned ONNX against tf2onnx's own graph and against TF, measured side by side in one process.

    python -m tools.export_bench --variant r50x1 --out bench/results

"tf2onnx's own graph" is the NHWC model as tf2onnx emits it (its layout Transposes, its decomposed
GroupNorm, weight standardization left to ORT's constant folding). It is converted through the same
weights-as-inputs route, because tf2onnx's frozen-weights route does not fit in memory for R50x3; for
R50x1, `--plain-route` also converts the frozen model the ordinary way and times that.
Rounds interleave the engines so that machine noise hits all of them alike; compare ratios, not ms.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from bit_trt.engine.atomic_write import write_json_atomic
from bit_trt.export.resources import gigabytes
from tools import RESULTS
from tools.child import child_main, run_child


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def run_export(variant: str, resolution: int, workdir: str) -> dict:
    out = os.path.join(workdir, f"bundle-{variant}")
    t0 = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "bit_trt.export.cli",
            "--variant",
            variant,
            "--resolution",
            str(resolution),
            "--out",
            out,
            "--quiet",
        ],
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"export failed:\n{proc.stderr}")
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    art = manifest["artifacts"][0]
    return {
        "bundle": out,
        "process_wall_s": round(wall, 1),
        "pipeline_wall_s": manifest["export"]["wall_s"],
        "steps_s": manifest["export"]["steps_s"],
        "peak_rss_gb": gigabytes(manifest["export"]["peak_rss_bytes"]),
        "peak_rss_tf_reference_gb": gigabytes(manifest["export"]["peak_rss_tf_reference_bytes"]),
        "onnx_mb": round(art["bytes"] / 1e6, 1),
        "graph": art["graph"],
        "parity": {k: art["parity"][k] for k in ("rel_l2", "max_abs", "cosine_min", "top1_agreement", "top5_overlap")},
    }


def plain_route(variant: str, resolution: int, workdir: str) -> dict:
    """tf2onnx's ordinary route (variables frozen into the graph), in a child so its peak RSS is its own."""
    output = os.path.join(workdir, "plain.onnx")
    result, proc = run_child("tools.export_bench", variant, resolution, output)
    if result is None:
        return {"failed": True, "returncode": proc.returncode, "stderr_tail": proc.stderr[-500:]}
    return result


def plain_route_child(variant: str, resolution: int, output: str) -> dict:
    """The child of plain_route (`--child VARIANT RESOLUTION OUTPUT`): convert, then time, graph and peak RSS."""
    from bit_trt.export.resources import peak_rss_bytes
    from bit_trt.export.tensorflow_import import import_tensorflow

    tf = import_tensorflow()
    import tf2onnx

    from bit_trt.export.bit_tf import BiTModule
    from bit_trt.export.synthetic import synthetic_weights
    from bit_trt.export.variants import get_variant

    v = get_variant(variant)
    m = BiTModule(synthetic_weights(v, 1000, 0), v)
    spec = [tf.TensorSpec([None, resolution, resolution, 3], tf.float32, name="images")]
    t0 = time.perf_counter()
    model, _ = tf2onnx.convert.from_function(m.__call__, input_signature=spec, opset=17, output_path=output)
    return {
        "convert_s": round(time.perf_counter() - t0, 1),
        "nodes": len(model.graph.node),
        "transposes": sum(n.op_type == "Transpose" for n in model.graph.node),
        "peak_rss_gb": gigabytes(peak_rss_bytes()),
    }


def latency(variant: str, resolution: int, bundle: str, threads: int, batches, rounds: int, workdir: str) -> list[dict]:
    from bit_trt.engine.ort_runner import OrtRunner
    from bit_trt.export import graph_cleanup, tf2onnx_route
    from bit_trt.export.tensorflow_import import import_tensorflow

    tf = import_tensorflow()
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from bit_trt.export.bit_tf import BiTModule
    from bit_trt.export.synthetic import synthetic_weights
    from bit_trt.export.variants import get_variant

    v = get_variant(variant)
    weights = synthetic_weights(v, 1000, 0)
    baseline = tf2onnx_route.convert(weights, v, resolution, layout="NHWC")
    baseline_path = os.path.join(workdir, "tf2onnx_nhwc.onnx")
    with open(baseline_path, "wb") as f:
        f.write(baseline.SerializeToString())
    baseline_info = {"nodes": len(baseline.graph.node), "layout_transposes": graph_cleanup.layout_transposes(baseline)}
    del baseline
    tf_model = BiTModule(weights, v)
    del weights
    ours = OrtRunner(os.path.join(bundle, "model.fp32.onnx"), threads=threads).activate()
    theirs = OrtRunner(baseline_path, threads=threads).activate()
    engines = {
        "bit-trt onnx (ort-cpu)": ours.infer,
        "tf2onnx nhwc onnx (ort-cpu)": theirs.infer,
        "tensorflow-cpu": lambda x: tf_model(x).numpy(),
    }
    rows = []
    for batch in batches:
        x = np.random.default_rng(batch).random((batch, resolution, resolution, 3), dtype=np.float32)
        times = {name: [] for name in engines}
        for fn in engines.values():  # warm-up: first calls allocate and, for TF, trace
            fn(x)
        for _ in range(rounds):
            for name, fn in engines.items():
                t0 = time.perf_counter()
                fn(x)
                times[name].append((time.perf_counter() - t0) * 1000)
        ours_median = statistics.median(times["bit-trt onnx (ort-cpu)"])
        for name, ts in times.items():
            ts = sorted(ts)
            rows.append(
                {
                    "variant": variant,
                    "resolution": resolution,
                    "batch": batch,
                    "engine": name,
                    "threads": threads,
                    "rounds": rounds,
                    "median_ms": round(statistics.median(ts), 1),
                    "mean_ms": round(statistics.fmean(ts), 1),
                    "min_ms": round(ts[0], 1),
                    "max_ms": round(ts[-1], 1),
                    "images_per_s": round(batch * 1000 / statistics.median(ts), 2),
                    "ratio_to_ours": round(statistics.median(ts) / ours_median, 2),
                }
            )
    return rows, baseline_info


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if child_main(argv, plain_route_child, str, int, str):  # plain_route's child
        return
    p = argparse.ArgumentParser(prog="python -m tools.export_bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", default="r50x1")
    p.add_argument("--resolution", type=int, default=480)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--plain-route", action="store_true", help="also time tf2onnx's frozen-weights route (R50x1 fits)")
    p.add_argument("--out", default=RESULTS)
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        result = {
            "variant": args.variant,
            "resolution": args.resolution,
            "weights": "synthetic (seed 0)",
            "host": {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()},
            "measured": time.strftime("%Y-%m-%d", time.gmtime()),
        }
        from bit_trt.engine.tool_versions import tool_versions

        result["tools"] = tool_versions()
        print(f"[{args.variant}] exporting ...", file=sys.stderr, flush=True)
        result["export"] = run_export(args.variant, args.resolution, work)
        if args.plain_route:
            print(f"[{args.variant}] tf2onnx frozen-weights route ...", file=sys.stderr, flush=True)
            result["tf2onnx_plain_route"] = plain_route(args.variant, args.resolution, work)
        print(f"[{args.variant}] latency, {args.rounds} interleaved rounds ...", file=sys.stderr, flush=True)
        rows, result["tf2onnx_nhwc_graph"] = latency(
            args.variant,
            args.resolution,
            result["export"]["bundle"],
            args.threads,
            [int(b) for b in args.batches.split(",")],
            args.rounds,
            work,
        )
        result["latency"] = rows
        del result["export"]["bundle"]
    path = os.path.join(args.out, f"export_{args.variant}_{args.resolution}.json")
    write_json_atomic(path, result, "export benchmark")
    for row in rows:
        print(
            f"{row['variant']} b{row['batch']:<2} {row['engine']:<30} median {row['median_ms']:8.1f} ms  "
            f"x{row['ratio_to_ours']}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
