"""Is OpenVINO faster on the GroupNorm rewritten to per-channel statistics than on the bundle's grouped reshape?

For each file of a bundle, and each batch, two models compiled for that static shape (LATENCY hint, the
given threads, the runner's arithmetic: bf16 for the fp16 file where the CPU has it, else f32): the file as read,
and the file with engine/openvino_group_norm.py's rewrite. Then `--rounds` paired rounds, alternating which goes
first. Reports milliseconds per image, each round's ratio (as read over rewritten: above 1, the rewrite is faster)
and their median, the layout Reorders each compiled model executes and their share of its time, its time split by
layer type and the precision each ran in (OpenVINO's performance counters, one extra profiled run per model), and
each form's agreement with TF on the bundle's parity set.

    python -m tools.openvino_group_norm BUNDLE [--flavours fp32,fp16,int8-ort] [--batches 1,8] [--rounds 6]
        [--threads 2] [--json OUT]

Maintainers' measurement, not part of the installed package: it is the evidence for the OpenVINO runner's rewrite
(docs/cpu.md, "GroupNorm on OpenVINO"), to be rerun on other hosts.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

from bit_trt.engine.bundle import Bundle, load_bundle
from bit_trt.engine.compare import measure as agreement
from bit_trt.engine.openvino_group_norm import rewrite
from bit_trt.engine.openvino_runner import arithmetic_for, import_openvino
from bit_trt.engine.parity_set import load_parity_set
from bit_trt.engine.preprocess import scale_uint8
from tools.openvino_study import compiled, write_result

FORMS = ("as_read", "rewritten")


def _profile(compiled, images) -> dict:
    """The layout Reorders one profiled inference executes and their share of its time, and the time's split by
    layer type and the precision each ran in (OpenVINO's names: "Convolution I8", "Subgraph f32", ...; shares of
    at least 0.5%), which says what an INT8 or bf16 model spends its time on besides its convolutions."""
    request = compiled.create_infer_request()
    for _ in range(2):
        request.infer({0: images})
    executed = [p for p in request.profiling_info if p.status == p.Status.EXECUTED]
    total = sum(p.real_time.total_seconds() for p in executed)
    reorders = [p for p in executed if p.node_type == "Reorder"]
    share = sum(p.real_time.total_seconds() for p in reorders) / total if total else 0.0
    by_type: dict[str, float] = {}
    for p in executed:
        key = f"{p.node_type} {p.exec_type.rsplit('_', 1)[-1]}"
        by_type[key] = by_type.get(key, 0.0) + p.real_time.total_seconds()
    shares = {
        k: round(t / total, 3)
        for k, t in sorted(by_type.items(), key=lambda kv: -kv[1])
        if total and t >= 0.005 * total
    }
    return {"reorders": len(reorders), "reorder_share_of_time": round(share, 3), "share_by_layer_type": shares}


def measure(bundle: Bundle, flavour: str, batch: int, rounds: int, threads: int) -> dict:
    core = import_openvino().Core()
    resolution = bundle.input_spec.resolution
    precision = arithmetic_for(core, flavour == "fp16")
    path = bundle.artifact_path(flavour)
    shape = [batch, resolution, resolution, 3]
    images = np.random.default_rng(0).random(shape, dtype=np.float32)
    parity, _, tf_logits = load_parity_set(bundle)
    row: dict = {"flavour": flavour, "inference_precision": precision, "batch": batch, "threads": threads}
    requests, rewritten = {}, []

    def rewrite_counted(model):  # the count of the first rewrite, so the file is not read again to count
        rewritten.append(rewrite(model))

    for form in FORMS:
        edit = rewrite_counted if form == "rewritten" else None
        requests[form] = compiled(core, path, shape, precision, threads, edit).create_infer_request()
        for _ in range(2):  # first-inference setup
            requests[form].infer({0: images})
        profiled = compiled(core, path, shape, precision, threads, edit, profile=True)
        # the parity set on the dynamic model: its size is not the timed batch
        dynamic = compiled(core, path, [-1, resolution, resolution, 3], precision, threads, edit)
        logits = dynamic.create_infer_request().infer({0: scale_uint8(parity)})[0]
        vs_tf = agreement(logits, tf_logits)
        row[form] = {
            "group_norms_rewritten": rewritten[0] if edit else 0,
            **_profile(profiled, images),
            "vs_tf": {k: round(float(vs_tf[k]), 6) for k in ("rel_l2", "cosine_min", "top1_agreement")},
            "ms_per_image": [],
        }
        del profiled, dynamic
    for i in range(rounds):
        for form in FORMS if i % 2 == 0 else FORMS[::-1]:
            start = time.perf_counter()
            requests[form].infer({0: images})
            row[form]["ms_per_image"].append(round((time.perf_counter() - start) * 1000 / batch, 2))
    times = [row[form]["ms_per_image"] for form in FORMS]
    ratios = [round(a / b, 3) for a, b in zip(*times)]
    row |= {
        "median_ms_per_image": {form: statistics.median(t) for form, t in zip(FORMS, times)},
        "as_read_over_rewritten": ratios,
        "median_ratio": statistics.median(ratios),
    }
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle")
    parser.add_argument("--flavours", default="fp32,fp16,int8-ort")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    bundle = load_bundle(args.bundle)
    rows = []
    for flavour in args.flavours.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            row = measure(bundle, flavour, batch, args.rounds, args.threads)
            before, after = row["as_read"], row["rewritten"]
            print(
                f"{flavour} ({row['inference_precision']}) batch {batch}: "
                f"{row['median_ms_per_image']['as_read']:.1f} ms/image as read ({before['reorders']} Reorders, "
                f"{before['reorder_share_of_time']:.0%} of its time), {row['median_ms_per_image']['rewritten']:.1f} "
                f"rewritten ({after['reorders']}, {after['reorder_share_of_time']:.0%}); as read over rewritten "
                f"{row['median_ratio']:.2f} (rounds {min(row['as_read_over_rewritten']):.2f}-"
                f"{max(row['as_read_over_rewritten']):.2f}); rel L2 vs TF {before['vs_tf']['rel_l2']:.2e} / "
                f"{after['vs_tf']['rel_l2']:.2e}",
                flush=True,
            )
            rows.append(row)
    write_result("openvino_group_norm", argv, args.bundle, bundle, rows, args.json)


if __name__ == "__main__":
    main()
