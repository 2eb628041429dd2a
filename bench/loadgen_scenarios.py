"""`bit-bench BUNDLE --scenario singlestream|multistream|offline|server`: MLPerf's load generator (LoadGen) drives
the same Classifier, or the same server client, that bit-bench times, and its verdict is reported as it gives it.

- Settings: MLPerf's own (the mlperf.conf embedded in LoadGen, for `resnet50`, the MLPerf benchmark of a ResNet
  image classifier: 600 s minimum duration, 1024 performance samples, a 15 ms Server bound, its seeds), then what
  the user overrides. A run below MLPerf's minimums (`--min-duration`, `--min-query-count`, fewer samples than
  MLPerf's performance sample count) is marked so: `meets_mlperf_minimums` false, with which ones it misses.
- The system under test (`ClassifierSUT`): `workers` threads (the row's concurrency) take LoadGen's queries in
  order, each sends one request of up to `batch` samples (Offline and MultiStream queries are split into such
  requests; Server and SingleStream queries hold one sample) and returns the logits to LoadGen, which logs them
  in accuracy mode (bench/loadgen_accuracy.py).
- The query sample library is bench/query_samples.py's; a sample's float input is made when LoadGen loads it, so
  no preprocessing is timed (`--mode model`).
- Results: LoadGen's mlperf_log_summary.txt and mlperf_log_detail.txt in the row's log folder, the verdict
  (VALID/INVALID and LoadGen's own lines saying why), the scenario's metric and the early-stopping estimates.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..engine.atomic_write import missing_folders, remove_made_folders
from ..engine.errors import BitError, require
from ..engine.preprocess import preprocess
from .cpu_use import CpuMeter
from .query_samples import QuerySamples

SCENARIOS = {"singlestream": "SingleStream", "multistream": "MultiStream", "offline": "Offline", "server": "Server"}
MLPERF_MODEL = "resnet50"  # the mlperf.conf entries whose defaults apply: MLPerf's ResNet image classifier
LOG_FILES = ("mlperf_log_summary.txt", "mlperf_log_detail.txt")
EXTRA_LOG_FILES = ("mlperf_log_accuracy.json", "mlperf_log_trace.json")  # written too, kept with a result
PEAK_RATIO = 1.05  # --find-peak stops when the highest VALID and lowest INVALID target are this close
# LoadGen sizes Offline's one query as expected QPS x min duration (+10%): a system faster than expected ends early
# and is INVALID ("Min duration satisfied : NO"), and three requests before the test underrate a warmed-up one.
OFFLINE_HEADROOM = 1.5
# LoadGen's early stopping passes a latency percentile only when, with this confidence, the true percentile is
# within the bound (its summary: "Early stopping satisfied"), whatever --min-query-count says.
EARLY_STOPPING_CONFIDENCE = 0.99


@dataclass
class LoadgenSettings:
    scenario: str  # a key of SCENARIOS
    mode: str = "performance"  # or "accuracy": LoadGen's AccuracyOnly, every sample once, logits logged
    samples: int | None = None  # the query sample library's size (default: all the images give)
    min_duration_s: float | None = None  # MLPerf's 600 s unless given
    min_query_count: int | None = None
    target_qps: float | None = None  # Server: the arrival rate; Offline: the expected rate
    latency_bound_ms: float | None = None  # Server: MLPerf's 15 ms for resnet50 unless given
    find_peak: bool = False  # Server: the highest target QPS that is VALID
    peak_steps: int = 8
    peak_time_s: float = 1800.0
    max_duration_s: float | None = None  # LoadGen stops issuing after this (--find-peak: the time its bound leaves)


def check(settings: LoadgenSettings) -> None:
    """Bad settings, one line each, before anything loads."""
    if settings.scenario not in SCENARIOS:
        raise BitError(f"unknown scenario {settings.scenario!r}; choose from: {', '.join(SCENARIOS)}")
    if settings.mode not in ("performance", "accuracy"):
        raise BitError(f"unknown LoadGen mode {settings.mode!r}; choose from: performance, accuracy")
    if settings.target_qps is not None and not 0 < settings.target_qps < math.inf:
        raise BitError(f"--target-qps must be above 0, got {settings.target_qps:g}")
    if settings.latency_bound_ms is not None and not 0 < settings.latency_bound_ms < math.inf:
        raise BitError(f"--latency-bound-ms must be above 0, got {settings.latency_bound_ms:g}")
    if settings.min_duration_s is not None and not 0 <= settings.min_duration_s < math.inf:
        raise BitError(f"--min-duration must be 0 or more seconds, got {settings.min_duration_s:g}")
    if settings.min_query_count is not None and settings.min_query_count < 1:
        raise BitError("--min-query-count must be at least 1")
    if settings.find_peak and settings.scenario != "server":
        raise BitError("--find-peak searches the Server scenario's target QPS; use it with --scenario server")
    if settings.find_peak and settings.mode != "performance":
        raise BitError("--find-peak measures performance; it can't be combined with --loadgen-mode accuracy")
    if settings.peak_steps < 2 or not settings.peak_time_s > 0:
        raise BitError("--peak-steps must be at least 2 and --peak-time above 0")


def early_stopping_queries(percentile: float, confidence: float = EARLY_STOPPING_CONFIDENCE) -> int:
    """The fewest queries with which LoadGen's early stopping can pass `percentile`, every one of them in bound.

    If the true percentile missed the bound, all n queries would land under it with chance percentile**n; early
    stopping passes once that chance is at most 1 - confidence. p99: 459, as LoadGen's own summary says after 64
    queries ("Would need to run at least 395 more queries"). Each query over the bound raises it further."""
    return math.ceil(math.log(1 - confidence) / math.log(percentile))


def default_server_target(per_request_s: float, batch: int, workers: int) -> float:
    """The Server target QPS when none is given: half the estimated capacity, every worker busy."""
    return workers * batch / per_request_s / 2


def loadgen():
    return require("mlperf_loadgen")


def mlperf_defaults(lg, scenario: str):
    """LoadGen's TestSettings as MLPerf's rules set them for this scenario (its embedded mlperf.conf)."""
    settings = lg.TestSettings()
    if settings.FromConfig("", MLPERF_MODEL, SCENARIOS[scenario], 0) != 0:
        raise BitError(f"LoadGen could not read its mlperf.conf for {MLPERF_MODEL} {SCENARIOS[scenario]}")
    settings.scenario = getattr(lg.TestScenario, SCENARIOS[scenario])
    return settings


class ClassifierSUT:
    """LoadGen's system under test over a Classifier (or a server client, or anything with `infer` and `spec`)."""

    def __init__(self, classifier, samples: QuerySamples, batch: int, workers: int):
        self.classifier, self.samples, self.batch = classifier, samples, batch
        self.loaded: dict[int, np.ndarray] = {}
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="sut")
        self.errors: list[BaseException] = []
        self.requests = 0
        self._lock = threading.Lock()

    def load(self, indices) -> None:
        """LoadGen's LoadSamplesToRam: each sample preprocessed once, outside any timed query."""
        indices = list(indices)
        if indices:
            batch = preprocess([self.samples.images[i] for i in indices], self.classifier.spec)
            self.loaded.update(zip(indices, batch))

    def unload(self, indices) -> None:
        for i in indices:
            self.loaded.pop(i, None)

    def issue(self, query_samples) -> None:
        """LoadGen's IssueQuery: never blocks (LoadGen's issuing thread keeps its schedule); the workers run it."""
        items = [(q.id, q.index) for q in query_samples]
        for start in range(0, len(items), self.batch):
            self.pool.submit(self._answer, items[start : start + self.batch])

    def _answer(self, items) -> None:
        lg = loadgen()
        logits = None
        try:
            batch = np.stack([self.loaded[index] for _, index in items])
            logits = np.ascontiguousarray(self.classifier.infer(batch), np.float32)
        except BaseException as exc:  # LoadGen waits for every sample: answer it empty and report after the test
            self.errors.append(exc)
        with self._lock:
            self.requests += 1
        rows = [logits[i] if logits is not None else np.zeros(0, np.float32) for i in range(len(items))]
        # The logits go back to LoadGen: it logs them in accuracy mode (the arrays live until this call returns).
        lg.QuerySamplesComplete(
            [lg.QuerySampleResponse(qid, row.ctypes.data, row.nbytes) for (qid, _), row in zip(items, rows)]
        )

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _estimate(classifier, samples: QuerySamples, batch: int) -> float:
    """Seconds one request of `batch` samples takes, from three after one warm-up: LoadGen's expected latency and
    QPS (MLPerf asks the submitter for them), and the default Server target."""
    ready = preprocess([samples.images[i % len(samples.images)] for i in range(batch)], classifier.spec)
    classifier.infer(ready)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        classifier.infer(ready)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def settings_for(lg, settings: LoadgenSettings, samples: int, per_request_s: float, batch: int, workers: int):
    """(LoadGen's TestSettings, {what the run sets and where from}, [MLPerf minimums the run misses])."""
    s = mlperf_defaults(lg, settings.scenario)
    mlperf = {"min_duration_ms": s.min_duration_ms, "min_query_count": s.min_query_count}
    mlperf["performance_sample_count"] = s.performance_sample_count_override
    s.mode = lg.TestMode.AccuracyOnly if settings.mode == "accuracy" else lg.TestMode.PerformanceOnly
    s.performance_sample_count_override = samples
    if settings.min_duration_s is not None:
        s.min_duration_ms = round(1000 * settings.min_duration_s)
    if settings.min_query_count is not None:
        s.min_query_count = settings.min_query_count
    capacity = workers * batch / per_request_s  # samples/s with every worker busy
    s.single_stream_expected_latency_ns = round(1e9 * per_request_s / batch)
    s.multi_stream_expected_latency_ns = round(1e9 * per_request_s * s.multi_stream_samples_per_query / batch)
    used = {"model": MLPERF_MODEL, "estimated_capacity_sps": round(capacity, 3)}
    if settings.scenario == "offline":
        s.offline_expected_qps = settings.target_qps or OFFLINE_HEADROOM * capacity
        used["offline_expected_qps"] = round(s.offline_expected_qps, 3)
        used["offline_expected_qps_source"] = (
            "--target-qps" if settings.target_qps else f"{OFFLINE_HEADROOM:g} x the estimated capacity"
        )
    if settings.scenario == "server":
        s.server_target_qps = settings.target_qps or default_server_target(per_request_s, batch, workers)
        used["target_qps"] = round(s.server_target_qps, 3)
        used["target_qps_source"] = "--target-qps" if settings.target_qps else "half the estimated capacity"
        if settings.latency_bound_ms is not None:
            s.server_target_latency_ns = round(1e6 * settings.latency_bound_ms)
        used["latency_bound_ms"] = s.server_target_latency_ns / 1e6
        used["latency_percentile"] = s.server_target_latency_percentile
        used["early_stopping_min_queries"] = early_stopping_queries(s.server_target_latency_percentile)
    if settings.max_duration_s is not None:
        s.max_duration_ms = max(1, round(1000 * settings.max_duration_s))
        used["max_duration_ms"] = s.max_duration_ms
    used |= {"min_duration_ms": s.min_duration_ms, "min_query_count": s.min_query_count}
    used |= {"performance_sample_count": samples, "mlperf": mlperf}
    if settings.mode == "accuracy":  # every sample once: duration and query minimums are performance rules
        return s, used, [f"accuracy on this library's {samples} samples, not MLPerf's validation set"]
    missed = [
        f"{key} {used[key]} < MLPerf's {mlperf[key]}"
        for key in ("min_duration_ms", "min_query_count", "performance_sample_count")
        if used[key] < mlperf[key]
    ]
    return s, used, missed


def parse_logs(folder: str) -> dict:
    """LoadGen's verdict from its logs: the detail log's result_* and early_stopping_* records, and the summary's
    "Result is" block as LoadGen wrote it."""
    detail = {}
    with open(os.path.join(folder, "mlperf_log_detail.txt")) as f:
        for line in f:
            if line.startswith(":::MLLOG "):
                record = json.loads(line[len(":::MLLOG ") :])
                if record["key"].startswith(("result_", "early_stopping", "effective_")):
                    detail[record["key"]] = record["value"]
    with open(os.path.join(folder, "mlperf_log_summary.txt")) as f:
        summary = f.read()
    block = summary.split("Result is", 1)[1].split("\n\n", 1)[0] if "Result is" in summary else ""
    verdict_lines = [line.rstrip() for line in ("Result is" + block).splitlines() if line.strip()] if block else []
    estimates = {
        f"p{float(p):g}_ms": int(v) / 1e6
        for p, v in re.findall(r"Early stopping ([\d.]+)th percentile estimate\s*:\s*(\d+)", summary)
    }
    return {"detail": detail, "verdict_lines": verdict_lines, "early_stopping_estimates_ms": estimates}


def metric(scenario: str, detail: dict) -> dict:
    """The scenario's metric, in MLPerf's terms, from LoadGen's records."""
    percentile = detail.get("effective_target_latency_percentile", 0.9)
    if scenario == "singlestream":
        key = f"result_{100 * percentile:.2f}_percentile_latency_ns"
        return {"name": f"p{100 * percentile:g} latency", "unit": "ms", "value": _ms(detail.get(key))}
    if scenario == "multistream":
        key = f"result_{100 * percentile:.2f}_percentile_per_query_latency_ns"
        return {"name": f"p{100 * percentile:g} latency per query", "unit": "ms", "value": _ms(detail.get(key))}
    if scenario == "offline":
        return {"name": "samples per second", "unit": "samples/s", "value": detail.get("result_samples_per_second")}
    key = f"result_{100 * percentile:.2f}_percentile_latency_ns"
    # Completed, not scheduled: LoadGen's summary heads with it, and MLPerf reports it since v4.1 (the scheduled
    # rate, the reported metric before, follows the target whether or not the system kept up).
    return {
        "name": "completed samples per second",
        "unit": "samples/s",
        "value": detail.get("result_completed_samples_per_sec"),
        "scheduled_samples_per_second": detail.get("result_scheduled_samples_per_sec"),
        f"p{100 * percentile:g}_latency_ms": _ms(detail.get(key)),
        "latency_bound_ms": _ms(detail.get("effective_target_latency_ns")),
        "within_bound": detail.get("result_perf_constraints_met"),
    }


def samples_per_second(scenario: str, detail: dict) -> float | None:
    """Samples completed per second as LoadGen counts them (bit-bench's throughput column for the row)."""
    if scenario == "offline":
        return detail.get("result_samples_per_second")
    if scenario == "server":
        return detail.get("result_completed_samples_per_sec")
    qps = detail.get("result_qps_without_loadgen_overhead")
    return None if qps is None else round(qps * detail.get("effective_samples_per_query", 1), 3)


def _ms(ns) -> float | None:
    return None if ns is None else round(ns / 1e6, 4)


def latency_ms(detail: dict) -> dict:
    """LoadGen's per-sample latency statistics in bit-bench's names (latency_stats.summarize's keys)."""
    out = {"min": _ms(detail.get("result_min_latency_ns")), "mean": _ms(detail.get("result_mean_latency_ns"))}
    for p in ("50.00", "90.00", "95.00", "97.00", "99.00", "99.90"):
        value = _ms(detail.get(f"result_{p}_percentile_latency_ns"))
        out["median" if p == "50.00" else f"p{float(p):g}".replace(".", "_")] = value
    out["max"] = _ms(detail.get("result_max_latency_ns"))
    return out


def run_test(
    lg,
    classifier,
    samples: QuerySamples,
    settings: LoadgenSettings,
    batch,
    workers,
    folder,
    meter=CpuMeter,
    per_request_s: float | None = None,
):
    """One LoadGen test into `folder`: (parsed logs, the settings used, MLPerf minimums missed, CPU use); `meter`
    makes the CpuMeter of the row (bench/cpu_use.py: with a local server's pids, or sampling the GPU).
    per_request_s: one request's seconds, measured here when not given (_estimate)."""
    if per_request_s is None:
        per_request_s = _estimate(classifier, samples, batch)
    test, used, missed = settings_for(lg, settings, len(samples.images), per_request_s, batch, workers)
    made = missing_folders(folder)  # what this test creates: a failed test takes it away again
    os.makedirs(folder, exist_ok=True)
    out = lg.LogOutputSettings()
    out.outdir, out.copy_summary_to_stdout = folder, False
    log = lg.LogSettings()
    log.log_output, log.enable_trace = out, False
    meter, sut_impl = meter(), ClassifierSUT(classifier, samples, batch, workers)
    sut = lg.ConstructSUT(sut_impl.issue, sut_impl.flush)
    qsl = lg.ConstructQSL(len(samples.images), len(samples.images), sut_impl.load, sut_impl.unload)
    try:  # nothing between the constructions and here that can fail: LoadGen's objects are always destroyed
        with meter:
            lg.StartTestWithLogSettings(sut, qsl, test, log)
    finally:
        sut_impl.close()  # every worker has answered before LoadGen's objects go
        lg.DestroyQSL(qsl)
        lg.DestroySUT(sut)
    if sut_impl.errors:
        _discard_logs(folder, made)
        raise BitError(f"the system under test failed during LoadGen's test: {sut_impl.errors[0]}")
    parsed = parse_logs(folder)
    return parsed, used, missed, meter.record(sut_impl.requests)


def _discard_logs(folder: str, made: list[str]) -> None:
    """A failed test's logs are no result: LoadGen's files go, and the folders this test made when left empty."""
    for name in (*LOG_FILES, *EXTRA_LOG_FILES):
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(folder, name))
    remove_made_folders(made)


def run_configuration(
    classifier, samples: QuerySamples, settings: LoadgenSettings, batch, workers, folder, meter=CpuMeter
):
    """The row's `loadgen` section (and its CPU use): one test, or --find-peak's search over Server targets."""
    lg = loadgen()
    if not settings.find_peak:
        parsed, used, missed, cpu = run_test(lg, classifier, samples, settings, batch, workers, folder, meter)
        return _section(settings, parsed, used, missed, folder, cpu), cpu
    return _find_peak(lg, classifier, samples, settings, batch, workers, folder, meter)


def _section(settings: LoadgenSettings, parsed: dict, used: dict, missed: list, folder: str, cpu: dict) -> dict:
    detail = parsed["detail"]
    rate, source = samples_per_second(settings.scenario, detail), "LoadGen"
    if rate is None and detail.get("result_query_count") and cpu["wall_s"]:
        # MultiStream reports no rate: its queries' samples over the test's wall time (load and warm-up excluded)
        rate = round(detail["result_query_count"] * detail.get("effective_samples_per_query", 1) / cpu["wall_s"], 3)
        source = "bit-bench: LoadGen's queries x samples per query over the test's wall time"
    return {
        "scenario": SCENARIOS[settings.scenario],
        "mode": settings.mode,
        "result": detail.get("result_validity"),
        "verdict": parsed["verdict_lines"],
        "invalid_reason": detail.get("result_invalid_reason") or None,
        "metric": metric(settings.scenario, detail),
        "early_stopping": {
            "met": detail.get("early_stopping_met"),
            "result": (detail.get("early_stopping_result") or "").strip() or None,
            "estimates_ms": parsed["early_stopping_estimates_ms"],
        },
        "queries": detail.get("result_query_count"),
        "latency_ms": latency_ms(detail),
        "samples_per_second": rate,
        "samples_per_second_source": source,
        "settings": used,
        "meets_mlperf_minimums": not missed,
        "below_mlperf_minimums": missed,
        "logs": {name: os.path.join(folder, name) for name in LOG_FILES},
    }


def _find_peak(lg, classifier, samples, settings: LoadgenSettings, batch, workers, folder, meter):
    """Server targets doubled from the first until one is INVALID, then bisected; bounded by --peak-steps tests and
    --peak-time seconds. The row reports the highest VALID target's test.

    A step that can't be VALID tells nothing, so each runs at least the queries LoadGen's early stopping needs at
    the Server percentile (early_stopping_queries), above a smaller --min-query-count. A step starts only if its
    planned length (those queries at its target, or the minimum duration if longer) fits the time left, and
    LoadGen is told to stop issuing when the time is up (max_duration), so a slower-than-planned step can't overrun
    the bound by more than its queue takes to drain."""
    started, steps = time.perf_counter(), []
    defaults = mlperf_defaults(lg, "server")
    floor = early_stopping_queries(defaults.server_target_latency_percentile)
    percentile = 100 * defaults.server_target_latency_percentile
    queries = max(settings.min_query_count or defaults.min_query_count, floor)
    min_duration_s = defaults.min_duration_ms / 1000 if settings.min_duration_s is None else settings.min_duration_s
    per_request_s = _estimate(classifier, samples, batch)  # once: every step's target comes from the first
    target = settings.target_qps or default_server_target(per_request_s, batch, workers)
    low = high = None  # highest VALID, lowest INVALID target
    best = last = None
    stopped, planned = "steps", None
    for step in range(settings.peak_steps):
        left = settings.peak_time_s - (time.perf_counter() - started)
        need = max(min_duration_s, queries / target)
        if need > left:
            planned = {"target_qps": round(target, 3), "planned_s": round(need, 1), "seconds_left": round(left, 1)}
            if not steps:
                raise BitError(
                    f"--peak-time {settings.peak_time_s:g} s is shorter than the first step: {queries} queries at "
                    f"{target:.3g} QPS take {need:.0f} s (early stopping at p{percentile:g} needs at least "
                    f"{floor}); raise --peak-time or --target-qps"
                )
            stopped = "time"
            break
        step_settings = LoadgenSettings(
            **{**settings.__dict__, "target_qps": target, "find_peak": False, "min_query_count": queries}
        )
        step_settings.max_duration_s = left
        step_folder = os.path.join(folder, f"step_{step}")
        parsed, used, missed, cpu = run_test(
            lg, classifier, samples, step_settings, batch, workers, step_folder, meter, per_request_s
        )
        section = _section(step_settings, parsed, used, missed, step_folder, cpu)
        valid = section["result"] == "VALID"
        steps.append(
            {
                "target_qps": round(target, 3),
                "result": section["result"],
                "queries": section["queries"],
                "early_stopping_met": section["early_stopping"]["met"],
                "seconds": round(cpu["wall_s"], 1),
                "metric": section["metric"],
            }
        )
        last = (section, cpu)
        if valid:
            low, best = target, (section, cpu)
        else:
            high = target
        if low is not None and high is not None and high / low <= PEAK_RATIO:
            stopped = "converged"
            break
        if high is None:
            target = 2 * target
        elif low is None:
            target = high / 2
        else:
            target = (low + high) / 2
    section, cpu = best or last
    section = {
        **section,
        "find_peak": {
            "peak_qps": None if low is None else round(low, 3),
            "lowest_invalid_qps": None if high is None else round(high, 3),
            "step_queries": queries,
            "step_queries_source": (
                f"LoadGen's early stopping at p{percentile:g} needs {floor}"
                if queries == floor and (settings.min_query_count or 0) < floor
                else "--min-query-count"
                if settings.min_query_count
                else "MLPerf's min_query_count"
            ),
            "steps": steps,
            "stopped": stopped,
            "next_step_not_started": planned,
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    return section, cpu


def log_folder(json_path: str | None) -> str:
    """Where the rows' LoadGen logs go: beside --json (r.json -> r.loadgen/), else ./mlperf_logs/."""
    if json_path:
        return os.path.splitext(os.path.abspath(json_path))[0] + ".loadgen"
    return os.path.abspath("mlperf_logs")


def row_folder(base: str, config_id: str) -> str:
    return os.path.join(base, config_id.replace("/", "_"))
