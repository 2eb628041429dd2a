"""bit-bench --scenario: MLPerf's real LoadGen driving a real tiny bundle; no timing asserts, only lower bounds that a
busy host can't break (a request that sleeps D answers no earlier than D after it was issued)."""

import json
import time

import pytest

from tests.conftest import run_cli

pytest.importorskip("mlperf_loadgen")

QUICK = ("--backend", "ort-cpu", "--no-roofline", "--samples", "16", "--min-duration", "0.2")
QUICK += ("--min-query-count", "8", "--warmup", "0")


@pytest.mark.parametrize("scenario", ["singlestream", "multistream", "offline", "server"])
def test_every_scenario_runs_and_loadgen_s_summary_is_parsed(tiny_bundle, tmp_path, scenario):
    out = tmp_path / "r.json"
    extra = ("--target-qps", "50", "--latency-bound-ms", "1000") if scenario == "server" else ()
    proc = run_cli("bit_trt.bench.cli", tiny_bundle, *QUICK, "--scenario", scenario, *extra, "--json", out)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    row = result["rows"][0]
    lg = row["loadgen"]
    names = {"singlestream": "SingleStream", "multistream": "MultiStream", "offline": "Offline", "server": "Server"}
    assert result["loadgen"]["scenario"] == lg["scenario"] == names[scenario]
    assert lg["result"] in ("VALID", "INVALID") and lg["verdict"][0] == f"Result is : {lg['result']}"
    assert lg["metric"]["value"] > 0 and lg["queries"] >= 1 and row["throughput_ips"] > 0
    # the logs are beside the JSON, and the summary says what the JSON says
    folder = tmp_path / "r.loadgen" / "ort-cpu_fp32_b1_c1"
    summary = (folder / "mlperf_log_summary.txt").read_text()
    assert lg["logs"]["mlperf_log_summary.txt"] == str(folder / "mlperf_log_summary.txt")
    assert f"Scenario : {names[scenario]}" in summary and f"Result is : {lg['result']}" in summary
    assert (folder / "mlperf_log_detail.txt").read_text().startswith(":::MLLOG")
    # the metric is the one LoadGen's summary heads with (p90, p99 per query, samples/s, completed samples/s)
    headline = summary.split("Mode     : PerformanceOnly\n", 1)[1].splitlines()[0]
    figure = float(headline.rsplit(":", 1)[1])
    assert lg["metric"]["value"] == pytest.approx(figure / 1e6 if "(ns)" in headline else figure, abs=0.01), headline
    # a quick run is no MLPerf run, and says so in the JSON and the table
    assert lg["meets_mlperf_minimums"] is False
    assert any("min_duration_ms 200 < MLPerf's 600000" in m for m in lg["below_mlperf_minimums"])
    assert "NOT met (quick run)" in proc.stdout and "below MLPerf's minimums" in proc.stdout
    assert lg["settings"]["mlperf"]["performance_sample_count"] == 1024
    assert row["cpu"]["process_cpu_s"] > 0 and row["cpu"]["process_cpu_s_per_request"] > 0
    if scenario == "server":
        assert lg["metric"]["latency_bound_ms"] == 1000 and lg["settings"]["target_qps_source"] == "--target-qps"


class Delayed:
    """A real Classifier whose every request answers no earlier than `delay_s` after it was sent."""

    def __init__(self, classifier, delay_s):
        self.classifier, self.delay_s, self.spec = classifier, delay_s, classifier.spec

    def infer(self, batch):
        time.sleep(self.delay_s)
        return self.classifier.infer(batch)


@pytest.fixture(scope="module")
def delayed(tiny_bundle):
    from bit_trt.bench import query_samples
    from bit_trt.engine.bundle import load_bundle
    from bit_trt.engine.classifier import Classifier

    bundle = load_bundle(str(tiny_bundle))
    with Classifier(bundle, backend="ort-cpu", precision="fp32") as clf:
        yield bundle, Delayed(clf, 0.02), query_samples.build(bundle.input_spec, (), 8)


def test_loadgen_s_latencies_are_no_shorter_than_the_system_s_delay(delayed, tmp_path):
    from bit_trt.bench.loadgen_scenarios import LoadgenSettings, run_configuration

    _, slow, library = delayed
    settings = LoadgenSettings("singlestream", min_duration_s=0.1, min_query_count=5)
    section, cpu = run_configuration(slow, library, settings, 1, 1, str(tmp_path))
    assert section["queries"] >= 5 and cpu["requests"] >= 5
    assert section["latency_ms"]["min"] >= 20 and section["metric"]["value"] >= 20


def test_an_overloaded_server_target_is_invalid_and_reported_so(delayed, tmp_path):
    from bit_trt.bench import report
    from bit_trt.bench.loadgen_scenarios import LoadgenSettings, run_configuration

    _, slow, library = delayed
    # one worker answering in >= 20 ms serves at most 50 samples/s; 400/s queue up far past a 25 ms bound
    settings = LoadgenSettings("server", min_duration_s=0.2, min_query_count=40, target_qps=400, latency_bound_ms=25)
    section, cpu = run_configuration(slow, library, settings, 1, 1, str(tmp_path))
    assert section["result"] == "INVALID" and section["metric"]["within_bound"] is False
    assert "Performance constraints satisfied : NO" in [line.strip() for line in section["verdict"]]
    assert section["metric"]["p99_latency_ms"] > 25
    # LoadGen kept to the asked target, past the system's 50/s (its schedule's rate, not the host's speed)
    assert section["settings"]["target_qps"] == 400 and section["metric"]["scheduled_samples_per_second"] > 100
    row = {"id": "slow/fp32/b1/c1", "loadgen": section, "cpu": cpu}
    lines = "\n".join(report._loadgen_lines([row]))
    assert "INVALID" in lines and "Performance constraints satisfied : NO" in lines
    # 40 queries could never have passed early stopping either, and the table says why
    assert "early stopping at p99 needs at least 459 queries in bound; this test ran" in lines


class Failing(Delayed):
    """Answers the four requests of the estimate before the test, then fails every request of the test."""

    calls = 0

    def infer(self, batch):
        from bit_trt.engine.errors import BitError

        self.calls += 1
        if self.calls > 4:
            raise BitError("the backend fell over")
        return self.classifier.infer(batch)


def test_a_failing_system_is_one_line_not_a_hang(delayed, tmp_path):
    from bit_trt.bench.loadgen_scenarios import LoadgenSettings, run_test
    from bit_trt.engine.errors import BitError

    _, slow, library = delayed
    settings = LoadgenSettings("offline", min_duration_s=0.05, min_query_count=4)
    folder = tmp_path / "logs" / "row"
    with pytest.raises(BitError, match="the system under test failed during LoadGen's test: the backend fell over"):
        run_test(__import__("mlperf_loadgen"), Failing(slow.classifier, 0), library, settings, 1, 1, str(folder))
    assert not (tmp_path / "logs").exists()  # no half-written logs: the folders the test made are gone too


def test_find_peak_steps_run_the_queries_early_stopping_needs(delayed, tmp_path):
    from bit_trt.bench.loadgen_scenarios import LoadgenSettings, early_stopping_queries, run_configuration

    _, slow, library = delayed
    # four workers answering in >= 20 ms serve up to ~200 samples/s: 100/s is within reach, 200/s at the edge
    settings = LoadgenSettings("server", min_duration_s=0.1, min_query_count=10, target_qps=100)
    settings.latency_bound_ms, settings.find_peak, settings.peak_steps = 200, True, 2
    section, _ = run_configuration(slow, library, settings, 1, 4, str(tmp_path))
    peak = section["find_peak"]
    # a step of 10 queries can never pass LoadGen's early stopping at p99: each step runs at least 459
    assert early_stopping_queries(0.99) == 459
    assert peak["step_queries"] == 459 and "early stopping at p99 needs 459" in peak["step_queries_source"]
    assert section["settings"]["min_query_count"] == 459 and section["settings"]["early_stopping_min_queries"] == 459
    assert 1 <= len(peak["steps"]) <= 2 and peak["steps"][0]["target_qps"] == 100
    assert all(step["queries"] >= 459 for step in peak["steps"])
    assert peak["stopped"] in ("steps", "converged")
    valid = [s["target_qps"] for s in peak["steps"] if s["result"] == "VALID"]
    assert peak["peak_qps"] == (max(valid) if valid else None)
    assert (tmp_path / "step_0" / "mlperf_log_summary.txt").exists()


def test_find_peak_starts_no_step_that_its_time_bound_can_t_hold(delayed, tmp_path):
    from bit_trt.bench.loadgen_scenarios import LoadgenSettings, run_configuration
    from bit_trt.engine.errors import BitError

    _, slow, library = delayed
    settings = LoadgenSettings("server", min_duration_s=0.1, min_query_count=10, target_qps=100)
    settings.latency_bound_ms, settings.find_peak, settings.peak_steps = 200, True, 4
    # the first step is 459 queries at 100/s, >= 4.59 s: 5 s holds it, and whether it is VALID (next: 200/s,
    # 2.3 s) or INVALID (next: 50/s, 9.2 s), what is left after it can hold no second step
    settings.peak_time_s = 5.0
    section, _ = run_configuration(slow, library, settings, 1, 4, str(tmp_path / "fits"))
    peak = section["find_peak"]
    assert len(peak["steps"]) == 1 and peak["stopped"] == "time"
    planned = peak["next_step_not_started"]
    assert planned["planned_s"] > planned["seconds_left"] and planned["target_qps"] in (50, 200)
    assert section["settings"]["max_duration_ms"] <= 5000  # LoadGen itself was told when the time is up
    # a bound that can't hold even the first step: one line, before any test runs
    settings.peak_time_s = 1.0
    with pytest.raises(BitError, match=r"^--peak-time 1 s is shorter than the first step: 459 queries at 100 QPS"):
        run_configuration(slow, library, settings, 1, 4, str(tmp_path / "short"))
    assert not (tmp_path / "short").exists()


def test_accuracy_mode_compares_exactly_loadgen_s_samples_with_a_named_reference(tiny_bundle, tmp_path):
    out = tmp_path / "r.json"
    args = (*QUICK, "--scenario", "offline", "--loadgen-mode", "accuracy", "--json", out)
    proc = run_cli("bit_trt.bench.cli", tiny_bundle, *args)
    assert proc.returncode == 0, proc.stderr
    lg = json.loads(out.read_text())["rows"][0]["loadgen"]
    figures = {f["reference"]: f for f in lg["accuracy"]}
    logged = json.loads((tmp_path / "r.loadgen" / "ort-cpu_fp32_b1_c1" / "mlperf_log_accuracy.json").read_text())
    chosen = sorted({r["qsl_idx"] for r in logged})
    assert sorted(i for f in figures.values() for i in f["sample_indices"]) == chosen == list(range(16))
    # the parity set's real photos are the library's first samples: those compare with TF's stored logits
    from bit_trt.engine.parity_set import real_photo_paths

    if real_photo_paths():
        tf = figures["TF logits stored in the bundle's parity set"]
        assert tf["sample_indices"] == list(range(len(real_photo_paths()))) and tf["rel_l2"] < 1e-4
    ort = figures["the bundle's fp32 graph on ONNX Runtime CPU"]
    assert ort["top1_agreement"] == 1.0 and ort["rel_l2"] < 1e-5  # ORT fp32 against itself
    assert "vs the bundle's fp32 graph on ONNX Runtime CPU" in proc.stdout
    # performance minimums don't apply to an accuracy run; what keeps it from being MLPerf's is its samples
    assert lg["below_mlperf_minimums"] == ["accuracy on this library's 16 samples, not MLPerf's validation set"]


def test_loadgen_missing_gives_the_install_hint(tiny_bundle, tmp_path):
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "mlperf_loadgen.py").write_text("raise ImportError('hidden by the test')\n")
    out = tmp_path / "r.json"
    proc = run_cli(
        "bit_trt.bench.cli", tiny_bundle, *QUICK, "--scenario", "offline", "--json", out, env={"PYTHONPATH": str(hide)}
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        "bit-bench: error: mlperf_loadgen is not installed; install it with: pip install 'bit-trt[loadgen]'"
    )
    assert not out.exists() and not (tmp_path / "r.loadgen").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (("--scenario", "edge"), "unknown scenario 'edge'; choose from: singlestream, multistream, offline, server"),
        (("--scenario", "server", "--target-qps", "0"), "--target-qps must be above 0, got 0"),
        (("--scenario", "server", "--latency-bound-ms", "-5"), "--latency-bound-ms must be above 0, got -5"),
        (("--scenario", "server", "--target-qps", "inf"), "--target-qps must be above 0, got inf"),
        (("--scenario", "offline", "--min-duration", "nan"), "--min-duration must be 0 or more seconds, got nan"),
        (("--scenario", "offline", "--samples", "100000"), "--samples 100000 is more than the"),
        (("--target-qps", "5"), "sets up LoadGen: use it with --scenario"),
        (("--scenario", "offline", "--find-peak"), "--find-peak searches the Server scenario's target QPS"),
    ],
)
def test_bad_loadgen_input_is_one_clear_line_before_anything_runs(tiny_bundle, tmp_path, args, message):
    out = tmp_path / "r.json"
    base = [a for a in QUICK if a not in ("--samples", "16")]
    proc = run_cli("bit_trt.bench.cli", tiny_bundle, *base, *args, "--json", out)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not out.exists() and not (tmp_path / "r.loadgen").exists()


def test_a_file_where_the_logs_go_is_one_line_before_anything_runs(tiny_bundle, tmp_path):
    out, logs = tmp_path / "r.json", tmp_path / "r.loadgen"
    logs.write_text("not a folder")
    proc = run_cli("bit_trt.bench.cli", tiny_bundle, *QUICK, "--scenario", "offline", "--json", out)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == (
        f"bit-bench: error: LoadGen's logs go to {logs}, which is a file; move it or give another --json"
    )
    assert not out.exists() and logs.read_text() == "not a folder"
