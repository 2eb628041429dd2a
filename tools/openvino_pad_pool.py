"""Is OpenVINO faster with the stem's zero Pad folded into its MaxPool than with the Pad as read?

For each file of a bundle, and each batch, two models compiled for that static shape (tools/openvino_study.py's
paired_forms: LATENCY hint, the given threads, the runner's arithmetic), both with the GroupNorms rewritten as the
runner runs them (engine/openvino_group_norm.py): the Pad as read, and the Pad folded into its MaxPool
(engine/openvino_pad_pool.py). Then `--rounds` paired rounds, alternating which goes first. Reports milliseconds
per image, each round's ratio (as read over folded: above 1, the fold is faster) and their median, each form's time
by layer type and precision, and its agreement with TF on the bundle's parity set (the fold is exact: the same
logits).

    python -m tools.openvino_pad_pool BUNDLE [--flavours fp32,fp16,int8-ort] [--batches 1,8] [--rounds 6]
        [--threads 2] [--json OUT]

Maintainers' measurement, not part of the installed package: it is the evidence for the OpenVINO runner's fold
(docs/cpu.md, "The stem's Pad on OpenVINO"), to be rerun on other hosts.
"""

from __future__ import annotations

import argparse
import os

from bit_trt.engine import openvino_group_norm, openvino_pad_pool
from bit_trt.engine.bundle import load_bundle
from tools.openvino_study import paired_forms, write_result


def _as_read(model) -> int:  # the runner's graph before the fold: the GroupNorms rewritten, no Pad folded
    openvino_group_norm.rewrite(model)
    return 0


def _folded(model) -> int:
    openvino_group_norm.rewrite(model)
    return openvino_pad_pool.rewrite(model)


FORMS = (("pad_as_read", _as_read), ("pad_folded", _folded))


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
            row = paired_forms(bundle, flavour, batch, args.rounds, args.threads, FORMS, "pads_folded")
            before, after = row["pad_as_read"], row["pad_folded"]
            pads = {
                name: sum(v for k, v in row[name]["share_by_layer_type"].items() if k.startswith("Pad "))
                for name in ("pad_as_read", "pad_folded")
            }
            print(
                f"{flavour} ({row['inference_precision']}) batch {batch}: "
                f"{row['median_ms_per_image']['pad_as_read']:.1f} ms/image with the Pad "
                f"({pads['pad_as_read']:.1%} of its time), {row['median_ms_per_image']['pad_folded']:.1f} folded "
                f"({after['pads_folded']} Pad); as read over folded {row['median_ratio']:.2f} (rounds "
                f"{min(row['pad_as_read_over_pad_folded']):.2f}-{max(row['pad_as_read_over_pad_folded']):.2f}); "
                f"rel L2 vs TF {before['vs_tf']['rel_l2']:.2e} / {after['vs_tf']['rel_l2']:.2e}",
                flush=True,
            )
            rows.append(row)
    write_result("openvino_pad_pool", argv, args.bundle, bundle, rows, args.json)


if __name__ == "__main__":
    main()
