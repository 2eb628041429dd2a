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

from bit_trt.engine.bundle import Bundle, load_bundle
from bit_trt.engine.openvino_group_norm import rewrite
from tools.openvino_study import paired_forms, write_result

FORMS = (("as_read", None), ("rewritten", rewrite))


def measure(bundle: Bundle, flavour: str, batch: int, rounds: int, threads: int) -> dict:
    return paired_forms(bundle, flavour, batch, rounds, threads, FORMS, "group_norms_rewritten")


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
