"""Is OpenVINO faster with the stem's zero Pad folded into its MaxPool than with the Pad as read?

For each file of a bundle, and each batch, two models compiled for that static shape (tools/openvino_study.py's
paired_forms: LATENCY hint, the given threads, the runner's arithmetic), both with the GroupNorms rewritten as the
runner runs them (engine/openvino_group_norm.py): the Pad as read, and the Pad folded into its MaxPool
(engine/openvino_pad_pool.py), as engine/openvino_graph.py does it. Then `--rounds` paired rounds, alternating
which goes first. Reports milliseconds per image, each round's ratio (as read over folded: above 1, the fold is
faster) and their median, each form's time by layer type and precision, and its agreement with TF on the bundle's
parity set (the fold is exact: the same logits).

    python -m tools.openvino_pad_pool BUNDLE [--flavours fp32,fp16,int8-ort] [--batches 1,8] [--rounds 6]
        [--threads 2] [--json OUT]

Maintainers' measurement, not part of the installed package: it is the evidence for the OpenVINO runner's fold
(docs/cpu.md, "The stem's Pad on OpenVINO"), to be rerun on other hosts.
"""

from __future__ import annotations

from bit_trt.engine import openvino_graph, openvino_group_norm
from tools.openvino_study import paired_main


def _as_read(model, bf16: bool) -> int:  # the runner's graph before the fold: the GroupNorms rewritten, no Pad folded
    openvino_group_norm.rewrite(model)
    return 0


def _folded(model, bf16: bool) -> int:  # the graph the runner runs (engine/openvino_graph.py)
    return openvino_graph.rewrite(model).pad_pools


FORMS = (("pad_as_read", _as_read), ("pad_folded", _folded))


def _pad_share(row: dict) -> str:
    share = sum(v for k, v in row["pad_as_read"]["share_by_layer_type"].items() if k.startswith("Pad "))
    return f"the Pad {share:.1%} of the time as read, {row['pad_folded']['pads_folded']} folded"


def main(argv=None) -> None:
    paired_main("openvino_pad_pool", __doc__, argv, FORMS, "pads_folded", _pad_share)


if __name__ == "__main__":
    main()
