"""Does OpenVINO run INT8 faster with its residual sums taken from the convolutions' float outputs?

For the INT8 file (and any other --flavours), each batch, two models compiled for that static shape
(tools/openvino_study.py's paired_forms: LATENCY hint, the given threads, the runner's arithmetic: bf16 float layers
where bf16 pays here), both with the runner's other rewrites: the sums as read, and the sums fed from the
convolutions before their quantize (engine/openvino_requantized_sum.py), as engine/openvino_graph.py does it with
bf16 float layers. Then `--rounds` paired rounds, alternating which goes first. Reports milliseconds per image, each
round's ratio (as read over rewritten: above 1, the rewrite is faster) and their median, each form's time by layer
type and precision (the Reorders' share among them), and its agreement with TF on the bundle's parity set.

    python -m tools.openvino_requantized_sum BUNDLE [--flavours int8-ort] [--batches 1,8] [--rounds 6]
        [--threads 2] [--json OUT]

Maintainers' measurement, not part of the installed package: it is the evidence for the OpenVINO runner's rewrite
(docs/cpu.md, "INT8's residual sums on OpenVINO"), to be rerun on other hosts.
"""

from __future__ import annotations

from bit_trt.engine import openvino_graph
from tools.openvino_study import paired_main


def _as_read(model, bf16: bool) -> int:  # the runner's graph without this rewrite
    openvino_graph.rewrite(model, bf16=False)
    return 0


def _rewritten(model, bf16: bool) -> int:  # the graph the runner runs with bf16 float layers (engine/openvino_graph.py)
    return openvino_graph.rewrite(model, bf16=True).requantized_sums


FORMS = (("sums_as_read", _as_read), ("sums_rewritten", _rewritten))


def _reorders(row: dict) -> str:
    shares = [row[form]["reorder_share_of_time"] for form, _ in FORMS]
    return f"Reorders {shares[0]:.1%} -> {shares[1]:.1%} of the time, {row['sums_rewritten']['sums_rewritten']} sums"


def main(argv=None) -> None:
    # the INT8 file unless told: the only file with such sums
    paired_main("openvino_requantized_sum", __doc__, argv, FORMS, "sums_rewritten", _reorders, flavours="int8-ort")


if __name__ == "__main__":
    main()
