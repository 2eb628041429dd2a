"""bit-bench's `ray` backend against the Ray Serve application on the three-node cluster: the same requests
in-process and through Ray Serve's HTTP proxy, measured in one run (bench/ray_client.py)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_replica(cluster, bundle):
    from bit_trt.scale.serve_cli import deploy
    from bit_trt.scale.serve_options import RayServeOptions

    url = deploy(RayServeOptions(bundle=bundle, backend="ort-cpu", min_replicas=1, max_replicas=1), 180)
    return url


def test_the_application_is_measured_beside_the_in_process_classifier(one_replica, bundle, tmp_path):
    from bit_trt.bench.cli import main

    out = tmp_path / "r.json"
    args = [bundle, "--backend", "ort-cpu,ray", "--ray-url", one_replica, "--concurrency", "1,2"]
    args += ["--percentiles", "50,90", "--iterations", "10", "--warmup", "0", "--max-windows", "3"]
    assert main([*args, "--no-roofline", "--json", str(out), "--quiet"]) == 0
    result = json.loads(out.read_text())
    rows = {row["id"]: row for row in result["rows"]}
    assert set(rows) == {f"{b}/fp32/b1/c{c}" for b in ("ort-cpu", "ray") for c in (1, 2)}
    assert all(row["status"] == "measured" and row["requests"] >= 10 for row in rows.values())
    served = rows["ray/fp32/b1/c2"]
    # what runs is the replicas' own word (/v1/ready): ONNX Runtime in fp32
    assert served["described"].startswith(f"Ray Serve at {one_replica}: ort-cpu") and served["compute"] == "fp32"
    assert served["flavour"] is None and served["vs_baseline"]["baseline"] == "ort-cpu/fp32/b1/c2"
    # the replica runs the same ONNX on the same ONNX Runtime: its answers agree with TF exactly as in-process
    local = rows["ort-cpu/fp32/b1/c2"]["accuracy"]
    assert served["accuracy"]["top1_agreement"] == local["top1_agreement"]
    assert served["accuracy"]["rel_l2"] == pytest.approx(local["rel_l2"], abs=1e-6)
    assert result["settings"]["ray_url"] == one_replica


def test_end_to_end_requests_go_to_the_classify_endpoint(one_replica, bundle, tmp_path):
    from bit_trt.bench.cli import main

    out = tmp_path / "e.json"
    args = [bundle, "--backend", "ray", "--ray-url", one_replica, "--mode", "end-to-end", "--percentiles", "50,90"]
    args += ["--iterations", "10", "--warmup", "0", "--max-windows", "3", "--no-roofline", "--json", str(out)]
    assert main([*args, "--quiet"]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    assert row["status"] == "measured" and row["mode"] == "end-to-end" and row["requests"] >= 10


def test_loadgen_drives_the_application_in_both_modes(one_replica, bundle, tmp_path):
    """--scenario through Ray Serve: LoadGen's verdict and logs for the performance mode, and for the accuracy mode
    agreement figures on exactly LoadGen's samples, each naming its reference."""
    from bit_trt.bench.cli import main

    quick = ["--backend", "ray", "--ray-url", one_replica, "--scenario", "singlestream", "--samples", "16"]
    quick += ["--min-duration", "0.2", "--min-query-count", "8", "--warmup", "0", "--no-roofline", "--quiet"]
    out = tmp_path / "lg.json"
    assert main([bundle, *quick, "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    lg = row["loadgen"]
    assert row["status"] == "measured" and lg["scenario"] == "SingleStream" and lg["result"] in ("VALID", "INVALID")
    assert lg["queries"] >= 8 and lg["verdict"][0] == f"Result is : {lg['result']}"
    assert (tmp_path / "lg.loadgen" / "ray_fp32_b1_c1" / "mlperf_log_summary.txt").exists()
    out = tmp_path / "acc.json"
    assert main([bundle, *quick, "--loadgen-mode", "accuracy", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())["rows"]
    figures = row["loadgen"]["accuracy"]
    assert figures and sum(f["samples"] for f in figures) == 16 and all(f["reference"] for f in figures)
