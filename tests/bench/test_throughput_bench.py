"""bit-bench --throughput on a real tiny bundle: concurrency levels set up for throughput, the best configuration,
and OpenVINO's own benchmark_app run beside it on the same files. No timing asserts: what ran, and how it is named."""

import json
import os
import re
import statistics

import pytest

from bit_trt.bench import openvino_peer
from bit_trt.bench.bit_bench import PEER_ROUNDS, peer_requests, peer_row
from bit_trt.bench.configurations import throughput_levels
from bit_trt.engine.errors import BitError
from tests.conftest import run_cli


@pytest.fixture(scope="module")
def result(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("tput") / "r.json"
    args = [tiny_bundle, "--backend", "openvino,ort-cpu", "--precision", "fp32,fp16", "--threads", "2"]
    args += ["--throughput", "--warmup", "0.05", "--duration", "0.3", "--max-windows", "3", "--no-roofline"]
    proc = run_cli("bit_trt.bench.cli", *args, "--json", out)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(out.read_text())


def test_levels_reach_twice_the_cores():
    assert throughput_levels((1,), 2) == (1, 2, 4)
    assert throughput_levels((1, 3), 16) == (1, 3, 16, 32)
    assert throughput_levels((1,), 1) == (1, 2, 4)  # one core still gets concurrent requests to compare


def test_each_level_above_one_runs_with_throughput_settings(result):
    _, r = result
    rows = [row for row in r["rows"] if row["status"] == "measured"]
    assert sorted({row["concurrency"] for row in rows}) == [1, 2, 4] and r["settings"]["throughput"] is True
    for row in rows:
        if row["backend"] == "openvino":
            assert ("(throughput, " in row["described"]) == (row["concurrency"] > 1), row["described"]
        else:
            assert ("streams x" in row["described"]) == (row["concurrency"] > 1), row["described"]
        assert row["compute"] in ("f32", "bf16") if row["backend"] == "openvino" else row["compute"] == row["precision"]


def test_the_best_configuration_is_the_fastest_row(result):
    _, r = result
    rows = [row for row in r["rows"] if row["status"] == "measured"]
    best = r["best_throughput"]
    assert best["throughput_ips"] == max(row["throughput_ips"] for row in rows)
    per = best["per_backend_precision"]
    assert set(per) == {"openvino/fp32", "openvino/fp16", "ort-cpu/fp32", "ort-cpu/fp16"}
    for key, pick in per.items():
        assert pick["throughput_ips"] == max(
            row["throughput_ips"] for row in rows if f"{row['backend']}/{row['precision']}" == key
        )


def test_benchmark_app_runs_beside_on_the_same_files(result, tiny_bundle):
    proc, r = result
    peers = r["throughput_peers"]
    assert {(p["flavour"], p["batch"]) for p in peers} == {("fp32", 1), ("fp16", 1)}
    for peer in peers:
        assert "error" not in peer, peer
        assert peer["throughput_ips"] > 0 and peer["requests"] >= 1 and peer["iterations"] > 0
        assert f"-m {os.path.join(str(tiny_bundle), 'model.' + peer['flavour'] + '.onnx')}" in peer["command"]
        assert "-hint throughput" in peer["command"]
        assert f"-infer_precision {peer['inference_precision']}" in peer["command"]
        ours = [row for row in r["rows"] if row["id"] == peer["ours_best"]][0]
        assert ours["backend"] == "openvino" and ours["flavour"] == peer["flavour"]
        # interleaved: PEER_ROUNDS rounds of a window of our best configuration and a benchmark_app run, each side
        # first in half of them, alternating
        rounds = peer["rounds"]
        assert len(rounds) == PEER_ROUNDS and all(r["ours_ips"] > 0 and r["peer_ips"] > 0 for r in rounds)
        assert [r["first"] for r in rounds] == ["ours", "peer"] * (PEER_ROUNDS // 2)
        assert peer["throughput_ips"] == statistics.median(r["peer_ips"] for r in rounds)
        assert peer["ours_throughput_ips"] == round(statistics.median(r["ours_ips"] for r in rounds), 3)
        ratios = [r["ours_over_peer"] for r in rounds]
        assert ratios == [round(r["ours_ips"] / r["peer_ips"], 3) for r in rounds]
        assert peer["ours_over_peer"] == round(statistics.median(ratios), 3)
        assert peer["ours_over_peer_range"] == [min(ratios), max(ratios)]
        assert peer["ours_row_throughput_ips"] == ours["throughput_ips"]
        # our turn: the same number of requests on every thread, about the minimum windows' time at the row's speed
        seconds = r["settings"]["duration_s"] * r["settings"]["min_windows"]
        wanted = peer_requests(ours["throughput_ips"], ours["batch"], ours["concurrency"], seconds)
        assert all(turn["ours_requests"] == wanted for turn in rounds) and wanted % ours["concurrency"] == 0
    assert "best throughput: " in proc.stdout and "benchmark_app -hint throughput on fp32 b1" in proc.stdout
    assert re.search(r"x \(rounds [0-9.]+-[0-9.]+\)", proc.stdout), proc.stdout


def test_benchmark_app_stands_beside_our_fastest_row_on_throughput_settings():
    """benchmark_app -hint throughput is compared with our THROUGHPUT-hint rows, even where a latency row (one request
    on every core) measured faster: the R50x1 reference run's int8 batch 1 at concurrency 1 (12.97 img/s) ran its
    peer turns at 9.1-12.4 on a VM with two speeds for such requests. Without throughput rows, the fastest there is."""
    rows = [
        {"id": "openvino/int8/b1/c1", "concurrency": 1, "throughput_ips": 12.97},
        {"id": "openvino/int8/b1/c2", "concurrency": 2, "throughput_ips": 12.40},
        {"id": "openvino/int8/b1/c4", "concurrency": 4, "throughput_ips": 12.51},
    ]
    assert peer_row(rows)["id"] == "openvino/int8/b1/c4"
    assert peer_row(rows[:1])["id"] == "openvino/int8/b1/c1"


def test_a_report_without_a_throughput_line_is_one_line():
    with pytest.raises(BitError, match=r"^benchmark_app reported no throughput: \[ ERROR \] model not found$"):
        openvino_peer.parse("[Step 1/11] Parsing\n[ ERROR ] model not found\n")


def test_the_result_records_the_cpu_flags_that_decide_the_kernels(result):
    from bit_trt.engine.cpu_host import idle_record, this_host

    assert result[1]["host"]["cpu_idle"] == idle_record()
    detail = result[1]["host"]["cpu_detail"]
    assert detail["kernel_flags"] == this_host().kernel_flags() and detail["bf16"] == this_host().bf16
    assert detail["int8_dot"] == this_host().int8_dot and detail["mhz_source"] == this_host().mhz_source


def test_static_shapes_reach_the_openvino_rows_only(tiny_bundle):
    """`bit-bench --static-shapes N` measures openvino with that bound; the other backends' rows run as before
    (the setting is openvino's alone), and the result's settings record it."""
    from bit_trt.bench.bit_bench import _classifier, _settings
    from bit_trt.bench.cli import build_parser, options_from_args
    from bit_trt.bench.configurations import Configuration
    from bit_trt.engine.bundle import load_bundle

    argv = [str(tiny_bundle), "--backend", "openvino,ort-cpu", "--static-shapes", "0"]
    options = options_from_args(build_parser().parse_args(argv), argv)
    assert options.static_shapes == 0 and _settings(options)["static_shapes"] == 0
    bundle = load_bundle(str(tiny_bundle))
    with _classifier(bundle, Configuration("openvino", "fp32", 1, 1, "model"), options) as clf:
        assert clf.runner.static_shapes == 0
    with _classifier(bundle, Configuration("ort-cpu", "fp32", 1, 1, "model"), options) as clf:
        assert clf.runner.name == "ort-cpu"


def test_with_several_bundles_each_benchmark_app_line_names_its_model():
    """bit-bench R50X1 R50X3 --throughput runs benchmark_app on each bundle's files: its lines must say whose file
    ran, since both models have a model.fp32.onnx at batch 1. One bundle keeps the short line."""
    from bit_trt.bench.report import _throughput_lines

    peer = {
        "tool": "benchmark_app -hint throughput",
        "flavour": "fp32",
        "batch": 1,
        "inference_precision": "f32",
        "throughput_ips": 6.0,
        "requests": 2,
        "ours_throughput_ips": 6.6,
        "ours_over_peer": 1.1,
    }
    best = {"id": "r50x1/openvino/fp32/b1/c2", "throughput_ips": 6.6, "described": "openvino"}
    two = {
        "bundles": {"r50x1": {}, "r50x3": {}},
        "best_throughput": best,
        "throughput_peers": [
            {**peer, "model": "r50x1", "ours_best": "r50x1/openvino/fp32/b1/c2"},
            {**peer, "model": "r50x3", "ours_best": "r50x3/openvino/fp32/b1/c2"},
        ],
    }
    lines = _throughput_lines(two)
    assert [line.split(":")[0].strip() for line in lines[2:]] == [
        "benchmark_app -hint throughput on r50x1's fp32 b1 (f32)",
        "benchmark_app -hint throughput on r50x3's fp32 b1 (f32)",
    ]
    one = {"bundle": {}, "best_throughput": best, "throughput_peers": [{**peer, "ours_best": best["id"]}]}
    assert _throughput_lines(one)[2].startswith("  benchmark_app -hint throughput on fp32 b1 (f32): 6.00 img/s")
