"""One `bit-bench` run: configurations planned, classifiers loaded once each, windows measured, rows assembled.

`run(options)` returns (result, samples, times): the result dict (schema in docs/bench.md), every request's
latency per configuration (for plots), and every request's start and end (for --export-times).
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass, field

import numpy as np

from ..engine import backends, gpu_host
from ..engine.bundle import Bundle, load_bundle
from ..engine.classifier import Classifier
from ..engine.cpu_host import dispatch_host, idle_record, onednn_host, this_host
from ..engine.errors import BitError
from ..engine.memory import available_bytes, current_rss_bytes, gigabytes, release_memory, total_bytes
from ..engine.preprocess import decode, preprocess
from . import accuracy, configurations
from .cpu_use import CpuMeter, server_pids
from .latency_stats import (
    CPU_CV_WARNING,
    DEFAULT_PERCENTILES,
    GPU_CV_WARNING,
    coefficient_of_variation,
    min_requests_for,
    summarize,
)
from .measurement import Schedule, Workload, measure, run_window, warm_up
from .ray_client import DEFAULT_URL as RAY_DEFAULT_URL

# 2: each row names the artifact `flavour` it measured (null for servers and skipped rows). Version 1 rows had none.
SCHEMA = "bit-bench/2"
# benchmark_app and our best configuration on the same file alternate this many times (bit-bench --throughput),
# so that a host whose speed drifts over minutes weighs on both sides of the ratio. Even, so that each side goes
# first in half the rounds (ours, peer; peer, ours; ...): whatever the turn before does to the next (a process
# exiting, caches, the clock) weighs on both sides alike. Four: three left R50x1's ratio 0.96-0.99 on a host whose
# turns drift 5% from one to the next, a spread its median could not settle.
PEER_ROUNDS = 4


@dataclass
class BenchOptions:
    # One bundle's path, or several: their configurations are measured in one run, interleaved, each row naming
    # its bundle (configurations.model_names) and its ratios to the baseline on the same bundle.
    bundle: str | tuple[str, ...]
    backends: tuple[str, ...] = configurations.DEFAULT_BACKENDS
    precisions: tuple[str, ...] = ("fp32",)
    batches: tuple[int, ...] = (1,)
    concurrency: tuple[int, ...] = (1,)
    threads: int | None = None
    static_shapes: int | None = None  # openvino rows only (its runner's bound); None: the runner's default
    memory_budget_gb: float | None = None  # models held at once (each measured warm); None: what the host has
    mode: str = "model"
    schedule: Schedule = field(default_factory=Schedule)
    percentiles: tuple[float, ...] = DEFAULT_PERCENTILES
    baseline: str | None = None  # backend/precision, or a full configuration id
    images: tuple[str, ...] = ()  # files for the requests; default: real photos, else the parity set
    roofline: bool = True
    accuracy: bool = True
    command: str = ""
    triton_url: str | None = None  # the `triton` backend's server (bench/triton_client.py)
    triton_model: str | None = None  # its float model; default bit_<variant>, as bit-serve names it
    ray_url: str = RAY_DEFAULT_URL  # the `ray` backend's Ray Serve HTTP proxy (bench/ray_client.py)
    # The best throughput configuration, sought across concurrency levels (configurations.throughput_levels), with
    # OpenVINO's benchmark_app -hint throughput beside it on the same files (bench/openvino_peer.py).
    throughput: bool = False
    # LoadGen's scenarios instead of the windows (bench/loadgen_scenarios.py), logs into loadgen_dir
    loadgen: object | None = None  # a loadgen_scenarios.LoadgenSettings
    loadgen_dir: str | None = None
    arrival: object | None = None  # an open_loop.Arrival: open-loop load instead of the closed loop


def host() -> dict:
    """The machine the rows were measured on, with the CPU flags that decide which kernels ran (engine/cpu_host)."""
    cpu = this_host()
    return {
        "cpu": cpu.name or platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "gpu": gpu_host.gpu_name(),
        "os": platform.platform(),
        "cpu_detail": cpu.to_record() | {"isa_cap": onednn_host().isa_cap},  # a cap is OpenVINO's rows' alone
        "cpu_idle": idle_record(),
    }


def request_images(bundle: Bundle, paths: tuple[str, ...]) -> tuple[list[np.ndarray], list[bytes]]:
    """Decoded uint8 images and their encoded bytes: the given files, else real photos, else the parity set."""
    import cv2

    from ..engine.parity_set import load_parity_set, real_photo_paths

    files = list(paths) or real_photo_paths()
    if files:
        encoded = []
        for path in files:
            try:
                with open(path, "rb") as f:
                    encoded.append(f.read())
            except OSError as exc:
                raise BitError(f"cannot read image {path}: {exc.strerror}") from exc
        return [decode(data, path) for data, path in zip(encoded, files)], encoded
    images, _, _ = load_parity_set(bundle)
    decoded = list(images)
    return decoded, [
        cv2.imencode(".jpg", img[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes() for img in decoded
    ]


def request_for(classifier: Classifier, config, decoded, encoded):
    """The callable one request makes, with its input built once, outside the timed region."""
    pick = [i % len(decoded) for i in range(config.batch)]
    if config.mode == "end-to-end":
        batch = [encoded[i] for i in pick]
        return lambda: classifier.predict(batch)
    ready = preprocess([decoded[i] for i in pick], classifier.spec)
    return lambda: classifier.infer_timed(ready)[1]  # trt: each request also reports its GPU phases


def _baseline_rows(rows: list[dict], baseline: str | None) -> dict:
    """(model, batch, concurrency) -> the baseline row measured on the same bundle at the same batch and
    concurrency (a full configuration id names one row, the baseline of every row)."""
    measured = [r for r in rows if r["status"] == "measured"]
    if not measured:
        return {}
    if baseline is None:
        first = next((r for r in measured if (r["backend"], r["precision"]) == ("ort-cpu", "fp32")), measured[0])
        baseline = f"{first['backend']}/{first['precision']}"
    if baseline in {r["id"] for r in measured}:
        chosen = next(r for r in measured if r["id"] == baseline)
        return {(r.get("model", ""), r["batch"], r["concurrency"]): chosen for r in measured}
    if baseline.count("/") >= 2:  # a configuration id that was not measured
        return {}
    return {
        (r.get("model", ""), r["batch"], r["concurrency"]): r
        for r in measured
        if f"{r['backend']}/{r['precision']}" == baseline
    }


def _verify_artifacts(bundle: Bundle, configs) -> None:
    """Checksums of every ONNX model the run will load, before anything is measured: a damaged bundle is
    the user's to fix (one line, exit 2), not a configuration to skip."""
    for flavour in sorted({c.flavour for c in configs if c.flavour and c.backend not in ("tf", "trt")}):
        bundle.artifact_path(flavour)  # trt plans are checked by check_plan when the runner loads them


def validate_baseline(baseline: str | None, configs) -> None:
    if baseline is None:
        return
    names = {c.id for c in configs} | {f"{c.backend}/{c.precision}" for c in configs}
    if baseline not in names:
        raise BitError(
            f"--baseline {baseline!r} is not among the configurations measured; choose from: "
            f"{', '.join(sorted({f'{c.backend}/{c.precision}' for c in configs}))}"
        )


def bundle_paths(options: BenchOptions) -> tuple[str, ...]:
    return (options.bundle,) if isinstance(options.bundle, str) else tuple(options.bundle)


def _bundle_record(bundle: Bundle) -> dict:
    return {
        "path": bundle.path,
        "variant": bundle.manifest["model"]["variant"],
        "resolution": bundle.input_spec.resolution,
        "weights": bundle.manifest["model"].get("source", {}).get("kind"),
    }


def _one_bundle_only(options: BenchOptions, configs, count: int) -> None:
    """What a run of several bundles refuses: a server serves one model, and LoadGen's sample library is one
    bundle's."""
    if count < 2:
        return
    servers = sorted({c.backend for c in configs if c.backend in configurations.SERVERS})
    if servers:
        raise BitError(f"--backend {','.join(servers)} measures the one model its server runs: give one bundle")
    if options.loadgen:
        raise BitError("--scenario runs LoadGen on one bundle's sample library: give one bundle")


def run(options: BenchOptions, progress=None) -> tuple[dict, dict, dict]:
    progress = progress or (lambda *_: None)
    loaded = [load_bundle(path) for path in bundle_paths(options)]
    bundles = dict(zip(configurations.model_names(loaded), loaded))
    concurrency = options.concurrency
    if options.throughput:
        concurrency = configurations.throughput_levels(concurrency, options.threads or os.cpu_count() or 1)
    configs, skipped = [], {}
    for model, bundle in bundles.items():
        planned, why = configurations.plan(
            bundle, options.backends, options.precisions, options.batches, concurrency, options.mode, model
        )
        configs += planned
        skipped |= why
    _one_bundle_only(options, configs, len(bundles))
    most = max(concurrency)  # what a throughput Classifier is sized for
    validate_baseline(options.baseline, configs)
    for model, bundle in bundles.items():
        _verify_artifacts(bundle, [c for c in configs if c.model == model and c.id not in skipped])
    bundle = loaded[0]  # LoadGen and the servers measure one bundle (_one_bundle_only)
    if any(c.backend == configurations.RAY for c in configs):  # bad input, before anything loads: one line
        from .ray_client import server_ready

        server_ready(options.ray_url, bundle.path)
    if options.loadgen:  # LoadGen's query sample library: real photos with crops and flips (bench/query_samples.py)
        from . import loadgen_accuracy, query_samples

        images = {"": ([], [])}
        library = query_samples.build(bundle.input_spec, options.images, options.loadgen.samples)
        references = loadgen_accuracy.References(bundle, library)
    else:
        images = {model: request_images(b, options.images) for model, b in bundles.items()}
        library = references = None
    sets = _EngineSets(bundles, options, skipped, progress, most, images, library, references)
    # Latency settings first, then throughput settings: each group's models are loaded, measured interleaved and
    # freed before the next, so a run holds one model per backend and precision at a time, not two (docs/bench.md).
    # Within a group, only the models that fit in memory together (_EngineSets).
    for group in (False, True):
        planned = [c for c in configs if c.throughput == group]
        try:
            for key in dict.fromkeys(c.engine_key for c in planned if c.id not in skipped):
                if sets.loaded and not sets.room_for_another():
                    sets.measure(group, planned)
                if sets.load(planned, key) and len(sets.loaded) > 1 and not sets.host_has_room():
                    sets.unload(key)  # it pushed the host too far: it goes first in the next set
                    sets.measure(group, planned)
                    sets.load(planned, key)
            sets.measure(group, planned)
        finally:
            sets.close()
        for config in planned:
            if config.id not in skipped and config.engine_key in sets.load_errors:
                skipped[config.id] = sets.load_errors[config.engine_key]
    workloads, wall_s = sets.workloads, sets.wall_s
    peaks = _roofline_peaks(bundles, workloads, options, progress) if options.roofline else {}
    rows = _rows(configs, skipped, workloads, sets.extras, peaks, options, sets.loadgen_rows)
    if options.throughput:
        peers = _throughput_peers(bundles, rows, configs, images, most, options, progress)
    else:
        peers = []
    result = {
        "schema": SCHEMA,
        "command": options.command,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        # a run of several bundles: "bundles", one record per model name, and each row's "model" names its own
        **(
            {"bundle": _bundle_record(bundle)}
            if len(bundles) == 1
            else {"bundles": {model: _bundle_record(b) for model, b in bundles.items()}}
        ),
        "host": host(),
        "versions": _versions(),
        "settings": _settings(options),
        "wall_s": round(wall_s, 1),
        "rows": rows,
        "best_throughput": best_throughput(rows),
        "throughput_peers": peers,
        "engine_sets": sets.sets,
    }
    if options.loadgen:
        result["loadgen"] = _loadgen_summary(options, library)
    if options.arrival:
        a = options.arrival
        result["open_loop"] = {"arrival": a.kind, "rate": a.rate, "seed": a.seed, "latency_from": "scheduled time"}
    samples = {w.config.id: list(w.latencies_ms) for w in workloads}
    times = {
        w.config.id: [
            (*t, w.phases[i] if w.phases else None, w.scheduled_ms[i] if w.scheduled_ms else None)
            for i, t in enumerate(w.times)
        ]
        for w in workloads
    }
    return result, samples, times


class _EngineSets:
    """The models a group holds at once (a set): each loaded and warmed up on every batch and thread it will be
    measured with, its footprint (what this process holds more once it is warm) recorded; a set measured interleaved,
    then freed. A model loads beside the others only if the host's available memory holds MEMORY_HEADROOM times the
    largest footprint so far plus MEMORY_SPARE (and within --memory-budget); one that leaves the host with less than
    MEMORY_FLOOR of its memory is put back, to go first in the next set."""

    def __init__(self, bundles, options: BenchOptions, skipped: dict, progress, most: int, images, library, references):
        self.bundles, self.options, self.skipped, self.progress, self.most = bundles, options, skipped, progress, most
        self.images = images  # model name -> (decoded, encoded) request images
        self.library, self.references = library, references
        self.loaded, self.warmed, self.footprints = {}, {}, {}  # engine key -> Classifier, Workloads, bytes
        self.extras, self.load_errors = {}, {}  # engine key -> what it runs and its accuracy; why it did not load
        self.workloads, self.loadgen_rows, self.sets = [], {}, []
        self.wall_s, self.origin = 0.0, None  # one time origin for the whole run

    def load(self, planned: list, key) -> bool:
        """Load and warm up the model of `key`; False (and why, in load_errors) if it can't run here."""
        options = self.options
        config = next(c for c in planned if c.engine_key == key)
        before = current_rss_bytes()
        bundle = self.bundles[config.model]
        try:
            clf = _classifier(bundle, config, options, self.most if config.throughput else 1)
            clf.__enter__()
        except BitError as exc:
            self.load_errors[key] = str(exc).splitlines()[0]
            return False
        self.loaded[key] = clf
        extras = self.extras.setdefault(key, {"described": clf.backend, "compute": clf.compute})
        latency_twin = self.extras.get((config.backend, config.precision, False, config.model), {})
        if options.accuracy and "accuracy" not in extras:
            if "accuracy" in latency_twin:  # the same file in the same arithmetic
                extras["accuracy"] = latency_twin["accuracy"]
            else:
                self.progress("accuracy", config, None)
                extras["accuracy"] = accuracy.agreement(bundle, clf, config.flavour)
        self.warmed[key] = []
        if not options.loadgen:
            for c in planned:
                if c.engine_key == key and c.id not in self.skipped:
                    w = Workload(c, request_for(clf, c, *self.images[c.model]), cpu=_meter(c, options)())
                    self.progress("warm-up", w, None)
                    warm_up(w, options.schedule.warmup_s)
                    self.warmed[key].append(w)
        self.footprints[key] = max(0, current_rss_bytes() - before)
        return True

    def room_for_another(self) -> bool:
        """Whether a model as large as the largest so far fits beside those loaded (where the host can't say how
        much it has available: assume it has)."""
        largest = max(self.footprints.values(), default=0)
        if not self._within_budget(largest):
            return False
        available = available_bytes()
        return available is None or available >= MEMORY_HEADROOM * largest + MEMORY_SPARE

    def host_has_room(self) -> bool:
        """Whether the host still has MEMORY_FLOOR of its memory available with the models loaded (and the budget
        holds them)."""
        if not self._within_budget():
            return False
        available, total = available_bytes(), total_bytes()
        return available is None or total is None or available >= MEMORY_FLOOR * total

    def _within_budget(self, more: int = 0) -> bool:
        """Whether the loaded models' footprints, plus `more` bytes, stay within --memory-budget (if one was set)."""
        budget = self.options.memory_budget_gb
        return budget is None or sum(self.footprints[k] for k in self.loaded) + more <= budget * 1e9

    def unload(self, key) -> None:
        self.loaded.pop(key).close()
        del self.warmed[key]
        release_memory()

    def measure(self, throughput: bool, planned: list) -> None:
        """Measure the loaded models interleaved, then free them."""
        if not self.loaded:
            return
        options = self.options
        configs = [c for c in planned if c.engine_key in self.loaded and c.id not in self.skipped]
        rss = gigabytes(current_rss_bytes())
        self.sets.append({"throughput": throughput, "configurations": [c.id for c in configs], "rss_gb": rss})
        started = time.perf_counter()
        if options.loadgen:
            for c in configs:
                self.progress("loadgen", c, options.loadgen)
                clf = self.loaded[c.engine_key]
                self.loadgen_rows[c.id] = _loadgen_row(clf, c, self.library, self.references, options)
        else:
            measured = [w for key in self.loaded for w in self.warmed[key]]
            if measured and options.arrival:
                from . import open_loop

                open_loop.measure(measured, options.arrival, options.schedule, options.percentiles, self.progress)
            elif measured:
                self.origin = measure(measured, options.schedule, self.progress, self.origin, warm=False)
            self.workloads.extend(measured)
        self.wall_s += time.perf_counter() - started
        self.close()

    def close(self) -> None:
        for clf in self.loaded.values():
            clf.close()
        self.loaded.clear()
        self.warmed.clear()
        release_memory()


# How much memory a set leaves free. The footprint was measured warm, but a model's first requests at a new batch or
# concurrency can still allocate: a model loads beside others only with MEMORY_HEADROOM times the largest footprint so
# far, plus MEMORY_SPARE, available; and one that leaves less than MEMORY_FLOOR of the host's memory available goes to
# the next set. R50x3's footprints differ by backend (an OpenVINO model with its per-shape models holds several ORT
# sessions' worth), so the first rule alone let a set reach 1 GB free on a 24 GB host.
MEMORY_HEADROOM = 1.25
MEMORY_SPARE = 512 * 2**20
MEMORY_FLOOR = 0.15


def _meter(config, options: BenchOptions):
    """What makes a configuration's CpuMeter: with its server's pids, sampling the GPU for a GPU backend."""
    server, gpu = _server_pids(config, options), config.backend in configurations.GPU_BACKENDS
    return lambda: CpuMeter(server, gpu)


def _server_pids(config, options: BenchOptions) -> tuple[int, ...]:
    """The server's processes on this host, whose CPU use a server row counts too (bench/cpu_use.py)."""
    if config.backend == configurations.TRITON:
        return server_pids(options.triton_url)
    if config.backend == configurations.RAY:
        return server_pids(options.ray_url)
    return ()


def _loadgen_row(classifier, config, library, references, options: BenchOptions) -> tuple[dict, dict]:
    """(the row's `loadgen` section, its CPU use): LoadGen's test of this configuration, logs in its own folder."""
    from . import loadgen_accuracy, loadgen_scenarios

    folder = loadgen_scenarios.row_folder(options.loadgen_dir, config.id)
    section, cpu = loadgen_scenarios.run_configuration(
        classifier, library, options.loadgen, config.batch, config.concurrency, folder, _meter(config, options)
    )
    if options.loadgen.mode == "accuracy":
        section["accuracy"] = loadgen_accuracy.agreement(folder, references)
    return section, cpu


def _loadgen_summary(options: BenchOptions, library) -> dict:
    from .loadgen_scenarios import MLPERF_MODEL, SCENARIOS

    lg = options.loadgen
    return {
        "scenario": SCENARIOS[lg.scenario],
        "mode": lg.mode,
        "mlperf_defaults_of": MLPERF_MODEL,
        "samples": len(library.images),
        "sample_names": library.names,
        "logs": options.loadgen_dir,
        "requested": {k: v for k, v in lg.__dict__.items() if k != "scenario"},
    }


def _classifier(bundle: Bundle, config, options: BenchOptions, concurrency: int = 1):
    if config.backend == configurations.TRITON:
        from .triton_client import TritonClassifier

        return TritonClassifier(bundle, options.triton_url, options.triton_model)
    if config.backend == configurations.RAY:
        from .ray_client import RayClassifier

        return RayClassifier(bundle, options.ray_url)
    return Classifier(
        bundle,
        backend=config.backend,
        precision=config.precision,
        threads=options.threads,
        concurrency=concurrency,
        **backends.given_settings(config.backend, static_shapes=options.static_shapes),
    )


def best_throughput(rows: list[dict]) -> dict | None:
    """The measured configuration with the most images/s: overall, and per backend/precision."""
    measured = [r for r in rows if r["status"] == "measured" and r["throughput_ips"] is not None]
    if not measured:
        return None

    def pick(group):
        best = max(group, key=lambda r: r["throughput_ips"])
        return {k: best[k] for k in ("id", "throughput_ips", "batch", "concurrency", "described", "compute")}

    per = {}
    for row in measured:
        model = f"{row['model']}/" if row.get("model") else ""
        per.setdefault(f"{model}{row['backend']}/{row['precision']}", []).append(row)
    return {**pick(measured), "per_backend_precision": {key: pick(group) for key, group in per.items()}}


def _throughput_peers(
    bundles: dict, rows: list[dict], configs, images: dict, most: int, options, progress
) -> list[dict]:
    """benchmark_app -hint throughput on each OpenVINO file and batch measured, in the arithmetic our row ran
    (f32 or bf16), beside our best configuration on that file and batch, interleaved: that configuration is opened
    again and warmed up, then PEER_ROUNDS rounds of one turn of ours and one benchmark_app run as long as our turn,
    ours first in even rounds and benchmark_app first in odd ones. Our turn is a number of requests (peer_requests),
    not a time: a turn that ends at a time leaves threads idle at its end whenever the deadline falls between their
    requests (R50x3 at batch 1 ran 11 requests on 2 threads, one thread idle for its last 1.8 s: 3-6% under
    benchmark_app, whose requests end together). ours_over_peer is the median of the rounds' ratios (each round's two
    turns adjacent in time, so a drift over minutes cancels within it), ours_over_peer_range their least and
    greatest; the row's own figure stays in ours_row_throughput_ips."""
    from . import openvino_peer

    by_id = {c.id: c for c in configs}
    peers = []
    seconds = options.schedule.duration_s * options.schedule.min_windows
    for (model, precision, batch), group in _openvino_groups(rows).items():
        ours = peer_row(group)
        config = by_id[ours["id"]]
        bundle, (decoded, encoded) = bundles[model], images[model]
        progress("peer", f"benchmark_app {model + ' ' if model else ''}{precision} b{batch}", None)
        peer = {"model": model} if model else {}
        peer |= {"tool": "benchmark_app -hint throughput", "precision": precision, "batch": batch}
        peer |= {"flavour": ours["flavour"], "inference_precision": _ov_precision(ours["compute"])}
        rounds = []
        try:
            path, resolution = bundle.artifact_path(ours["flavour"]), bundle.input_spec.resolution
            with _classifier(bundle, config, options, most if config.throughput else 1) as clf:
                workload = Workload(config, request_for(clf, config, decoded, encoded))
                warm_up(workload, options.schedule.warmup_s)
                turn_requests = peer_requests(ours["throughput_ips"], batch, config.concurrency, seconds)
                took = seconds
                for index in range(PEER_ROUNDS):
                    ours_first = index % 2 == 0
                    if not ours_first:  # benchmark_app's turn is as long as our last (the first round's, at least)
                        measured = openvino_peer.measure(path, batch, resolution, peer["inference_precision"], took)
                    window = run_window(workload, time.perf_counter(), requests=turn_requests, record=False)
                    took = max(seconds, window["seconds"])
                    if ours_first:
                        measured = openvino_peer.measure(path, batch, resolution, peer["inference_precision"], took)
                    turn = {"first": "ours" if ours_first else "peer", "ours_ips": round(window["throughput_ips"], 3)}
                    turn |= {"peer_ips": measured["throughput_ips"], "seconds": round(took, 1)}
                    turn |= {"ours_requests": window["requests"]}
                    turn["ours_over_peer"] = round(turn["ours_ips"] / turn["peer_ips"], 3)
                    rounds.append(turn)
        except BitError as exc:
            peers.append(peer | {"error": str(exc).splitlines()[0]})
            continue
        ours_ips = float(np.median([r["ours_ips"] for r in rounds]))
        ratios = [r["ours_over_peer"] for r in rounds]
        peer |= measured | {"throughput_ips": float(np.median([r["peer_ips"] for r in rounds]))}
        peer |= {
            "ours_best": ours["id"],
            "ours_throughput_ips": round(ours_ips, 3),
            "ours_row_throughput_ips": ours["throughput_ips"],
            "rounds": rounds,
            "ours_over_peer": round(float(np.median(ratios)), 3),
            "ours_over_peer_range": [min(ratios), max(ratios)],
        }
        peers.append(peer)
    return peers


def peer_row(group: list[dict]) -> dict:
    """Which of our rows on one file and batch stands beside benchmark_app -hint throughput: the fastest on throughput
    settings (concurrency above 1: OpenVINO's THROUGHPUT hint, as benchmark_app's), else the fastest. A latency row
    (one request on every core) is no peer of it, and on a VM whose idle cores exit to the hypervisor it runs at one of
    two speeds a third apart (docs/cpu.md, "Two speeds of one request on two threads"): the R50x1 reference run picked
    int8 batch 1 at concurrency 1 (12.97 img/s in its windows), which ran its peer turns at 9.1-12.4."""
    on_throughput = [r for r in group if r["concurrency"] > 1]
    return max(on_throughput or group, key=lambda r: r["throughput_ips"])


def peer_requests(throughput_ips: float, batch: int, concurrency: int, seconds: float) -> int:
    """How many requests our peer turn sends: about `seconds` at the row's throughput, at least two per thread (an
    R50x3 batch of 8 takes 13-30 s), and a whole number per thread."""
    per_thread = max(2, math.ceil(seconds * throughput_ips / (batch * concurrency)))
    return per_thread * concurrency


def _openvino_groups(rows: list[dict]) -> dict:
    groups = {}
    for row in rows:
        if row["status"] == "measured" and row["backend"] == "openvino" and row["mode"] == "model":
            groups.setdefault((row.get("model", ""), row["precision"], row["batch"]), []).append(row)
    return groups


def _ov_precision(compute: str) -> str:
    """benchmark_app's -infer_precision for what our row ran: bf16, else f32 (INT8 layers run INT8 either way)."""
    return "bf16" if compute in ("bf16", "int8+bf16") else "f32"


def _settings(options: BenchOptions) -> dict:
    s = options.schedule
    return {
        "backends": list(options.backends),
        "precisions": list(options.precisions),
        "batches": list(options.batches),
        "concurrency": list(options.concurrency),
        "throughput": options.throughput,
        "threads": options.threads,
        "static_shapes": options.static_shapes,
        "memory_budget_gb": options.memory_budget_gb,
        "mode": options.mode,
        "warmup_s": s.warmup_s,
        "duration_s": s.duration_s if s.iterations is None else None,
        "iterations": s.iterations,
        "min_windows": s.min_windows,
        "max_windows": s.max_windows,
        "percentiles": list(options.percentiles),
        "baseline": options.baseline,
        "images": list(options.images) or "default",
        "triton_url": options.triton_url,
        "triton_model": options.triton_model,
        "ray_url": options.ray_url if configurations.RAY in options.backends else None,
        "scenario": options.loadgen.scenario if options.loadgen else None,
        "arrival": options.arrival.kind if options.arrival else None,
        "rate": options.arrival.rate if options.arrival else None,
        # What a request includes, for comparing with trtexec (whose TensorRT 11 default leaves transfers out
        # and uses CUDA graphs): CPU backends read host memory, so there is no transfer to leave out.
        "transfers_included": "n/a on CPU backends; included on GPU backends (host arrays in, host logits out)",
        "cuda_graphs": False,  # trtexec on TensorRT 11 uses them by default; the trt runner only when asked
    }


def _versions() -> dict:
    from ..engine.tool_versions import tool_versions

    return tool_versions()


def _roofline_peaks(bundles: dict[str, Bundle], workloads, options: BenchOptions, progress) -> dict:
    """(backend, precision, model) -> the GEMM peak measured in this run with the benchmark's threads (once per
    backend and precision), and that bundle's model's GFLOP per image."""
    from . import roofline

    gemms, peaks = {}, {}
    flavours = {(w.config.backend, w.config.precision, w.config.model): w.config.flavour for w in workloads}
    for backend, precision, model in flavours:
        if backend not in ("ort-cpu", "openvino"):
            continue
        if (backend, precision) not in gemms:
            progress("peak", (backend, precision), None)
            try:
                gemms[backend, precision] = roofline.gemm_peak(backend, precision, options.threads or os.cpu_count())
            except BitError as exc:
                gemms[backend, precision] = {"error": str(exc).splitlines()[0]}
        peak = gemms[backend, precision]
        if "error" not in peak:
            try:
                path = bundles[model].artifact_path(flavours[backend, precision, model])
                peak = {**peak, "gflop_per_image": roofline.graph_flops(path)["gflop_per_image"]}
            except BitError as exc:
                peak = {"error": str(exc).splitlines()[0]}
        peaks[backend, precision, model] = {"gflop_per_image": None, **peak}
    return peaks


def _rows(configs, skipped, workloads, extras, peaks, options: BenchOptions, loadgen_rows=None) -> list[dict]:
    by_id = {w.config.id: w for w in workloads}
    threshold = GPU_CV_WARNING if gpu_host.has_gpu() else CPU_CV_WARNING
    rows = []
    for config in configs:
        row = {
            "id": config.id,
            "backend": config.backend,
            "precision": config.precision,
            "flavour": config.flavour,
            "batch": config.batch,
            "concurrency": config.concurrency,
            "mode": config.mode,
            "status": "skipped" if config.id in skipped else "measured",
            "skip_reason": skipped.get(config.id),
        }
        if config.model:  # a run of several bundles
            row = {"model": config.model, **row}
        w = by_id.get(config.id)
        if config.id in (loadgen_rows or {}):
            section, cpu = loadgen_rows[config.id]
            row.update(
                {
                    "described": extras[config.engine_key]["described"],
                    "compute": extras[config.engine_key]["compute"],
                    "requests": cpu["requests"],
                    "throughput_ips": section["samples_per_second"],
                    "latency_ms": section["latency_ms"],
                    "accuracy": extras[config.engine_key].get("accuracy"),
                    "cpu": cpu,
                    "loadgen": section,
                    "warnings": (
                        []
                        if section["meets_mlperf_minimums"]
                        else ["below MLPerf's minimums: " + "; ".join(section["below_mlperf_minimums"])]
                    ),
                }
            )
        elif w is not None:
            cv = coefficient_of_variation(w.latencies_ms)
            warnings = []
            if cv > threshold:
                warnings.append(f"latency CV {100 * cv:.1f}% is above {100 * threshold:.1f}%: the host is noisy")
            if not w.stable:
                warnings.append(f"unstable: the last windows disagree by more than 10% after {len(w.windows)}")
            needed = min_requests_for(options.percentiles)
            if len(w.latencies_ms) < needed:
                warnings.append(
                    f"{len(w.latencies_ms)} requests: p{max(options.percentiles):g} needs {needed}; "
                    "raise --duration or --iterations"
                )
            total_s = sum(win["seconds"] for win in w.windows)
            row.update(
                {
                    "described": extras[config.engine_key]["described"],
                    "compute": extras[config.engine_key]["compute"],
                    "requests": len(w.latencies_ms),
                    "throughput_ips": round(
                        sum(win["throughput_ips"] * win["seconds"] for win in w.windows) / total_s, 3
                    ),
                    "latency_ms": summarize(w.latencies_ms, options.percentiles),
                    "cv": round(cv, 4),
                    "stable": w.stable,
                    "windows": [{k: round(v, 4) for k, v in win.items()} for win in w.windows],
                    "accuracy": extras[config.engine_key].get("accuracy"),
                    "cpu": w.cpu.record(len(w.latencies_ms)),
                    "warnings": warnings,
                }
            )
            if w.open_loop is not None:
                row["open_loop"] = w.open_loop
                row["stable"] = None  # one schedule, not windows
                warnings += w.open_loop["warnings"]
            if w.phases:
                row["gpu_times_ms"] = {
                    key.removesuffix("_ms"): summarize([p[key] for p in w.phases], options.percentiles)
                    for key in w.phases[0]
                }
            peak = peaks.get((config.backend, config.precision, config.model))
            if peak and "gflops" in peak and peak.get("gflop_per_image"):
                from . import roofline  # the physical peak (engine/cpu_peak.py), the measured GEMM beside it

                cpu = dispatch_host(config.backend)  # OpenVINO's under ONEDNN_MAX_CPU_ISA where one is set
                roof = roofline.roofline(
                    peak["gflop_per_image"], row["throughput_ips"], peak, host=cpu, compute=row["compute"]
                )
                row["roofline"] = roofline.bench_columns(roof)
                if roof["peak_warning"]:
                    warnings.append(roof["peak_warning"])
            elif peak:
                row["roofline"] = {"error": peak.get("error")}
        rows.append(row)
    bases = _baseline_rows(rows, options.baseline)
    for row in rows:
        base = bases.get((row.get("model", ""), row["batch"], row["concurrency"]))
        if row["status"] == "measured" and base is not None and row["throughput_ips"] and base["throughput_ips"]:
            row["vs_baseline"] = {
                "baseline": base["id"],
                "throughput": round(row["throughput_ips"] / base["throughput_ips"], 3),
                "median_latency": round(row["latency_ms"]["median"] / base["latency_ms"]["median"], 3),
            }
    return rows
