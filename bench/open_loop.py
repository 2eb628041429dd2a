"""`bit-bench --arrival poisson --rate R`: open-loop load, where requests arrive on a schedule of their own.

bit-bench's windows are a closed loop: each thread sends its next request when the last returns, so a slow
server slows its own load down and queueing never shows. Here each request has a scheduled time, drawn before
the run (Poisson arrivals at `rate` requests/s, seeded, or evenly spaced with `--arrival constant`):

- latency is measured from the scheduled time, not from when the request was sent, so time spent waiting for
  a free client counts, as it would for a user whose request arrived then (perf_analyzer's request-rate mode
  measures from the send: triton-inference-server/server#3113);
- the schedule lag, how late each request started after its scheduled time, is reported beside it: when the
  client cannot keep up (all `concurrency` senders busy), the lag grows, and a row can't pass an overloaded
  client off as a fast server.

`concurrency` is the most requests in flight at once (the sender threads); each sender takes the next
scheduled request, waits for its time if it is early, and sends it. The run is bounded in time as well as in
requests: a request that would start more than `MAX_LAG_S` (or the schedule's whole length, if longer) after its
time is not sent but counted, so a rate far above the backend's capacity ends about when its schedule does
instead of taking (rate / capacity) times as long.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

import numpy as np

from ..engine.errors import BitError
from .latency_stats import summarize

ARRIVALS = ("poisson", "constant")
MAX_LAG_S = 1.0


@dataclass(frozen=True)
class Arrival:
    kind: str  # one of ARRIVALS
    rate: float  # requests per second
    seed: int = 0

    def check(self) -> None:
        if self.kind not in ARRIVALS:
            raise BitError(f"unknown --arrival {self.kind!r}; choose from: {', '.join(ARRIVALS)}")
        if not self.rate > 0 or not math.isfinite(self.rate):
            raise BitError(f"--rate must be above 0 requests/s, got {self.rate:g}")

    def offsets(self, count: int) -> np.ndarray:
        """Each request's scheduled time, in seconds from the start; the first at 0."""
        if self.kind == "constant":
            return np.arange(count) / self.rate
        gaps = np.random.default_rng(self.seed).exponential(1 / self.rate, count)
        return np.concatenate([[0.0], np.cumsum(gaps[:-1])])


def run(request, arrival: Arrival, count: int, senders: int, origin: float | None = None) -> list[tuple]:
    """Send `count` requests on `arrival`'s schedule from `senders` threads. Returns per request, in schedule order:
    (sender, scheduled, start, end) as perf_counter instants; start >= scheduled always (a sender never starts
    a request early); None for a request not sent because it was already too late (see the module docstring)."""
    offsets = arrival.offsets(count)
    origin = (time.perf_counter() + 0.01) if origin is None else origin
    scheduled = origin + offsets
    max_lag = max(MAX_LAG_S, float(offsets[-1]))
    records: list = [None] * count
    lock = threading.Lock()
    next_index = [0]
    errors: list[BaseException] = []

    def sender(thread: int) -> None:
        while not errors:
            with lock:
                i = next_index[0]
                if i >= count:
                    return
                next_index[0] += 1
            wait = scheduled[i] - time.perf_counter()
            if wait < -max_lag:
                continue
            if wait > 0:
                time.sleep(wait)
            start = time.perf_counter()
            while start < scheduled[i]:  # sleep can wake a hair early: never start before the schedule
                start = time.perf_counter()
            try:
                request()
            except BaseException as exc:  # re-raised in the caller: a failed request must not hang the run
                errors.append(exc)
                return
            records[i] = (thread, float(scheduled[i]), start, time.perf_counter())

    threads = [threading.Thread(target=sender, args=(t,), daemon=True) for t in range(senders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return records


def sent(records: list[tuple | None]) -> list[tuple]:
    return [r for r in records if r is not None]


def latencies_ms(records: list[tuple]) -> list[float]:
    """Each request's latency counted from its scheduled time (not from its send: server#3113)."""
    return [1000 * (end - sched) for _, sched, _, end in records]


def summary(records: list[tuple | None], arrival: Arrival, batch: int, percentiles) -> dict:
    """The row's figures: latency from the schedule, service time from the send, and the schedule lag (with the
    mean lag of the first and last tenth of the requests, to show whether it grows); run()'s records. The lag is
    `growing` when the last tenth's mean exceeds the first's by more than the median service time: a queue at least
    one request longer at the end. Any smaller rise is a healthy run's jitter (a Poisson burst, a busy host)."""
    asked, records = len(records), sent(records)
    not_sent = asked - len(records)
    latency = latencies_ms(records)
    service = [1000 * (end - start) for _, _, start, end in records]
    lag = [1000 * (start - sched) for _, sched, start, _ in records]
    tenth = max(1, len(lag) // 10)
    first, last = float(np.mean(lag[:tenth])), float(np.mean(lag[-tenth:]))
    growing = last - first > float(np.median(service))
    span = max(end for *_, end in records) - min(sched for _, sched, _, _ in records)
    return {
        "arrival": arrival.kind,
        "rate": arrival.rate,
        "seed": arrival.seed,
        "requests": len(records),
        "not_sent": not_sent,
        "achieved_rate": round(len(records) / span, 3),
        "throughput_ips": round(len(records) * batch / span, 3),
        "latency_from_schedule_ms": summarize(latency, percentiles),
        "service_ms": summarize(service, percentiles),
        "schedule_lag_ms": {
            **summarize(lag, percentiles),
            "first_tenth_mean": round(first, 4),
            "last_tenth_mean": round(last, 4),
            "growing": growing,
        },
        "warnings": (
            [f"the client fell behind the schedule: requests started up to {max(lag):.1f} ms late"] if growing else []
        )
        + (
            [
                f"{not_sent} of {asked} requests were not sent: no sender was free within {MAX_LAG_S:g} s (or the "
                "schedule's length) of their time"
            ]
            if not_sent
            else []
        ),
    }


def measure(workloads, arrival: Arrival, schedule, percentiles, progress=None) -> None:
    """Each workload warmed up, then sent `--iterations` requests (else rate x --duration) on the schedule; its
    latencies, times and one window are recorded as the closed loop records them (bench/measurement.py), plus
    its `open_loop` figures. Workloads run one after another: interleaving would make them each other's load."""
    from .measurement import warm_up

    progress = progress or (lambda *_: None)
    origin = None
    for w in workloads:
        progress("warm-up", w, None)
        warm_up(w, schedule.warmup_s)
        count = schedule.iterations or max(1, round(arrival.rate * schedule.duration_s))
        with w.cpu:
            records = run(w.request, arrival, count, w.config.concurrency)
        figures = summary(records, arrival, w.config.batch, percentiles)
        records = sent(records)
        origin = records[0][1] if origin is None else origin
        w.latencies_ms = latencies_ms(records)
        w.times = [(0, t, round(1000 * (s - origin), 4), round(1000 * (e - origin), 4)) for t, _, s, e in records]
        w.scheduled_ms = [round(1000 * (sched - origin), 4) for _, sched, _, _ in records]
        w.windows = [
            {
                "requests": len(records),
                "seconds": round(max(e for *_, e in records) - records[0][1], 4),
                "throughput_ips": figures["throughput_ips"],
                "median_ms": figures["latency_from_schedule_ms"]["median"],
            }
        ]
        w.stable = True  # one schedule, no windows to compare: the row says stable n/a
        w.open_loop = figures
        progress("open-loop", w, figures)
