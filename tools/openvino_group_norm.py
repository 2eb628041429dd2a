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

from bit_trt.engine.bundle import Bundle
from bit_trt.engine.openvino_group_norm import rewrite
from tools.openvino_study import paired_forms, paired_main

FORMS = (("as_read", None), ("rewritten", lambda model, bf16: rewrite(model)[0]))


def measure(bundle: Bundle, flavour: str, batch: int, rounds: int, threads: int, fp16_in=None) -> dict:
    return paired_forms(bundle, flavour, batch, rounds, threads, FORMS, "group_norms_rewritten", fp16_in)


def _reorders(row: dict) -> str:
    before, after = row["as_read"], row["rewritten"]
    return (
        f"Reorders {before['reorders']} ({before['reorder_share_of_time']:.0%} of the time) as read, "
        f"{after['reorders']} ({after['reorder_share_of_time']:.0%}) rewritten"
    )


def main(argv=None) -> None:
    paired_main("openvino_group_norm", __doc__, argv, FORMS, "group_norms_rewritten", _reorders)


if __name__ == "__main__":
    main()
