"""The INT8 float fallback: which layer groups stay in float, in what order, up to every group."""

import logging

import pytest

from bit_trt.export import int8


def _table(groups: int) -> list[dict]:
    """A sensitivity table, most sensitive first, with two layers per group."""
    return [{"group": f"g{i}", "layers": [f"g{i}/a", f"g{i}/b"], "rel_l2": 1.0 / (i + 1)} for i in range(groups)]


def _gate_passing_with(needed: int, tried: list):
    """A gate that holds once the `needed` most sensitive groups are in float; records each attempt."""

    def try_exclude(layers):
        tried.append(len(layers) // 2)
        return {"passed": len(layers) >= 2 * needed}

    return try_exclude


@pytest.mark.parametrize("groups", [6, 18])  # R50 by stage (root, block1..4, head); tiny per layer
def test_every_group_is_tried_before_giving_up(groups):
    tried = []
    exclude, verdict = int8.float_fallback(_table(groups), _gate_passing_with(groups, tried))
    assert verdict["passed"] and len(exclude) == 2 * groups
    assert tried[-1] == groups  # doubling alone stops at 4 of 6 and 16 of 18
    assert tried == sorted(tried) and len(set(tried)) == len(tried)


def test_stops_at_the_first_count_that_passes_most_sensitive_first():
    tried = []
    exclude, verdict = int8.float_fallback(_table(6), _gate_passing_with(3, tried))
    assert tried == [1, 2, 4] and verdict["passed"]
    assert exclude == ("g0/a", "g0/b", "g1/a", "g1/b", "g2/a", "g2/b", "g3/a", "g3/b")


def test_reports_failure_when_even_every_group_fails():
    tried = []
    exclude, verdict = int8.float_fallback(_table(6), _gate_passing_with(7, tried))
    assert not verdict["passed"] and tried == [1, 2, 4, 6] and len(exclude) == 12


def test_a_failed_quantization_restores_logging(tiny_bundle, tmp_path):
    """quantize_static logs on the root logger, so quantize quiets it; a failure must not leave it quiet."""
    root = logging.getLogger()
    before = root.level
    root.setLevel(logging.INFO)
    try:
        with pytest.raises(KeyError):  # ranges without ORT's calibration keys: quantize_static itself fails
            int8.quantize(str(tiny_bundle / "model.fp32.onnx"), str(tmp_path / "q.onnx"), {}, "minmax", "tensorrt")
        assert root.level == logging.INFO
    finally:
        root.setLevel(before)
