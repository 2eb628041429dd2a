"""The statistics bit-bench reports, against values worked out by hand."""

import pytest

from bit_trt.bench import latency_stats
from bit_trt.engine.errors import BitError


def test_percentiles_are_nearest_rank_values_of_real_requests():
    values = [float(v) for v in range(1, 101)]  # 1..100 ms
    stats = latency_stats.summarize(values, (50, 90, 99, 99.9))
    assert stats["p50"] == 50 and stats["p90"] == 90 and stats["p99"] == 99 and stats["p99_9"] == 100
    assert stats["min"] == 1 and stats["max"] == 100 and stats["mean"] == 50.5 and stats["median"] == 50.5
    assert latency_stats.percentile([5.0, 1.0, 9.0][:1], 99) == 5.0


def test_requests_needed_for_a_percentile():
    assert latency_stats.min_requests_for((50, 90, 95, 99)) == 100
    assert latency_stats.min_requests_for((50, 90)) == 10
    assert latency_stats.min_requests_for((99.9,)) == 1000


def test_coefficient_of_variation():
    assert latency_stats.coefficient_of_variation([10.0, 10.0, 10.0]) == 0
    assert latency_stats.coefficient_of_variation([9.0, 11.0]) == pytest.approx(2**0.5 / 10)


def test_stability_needs_three_windows_within_ten_percent():
    steady = [{"throughput_ips": t, "median_ms": 10.0} for t in (50, 100, 101, 99)]
    assert latency_stats.windows_stable(steady)
    assert not latency_stats.windows_stable(steady[:2])  # too few windows
    drifting = steady[:-1] + [{"throughput_ips": 120, "median_ms": 10.0}]
    assert not latency_stats.windows_stable(drifting)
    slow_median = steady[:-1] + [{"throughput_ips": 100, "median_ms": 13.0}]
    assert not latency_stats.windows_stable(slow_median)


@pytest.mark.parametrize("text", ["", "50,abc", "0", "101", "-5"])
def test_bad_percentiles_are_refused(text):
    with pytest.raises(BitError, match="percentiles"):
        latency_stats.parse_percentiles(text)
