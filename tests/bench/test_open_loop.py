"""bit-bench --arrival: requests on a schedule of their own, a real tiny bundle behind them. No timing asserts: only
orderings and lower bounds that hold however busy the host is."""

import json
import time

import numpy as np
import pytest

from tests.conftest import run_cli

QUICK = ("--backend", "ort-cpu", "--no-roofline", "--percentiles", "50,90", "--warmup", "0")


@pytest.fixture(scope="module")
def slow_request(tiny_bundle):
    """One request to a real ORT Classifier that takes at least 20 ms (a sleep before it)."""
    from bit_trt.engine.bundle import load_bundle
    from bit_trt.engine.classifier import Classifier

    bundle = load_bundle(str(tiny_bundle))
    r = bundle.input_spec.resolution
    batch = np.zeros((1, r, r, 3), np.float32)

    with Classifier(bundle, backend="ort-cpu", precision="fp32") as clf:

        def request():
            time.sleep(0.02)
            return clf.infer(batch)

        yield request


def test_above_a_slow_backend_s_capacity_the_schedule_lag_is_positive_and_grows(slow_request):
    from bit_trt.bench.open_loop import Arrival, run, summary

    # one sender, requests due every 5 ms, each taking >= 20 ms: request i can't start before i x 20 ms after the
    # first, so it starts at least i x 15 ms after its scheduled time
    arrival = Arrival("constant", rate=200)
    records = run(slow_request, arrival, 20, senders=1)
    for i, (_, scheduled, start, end) in enumerate(records):
        assert scheduled <= start < end
        assert start - scheduled >= i * 0.015 - 1e-6
    figures = summary(records, arrival, 1, (50, 90))
    lag = figures["schedule_lag_ms"]
    assert lag["max"] > 0 and lag["growing"] and lag["last_tenth_mean"] > lag["first_tenth_mean"]
    assert figures["warnings"] and "fell behind" in figures["warnings"][0]
    # latency counts from the schedule: the lag and the >= 20 ms service on top of it (measured from the send, as
    # perf_analyzer's request rate does, the last request would read about 20 ms, not its 285+ ms)
    assert figures["latency_from_schedule_ms"]["max"] >= 19 * 15 + 20
    assert figures["latency_from_schedule_ms"]["max"] >= figures["schedule_lag_ms"]["max"] + 20
    assert figures["latency_from_schedule_ms"]["min"] >= 20


def test_a_rate_far_above_capacity_ends_with_its_schedule_and_counts_what_it_did_not_send(slow_request):
    from bit_trt.bench.open_loop import MAX_LAG_S, Arrival, run, summary

    # 200 requests due within 0.2 s, one sender, each >= 20 ms: sending them all would put the last >= 3.7 s behind
    # its time, past MAX_LAG_S, so some can't have been sent whatever the host's speed
    assert MAX_LAG_S < 3.7
    arrival = Arrival("constant", rate=1000)
    records = run(slow_request, arrival, 200, senders=1)
    figures = summary(records, arrival, 1, (50, 90))
    assert figures["not_sent"] >= 1 and figures["requests"] + figures["not_sent"] == 200
    assert records[0] is not None and sum(r is None for r in records) == figures["not_sent"]
    assert any("requests were not sent" in w for w in figures["warnings"])


def test_poisson_arrivals_are_seeded_and_start_at_zero():
    from bit_trt.bench.open_loop import Arrival

    a, b = Arrival("poisson", 100, seed=3).offsets(50), Arrival("poisson", 100, seed=3).offsets(50)
    assert np.array_equal(a, b) and a[0] == 0 and np.all(np.diff(a) >= 0)
    assert not np.array_equal(a, Arrival("poisson", 100, seed=4).offsets(50))


def test_the_cli_reports_the_open_loop_and_cpu_use(tiny_bundle, tmp_path):
    out = tmp_path / "r.json"
    args = (*QUICK, "--arrival", "poisson", "--rate", "100", "--iterations", "30", "--concurrency", "2")
    proc = run_cli("bit_trt.bench.cli", tiny_bundle, *args, "--json", out, "--export-times", tmp_path / "t.json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    row = result["rows"][0]
    loop = row["open_loop"]
    assert result["open_loop"]["latency_from"] == "scheduled time" and result["settings"]["arrival"] == "poisson"
    assert loop["requests"] + loop["not_sent"] == 30 and loop["requests"] == row["requests"] >= 1
    assert loop["rate"] == 100 and row["stable"] is None
    assert loop["schedule_lag_ms"]["min"] >= 0
    assert loop["latency_from_schedule_ms"]["max"] >= loop["service_ms"]["max"]
    assert row["latency_ms"] == loop["latency_from_schedule_ms"]  # the row's latency, as the table shows it
    assert row["cpu"]["requests"] == loop["requests"] and row["cpu"]["process_cpu_s_per_request"] > 0
    assert "open loop (latency from each request's scheduled time):" in proc.stdout
    # every request's recorded scheduled time precedes its start, and its latency counts from it
    (requests,) = json.loads((tmp_path / "t.json").read_text())["configurations"].values()
    assert len(requests) == loop["requests"]
    for r in requests:
        assert r["scheduledMs"] <= r["startMs"] < r["endMs"] and r["scheduleLagMs"] >= 0
        assert r["latencyMs"] == pytest.approx(r["endMs"] - r["scheduledMs"], abs=1e-3)


@pytest.mark.parametrize(
    "args, message",
    [
        (("--arrival", "poisson"), "--arrival poisson needs --rate (requests per second)"),
        (("--arrival", "burst", "--rate", "5"), "unknown --arrival 'burst'; choose from: poisson, constant"),
        (("--arrival", "poisson", "--rate", "0"), "--rate must be above 0 requests/s, got 0"),
    ],
)
def test_bad_open_loop_input_is_one_clear_line(tiny_bundle, tmp_path, args, message):
    out = tmp_path / "r.json"
    proc = run_cli("bit_trt.bench.cli", tiny_bundle, *QUICK, *args, "--json", out)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == f"bit-bench: error: {message}"
    assert not out.exists()
