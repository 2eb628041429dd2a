"""`bit-bench BUNDLE`: latency and throughput of every backend and precision side by side, with accuracy beside speed.

    bit-bench out/r50x3 --backend ort-cpu,openvino --precision fp32,int8 --batch 1,8 --json bench.json --plot plots/
    bit-bench out/r50x1 out/r50x3 --backend ort-cpu,openvino --precision all --batch 1,8    # two models, one run

trtexec's and perf_analyzer's metrics (throughput; latency min, mean, median, percentiles, max; CV;
stability over windows), measured interleaved in one run and shown as ratios to a baseline, each row
with its agreement with TensorFlow. Exit 0: measured; 2: bad input or nothing could run.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from ..engine.atomic_write import write_atomic
from ..engine.backends import THROUGHPUT_BACKENDS
from ..engine.classify_cli import add_static_shapes_argument
from ..engine.errors import BitError
from ..engine.options import field_defaults
from ..engine.precision import PRECISIONS
from . import configurations, report
from .bit_bench import SCHEMA, BenchOptions, run
from .latency_stats import min_requests_for, parse_percentiles
from .measurement import Schedule


def _csv(values) -> str:
    """A default tuple as its flag writes it: 1,8 or 50,99.9."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def build_parser() -> argparse.ArgumentParser:
    d, s = field_defaults(BenchOptions), field_defaults(Schedule)
    p = argparse.ArgumentParser(prog="bit-bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "bundle",
        nargs="+",
        help="bundle directory written by bit-export; several (R50x1 and R50x3, say) are measured in one run, "
        "interleaved, each row named by its bundle's variant and its ratios to the baseline on that bundle",
    )
    p.add_argument(
        "--backend",
        default=_csv(d["backends"]),
        help="comma-separated backends; those that can't run here are reported as skipped (default: %(default)s)",
    )
    p.add_argument(
        "--precision",
        default=_csv(d["precisions"]),
        help=f"comma-separated: {','.join(PRECISIONS)}, or all (default: %(default)s)",
    )
    p.add_argument("--batch", default=_csv(d["batches"]), help="comma-separated batch sizes (default: %(default)s)")
    p.add_argument(
        "--concurrency",
        default=_csv(d["concurrency"]),
        help="requests in flight, from that many threads (default: %(default)s)",
    )
    p.add_argument(
        "--threads", type=int, default=d["threads"], help="intra-op threads per backend (default: the backend's own)"
    )
    add_static_shapes_argument(p)
    p.add_argument(
        "--memory-budget",
        type=float,
        default=d["memory_budget_gb"],
        metavar="GB",
        help="memory for the models held at once, each measured once warm; those that don't fit beside the others "
        "are measured in a later set, interleaved among themselves (default: what the host has available)",
    )
    p.add_argument(
        "--mode",
        choices=configurations.MODES,
        default=d["mode"],
        help="model: a ready float batch; end-to-end: JPEG bytes, decode and preprocessing included "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--warmup", type=float, default=s["warmup_s"], help="seconds per configuration (default: %(default)s)"
    )
    amount = p.add_mutually_exclusive_group()
    amount.add_argument(
        "--duration", type=float, help=f"seconds measured per configuration, at least (default: {s['duration_s']})"
    )
    amount.add_argument(
        "--iterations", type=int, default=s["iterations"], help="requests measured per configuration, at least"
    )
    p.add_argument(
        "--max-windows",
        type=int,
        default=s["max_windows"],
        help="measurement windows before an unsteady configuration is reported unstable (default: %(default)s)",
    )
    p.add_argument("--percentiles", default=_csv(d["percentiles"]), help="comma-separated (default: %(default)s)")
    p.add_argument(
        "--baseline",
        default=d["baseline"],
        help="backend/precision (or a configuration id) the ratios are to (default: ort-cpu/fp32)",
    )
    p.add_argument(
        "--images", nargs="+", default=list(d["images"]), help="image files for the requests (default: real photos)"
    )
    p.add_argument(
        "--triton-url",
        default=d["triton_url"],
        help="the triton backend's server: grpc://HOST:PORT or http://HOST:PORT (bit-serve, or a tritonserver)",
    )
    p.add_argument(
        "--triton-model",
        default=d["triton_model"],
        help="the server's float model (default bit_<variant>, as bit-serve names it)",
    )
    p.add_argument(
        "--ray-url",
        default=d["ray_url"],
        help="the ray backend's server: Ray Serve's HTTP proxy in front of bit-serve BUNDLE --ray "
        "(default: %(default)s)",
    )
    p.add_argument(
        "--throughput",
        action="store_true",
        default=d["throughput"],
        help="find the best throughput: add concurrency levels up to twice the cores (each set up for throughput: "
        "OpenVINO's THROUGHPUT streams, ORT's threads split) and run OpenVINO's benchmark_app -hint throughput "
        "on the same files beside them",
    )
    mlperf = p.add_argument_group("MLPerf LoadGen (bench/loadgen_scenarios.py, docs/bench.md)")
    mlperf.add_argument(
        "--scenario",
        help="run MLPerf's LoadGen scenario instead of the windows: singlestream, multistream, offline or server; "
        "each configuration is LoadGen's system under test (batch: samples per request, concurrency: its workers)",
    )
    mlperf.add_argument(
        "--loadgen-mode",
        default="performance",
        help="performance (default), or accuracy: every sample once, its logits compared with a named reference",
    )
    mlperf.add_argument(
        "--samples", type=int, help="query sample library size (default: all the crops and flips the images give)"
    )
    mlperf.add_argument(
        "--min-duration", type=float, help="seconds, at least (default MLPerf's 600); shorter is marked in the rows"
    )
    mlperf.add_argument("--min-query-count", type=int, help="queries, at least (default MLPerf's for the scenario)")
    mlperf.add_argument(
        "--target-qps",
        type=float,
        help="server: queries/s LoadGen sends (default half the estimated capacity); offline: the expected rate",
    )
    mlperf.add_argument("--latency-bound-ms", type=float, help="server: p99 bound (default MLPerf's ResNet 15 ms)")
    mlperf.add_argument(
        "--find-peak",
        action="store_true",
        help="server: search the highest VALID target QPS (doubling, then bisecting; each step runs at least the "
        "459 queries LoadGen's early stopping needs at p99)",
    )
    mlperf.add_argument("--peak-steps", type=int, default=8, help="--find-peak: LoadGen tests at most")
    mlperf.add_argument(
        "--peak-time",
        type=float,
        default=1800.0,
        help="--find-peak: seconds at most (a step that can't fit in what is left is not started)",
    )
    loop = p.add_argument_group("open loop (bench/open_loop.py)")
    loop.add_argument(
        "--arrival",
        help="requests arrive on a schedule instead of back to back: poisson or constant (needs --rate); "
        "latency counts from each request's scheduled time, --concurrency caps requests in flight",
    )
    loop.add_argument("--rate", type=float, help="requests per second of --arrival")
    loop.add_argument("--arrival-seed", type=int, default=0, help="the Poisson schedule's seed (default: %(default)s)")
    p.add_argument("--no-accuracy", action="store_true", help="skip the agreement with TF on the parity set")
    p.add_argument("--no-roofline", action="store_true", help="skip the GEMM peak measurement")
    p.add_argument("--json", help=f"write the result (schema {SCHEMA}, docs/bench.md)")
    p.add_argument("--csv", help="write one row per configuration")
    p.add_argument("--plot", help="write PNG plots into this folder")
    p.add_argument("--export-times", help="write every request's start and end (trtexec --exportTimes fields)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def _loadgen_settings(args):
    """--scenario's settings, checked, with LoadGen importable and enough images: before anything loads."""
    if args.scenario is None:
        for flag in ("samples", "min_duration", "min_query_count", "target_qps", "latency_bound_ms"):
            if getattr(args, flag) is not None:
                raise BitError(f"--{flag.replace('_', '-')} sets up LoadGen: use it with --scenario")
        if args.find_peak or args.loadgen_mode != "performance":
            raise BitError("--find-peak and --loadgen-mode set up LoadGen: use them with --scenario")
        return None
    from . import loadgen_scenarios, query_samples

    settings = loadgen_scenarios.LoadgenSettings(
        scenario=args.scenario.lower(),  # LoadGen's own spelling (SingleStream) is taken too
        mode=args.loadgen_mode,
        samples=args.samples,
        min_duration_s=args.min_duration,
        min_query_count=args.min_query_count,
        target_qps=args.target_qps,
        latency_bound_ms=args.latency_bound_ms,
        find_peak=args.find_peak,
        peak_steps=args.peak_steps,
        peak_time_s=args.peak_time,
    )
    loadgen_scenarios.check(settings)
    for flag, value in (("--arrival", args.arrival), ("--rate", args.rate), ("--throughput", args.throughput)):
        if value:
            raise BitError(f"--scenario is LoadGen's load; {flag} is bit-bench's own: use one or the other")
    if args.mode != "model":
        raise BitError("--scenario sends ready float batches (--mode model); end-to-end is not offered with LoadGen")
    query_samples.check_count(args.images, args.samples)
    loadgen_scenarios.loadgen()  # missing: the install hint, as for every optional dependency
    return settings


def _arrival(args):
    if args.arrival is None and args.rate is None:
        return None
    from .open_loop import Arrival

    if args.rate is None:
        raise BitError(f"--arrival {args.arrival} needs --rate (requests per second)")
    arrival = Arrival(args.arrival or "poisson", args.rate, args.arrival_seed)
    arrival.check()
    if args.throughput:
        raise BitError("--arrival sets its own load; --throughput is the closed loop's search: use one or the other")
    return arrival


def options_from_args(args, argv) -> BenchOptions:
    loadgen = _loadgen_settings(args)
    arrival = _arrival(args)
    precisions = PRECISIONS if args.precision == "all" else args.precision
    if args.duration is not None and args.duration <= 0:
        raise BitError("--duration must be positive")
    if args.warmup < 0:
        raise BitError("--warmup must not be negative")
    s = field_defaults(Schedule)
    if args.max_windows < s["min_windows"]:
        raise BitError(f"--max-windows must be at least {s['min_windows']} (stability compares the last three)")
    percentiles = parse_percentiles(args.percentiles)
    if args.iterations is not None and args.iterations < min_requests_for(percentiles):
        raise BitError(
            f"--iterations {args.iterations} is too few for p{max(percentiles):g}: it needs at least "
            f"{min_requests_for(percentiles)} requests"
        )
    schedule = Schedule(
        warmup_s=args.warmup,
        duration_s=args.duration if args.duration is not None else s["duration_s"],
        iterations=args.iterations,
        max_windows=args.max_windows,
    )
    if args.threads is not None and args.threads < 1:
        raise BitError("--threads must be at least 1")
    if args.memory_budget is not None and not args.memory_budget > 0:  # NaN too
        raise BitError(f"--memory-budget is in GB and must be above 0, got {args.memory_budget}")
    backends = configurations.parse_list(args.backend, "backend", configurations.BENCH_BACKENDS)
    if args.throughput and not set(backends) & set(THROUGHPUT_BACKENDS):
        raise BitError(
            f"--throughput: {', '.join(backends)} has no throughput settings; "
            f"use a backend that has: {', '.join(THROUGHPUT_BACKENDS)}"
        )
    if configurations.TRITON in backends and not args.triton_url:
        raise BitError("--backend triton needs --triton-url (a running bit-serve or tritonserver)")
    if configurations.RAY in backends:
        from .ray_client import parse_url

        parse_url(args.ray_url)
    return BenchOptions(
        bundle=args.bundle[0] if len(args.bundle) == 1 else tuple(args.bundle),
        backends=backends,
        precisions=configurations.parse_list(
            precisions if isinstance(precisions, str) else ",".join(precisions), "precision", PRECISIONS
        ),
        batches=configurations.parse_list(args.batch, "batch", cast=int),
        concurrency=configurations.parse_list(args.concurrency, "concurrency", cast=int),
        threads=args.threads,
        static_shapes=args.static_shapes,
        memory_budget_gb=args.memory_budget,
        mode=args.mode,
        schedule=schedule,
        percentiles=percentiles,
        baseline=args.baseline,
        images=tuple(args.images),
        roofline=not args.no_roofline,
        accuracy=not args.no_accuracy,
        command=shlex.join(["bit-bench", *argv]),
        triton_url=args.triton_url,
        triton_model=args.triton_model,
        ray_url=args.ray_url,
        throughput=args.throughput,
        loadgen=loadgen,
        loadgen_dir=_loadgen_dir(args.json) if loadgen else None,
        arrival=arrival,
    )


def _loadgen_dir(json_path):
    """Where LoadGen's logs go, refused before anything loads if a file is in the way."""
    from .loadgen_scenarios import log_folder

    folder = log_folder(json_path)
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise BitError(f"LoadGen's logs go to {folder}, which is a file; move it or give another --json")
    return folder


def _check_plot_dir(path: str | None) -> None:
    if path and os.path.exists(path) and not os.path.isdir(path):
        raise BitError(f"--plot {path!r} is a file; give a folder")
    if path:
        report.check_writable(os.path.join(path, "x.png") if os.path.isdir(path) else path, "--plot")


class Progress:
    """A progress bar on stderr: windows done out of those planned (more are planned while a configuration is
    unstable). On a terminal the line is rewritten in place; in a log, one line per window."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.done = 0
        self.planned = 0
        self.min_windows = 0
        self.workloads = []

    def __call__(self, event, subject, detail) -> None:
        if event == "plan":
            self.workloads, self.min_windows = subject, detail.min_windows
            return
        if self.quiet:
            return
        if event == "window":
            self.done += 1
            planned = sum(max(len(w.windows) + (not w.stable), self.min_windows) for w in self.workloads)
            self.planned = max(planned, self.done)
            filled = int(20 * self.done / self.planned)
            state = "stable" if subject.stable else f"window {len(subject.windows)}"
            text = (
                f"[{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.planned} windows  {subject.config.id}: "
                f"{detail['throughput_ips']:.2f} img/s, median {detail['median_ms']:.1f} ms ({state})"
            )
        elif event == "warm-up":
            text = f"warming up {subject.config.id}"
        elif event == "accuracy":
            text = f"agreement with TF: {subject.id.rsplit('/', 2)[0]}"  # [bundle/]backend/precision
        elif event == "peer":
            text = f"throughput peer: {subject}"
        elif event == "loadgen":
            text = f"LoadGen {detail.scenario} ({detail.mode}): {subject.id}"
        elif event == "open-loop":
            lag = detail["schedule_lag_ms"]
            text = f"open loop {subject.config.id}: {detail['achieved_rate']:.2f} req/s, lag max {lag['max']:.1f} ms"
        else:
            text = f"GEMM peak: {'/'.join(subject)}"
        if self.tty:
            sys.stderr.write("\r\033[K" + text[:160])
        else:
            sys.stderr.write(text + "\n")
        sys.stderr.flush()

    def end(self) -> None:
        if self.tty and not self.quiet:
            sys.stderr.write("\r\033[K")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    progress = Progress(args.quiet)
    try:
        options = options_from_args(args, argv)
        for path, what in ((args.json, "--json"), (args.csv, "--csv"), (args.export_times, "--export-times")):
            report.check_writable(path, what)
        _check_plot_dir(args.plot)
        result, samples, times = run(options, progress)
        progress.end()
        if not any(r["status"] == "measured" for r in result["rows"]):
            reasons = sorted({r["skip_reason"] for r in result["rows"]})
            raise BitError("nothing could be measured here:\n  " + "\n  ".join(reasons))
        print(report.table(result))
        if options.loadgen:
            print(f"LoadGen logs: {options.loadgen_dir}")
        if args.json:
            write_atomic(args.json, report.to_json(result), "JSON report")
        if args.csv:
            write_atomic(args.csv, report.to_csv(result), "CSV report")
        if args.export_times:
            write_atomic(args.export_times, report.to_times(result, times), "request times")
        if args.plot:
            from .plots import write_plots

            for path in write_plots(result, samples, args.plot):
                print(f"wrote {path}")
    except BitError as exc:
        progress.end()
        print(f"bit-bench: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
