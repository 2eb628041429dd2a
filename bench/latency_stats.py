"""What a list of request latencies says: trtexec's and perf_analyzer's statistics, and whether a run is stable.

- Percentiles use the nearest-rank method (the value of an actual request), as trtexec and perf_analyzer
  report them, not an interpolation between two requests.
- The coefficient of variation is the standard deviation over the mean of the latencies. trtexec warns
  above 2.5% on a GPU; CPU hosts are noisier, see CPU_CV_WARNING.
- Stability is perf_analyzer's rule: the last `STABLE_WINDOWS` measurement windows' throughputs and
  median latencies lie within `STABLE_TOLERANCE` of their mean.
"""

from __future__ import annotations

import math
import statistics

from ..engine.errors import BitError

DEFAULT_PERCENTILES = (50, 90, 95, 99)
GPU_CV_WARNING = 0.025  # trtexec's threshold
# Measured on a 2-core AMD EPYC host (bench/results/bench_r50x*_480.json): on a quiet machine, with up to seven
# models interleaved, the batch-1 CVs ranged from 6% to 16% (TF, ORT, OpenVINO, every precision, R50x1 and
# R50x3). With a CI run and an export competing for the cores they ran from 60% to 150% (tiny model). 20%
# flags the second and not the first.
CPU_CV_WARNING = 0.20
STABLE_WINDOWS = 3
STABLE_TOLERANCE = 0.10


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest rank: the smallest value with at least p% of the values at or below it."""
    if not sorted_values:
        raise BitError("no latencies measured")
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def min_requests_for(percentiles) -> int:
    """The fewest requests for which every asked percentile is not simply the maximum (p99 needs 100)."""
    tail = min((100 - p for p in percentiles if p < 100), default=50)  # the highest percentile's tail
    return math.ceil(round(100 / tail, 6))  # round: 100 / (100 - 99.9) is 1000.0000000000009


def summarize(latencies_ms: list[float], percentiles=DEFAULT_PERCENTILES) -> dict:
    values = sorted(latencies_ms)
    mean = statistics.fmean(values)
    out = {"min": values[0], "mean": mean, "median": statistics.median(values)}
    out.update({f"p{_label(p)}": percentile(values, p) for p in percentiles})
    out["max"] = values[-1]
    return {k: round(v, 4) for k, v in out.items()}


def coefficient_of_variation(latencies_ms: list[float]) -> float:
    if len(latencies_ms) < 2:
        return 0.0
    return statistics.stdev(latencies_ms) / statistics.fmean(latencies_ms)


def windows_stable(windows: list[dict], count: int = STABLE_WINDOWS, tolerance: float = STABLE_TOLERANCE) -> bool:
    """Whether the last `count` windows agree on throughput and median latency within `tolerance` of the mean."""
    if len(windows) < count:
        return False
    last = windows[-count:]
    for key in ("throughput_ips", "median_ms"):
        values = [w[key] for w in last]
        mean = statistics.fmean(values)
        if mean <= 0 or any(abs(v - mean) > tolerance * mean for v in values):
            return False
    return True


def parse_percentiles(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(p) for p in text.split(",") if p.strip())
    except ValueError as exc:
        raise BitError(f"--percentiles takes numbers such as 50,90,99, got {text!r}") from exc
    if not values or any(not 0 < p <= 100 for p in values):
        raise BitError(f"percentiles must lie in (0, 100], got {text!r}")
    return values


def _label(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else str(p).replace(".", "_")
