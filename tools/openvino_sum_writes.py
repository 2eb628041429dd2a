"""Does OpenVINO run INT8 faster with each residual sum written once?

For the INT8 file (and any other --flavours), each batch, two models compiled for that static shape
(tools/openvino_study.py's paired_forms: LATENCY hint, the given threads, the runner's arithmetic: bf16 float layers
where bf16 pays here), both with every rewrite of the runner, sums fed from the convolutions' float outputs
included: each sum as OpenVINO's low-precision transformations leave it (one copy of its scale per reader, each
written), and each sum read through Maximum(sum, -inf), so that it is written once
(engine/openvino_requantized_sum.py). Then `--rounds` paired rounds, alternating which goes first. Reports
milliseconds per image, each round's ratio (per reader over once: above 1, writing once is faster) and their median,
each form's time by layer type and precision, and its agreement with TF on the bundle's parity set (the same numbers
in both: max(x, -inf) is x).

    python -m tools.openvino_sum_writes BUNDLE [--flavours int8-ort] [--batches 1,8] [--rounds 6]
        [--threads 2] [--json OUT]

Maintainers' measurement, not part of the installed package: it is the evidence for the rewrite (docs/cpu.md,
"Each sum written once"), to be rerun on other hosts.
"""

from __future__ import annotations

from bit_trt.engine import openvino_graph, openvino_requantized_sum
from tools.openvino_study import elementwise_line, paired_main


# the runner's graph before this step: its other rewrites, then the sums fed alone
def _per_reader(model, bf16: bool) -> int:
    openvino_graph.rewrite(model, bf16=False)
    return openvino_requantized_sum.rewrite(model, write_once=False)[0]


def _once(model, bf16: bool) -> int:  # the graph the runner runs with bf16 float layers (engine/openvino_graph.py)
    return openvino_graph.rewrite(model, bf16=True).sums_written_once


# the first form counts the sums fed from their convolutions, the second those of them put behind one reader
FORMS = (("sums_per_reader", _per_reader), ("sums_once", _once))


def main(argv=None) -> None:
    # the INT8 file unless told: the only file with such sums
    extra = elementwise_line(FORMS, "sums", "sums through one reader")
    paired_main("openvino_sum_writes", __doc__, argv, FORMS, "sums", extra, flavours="int8-ort")


if __name__ == "__main__":
    main()
