"""Export benchmark: wall time, peak RSS and graph size of `bit-export`, and ORT FP32 CPU latency of our
cleaned ONNX against tf2onnx's own graph and against TF, measured side by side in one process.

    python -m tools.export_bench --variant r50x1 --out bench/results
    python -m tools.export_bench --variant r50x3 --trace after [--precision all]

`--trace LABEL` runs one `bit-export` and samples the resident
memory of its whole process tree (the exporter and its TF reference child, summed) every 50 ms: each step's
seconds and the tree's peak RSS during it, the whole run's, and the largest single process's (what
/usr/bin/time would say), and within the int8 and engines steps each part's (calibration, the probes, each gate;
each plan's native-form check and its build). The result goes into the `traced` table of the results file, under
the label.

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
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

from bit_trt.engine.atomic_write import write_json_atomic
from bit_trt.engine.cpu_host import this_host
from bit_trt.engine.memory import gigabytes
from tools import RESULTS
from tools.child import child_main, run_child


def _cpu_name() -> str:
    return this_host().name or platform.processor()


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


def _tree_rss(root: int) -> tuple[int, int, int]:
    """(summed RSS of `root` and all its descendants, root's own RSS, the largest single process's RSS), bytes."""
    parents, rss = {}, {}
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/statm") as f:
                resident = int(f.read().split()[1]) * page
        except (OSError, ValueError, IndexError):
            continue  # gone between listing and reading
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
        rss[int(entry)] = resident
    tree, frontier = set(), [root]
    while frontier:
        pid = frontier.pop()
        if pid in rss and pid not in tree:
            tree.add(pid)
            frontier += [child for child, parent in parents.items() if parent == pid]
    return sum(rss[p] for p in tree), rss.get(root, 0), max((rss[p] for p in tree), default=0)


# Within the int8 and engines steps, the progress line that ends each part (its window starts where the one before
# ended): where in those steps a peak falls, which their step totals do not say.
SUBSTEPS = (
    (
        "int8: calibration (ORT's augmented model, then every calibration image)",
        r"calibration ranges (computed|reused)",
    ),
    ("int8: TensorRT graph's edge probes (all INT8, then the stem in float)", r"int8 stem "),
    ("int8: TensorRT graph's edge probe (the head in float)", r"int8 head "),
    ("int8: TensorRT graph quantized and gated (with any fallback)", r"int8-trt: .*(PASS|over the gate|kept in float)"),
    ("int8: ONNX Runtime graph quantized and gated", r"int8-ort: .*(PASS|over the gate|kept in float)"),
)
_PLAN_PARTS = (
    (r"(model\.[\w-]+)\.onnx: \d+ GroupNorms native", "native GroupNorm graph checked on ORT"),
    (r"(model\.[\w-]+)\.\w+[\d.]+\.\w+\.plan: built", "parse and build"),
)


def substeps(lines: list[tuple[float, str]], samples: list[tuple]) -> dict:
    """Seconds and the tree's peak RSS of each part of the int8 step (SUBSTEPS) and of each plan's native-form check
    and build, from the progress lines' times and the samples; parts whose lines did not appear are left out."""
    ends = []
    start = next((t for t, line in lines if line.endswith("...") and "INT8 variants:" in line), None)
    if start is not None:
        after = start
        for name, pattern in SUBSTEPS:
            hits = [t for t, line in lines if t > after and re.search(pattern, line)]
            if hits:  # the TensorRT gate may print a line per fallback round: its part ends at the last one
                after = hits[-1] if "gated (with any fallback)" in name else hits[0]
                ends.append((name, after))
        ends.insert(0, ("", start))
    engines = next((t for t, line in lines if "TensorRT plans from the ONNX variants ..." in line), None)
    if engines is not None:
        ends.append(("", engines))
        for t, line in lines:
            for pattern, part in _PLAN_PARTS:
                match = re.search(pattern, line) if t > engines else None
                if match:
                    ends.append((f"engines: {match.group(1).removeprefix('model.')} {part}", t))
    out, previous = {}, None
    for name, end in ends:
        if name and previous is not None:
            window = [s[1] for s in samples if previous <= s[0] <= end]
            out[name] = {"s": round(end - previous, 1), "peak_rss_tree_gb": gigabytes(max(window, default=0))}
        previous = end
    return out


def traced_export(variant: str, resolution: int, workdir: str, extra: list[str]) -> dict:
    """One bit-export with its process tree's RSS sampled every 50 ms; per step: seconds and the tree's peak."""
    out = os.path.join(workdir, f"traced-{variant}")
    command = [sys.executable, "-m", "bit_trt.export.cli"]
    command += ["--variant", variant, "--resolution", str(resolution), "--out", out, *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    lines: list[tuple[float, str]] = []

    def read_progress():
        for line in proc.stderr:
            lines.append((time.perf_counter() - t0, line.rstrip("\n")))

    reader = threading.Thread(target=read_progress, daemon=True)
    reader.start()
    samples = []  # (t, tree, exporter, largest single process)
    while proc.poll() is None:
        samples.append((time.perf_counter() - t0, *_tree_rss(proc.pid)))
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    reader.join()
    stdout = proc.stdout.read()
    raw = os.path.join(tempfile.gettempdir(), f"export_trace_{os.getpid()}.json")
    with open(raw, "w") as f:  # the raw data, kept outside the work directory if what follows fails
        json.dump({"lines": lines, "samples": samples}, f)
    if proc.returncode != 0:
        raise SystemExit("export failed:\n" + "\n".join(line for _, line in lines[-20:]))
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    ex = manifest["export"]
    # The exporter's clock prints "<what>: done in <s> s (RSS ...)" as each step ends, in the manifest's order;
    # the last, publishing the bundle, ends after the manifest is written, so it is named here.
    done = [(t, line) for t, line in lines if re.search(r": done in [\d.]+ s \(RSS", line)]
    names = [*ex["steps_s"], *[f"bundle{i or ''}" for i in range(len(done) - len(ex["steps_s"]))]]
    steps = {}
    for name, (end, line) in zip(names, done):
        waited = float(re.search(r"done in ([\d.]+) s", line).group(1))  # the step's own window
        seconds = ex["steps_s"].get(name, waited)  # with any work a child did for it in an earlier window
        window = [s for s in samples if end - waited - 0.1 <= s[0] <= end]
        steps[name] = {
            "s": seconds,
            "peak_rss_tree_gb": gigabytes(max((s[1] for s in window), default=0)),
            "peak_rss_exporter_gb": gigabytes(max((s[2] for s in window), default=0)),
        }
    return {
        "command": " ".join(["bit-export", *command[command.index("--variant") :]]).replace(out, "OUT"),
        "process_wall_s": round(wall, 1),
        "pipeline_wall_s": ex["wall_s"],
        "steps": steps,
        "substeps": substeps(lines, samples),
        "peak_rss_tree_gb": gigabytes(max(s[1] for s in samples)),
        "peak_rss_largest_process_gb": gigabytes(max(s[3] for s in samples)),
        "manifest_peak_rss_gb": gigabytes(ex["peak_rss_bytes"]),
        "manifest_peak_rss_exporter_gb": gigabytes(ex["peak_rss_exporter_bytes"]),
        "manifest_peak_rss_tf_reference_gb": gigabytes(ex["peak_rss_tf_reference_bytes"]),
        "samples": len(samples),
        "summary": stdout.strip().splitlines()[-1] if stdout.strip() else "",
        "progress": [f"[{t:6.1f}s] {line}" for t, line in lines],
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
    from bit_trt.engine.memory import peak_rss_bytes
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


def trace(args) -> None:
    extra = ["--precision", args.precision] + (["--calib-synthetic"] if args.precision in ("int8", "all") else [])
    print(f"[{args.variant}] traced export ({' '.join(extra)}) ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as work:
        run = traced_export(args.variant, args.resolution, work, extra)
    run["measured"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    run["host"] = {"cpu": _cpu_name(), "cores": os.cpu_count(), "python": platform.python_version()}
    run["commit"] = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, cwd=os.path.dirname(RESULTS)
    ).stdout.strip()
    path = os.path.join(args.out, f"export_{args.variant}_{args.resolution}.json")
    result = {}
    if os.path.exists(path):
        with open(path) as f:
            result = json.load(f)
    result.setdefault("traced", {}).setdefault(args.precision, {})[args.trace] = run
    write_json_atomic(path, result, "export benchmark")
    for name, step in run["steps"].items():
        print(f"{name:<10} {step['s']:8.1f} s  tree peak {step['peak_rss_tree_gb']:5.2f} GB", file=sys.stderr)
    print(
        f"wall {run['process_wall_s']} s; peak RSS: process tree {run['peak_rss_tree_gb']} GB, largest process "
        f"{run['peak_rss_largest_process_gb']} GB, manifest {run['manifest_peak_rss_gb']} GB; wrote {path}"
    )


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
    p.add_argument("--trace", metavar="LABEL", help="only a traced bit-export (process-tree RSS), recorded as LABEL")
    p.add_argument("--precision", default="fp32", help="--trace: bit-export's --precision (all: --calib-synthetic)")
    args = p.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.trace:
        return trace(args)
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
