"""The Ray Serve application on three nodes: parity with the in-process Classifier, errors per request, a node
killed under load, and autoscaling up and down. Every loop is bounded in count and time."""

from __future__ import annotations

import io
import json
import time

import numpy as np
import pytest

from tests.scale.cluster.conftest import Load, get_json, post, wait_until

pytestmark = pytest.mark.slow
REPLICA_CLASS = "BitClassifier"


def _options(bundle, **fields):
    from bit_trt.scale.serve_options import RayServeOptions

    return RayServeOptions(bundle=bundle, backend="ort-cpu", **fields)


def _replica_nodes() -> list[str]:
    from tests.scale.cluster.conftest import RayCluster

    return RayCluster.actor_nodes(REPLICA_CLASS)


def _running_replicas() -> int:
    from ray import serve

    app = serve.status().applications.get("bit")
    if app is None or REPLICA_CLASS not in app.deployments:
        return 0
    return int(app.deployments[REPLICA_CLASS].replica_states.get("RUNNING", 0))


@pytest.fixture(scope="module")
def two_replicas(cluster, bundle):
    from bit_trt.scale.serve_cli import deploy

    deploy(_options(bundle, min_replicas=2, max_replicas=2, max_replicas_per_node=1, max_batch=4), 180)
    assert wait_until(lambda: len(set(_replica_nodes())) == 2, 60), "two replicas on two nodes"
    return cluster


def _classes(answer: bytes) -> list[tuple[int, float]]:
    return [(int(c.split(":")[1]), float(c.split(":")[0])) for c in json.loads(answer)["classes"]]


def test_replicas_on_two_nodes_answer_like_the_in_process_classifier(two_replicas, bundle, serial):
    from bit_trt.engine.compare import softmax

    paths = sorted(p for p, (logits, _) in serial.items() if logits is not None)[:24]
    bodies = [open(p, "rb").read() for p in paths]
    answers: dict[int, set] = {}
    with Load(bodies, clients=6, max_requests=12, max_seconds=120) as load:
        pass
    # Six clients at once keep both replicas busy (Ray Serve prefers the proxy's node while it has room).
    for _, _, status, answer in load.records:
        assert status == 200, answer
    served_by = {json.loads(answer)["replica"] for *_, answer in load.records}
    assert len(served_by) == 2, f"answers came from {len(served_by)} replica node(s)"
    for i, body in enumerate(bodies):
        status, answer = post("/v1/classify?logits=1", body)
        assert status == 200
        expected_logits = serial[paths[i]][0]
        got = json.loads(answer)
        np.testing.assert_allclose(got["logits"], expected_logits, rtol=1e-5, atol=1e-5)
        expected = np.argsort(-softmax(expected_logits[None])[0], kind="stable")[:5]
        assert [j for j, _ in _classes(answer)] == expected.tolist()
        answers.setdefault(i, set()).add(got["replica"])
    # The float endpoint: a batch of preprocessed images -> the in-process logits, an image outside [0, 1] -> NaN.
    from bit_trt.engine.classifier import Classifier

    with Classifier(bundle, backend="ort-cpu") as clf:
        r = clf.spec.resolution
        batch = np.random.default_rng(3).random((5, r, r, 3), dtype=np.float32)
        batch[2, 0, 0, 0] = 7.0
        buf = io.BytesIO()
        np.save(buf, batch)
        status, answer = post("/v1/infer", buf.getvalue())
        assert status == 200
        logits = np.load(io.BytesIO(answer))
        valid = [0, 1, 3, 4]
        np.testing.assert_allclose(logits[valid], clf.infer(batch[valid]), rtol=1e-5, atol=1e-5)
        assert np.isnan(logits[2]).all()


def test_a_corrupt_image_fails_only_its_own_request(two_replicas, serial):
    good = [open(p, "rb").read() for p, (logits, _) in sorted(serial.items()) if logits is not None][:8]
    bodies = good[:4] + [b"this is not an image at all"] + good[4:]
    with Load(bodies, clients=3, max_requests=9, max_seconds=120) as load:
        pass
    bad = [r for r in load.records if r[2] != 200]
    assert len(load.records) == 27
    assert all(status == 400 for _, _, status, _ in bad) and bad, bad
    for *_, answer in bad:
        assert json.loads(answer)["error"] == (
            "the request's image: not a decodable image (corrupt, truncated, or not an image format)"
        )
    assert len(bad) == sum(1 for i in range(3) for n in range(9) if (i * 7 + n) % len(bodies) == 4)
    status, answer = post("/v1/infer", b"\x93NUMPY garbage")
    assert status == 400 and "not a .npy array" in json.loads(answer)["error"]


def test_a_worker_node_killed_under_load(two_replicas, serial, record_property):
    """Requests in flight on the lost node may fail (Ray Serve's proxy answers them 500); every other one is
    served, and the application has two running replicas again within the stated time."""
    nodes = [n for n in _replica_nodes() if n != two_replicas.head_id]
    assert nodes, "a replica on a worker node"
    victim = nodes[0]
    bodies = [open(p, "rb").read() for p, (logits, _) in sorted(serial.items()) if logits is not None][:16]
    clients = 4
    with Load(bodies, clients=clients, max_requests=400, max_seconds=60) as load:
        assert wait_until(lambda: len(load.records) >= 20, 30), "load running before the kill"
        killed_at = time.monotonic()
        two_replicas.kill(victim)
        # SIGKILL is sent at once; the node counts as lost from when the GCS marks it dead. Until then a request
        # may still reach (and be accepted by) its replica, which is then in flight on the dying node.
        assert wait_until(lambda: victim not in two_replicas.alive_node_ids(), 60, interval=0.05)
        dead_at = time.monotonic()
        # Served again: a request that starts after the kill and succeeds.
        assert wait_until(lambda: any(r[0] > killed_at and r[2] == 200 for r in load.records), 30)
        time.sleep(5)
        load.stop.set()
    recovered = wait_until(lambda: _running_replicas() == 2 and victim not in _replica_nodes(), 90)
    recovery_s = time.monotonic() - killed_at
    failed = [r for r in load.records if r[2] != 200]
    served = [r for r in load.records if r[2] == 200]
    in_flight_at_kill = [r for r in load.records if r[0] <= killed_at < r[1]]
    before_detection = [r for r in load.records if killed_at < r[0] <= dead_at]
    summary = {
        "requests": len(load.records),
        "served": len(served),
        "failed": len(failed),
        "in_flight_at_kill": len(in_flight_at_kill),
        "started_before_death_detected": len(before_detection),
        "death_detected_s": round(dead_at - killed_at, 2),
        "failed_after_kill_started": sum(1 for r in failed if r[0] > killed_at),
        "replicas_back_s": round(recovery_s, 1),
        "errors": sorted({r[3].decode(errors="replace")[:160] for r in failed}),
    }
    record_property("node_kill", summary)
    print("node kill under load:", json.dumps(summary))
    assert recovered, f"two replicas again within 90 s: {summary}"
    # Only requests in flight while the node went down may fail; Ray Serve's proxy answers them 500.
    assert all(r[0] <= dead_at and r[1] >= killed_at for r in failed), summary
    assert len(failed) <= clients
    assert all(r[2] == 500 and r[3] for r in failed), summary
    two_replicas.add_worker()


def test_autoscaling_takes_a_burst_from_one_replica_to_two_and_back(cluster, bundle, serial):
    from bit_trt.scale.serve_cli import deploy

    deploy(
        _options(
            bundle,
            min_replicas=1,
            max_replicas=2,
            target_ongoing_requests=1,
            upscale_delay_s=0.5,
            downscale_delay_s=2,
            look_back_period_s=2,
            max_batch=1,
            max_replicas_per_node=1,
        ),
        180,
    )
    assert wait_until(lambda: _running_replicas() == 1, 60)
    bodies = [open(p, "rb").read() for p, (logits, _) in sorted(serial.items()) if logits is not None][:16]
    with Load(bodies, clients=6, max_requests=2000, max_seconds=90) as load:
        up = wait_until(lambda: _running_replicas() >= 2, 80)
        load.stop.set()
    assert up, "the burst scaled the application to two replicas"
    assert all(r[2] == 200 for r in load.records)
    assert wait_until(lambda: _running_replicas() == 1, 90), "back to one replica after the burst"
    status, ready = get_json("/v1/ready")
    assert status == 200 and ready["ready"]


def test_a_bundle_that_differs_on_the_nodes_is_refused_in_one_line(cluster, bundle):
    """Every replica compares the bundle on its node with the deployed manifest: none serves, and the application
    reports the replicas' own reason."""
    from bit_trt.engine.errors import BitError
    from bit_trt.scale.serve_cli import deploy

    with pytest.raises(BitError) as refused:
        deploy(_options(bundle, expected_sha256="0" * 64), 180)
    message = str(refused.value)
    assert message.startswith("the application failed to start: bundle ")
    assert "differs from the deployed one" in message and "\n" not in message
    status, _ = get_json("/v1/ready")
    assert status != 200
