"""How `bit-bench` times configurations: warm-up, windows of concurrent requests, interleaved, until stable.

- A request is one call a user makes: `runner.infer` on a ready float batch (`model` mode) or
  `Classifier.predict` on encoded JPEG bytes (`end-to-end`: decode and preprocessing included).
- `concurrency` threads each send requests back to back on one shared Classifier, as a server would.
  Latency is per request; throughput is the images completed in a window over the window's wall time.
- Windows of all configurations are interleaved (A B C, A B C, ...), so drift on a noisy host hits them
  all alike. After the minimum number of windows, a configuration stops once its last windows are stable
  (latency_stats.windows_stable) or at the window limit, where it is reported "unstable".
"""

from __future__ import annotations

import math
import statistics
import threading
import time
from dataclasses import dataclass, field

from .configurations import Configuration
from .cpu_use import CpuMeter
from .latency_stats import STABLE_WINDOWS, windows_stable


@dataclass
class Schedule:
    """How long to measure each configuration (trtexec's --warmUp, --duration and --iterations)."""

    warmup_s: float = 0.2
    duration_s: float | None = 3.0  # at least this long, over min_windows windows
    iterations: int | None = None  # or at least this many requests, over min_windows windows
    min_windows: int = STABLE_WINDOWS
    max_windows: int = 10

    def window(self) -> dict:
        if self.iterations is not None:
            return {"requests": max(1, math.ceil(self.iterations / self.min_windows))}
        return {"seconds": self.duration_s / self.min_windows}


@dataclass
class Workload:
    """One configuration, ready to time: the request it sends and everything measured so far."""

    config: Configuration
    request: object  # a callable sending one request of `config.batch` images
    windows: list = field(default_factory=list)
    latencies_ms: list = field(default_factory=list)
    times: list = field(default_factory=list)  # per request: (window, thread, start_ms, end_ms)
    phases: list = field(default_factory=list)  # per request, where the backend reports them (trt)
    stable: bool = False
    cpu: CpuMeter = field(default_factory=CpuMeter)  # over the recorded windows (bench/cpu_use.py)
    open_loop: dict | None = None  # measured on a schedule instead (bench/open_loop.py): its figures
    scheduled_ms: list = field(default_factory=list)  # and per request, its scheduled time (times' origin)

    def done(self, schedule: Schedule) -> bool:
        if len(self.windows) < schedule.min_windows:
            return False
        return self.stable or len(self.windows) >= schedule.max_windows


def run_window(
    workload: Workload,
    origin: float,
    seconds: float | None = None,
    requests: int | None = None,
    record: bool = True,
    at_least: int = 1,
) -> dict:
    """`concurrency` threads send requests until `seconds` have passed or `requests` were sent; each thread
    sends at least `at_least`. Returns the window's throughput and median latency; with `record`, the window and
    every request are added to the workload (a warm-up's are not)."""
    concurrency = workload.config.concurrency
    lock = threading.Lock()
    tickets = [requests] if requests is not None else None
    records: list[tuple[int, float, float]] = []
    phases: list[dict] = []  # per request, where the backend reports them: the trt runner's GPU phases
    errors: list[BaseException] = []
    start = time.perf_counter()
    deadline = start + seconds if seconds is not None else math.inf

    def take_ticket() -> bool:
        if tickets is None:
            return True
        with lock:
            if tickets[0] <= 0:
                return False
            tickets[0] -= 1
            return True

    def client(thread: int) -> None:
        sent = 0
        try:
            while (sent < at_least or time.perf_counter() < deadline) and take_ticket():
                t0 = time.perf_counter()
                reported = workload.request()
                t1 = time.perf_counter()
                sent += 1
                with lock:
                    records.append((thread, t0, t1))
                    if isinstance(reported, dict):
                        phases.append(reported)
        except BaseException as exc:  # re-raised in the caller: a failed request must not hang the window
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(concurrency)]
    if record:
        workload.cpu.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if record:
        workload.cpu.stop()
    if errors:
        raise errors[0]
    end = max(t1 for _, _, t1 in records)
    latencies = [1000 * (t1 - t0) for _, t0, t1 in records]
    window = {
        "requests": len(records),
        "seconds": round(end - start, 4),
        "throughput_ips": len(records) * workload.config.batch / (end - start),
        "median_ms": statistics.median(latencies),
    }
    if record:
        index = len(workload.windows)
        workload.latencies_ms.extend(latencies)
        workload.phases.extend(phases)
        workload.times.extend(
            (index, thread, round(1000 * (t0 - origin), 4), round(1000 * (t1 - origin), 4))
            for thread, t0, t1 in records
        )
        workload.windows.append(window)
    return window


def warm_up(workload: Workload, seconds: float) -> None:
    """Requests for `seconds` on every thread, at least two each: first-call allocations, JIT, caches, and what a
    runtime sets up on a shape's second call; then, once every thread is done, one more request on each.

    The OpenVINO runner compiles a model for a shape on one thread's second call while the other threads keep the
    dynamic model, so with the first pass alone a thread's first run of the new model (its infer request, OpenVINO's
    first-inference setup) came in the first timed window: R50x3 at batch 8 ran its first peer turn at half the
    second (bench/results/bench_r50x3_480.json). The second pass starts after the compiling call has returned."""
    run_window(workload, time.perf_counter(), seconds=seconds, record=False, at_least=2)
    run_window(workload, time.perf_counter(), seconds=0.0, record=False)


def measure(
    workloads: list[Workload], schedule: Schedule, progress=None, origin: float | None = None, warm: bool = True
) -> float:
    """Warm every workload up (unless `warm` is False: the caller did), then interleave their windows until each is
    done (see the module docstring).

    origin: the perf_counter instant recorded times count from (default: when the first window starts); a run
    measured in several calls passes the first call's (returned) origin to the others."""
    progress = progress or (lambda *_: None)
    progress("plan", workloads, schedule)
    for w in workloads if warm else ():
        progress("warm-up", w, None)
        warm_up(w, schedule.warmup_s)
    origin = time.perf_counter() if origin is None else origin
    active = list(workloads)
    while active:
        for w in active:
            window = run_window(w, origin, **schedule.window())
            w.stable = windows_stable(w.windows)
            progress("window", w, window)
        active = [w for w in active if not w.done(schedule)]
    return origin
