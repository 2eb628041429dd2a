"""Where ONNX Runtime's INT8 time goes on this CPU, and which INT8 graph or session option makes it faster.

    python -m tools.ort_int8_study BUNDLE --out bench/results/ort_int8_r50x1_480.json [--rounds 5 --threads 2]

BUNDLE: a bundle with model.fp32.onnx, model.int8-ort.onnx, calibration.minmax.json and parity_inputs.npz
(bit-export --precision all). Issue 20, item 2 (the ONNX Runtime half); docs/cpu.md explains the numbers.

1. Variants, built in a temporary directory from the bundle's FP32 graph and its calibrated ranges with
   onnxruntime.quantization exactly as export/int8.py builds int8-ort (U8S8 QDQ, per-channel symmetric weights),
   one change each: quantize_static options (per-tensor weights, reduce_range, QuantizeBias, Q/DQ pair options),
   more op types in INT8 (the residual and GroupNorm Adds, the gamma Muls), the GroupNorm as ONNX's
   GroupNormalization-21, and ONNX Runtime session options. Op types the bundle's calibration did not cover get
   their ranges from the bundle's own synthetic calibration images (export/calibration.synthetic), the
   bundle's ranges kept wherever it has them.
2. Accuracy: each variant's logits on the bundle's parity images against TF's stored logits (and ORT FP32's).
   A variant whose logits are bit-identical to int8-ort's and whose optimized graph has the same op types is the
   same computation: it is recorded, not timed.
3. Profile: ORT's own profiler (per-node kernel times after its graph optimizations), batch 1, grouped by op
   type and by role (convolutions, GroupNorm arithmetic, Q/DQ, layout, elementwise).
4. Latency: every timed variant, ORT FP32 and OpenVINO FP32/int8-ort in one process, interleaved round by round
   (each round runs every variant a few times; medians over all rounds), batch 1 and 8, so machine noise hits all
   alike. Ratios are to ORT FP32 in the same run; the host may be shared, so the ratios are the result.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from types import SimpleNamespace

import numpy as np

from tools import RESULTS

BASE_OPS = ("Conv", "MatMul")  # what export/int8.py quantizes
CONV_OPS = {"Conv", "QLinearConv", "FusedConv", "ConvInteger", "MatMul", "QLinearMatMul", "MatMulInteger", "Gemm"}
ROLES = {
    "groupnorm": {
        "InstanceNormalization",
        "Reshape",
        "Mul",
        "ReduceMean",
        "Sub",
        "Div",
        "Sqrt",
        "Pow",
        "Cast",
        "QGroupNormRelu",
        "GroupNormReluQuantize",
    },
    "quantize": {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"},
    "layout": {"Transpose", "ReorderInput", "ReorderOutput"},
    "elementwise": {"Add", "Relu", "QLinearAdd", "QLinearMul", "Sum", "Clip"},
}


def role(op: str) -> str:
    if op in CONV_OPS:
        return "conv"
    return next((r for r, ops in ROLES.items() if op in ops), "other")


# ---------------------------------------------------------------------------------------------------- variants


def quantize(fp32_path: str, out_path: str, cache_path: str, **kw) -> None:
    """export/int8.py's ORT quantization (target onnxruntime), with the keyword overrides of one variant."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    extra = {"ActivationSymmetric": False, "WeightSymmetric": True, "ForceQuantizeNoInputCheck": False}
    extra.update(kw.pop("extra_options", {}))
    args = {
        "quant_format": QuantFormat.QDQ,
        "op_types_to_quantize": list(BASE_OPS),
        "per_channel": True,
        "activation_type": QuantType.QUInt8,
        "weight_type": QuantType.QInt8,
        "calibrate_method": CalibrationMethod.MinMax,
        "calibration_cache_path": cache_path,
        "extra_options": extra,
    }
    args.update(kw)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_static(fp32_path, out_path, None, **args)
    finally:
        root.setLevel(level)


def extra_ranges(fp32_path: str, bundle_ranges: dict, resolution: int, count: int, progress) -> tuple[dict, dict]:
    """The bundle's ranges plus minmax ranges of every other tensor the variants quantize (the GroupNorm's Reshape,
    Mul and Relu), measured on the first `count` of the bundle's own synthetic calibration images."""
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import CalibrationCacheEncoder, create_calibrator

    from bit_trt.engine.preprocess import scale_uint8
    from bit_trt.export.calibration import synthetic

    # the first `count` images of the set bit-export --calib-synthetic calibrates on (seed 0)
    images, record = synthetic(SimpleNamespace(resolution=resolution), count, 0)
    with tempfile.TemporaryDirectory(prefix="ort-int8-study-calib-") as tmp:
        cal = create_calibrator(
            fp32_path,
            ["Mul", "Relu", "Reshape", "InstanceNormalization", "Add"],
            os.path.join(tmp, "augmented.onnx"),
            calibrate_method=CalibrationMethod.MinMax,
            use_external_data_format=True,
        )

        class Reader:
            i = 0

            def get_next(self):
                if self.i >= len(images):
                    return None
                self.i += 1
                progress(f"extra calibration {self.i}/{len(images)}")
                return {"images": scale_uint8(images[self.i - 1 : self.i])}

        cal.collect_data(Reader())
        ranges = json.loads(json.dumps(cal.compute_data().to_dict(), cls=CalibrationCacheEncoder))
    merged = json.loads(json.dumps(bundle_ranges))
    data = merged.get("data", merged)
    added = 0
    for name, value in ranges.get("data", ranges).items():
        if name not in data:
            data[name] = value
            added += 1
    return merged, {**record, "count": count, "tensors_added": added, "bundle_tensors": len(data) - added}


def build_variants(bundle: str, tmp: str, resolution: int, extra_count: int, progress) -> tuple[list[dict], dict]:
    """Every variant: name, what changed, model path, session options, threads and batches to time."""
    import onnx

    from bit_trt.export.group_norm_form import to_native

    fp32 = os.path.join(bundle, "model.fp32.onnx")
    with open(os.path.join(bundle, "calibration.minmax.json"), encoding="utf-8") as f:
        bundle_ranges = json.load(f)["ranges"]
    cache = os.path.join(tmp, "ranges.json")
    with open(cache, "w", encoding="utf-8") as f:
        json.dump(bundle_ranges, f)
    merged, calib = extra_ranges(fp32, bundle_ranges, resolution, extra_count, progress)
    cache_all = os.path.join(tmp, "ranges_all.json")
    with open(cache_all, "w", encoding="utf-8") as f:
        json.dump(merged, f)

    gn21 = os.path.join(tmp, "fp32.gn21.onnx")
    model = onnx.load(fp32)
    native = to_native(model)
    onnx.save(model, gn21)
    del model

    int8 = os.path.join(bundle, "model.int8-ort.onnx")
    v = []

    def add(name, what, path, **kw):
        v.append({"name": name, "what": what, "path": path, "runtime": "ort", "threads": None, "config": {}} | kw)

    add("ort fp32", "the bundle's FP32 graph", fp32)
    add("ort int8-ort", "the bundle's int8-ort (U8S8 QDQ, Conv+MatMul, per-channel weights)", int8)
    specs = [
        ("int8 rebuilt", "int8-ort rebuilt here (checks this script quantizes as export/int8.py does)", {}),
        ("int8 per-tensor", "per_channel=False: one weight scale per Conv", {"per_channel": False}),
        (
            "int8 reduce_range",
            "reduce_range=True: 7-bit weights (avoids vpmaddubsw int16 saturation)",
            {"reduce_range": True},
        ),
        ("int8 QuantizeBias=False", "bias left in float", {"extra_options": {"QuantizeBias": False}}),
        (
            "int8 QDQKeepRemovableActivations",
            "Relu kept in the QDQ graph",
            {"extra_options": {"QDQKeepRemovableActivations": True}},
        ),
        ("int8 AddQDQPairToWeight", "float weights with a Q/DQ pair", {"extra_options": {"AddQDQPairToWeight": True}}),
        ("int8 DedicatedQDQPair", "one Q/DQ pair per consumer", {"extra_options": {"DedicatedQDQPair": True}}),
        (
            "int8 ForceQuantizeNoInputCheck",
            "quantize ops whose input is not quantized yet",
            {"extra_options": {"ForceQuantizeNoInputCheck": True}},
        ),
        (
            "int8 +Add",
            "the residual and GroupNorm-beta Adds in INT8 too (QLinearAdd): Conv -> Add -> Conv stays uint8",
            {"op_types_to_quantize": [*BASE_OPS, "Add"]},
        ),
        (
            "int8 +Add+Mul",
            "the Adds and the GroupNorm-gamma Muls in INT8 (QLinearAdd, QLinearMul): only InstanceNorm in float",
            {"op_types_to_quantize": [*BASE_OPS, "Add", "Mul", "Relu", "Reshape"], "calibration_cache_path": cache_all},
        ),
        (
            "int8 +Add+Mul reduce_range",
            "+Add+Mul with 7-bit weights",
            {
                "op_types_to_quantize": [*BASE_OPS, "Add", "Mul", "Relu", "Reshape"],
                "calibration_cache_path": cache_all,
                "reduce_range": True,
            },
        ),
        (
            "int8 s8s8",
            "signed symmetric activations (S8S8), run with session.qdqisint8allowed=1",
            {"activation_type": "QInt8", "extra_options": {"ActivationSymmetric": True}},
        ),
    ]
    from onnxruntime.quantization import QuantType

    for name, what, kw in specs:
        out = os.path.join(tmp, name.replace(" ", "_").replace("+", "p").replace("=", "_") + ".onnx")
        if kw.get("activation_type") == "QInt8":
            kw = {**kw, "activation_type": QuantType.QInt8}
        kw.setdefault("calibration_cache_path", cache)
        progress(f"quantizing: {name}")
        t0 = time.perf_counter()
        quantize(fp32, out, kw.pop("calibration_cache_path"), **kw)
        config = {"session.qdqisint8allowed": "1"} if name == "int8 s8s8" else {}
        batches = [1] if name == "int8 s8s8" else [1, 8]
        add(name, what, out, config=config, batches=batches, build_s=round(time.perf_counter() - t0, 1))
    out = os.path.join(tmp, "int8_gn21.onnx")
    progress("quantizing: int8 GroupNormalization-21")
    quantize(gn21, out, cache)
    add("int8 GroupNormalization-21", f"GroupNorm as one ONNX GroupNormalization-21 ({native})", out, batches=[1])
    add(
        "ort fp32 GroupNormalization-21",
        "FP32 with GroupNormalization-21 (ORT CPU expands the function)",
        gn21,
        batches=[1],
    )
    add(
        "int8 qdq_cleanup",
        "int8-ort with session.enable_quant_qdq_cleanup=1",
        int8,
        config={"session.enable_quant_qdq_cleanup": "1"},
        batches=[1],
    )
    add(
        "int8 no NhwcTransformer",
        "int8-ort with ORT's NhwcTransformer disabled (QLinearConv NCHW, no Transposes)",
        int8,
        disabled_optimizers=["NhwcTransformer"],
        batches=[1],
    )
    add("ort fp32 1 thread", "FP32, intra_op_num_threads=1", fp32, threads=1, batches=[1])
    add("ort int8-ort 1 thread", "int8-ort, intra_op_num_threads=1", int8, threads=1, batches=[1])
    best = next(x["path"] for x in v if x["name"] == "int8 +Add+Mul reduce_range")
    add("int8 +Add+Mul reduce_range 1 thread", "the same, intra_op_num_threads=1", best, threads=1, batches=[1])
    add(
        "int8-ort exact QDQ arithmetic",
        "int8-ort with ORT's graph optimizations off: DequantizeLinear then float Conv, the QDQ graph's exact "
        "arithmetic with no int16 intermediate (accuracy only, not timed)",
        int8,
        optimization="disable",
        batches=[],
    )
    add("openvino fp32", "OpenVINO CPU, LATENCY hint, f32", fp32, runtime="openvino")
    add("openvino int8-ort", "OpenVINO CPU on the int8-ort QDQ graph", int8, runtime="openvino")
    return v, {"extra_calibration": calib, "group_norm_native": native}


# ---------------------------------------------------------------------------------------------------- sessions


def ort_session(variant: dict, threads: int, profile_prefix: str | None = None, optimized: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if variant.get("optimization") == "disable"
        else ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    )
    opts.intra_op_num_threads = variant["threads"] or threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    for k, val in variant["config"].items():
        opts.add_session_config_entry(k, val)
    for library in variant.get("libraries", ()):  # custom-op libraries (tools/ort_group_norm_kernel.py)
        opts.register_custom_ops_library(library)
    if optimized:
        opts.optimized_model_filepath = optimized
    if profile_prefix:
        opts.enable_profiling = True
        opts.profile_file_prefix = profile_prefix
    kwargs = {"disabled_optimizers": variant["disabled_optimizers"]} if variant.get("disabled_optimizers") else {}
    return ort.InferenceSession(variant["path"], opts, providers=["CPUExecutionProvider"], **kwargs)


def make_runner(variant: dict, threads: int, optimized: str | None = None):
    if variant["runtime"] == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(
            variant["path"],
            "CPU",
            {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": variant["threads"] or threads},
        )
        request = compiled.create_infer_request()
        return lambda x: request.infer({0: x})[0].copy()
    session = ort_session(variant, threads, optimized=optimized)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def op_counts(path: str) -> dict:
    """Op-type counts of the graph ORT runs after its optimizations (the optimized model it wrote), then the file
    is removed."""
    import onnx

    counts = collections.Counter(n.op_type for n in onnx.load(path, load_external_data=False).graph.node)
    folder = os.path.dirname(path)
    for f in os.listdir(folder):
        if f.startswith(os.path.basename(path)):
            os.remove(os.path.join(folder, f))
    return dict(sorted(counts.items()))


def profile(variant: dict, threads: int, x: np.ndarray, runs: int, tmp: str) -> dict:
    """ORT's profiler: per-op-type kernel milliseconds per run (after warm-up), and per role."""
    session = ort_session(variant, threads, os.path.join(tmp, "prof"))
    name = session.get_inputs()[0].name
    for _ in range(2):
        session.run(None, {name: x})
    start_us = None
    t0 = time.perf_counter()
    for _ in range(runs):
        session.run(None, {name: x})
    wall = (time.perf_counter() - t0) / runs
    path = session.end_profiling()
    with open(path, encoding="utf-8") as f:
        events = json.load(f)
    os.remove(path)
    runs_ev = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    start_us = runs_ev[-runs]["ts"] if len(runs_ev) >= runs else 0
    by_op: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start_us:
            by_op[e["args"]["op_name"]] += e["dur"]
    total = sum(by_op.values())
    by_role: collections.Counter = collections.Counter()
    for op, us in by_op.items():
        by_role[role(op)] += us
    return {
        "runs": runs,
        "wall_ms": round(1000 * wall, 1),
        "kernel_ms": round(total / runs / 1000, 1),
        "by_op_ms": {k: round(us / runs / 1000, 2) for k, us in by_op.most_common()},
        "by_role_ms": {k: round(us / runs / 1000, 1) for k, us in by_role.most_common()},
        "by_role_share": {k: round(us / total, 3) for k, us in by_role.most_common()},
    }


# ---------------------------------------------------------------------------------------------------- main


def interleaved(runners: dict, batches: dict, x_by_batch: dict, rounds: int, runs: dict, progress) -> dict:
    """Median ms per variant and batch; within a batch, each round runs every variant `runs[batch]` times."""
    times: dict = collections.defaultdict(list)
    for batch, x in x_by_batch.items():
        names = [n for n in runners if batch in batches[n]]
        for n in names:
            runners[n](x)  # warm-up
        for r in range(rounds):
            for n in names:
                for _ in range(runs[batch]):
                    t0 = time.perf_counter()
                    runners[n](x)
                    times[(n, batch)].append(1000 * (time.perf_counter() - t0))
            medians = ", ".join(f"{n} {statistics.median(times[(n, batch)]):.0f}" for n in names)
            progress(f"timing batch {batch}: round {r + 1}/{rounds}: {medians}")
    return times


def latency_summary(t: list, **references: list) -> dict:
    """Median, min and max ms of the times `t`, and its speedup over each reference's median (speedup_vs_<name>)."""
    med = statistics.median(t)
    summary = {"median": round(med, 1), "min": round(min(t), 1), "max": round(max(t), 1), "samples": len(t)}
    for name, ref in references.items():
        summary[f"speedup_vs_{name}"] = round(statistics.median(ref) / med, 2)
    return summary


def run(bundle: str, rounds: int, threads: int, extra_count: int, progress) -> dict:
    from bit_trt.engine import compare
    from bit_trt.engine.cpu_host import this_host
    from bit_trt.engine.preprocess import scale_uint8

    parity = np.load(os.path.join(bundle, "parity_inputs.npz"))
    images, tf_logits = parity["images"], parity["tf_logits"].astype(np.float32)
    x_all = scale_uint8(images)
    with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ort-int8-study-") as tmp:
        resolution = manifest["input"]["resolution"]
        variants, built = build_variants(bundle, tmp, resolution, extra_count, progress)
        # accuracy, and the graph ORT runs
        logits, runners = {}, {}
        for v in variants:
            optimized = os.path.join(tmp, "optimized.onnx") if v["runtime"] == "ort" else None
            runner = make_runner(v, threads, optimized)
            logits[v["name"]] = np.concatenate([runner(x_all[i : i + 1]) for i in range(len(x_all))])
            runners[v["name"]] = runner
            v["vs_tf"] = compare.measure(logits[v["name"]], tf_logits)
            if optimized:
                v["optimized_ops"] = op_counts(optimized)
            progress(f"accuracy: {v['name']}: rel L2 {v['vs_tf']['rel_l2']:.4f}, cosine {v['vs_tf']['cosine_min']:.5f}")
        base = logits["ort int8-ort"]
        for v in variants:
            v["vs_ort_fp32"] = compare.measure(logits[v["name"]], logits["ort fp32"])
            v["logits_identical_to_int8_ort"] = bool(np.array_equal(logits[v["name"]], base))
            same = (
                v["name"] != "ort int8-ort"
                and v["runtime"] == "ort"
                and v["logits_identical_to_int8_ort"]
                and v["optimized_ops"] == variants[1]["optimized_ops"]
                and not v["config"]
                and not v.get("disabled_optimizers")
                and v["threads"] is None
                and not v.get("optimization")
            )
            v["timed"] = not same
            if same:
                v["same_as"] = "ort int8-ort"
                del runners[v["name"]]
        # profiles (batch 1)
        for v in variants:
            if v["runtime"] == "ort" and v["timed"] and v.get("batches", [1]):
                progress(f"profiling: {v['name']}")
                v["profile_b1"] = profile(v, threads, x_all[:1], 3, tmp)
                progress(f"  kernel ms {v['profile_b1']['kernel_ms']}: {v['profile_b1']['by_role_ms']}")
        # interleaved latency
        timed = [v for v in variants if v["timed"] and v.get("batches", [1])]
        batches = {v["name"]: v.get("batches", [1, 8]) for v in timed}
        runners = {n: r for n, r in runners.items() if n in batches}
        x8 = np.concatenate([x_all] * 2)[:8]
        times = interleaved(runners, batches, {1: x_all[:1], 8: x8}, rounds, {1: 3, 8: 2}, progress)
        del runners
    load_after = os.getloadavg()
    for v in variants:
        v["latency_ms"] = {}
        for b in (1, 8):
            t = times.get((v["name"], b))
            if not t:
                continue
            ref1 = times.get(("ort fp32 1 thread", b))
            v["latency_ms"][f"b{b}"] = latency_summary(t, ort_fp32=times[("ort fp32", b)])
            if v["threads"] == 1 and ref1:  # against ORT FP32 on as many threads
                v["latency_ms"][f"b{b}"] |= latency_summary(t, ort_fp32_same_threads=ref1)
    for v in variants:
        v["path"] = os.path.basename(v["path"]) if v["path"].startswith(bundle) else "(built in a temporary directory)"
    fp32_prof = variants[0]["profile_b1"]
    int8_prof = variants[1]["profile_b1"]
    conv8 = int8_prof["by_role_ms"].get("conv", 0.0)
    return {
        "command": "python -m tools.ort_int8_study " + " ".join(sys.argv[1:]),
        "bundle": {
            "variant": manifest["model"]["variant"],
            "resolution": manifest["input"]["resolution"],
            "weights": manifest["model"]["source"]["kind"],
            "int8_calibration": next(
                (a.get("calibration") for a in manifest.get("artifacts", []) if a.get("flavour") == "int8-ort"), None
            ),
        },
        "host": this_host().to_record(),
        "host_shared": "other jobs (exports, benchmarks) may run alongside: compare ratios within this run",
        "load_average_1_5_15": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in load_after],
        },
        "threads": threads,
        "rounds": rounds,
        "runs_per_round": {"b1": 3, "b8": 2},
        "parity_samples": int(len(images)),
        **built,
        "profile_runs_b1": 3,
        "profile_summary_b1": {
            "ort_fp32_kernel_ms": fp32_prof["kernel_ms"],
            "ort_int8_kernel_ms": int8_prof["kernel_ms"],
            "int8_conv_ms": conv8,
            "int8_conv_share": int8_prof["by_role_share"].get("conv"),
            "fp32_conv_ms": fp32_prof["by_role_ms"].get("conv"),
            "conv_only_speedup": round(fp32_prof["by_role_ms"].get("conv", 0) / conv8, 2) if conv8 else None,
            "profiled_speedup": round(fp32_prof["kernel_ms"] / int8_prof["kernel_ms"], 2),
            "ceiling_if_non_conv_free": round(fp32_prof["kernel_ms"] / conv8, 2) if conv8 else None,
        },
        "variants": variants,
        "wall_s": round(time.perf_counter() - t_start, 1),
    }


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m tools.ort_int8_study", description=__doc__.split("\n\n")[0])
    p.add_argument("bundle", help="a bundle with model.fp32.onnx, model.int8-ort.onnx and calibration.minmax.json")
    p.add_argument("--out", default=os.path.join(RESULTS, "ort_int8_r50x1_480.json"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--extra-calib", type=int, default=16, help="synthetic images for the ranges the bundle lacks")
    args = p.parse_args(argv)
    from bit_trt.engine.atomic_write import write_json_atomic
    from bit_trt.engine.tool_versions import tool_versions

    t0 = time.perf_counter()

    def progress(msg):
        print(f"[{time.perf_counter() - t0:6.0f}s] {msg}", file=sys.stderr, flush=True)

    result = run(args.bundle, args.rounds, args.threads, args.extra_calib, progress)
    result["measured"] = time.strftime("%Y-%m-%d", time.gmtime())
    result["tools"] = tool_versions()
    write_json_atomic(args.out, result, "ORT INT8 study")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
