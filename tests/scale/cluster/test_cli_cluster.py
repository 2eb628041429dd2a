"""The two verbs as users run them against the cluster: bit-classify --ray and bit-serve --ray --detach."""

from __future__ import annotations

import pytest

from tests.conftest import run_cli
from tests.scale.cluster.conftest import get_json

pytestmark = pytest.mark.slow


def test_bit_classify_on_the_cluster_writes_one_row_per_image(cluster, bundle, image_dir, serial, tmp_path):
    from bit_trt.scale.bulk import read_results

    out = tmp_path / "cli.parquet"
    args = (bundle, image_dir, "--ray", cluster.cluster.address, "--out", out, "--backend", "ort-cpu")
    done = run_cli("bit_trt.engine.classify_cli", *args, "--shard-size", "50", "--workers", "2")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "203 image(s) in 5 new shard(s) (0 already done) on 2 node(s), 3 unreadable image(s)" in done.stdout
    assert "bit-classify --ray: 5/5 shards (100%)" in done.stderr
    rows = read_results(str(out)).to_pylist()
    assert sorted(r["path"] for r in rows) == sorted(serial) and "logits" not in rows[0]
    again = run_cli("bit_trt.engine.classify_cli", *args, "--shard-size", "50", "--workers", "2")
    assert "0 image(s) in 0 new shard(s) (5 already done)" in again.stdout


def test_bit_serve_deploys_onto_the_cluster_and_detaches(cluster, bundle):
    done = run_cli(
        "bit_trt.serve.serve_cli",
        bundle,
        "--ray",
        cluster.cluster.address,
        "--backend",
        "ort-cpu",
        "--detach",
        "--max-replicas-per-node",
        "1",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.startswith(
        "bit-serve --ray: ready: application 'bit', 1-1 replica(s); POST http://127.0.0.1:8000"
    )
    status, ready = get_json("/v1/ready")
    assert status == 200 and ready["backend"].startswith("ort-cpu")
