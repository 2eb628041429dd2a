"""Bulk classification on Ray Data across the nodes: the serial answers exactly, resumable, and whole after a
node is killed mid-job. Every loop is bounded in count and time."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from tests.scale.cluster.conftest import wait_until

pytestmark = pytest.mark.slow


def _job(bundle, image_dir, shard_size):
    from bit_trt.scale import bulk

    paths = bulk.collect_inputs([str(image_dir)])
    return bulk.plan_job(bundle, paths, "ort-cpu", "fp32", 5, True, shard_size), paths


def _run(job, paths, out, **kw):
    from bit_trt.scale import bulk

    return bulk.run(
        job,
        paths,
        str(out),
        workers=2,
        cpus_per_worker=1,
        gpus_per_worker=0,
        threads=1,
        max_image_pixels=1 << 28,
        max_decode_mb=256,
        **kw,
    )


def _assert_serial(out, serial):
    """One row per image, no duplicate, no missing; each row the in-process answer (or its error)."""
    from bit_trt.engine.compare import softmax
    from bit_trt.scale.bulk import read_results

    table = read_results(str(out)).to_pylist()
    assert sorted(r["path"] for r in table) == sorted(serial)
    assert len(table) == len(serial)
    for row in table:
        logits, error = serial[row["path"]]
        assert row["error"] == error
        if error is None:
            np.testing.assert_allclose(row["logits"], logits, rtol=1e-5, atol=1e-5)
            assert row["top_index"] == np.argsort(-softmax(logits[None])[0], kind="stable")[:5].tolist()
        else:
            assert row["logits"] is None and row["top_index"] == []


def test_bulk_on_two_nodes_equals_the_serial_answers_and_resumes(cluster, bundle, image_dir, serial, tmp_path):
    from bit_trt.scale.bulk import SHARD

    job, paths = _job(bundle, image_dir, shard_size=16)
    out = tmp_path / "results.parquet"
    summary = _run(job, paths, out)
    assert summary["images"] == len(serial) == 203 and summary["errors"] == 3
    assert len(summary["nodes"]) == 2, summary
    _assert_serial(out, serial)
    # A rerun does nothing; one shard lost is the one shard redone.
    assert _run(job, paths, out)["written"] == 0
    os.unlink(out / SHARD.format(5))
    again = _run(job, paths, out)
    assert (again["written"], again["skipped"]) == (1, summary["shards"] - 1)
    _assert_serial(out, serial)


def test_bulk_survives_a_node_killed_mid_job(cluster, bundle, image_dir, serial, tmp_path, record_property):
    import ray

    from bit_trt.scale.bulk import SHARD

    job, paths = _job(bundle, image_dir, shard_size=4)
    out = tmp_path / "killed.parquet"
    result, failure = {}, []

    def job_thread():
        try:
            result.update(_run(job, paths, out))
        except Exception as exc:  # reported by the assertion below
            failure.append(exc)

    thread = threading.Thread(target=job_thread, daemon=True)
    thread.start()
    total = -(-len(paths) // 4)

    def written():
        return sum(os.path.isfile(out / SHARD.format(i)) for i in range(total))

    assert wait_until(lambda: written() >= 2, 120), "the job started writing shards"

    def worker_on_a_worker_node():
        return sorted(set(cluster.actor_nodes("ShardWorker")) - {cluster.head_id})

    victims = wait_until(worker_on_a_worker_node, 30)
    assert victims, "a ShardWorker on a worker node"
    at_kill = written()
    started = time.monotonic()
    cluster.kill(victims[0])
    thread.join(timeout=240)
    assert not thread.is_alive(), "the job finished within 240 s of the kill"
    assert not failure, failure
    record_property(
        "bulk_kill",
        {
            "shards": total,
            "written_before_kill": at_kill,
            "finished_s_after_kill": round(time.monotonic() - started, 1),
        },
    )
    assert at_kill < total, "the node was killed mid-job"
    _assert_serial(out, serial)
    assert victims[0] not in {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    cluster.add_worker()


def test_a_bundle_that_differs_on_the_nodes_fails_the_job_in_one_line(cluster, bundle, image_dir, tmp_path):
    import dataclasses

    from bit_trt.engine.errors import BitError

    job, paths = _job(bundle, image_dir, shard_size=64)
    foreign = dataclasses.replace(job, bundle_sha256="0" * 64)
    with pytest.raises(BitError) as failed:
        _run(foreign, paths, tmp_path / "never.parquet")
    assert str(failed.value).startswith("the job failed: bundle ")
    assert "differs from the deployed one" in str(failed.value) and "\n" not in str(failed.value)
    assert not list((tmp_path / "never.parquet").glob("part-*"))
