"""What bit-trt's GroupNorm kernel does for INT8 on ONNX Runtime's CPU provider, against ORT's own ops and FP32.

    python -m tools.ort_group_norm_kernel R50X1_BUNDLE [R50X3_BUNDLE ...] \\
        --out bench/results/ort_group_norm_kernel_r50x1_r50x3_480.json [--rounds 5 --threads 2] [--prebuilt DIR]

Each BUNDLE needs model.fp32.onnx, model.int8-ort.onnx and parity_inputs.npz (bit-export --precision int8 or all).
Issue 20, item 2; docs/cpu.md ("bit-trt's GroupNorm kernel") explains the numbers. Per bundle, in one process:

- four graphs: ORT FP32; the bundle's int8-ort on ORT's own ops; the same with its GroupNorm chains on bit-trt's kernel
  (engine/ort_group_norm.py, the graph the ort-cpu runner serves); and, for scale, int8-ort with every chain made
  free (each quantize fed straight from the chain's input: not the model, timed only), its residual sums still as ORT
  runs them (the kernel takes those over too, so it may run faster than this);
- accuracy of the first three on the bundle's parity images against TF's stored logits, and the kernel's against ORT's
  own ops;
- ORT's profile at batch 1, by op type and role (tools/ort_int8_study.py's grouping);
- latency at batch 1 and 8, every graph interleaved round by round with the others, so machine noise hits all alike.

With --prebuilt DIR (a set from `python -m bit_trt.engine.ort_kernel_library DIR`), the kernel graph runs once more on
each of its level builds this CPU runs, beside the one built here for this CPU (`-march=native`): their accuracy,
their logits against the native build's, and their latency in the same rounds (docs/cpu.md, "Prebuilt for an
image").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from tools import RESULTS
from tools.ort_int8_study import interleaved, latency_summary, make_runner, profile


def free_chains(int8_path: str, out_path: str) -> int:
    """int8-ort with each GroupNorm chain replaced by nothing: the quantize after it reads the chain's input (a
    DequantizeLinear's uint8 input directly). A timing bound, not a model: its answers are wrong."""
    import onnx

    from bit_trt.engine import ort_group_norm

    model = onnx.load(int8_path)
    chains = ort_group_norm.find_chains(model)
    for chain in chains:
        if chain.dequantize is not None:  # uint8 straight through to the quantize's readers
            for node in model.graph.node:
                for i, name in enumerate(node.input):
                    if name == chain.quantize.output[0]:
                        node.input[i] = chain.dequantize.input[0]
        else:
            chain.quantize.input[0] = chain.x
    ort_group_norm.drop_unread(model, list(model.graph.node))
    onnx.save(model, out_path)
    return len(chains)


def study(bundle: str, rounds: int, threads: int, tmp: str, library: str, levels: dict, progress) -> dict:
    from bit_trt.engine import compare, ort_group_norm

    parity = np.load(os.path.join(bundle, "parity_inputs.npz"))
    x_all = parity["images"].astype(np.float32) * np.float32(1 / 255)
    tf_logits = parity["tf_logits"].astype(np.float32)
    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    name = manifest["model"]["variant"]
    fp32, int8 = os.path.join(bundle, "model.fp32.onnx"), os.path.join(bundle, "model.int8-ort.onnx")
    fused_path = os.path.join(tmp, f"{name}.kernel.onnx")
    data, fused = ort_group_norm.rewritten_bytes(int8)
    with open(fused_path, "wb") as f:
        f.write(data)
    del data
    free_path = os.path.join(tmp, f"{name}.free.onnx")
    freed = free_chains(int8, free_path)

    def variant(label, what, path, **kw):
        return {"name": label, "what": what, "path": path, "runtime": "ort", "threads": None, "config": {}} | kw

    variants = [
        variant("ort fp32", "the bundle's FP32 graph", fp32),
        variant("ort int8-ort", "the bundle's int8-ort on ORT's own ops", int8),
        variant(
            "ort int8-ort kernel",
            f"int8-ort with its {fused} GroupNorm chains on bit-trt's kernel (what ort-cpu serves)",
            fused_path,
            libraries=[library],
        ),
        variant(
            "bound: chains free",
            f"int8-ort with its {freed} GroupNorm chains removed, its residual sums kept (timing only)",
            free_path,
        ),
    ]
    built = [
        variant(f"ort int8-ort kernel {level}", f"the same on the prebuilt {level} build", fused_path, libraries=[lib])
        for level, lib in levels.items()
    ]
    variants += built
    runners, logits = {}, {}
    for v in variants:
        runners[v["name"]] = make_runner(v, threads)
        logits[v["name"]] = np.concatenate([runners[v["name"]](x_all[i : i + 1]) for i in range(len(x_all))])
    for v in variants[:3] + built:
        v["vs_tf"] = compare.measure(logits[v["name"]], tf_logits)
    variants[2]["vs_int8_ort"] = compare.measure(logits["ort int8-ort kernel"], logits["ort int8-ort"])
    for v in built:
        v["max_abs_vs_native_build"] = float(np.abs(logits[v["name"]] - logits["ort int8-ort kernel"]).max())
    for v in variants[:4]:
        progress(f"{name}: profiling {v['name']}")
        v["profile_b1"] = profile(v, threads, x_all[:1], 3, tmp)
    x8 = np.concatenate([x_all] * 2)[:8]
    runs = {1: 3, 8: 2} if name != "r50x3" else {1: 2, 8: 1}
    batches = {v["name"]: [1, 8] for v in variants}
    times = interleaved(runners, batches, {1: x_all[:1], 8: x8}, rounds, runs, progress)
    del runners
    for v in variants:
        v["latency_ms"] = {}
        for b in (1, 8):
            fp32, int8 = times[("ort fp32", b)], times[("ort int8-ort", b)]
            refs = {"ort_fp32": fp32, "int8_ort": int8}
            if v in built:
                refs["native_build"] = times[("ort int8-ort kernel", b)]
            v["latency_ms"][f"b{b}"] = latency_summary(times[(v["name"], b)], **refs)
        v["path"] = os.path.basename(v["path"]) if v["path"].startswith(bundle) else "(built in a temporary directory)"
    return {
        "bundle": {"variant": name, "resolution": manifest["input"]["resolution"]},
        "chains_fused": fused,
        "runs_per_round": {f"b{b}": n for b, n in runs.items()},
        "variants": variants,
    }


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.ort_group_norm_kernel", description=__doc__.split("\n\n")[0])
    p.add_argument("bundles", nargs="+", help="bundles with model.fp32.onnx and model.int8-ort.onnx")
    p.add_argument("--out", default=os.path.join(RESULTS, "ort_group_norm_kernel_r50x1_r50x3_480.json"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--prebuilt", help="also time the kernel's builds for each x86-64 level in this prebuilt set")
    args = p.parse_args(argv)
    from bit_trt.engine import ort_kernel_library
    from bit_trt.engine.atomic_write import write_json_atomic
    from bit_trt.engine.cpu_host import this_host
    from bit_trt.engine.tool_versions import tool_versions

    t0 = time.perf_counter()

    def progress(msg):
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    library = ort_kernel_library.library({k: v for k, v in os.environ.items() if k != ort_kernel_library.PREBUILT_ENV})
    levels = {}
    if args.prebuilt:  # vetted and chosen as the runner does, every level this CPU runs
        for level, name in ort_kernel_library.runnable_builds(args.prebuilt).items():
            levels[level] = ort_kernel_library.build_path(args.prebuilt, level, name)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ort-gn-kernel-") as tmp:
        results = [study(b, args.rounds, args.threads, tmp, library, levels, progress) for b in args.bundles]
    result = {
        "command": "python -m tools.ort_group_norm_kernel " + " ".join(sys.argv[1:] if argv is None else argv),
        "measured": time.strftime("%Y-%m-%d", time.gmtime()),
        "host": this_host().to_record(),
        "host_shared": "other jobs may run alongside: compare ratios within this run",
        "load_average_1_5_15": {"before": [round(x, 2) for x in load_before], "after": list(os.getloadavg())},
        "threads": args.threads,
        "rounds": args.rounds,
        "kernel_build": os.path.basename(os.path.dirname(library)),
        "prebuilt_builds": {level: os.path.basename(os.path.dirname(lib)) for level, lib in levels.items()},
        "bundles": results,
        "wall_s": round(time.perf_counter() - t0, 1),
        "tools": tool_versions(),
    }
    write_json_atomic(args.out, result, "ORT GroupNorm kernel study")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
