"""Is OpenVINO faster with each GroupNorm's gamma and beta folded into one multiply-add of x?

For each file of a bundle (--flavours) and each batch, two models compiled for that static shape
(tools/openvino_study.py's paired_forms: LATENCY hint, the given threads, the runner's arithmetic), both with every
rewrite of the runner (engine/openvino_graph.py) for that arithmetic: each GroupNorm on channel statistics with its
gamma and beta after it as the file has them ((x - mean) / sd, times gamma, plus beta: the centred tensor written
for the normalizing pass), and with them folded as the runner runs it (x*a + b, a and b per channel,
engine/openvino_group_norm.py). Then `--rounds` paired rounds, alternating which goes first. Reports milliseconds
per image, each round's ratio (after over folded: above 1, the fold is faster) and their median, each form's time
by layer type and precision, and its agreement with TF on the bundle's parity set.

    python -m tools.openvino_group_norm_affine BUNDLE [--flavours fp32,fp16,int8-ort] [--batches 1,8] [--rounds 6]
        [--threads 2] [--json OUT]

Maintainers' measurement, not part of the installed package: it is the evidence for the fold (docs/cpu.md,
"Gamma and beta in one multiply-add"), to be rerun on other hosts.
"""

from __future__ import annotations

from bit_trt.engine import openvino_graph, openvino_group_norm
from tools.openvino_study import elementwise_line, paired_main


def _after(model, bf16: bool) -> int:  # the GroupNorms rewritten unfolded, then the runner's other rewrites
    rewritten = openvino_group_norm.rewrite(model, fold=False)[0]
    openvino_graph.rewrite(model, bf16=bf16)  # finds no GroupNorm left to rewrite
    return rewritten


def _folded(model, bf16: bool) -> int:  # the graph the runner runs (engine/openvino_graph.py)
    return openvino_graph.rewrite(model, bf16=bf16).group_norms_folded


# the first form counts the GroupNorms rewritten, the second those of them folded with their gamma and beta
FORMS = (("gamma_beta_after", _after), ("folded", _folded))


def main(argv=None) -> None:
    extra = elementwise_line(FORMS, "group_norms", "GroupNorms folded")
    paired_main("openvino_group_norm_affine", __doc__, argv, FORMS, "group_norms", extra)


if __name__ == "__main__":
    main()
