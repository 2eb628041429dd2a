"""Parity verdicts: an exported variant's logits against TF's, judged by explicit tolerances
(engine/compare.py); a breach is a ParityError that carries the whole report."""

from __future__ import annotations

from ..engine import compare
from ..engine.errors import BitError

# The parity images each graph rewrite (GroupNorm fusion, constant folding, the plans' native GroupNorm) is checked
# on against TF: a rewrite that is wrong is wrong on any image, so one (the first photo) is enough, and on R50x3 each
# image costs a check 2-3 s. The variant itself meets its tolerance on them all.
PROBE_IMAGES = 1


def judge(test_logits, reference_logits, tolerance: compare.Tolerance, what: str) -> dict:
    """The metrics plus verdict; a BitError carrying the report when the tolerance is broken."""
    report = compare.report(test_logits, reference_logits, tolerance)
    if not report["passed"]:
        raise ParityError(what, report)
    return report


class ParityError(BitError):
    def __init__(self, what: str, report: dict):
        self.report = report
        lines = "; ".join(report["failures"])
        super().__init__(
            f"{what} breaks parity: {lines} (top-1 agreement {report['top1_agreement']:.3f}, "
            f"cosine {report['cosine_min']:.6f}, rel L2 {report['rel_l2']:.3g})"
        )
