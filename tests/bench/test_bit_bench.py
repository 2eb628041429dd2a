"""bit-bench on a real tiny bundle: real ONNX Runtime and OpenVINO, real threads, real files; no timing asserts."""

import csv
import json
import shutil

import pytest

from tests.conftest import run_cli

QUICK = ("--warmup", "0.05", "--percentiles", "50,90", "--no-roofline")
FAST = (*QUICK, "--iterations", "12")


@pytest.fixture(scope="module")
def bench(tiny_full_bundle, tmp_path_factory):
    """One run over two backends x two precisions x two batches x two concurrencies, with every output."""
    out = tmp_path_factory.mktemp("bench")
    args = [tiny_full_bundle, "--backend", "ort-cpu,openvino,trt", "--precision", "fp32,int8", "--batch", "1,2"]
    args += ["--concurrency", "1,2", "--baseline", "ort-cpu/fp32", *FAST]
    args += [
        "--json",
        out / "r.json",
        "--csv",
        out / "r.csv",
        "--export-times",
        out / "t.json",
        "--plot",
        out / "plots",
    ]
    proc = run_cli("bit_trt.bench.cli", *args)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads((out / "r.json").read_text()), out


def test_every_combination_is_measured_or_skipped_with_a_reason(bench):
    proc, result, _ = bench
    assert result["schema"] == "bit-bench/2" and result["command"].startswith("bit-bench ")
    rows = {r["id"]: r for r in result["rows"]}
    assert len(rows) == 3 * 2 * 2 * 2
    for backend in ("ort-cpu", "openvino"):
        for precision in ("fp32", "int8"):
            row = rows[f"{backend}/{precision}/b2/c2"]
            assert row["status"] == "measured" and row["requests"] >= 12
            assert row["flavour"] == {"fp32": "fp32", "int8": "int8-ort"}[precision]  # the graph it loaded
            lat = row["latency_ms"]
            assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["max"] and row["throughput_ips"] > 0
    trt = rows["trt/fp32/b1/c1"]
    assert trt["status"] == "skipped" and trt["skip_reason"] and trt["flavour"] is None
    assert "trt/fp32,int8: skipped:" in proc.stdout


def test_accuracy_sits_beside_speed(bench):
    _, result, _ = bench
    for row in result["rows"]:
        if row["status"] == "measured":
            acc = row["accuracy"]
            assert 0 <= acc["rel_l2"] and acc["top1_agreement"] <= 1 and acc["samples"] >= 2
            assert (acc["gate"] in ("pass", "fail")) == (row["precision"] == "int8")
    fp32 = next(r for r in result["rows"] if r["id"] == "ort-cpu/fp32/b1/c1")
    assert fp32["accuracy"]["rel_l2"] < 1e-4  # ORT FP32 is the graph TF was checked against


def test_ratios_are_to_the_baseline_at_the_same_batch_and_concurrency(bench):
    _, result, _ = bench
    rows = {r["id"]: r for r in result["rows"]}
    assert rows["ort-cpu/fp32/b2/c2"]["vs_baseline"] == {
        "baseline": "ort-cpu/fp32/b2/c2",
        "throughput": 1.0,
        "median_latency": 1.0,
    }
    ov = rows["openvino/int8/b1/c2"]
    assert ov["vs_baseline"]["baseline"] == "ort-cpu/fp32/b1/c2"
    assert ov["vs_baseline"]["throughput"] == pytest.approx(
        ov["throughput_ips"] / rows["ort-cpu/fp32/b1/c2"]["throughput_ips"], rel=1e-2
    )


def test_windows_are_interleaved_and_concurrency_is_real(bench):
    _, result, out = bench
    times = json.loads((out / "t.json").read_text())["configurations"]
    measured = [r["id"] for r in result["rows"] if r["status"] == "measured"]
    assert set(times) == set(measured)
    first_start = {c: min(t["startMs"] for t in times[c] if t["window"] == 0) for c in measured}
    second_start = {c: min(t["startMs"] for t in times[c] if t["window"] == 1) for c in measured}
    for group in ("/c1", "/c2"):  # latency settings, then throughput settings: interleaved within each
        ids = [c for c in measured if c.endswith(group)]
        # every configuration's first window ran before any configuration's second window
        assert max(first_start[c] for c in ids) < min(second_start[c] for c in ids)
    # the groups one after the other: the latency models were freed before the throughput models loaded
    last_latency_end = max(t["endMs"] for c in measured if c.endswith("/c1") for t in times[c])
    assert last_latency_end < min(t["startMs"] for c in measured if c.endswith("/c2") for t in times[c])
    two = times["ort-cpu/fp32/b1/c2"]
    assert {t["thread"] for t in two} == {0, 1}
    row = next(r for r in result["rows"] if r["id"] == "ort-cpu/fp32/b1/c2")
    assert len(two) == row["requests"] and all(t["endMs"] > t["startMs"] for t in two)


def test_models_that_fit_at_once_are_one_set(bench):
    _, result, _ = bench
    sets = result["engine_sets"]
    assert [s["throughput"] for s in sets] == [False, True]  # the host holds a group's tiny models at once
    measured = {r["id"] for r in result["rows"] if r["status"] == "measured"}
    assert {c for s in sets for c in s["configurations"]} == measured


def test_models_that_do_not_fit_at_once_are_measured_set_after_set(tiny_bundle, tmp_path):
    """Where a group's models don't fit in memory together (here a budget smaller than any one model; R50x3 with
    every precision on a 24 GB host was killed for memory), each set is measured interleaved, then freed before the
    next loads, and every configuration is still measured."""
    args = ["--backend", "ort-cpu,openvino", "--precision", "fp32,fp16", "--memory-budget", "0.000001", *FAST]
    proc = run_cli(
        "bit_trt.bench.cli", tiny_bundle, *args, "--json", tmp_path / "r.json", "--export-times", tmp_path / "t.json"
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    sets = [s["configurations"] for s in result["engine_sets"]]
    assert sorted(sets) == [[f"{b}/{p}/b1/c1"] for b in ("openvino", "ort-cpu") for p in ("fp16", "fp32")]
    assert all(r["status"] == "measured" for r in result["rows"]) and result["settings"]["memory_budget_gb"] == 1e-6
    times = json.loads((tmp_path / "t.json").read_text())["configurations"]
    spans = [(min(t["startMs"] for t in times[s[0]]), max(t["endMs"] for t in times[s[0]])) for s in sets]
    assert all(a[1] < b[0] for a, b in zip(spans, spans[1:]))  # one set after another, in the order measured
    assert "memory: not every model fit at once" in proc.stdout


def test_a_model_that_leaves_the_host_short_goes_first_in_the_next_set(tiny_bundle, monkeypatch):
    """The rule for models whose footprints differ (R50x3's first reference set reached 23.3 GB of 24): a model that
    leaves the host with less than MEMORY_FLOOR of its memory available is closed and measured in the next set.
    Here the floor is the whole of the host's memory, so every model after a set's first is put back; there is no
    budget, so nothing else splits the sets."""
    from bit_trt.bench import bit_bench, cli

    monkeypatch.setattr(bit_bench, "MEMORY_FLOOR", 1.0)
    argv = [str(tiny_bundle), "--backend", "ort-cpu,openvino", "--precision", "fp32,fp16", *FAST]
    options = cli.options_from_args(cli.build_parser().parse_args(argv), argv)
    result = bit_bench.run(options)[0]
    sets = [s["configurations"] for s in result["engine_sets"]]
    order = [r["id"] for r in result["rows"]]
    assert sets == [[c] for c in order]  # one model a set, in the planned order: each put back went first next
    assert all(r["status"] == "measured" for r in result["rows"])


def test_plots_are_written(bench):
    proc, _, out = bench
    names = sorted(p.name for p in (out / "plots").iterdir())
    assert names == ["latency_cdf.png", "latency_vs_throughput.png", "throughput_vs_batch.png"]
    assert all((out / "plots" / n).read_bytes().startswith(b"\x89PNG") for n in names)
    assert f"wrote {out / 'plots' / 'latency_cdf.png'}" in proc.stdout


def test_csv_has_one_row_per_configuration(bench):
    _, result, out = bench
    lines = (out / "r.csv").read_text().splitlines()
    assert lines[0].startswith("# bit-bench/2 bit-bench ")
    rows = list(csv.DictReader(lines[1:]))
    assert [r["id"] for r in rows] == [r["id"] for r in result["rows"]]
    measured = [r for r in rows if r["status"] == "measured"]
    assert all(float(r["latency_ms.p90"]) > 0 and r["accuracy.rel_l2"] for r in measured)


def test_end_to_end_mode_times_decoding_too(tiny_bundle, tmp_path):
    proc = run_cli(
        "bit_trt.bench.cli",
        tiny_bundle,
        "--backend",
        "ort-cpu",
        "--mode",
        "end-to-end",
        *FAST,
        "--json",
        tmp_path / "r.json",
    )
    assert proc.returncode == 0, proc.stderr
    row = json.loads((tmp_path / "r.json").read_text())["rows"][0]
    assert row["mode"] == "end-to-end" and row["status"] == "measured"


@pytest.mark.parametrize(
    "args, message",
    [
        (("--backend", "ort-cpu,tensorflowlite"), "unknown backend tensorflowlite"),
        (("--precision", "fp8"), "unknown precision fp8"),
        (("--precision", "int8"), "has no int8 model for any backend"),
        (("--iterations", "20", "--percentiles", "50,99"), "too few for p99"),
        (("--batch", "0"), "at least 1"),
        (("--duration", "0"), "--duration must be positive"),
        (("--duration", "0.2", "--iterations", "20"), "not allowed with argument"),
        (("--baseline", "openvino/fp16"), "--baseline 'openvino/fp16' is not among"),
        (("--json", "/nonexistent/dir/r.json"), "does not exist"),
        (("--backend", "tf", "--throughput"), "--throughput: tf has no throughput settings"),
        (("--memory-budget", "0"), "--memory-budget is in GB and must be above 0, got 0.0"),
    ],
)
def test_bad_input_is_one_clear_line(tiny_bundle, args, message):
    """tiny_bundle has fp32 and fp16 only."""
    amount = () if {"--duration", "--iterations"} & set(args) else ("--iterations", "12")
    proc = run_cli("bit_trt.bench.cli", tiny_bundle, "--backend", "ort-cpu", *QUICK, *amount, *args)
    assert proc.returncode == 2, proc.stdout
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_a_damaged_bundle_is_refused(tiny_bundle, tmp_path):
    damaged = tmp_path / "damaged"
    shutil.copytree(tiny_bundle, damaged)
    with open(damaged / "model.fp32.onnx", "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0\0")
    proc = run_cli("bit_trt.bench.cli", damaged, "--backend", "ort-cpu", *FAST)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model.fp32.onnx" in proc.stderr and "checksum" in proc.stderr.lower()


def test_several_bundles_in_one_interleaved_run_each_row_with_its_own_baseline(tiny_bundle, tiny_full_bundle, tmp_path):
    """bit-bench R50X1 R50X3: one run over both bundles, their models measured in the same windows (one engine set
    here), each row naming its bundle, its ratio taken to the baseline on the same bundle, its accuracy that
    bundle's. Two bundles of one variant and resolution are told apart by their place in the command."""
    out = tmp_path / "two.json"
    args = [tiny_bundle, tiny_full_bundle, "--backend", "ort-cpu,openvino", "--precision", "fp32", "--batch", "1"]
    args += ["--concurrency", "1,2"]  # two levels: the latency-throughput plot draws a line per bundle and engine
    proc = run_cli("bit_trt.bench.cli", *args, *FAST, "--json", out, "--plot", tmp_path / "plots")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    names = ["tiny@64#1", "tiny@64#2"]
    assert "bundle" not in result and list(result["bundles"]) == names
    assert [result["bundles"][n]["path"] for n in names] == [str(tiny_bundle), str(tiny_full_bundle)]
    rows = {r["id"]: r for r in result["rows"]}
    expected = {f"{n}/{b}/fp32/b1/c{c}" for n in names for b in ("ort-cpu", "openvino") for c in (1, 2)}
    assert set(rows) == expected and all(r["status"] == "measured" for r in rows.values())
    for row in rows.values():
        assert row["id"].startswith(row["model"] + "/")
        assert row["vs_baseline"]["baseline"] == f"{row['model']}/ort-cpu/fp32/b1/c{row['concurrency']}"
        assert row["accuracy"]["rel_l2"] < 1e-4
    (latency_set,) = [s for s in result["engine_sets"] if not s["throughput"]]
    assert set(latency_set["configurations"]) == {i for i in expected if i.endswith("/c1")}  # the same windows
    plots = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert plots == ["latency_cdf.png", "latency_vs_throughput.png"]  # one batch: no throughput-vs-batch plot
    assert set(result["best_throughput"]["per_backend_precision"]) == {
        f"{n}/{b}/fp32" for n in names for b in ("ort-cpu", "openvino")
    }
    assert all(f"{n}/openvino/fp32/b1/c2" in proc.stdout for n in names)
    assert "x base: throughput over ort-cpu/fp32 on the row's own bundle at the same batch" in proc.stdout
    assert all(f"agreement with TF: {n}/ort-cpu/fp32" in proc.stderr for n in names)


def test_several_bundles_refuse_what_measures_one_model(tiny_bundle, tiny_full_bundle):
    proc = run_cli(
        "bit_trt.bench.cli",
        tiny_bundle,
        tiny_full_bundle,
        "--backend",
        "ort-cpu,triton",
        "--triton-url",
        "grpc://127.0.0.1:9",
        *FAST,
    )
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1
    assert lines[0] == "bit-bench: error: --backend triton measures the one model its server runs: give one bundle"
