"""bit-bench's `triton` backend against a real bit-serve: the same requests, in-process and through the server,
measured in one run (bench/triton_client.py)."""

import json

import pytest

from tests.conftest import run_cli
from tests.serve.conftest import free_port

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")


def bit_bench(out, *args):
    proc = run_cli(
        "bit_trt.bench.cli",
        *map(str, args),
        "--percentiles",
        "50,90",
        "--iterations",
        "10",
        "--warmup",
        "0",
        "--max-windows",
        "3",
        "--no-roofline",
        "--json",
        str(out),
        "--quiet",
    )
    return proc, (json.loads(out.read_text()) if out.exists() else None)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_server_is_measured_beside_the_in_process_classifier(bit_serve, tiny_bundle, tmp_path, protocol):
    url = f"{protocol}://{bit_serve.grpc_url if protocol == 'grpc' else bit_serve.http_url}"
    proc, result = bit_bench(
        tmp_path / "r.json",
        tiny_bundle,
        "--backend",
        "ort-cpu,triton",
        "--triton-url",
        url,
        "--concurrency",
        "1,4",
        "--mode",
        "end-to-end" if protocol == "http" else "model",  # http: encoded images through bit_tiny_image
    )
    assert proc.returncode == 0, proc.stderr
    rows = {row["id"]: row for row in result["rows"]}
    assert set(rows) == {f"{b}/fp32/b1/c{c}" for b in ("ort-cpu", "triton") for c in (1, 4)}
    assert all(row["status"] == "measured" and row["requests"] >= 10 for row in rows.values())
    served = rows["triton/fp32/b1/c4"]
    assert served["described"].startswith("Triton ") and "model bit_tiny" in served["described"]
    # the server runs the same ONNX on the same ONNX Runtime: its answers agree with TF exactly as in-process
    local = rows["ort-cpu/fp32/b1/c4"]["accuracy"]
    assert served["accuracy"]["top1_agreement"] == local["top1_agreement"]
    assert served["accuracy"]["rel_l2"] == pytest.approx(local["rel_l2"], abs=1e-6)
    assert served["vs_baseline"]["baseline"] == "ort-cpu/fp32/b1/c4"
    assert result["settings"]["triton_url"] == url


def test_a_server_that_is_not_there_is_reported_not_measured(tiny_bundle, tmp_path):
    closed = free_port()
    proc, _ = bit_bench(tmp_path / "r.json", tiny_bundle, "--backend", "triton", "--triton-url", f"127.0.0.1:{closed}")
    assert proc.returncode == 2
    assert f"127.0.0.1:{closed}" in proc.stderr and "nothing could be measured" in proc.stderr
    proc, _ = bit_bench(tmp_path / "r.json", tiny_bundle, "--backend", "triton")
    assert proc.returncode == 2 and "--backend triton needs --triton-url" in proc.stderr


def test_loadgen_and_the_open_loop_drive_the_server_and_count_its_cpu(bit_serve, tiny_bundle, tmp_path):
    """--scenario and --arrival through the triton client; the server's CPU is bit-serve's whole tree (its Python
    process runs the model, tritonserver is its child), found by the port."""
    pytest.importorskip("mlperf_loadgen")
    url = f"grpc://{bit_serve.grpc_url}"

    def row_of(name: str, *flags) -> dict:
        out = tmp_path / f"{name}.json"
        proc = run_cli(
            "bit_trt.bench.cli", tiny_bundle, "--backend", "triton", "--triton-url", url, *flags,
            "--no-roofline", "--quiet", "--json", out,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return json.loads(out.read_text())["rows"][0]

    row = row_of(
        "lg", "--scenario", "server", "--target-qps", "20", "--latency-bound-ms", "5000",
        "--min-duration", "0.3", "--min-query-count", "8", "--samples", "8",
    )  # fmt: skip
    assert row["status"] == "measured" and row["loadgen"]["scenario"] == "Server"
    assert row["loadgen"]["result"] in ("VALID", "INVALID") and row["loadgen"]["queries"] >= 8
    assert (tmp_path / "lg.loadgen" / "triton_fp32_b1_c1" / "mlperf_log_summary.txt").exists()
    assert row["cpu"]["server_pids"] == [bit_serve.proc.pid] and row["cpu"]["server_cpu_s"] > 0
    # MultiStream: each query's 8 samples go to the server as requests of --batch samples
    row = row_of(
        "ms", "--scenario", "multistream", "--batch", "4", "--min-duration", "0.2", "--min-query-count", "4",
        "--samples", "8",
    )  # fmt: skip
    assert row["loadgen"]["scenario"] == "MultiStream" and row["loadgen"]["queries"] >= 4
    assert row["loadgen"]["result"] in ("VALID", "INVALID") and row["loadgen"]["metric"]["value"] > 0
    assert row["cpu"]["requests"] >= 2 * row["loadgen"]["queries"]  # two requests of 4 per query of 8
    row = row_of(
        "ol", "--arrival", "poisson", "--rate", "50", "--iterations", "20", "--percentiles", "50,90", "--warmup", "0"
    )
    assert row["open_loop"]["requests"] + row["open_loop"]["not_sent"] == 20
    assert row["open_loop"]["schedule_lag_ms"]["min"] >= 0
    assert row["cpu"]["server_pids"] == [bit_serve.proc.pid]
