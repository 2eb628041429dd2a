"""A real three-node Ray cluster on this host: a head and two workers, each its own raylet and object store.

These tests run only inside the private network namespace that tests/scale/test_ray_cluster.py makes for them
(BIT_TRT_RAY_NETNS=1): Ray's servers listen on every interface of their host and no flag confines them, so the
namespace, which has loopback alone, is what keeps the cluster off the network. tests/scale/conftest.py leaves
this folder out of any other run. Each node gets one CPU and an 80 MB object store (the host has 2 cores, and
/dev/shm is shared); Ray's token authentication is on (RAY_AUTH_MODE=token, the token in a 0600 file).
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time

import cv2
import numpy as np
import pytest

BUNDLE_ENV = "BIT_TRT_RAY_BUNDLE"


def _loopback_up() -> None:
    """A new network namespace's loopback starts down; `ip link set lo up`, without needing iproute2."""
    import fcntl
    import socket
    import struct

    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        flags = struct.unpack("16sH", fcntl.ioctl(s, siocgifflags, struct.pack("16sH", b"lo", 0))[:18])[1]
        fcntl.ioctl(s, siocsifflags, struct.pack("16sH", b"lo", flags | iff_up))


if os.environ.get("BIT_TRT_RAY_NETNS") == "1":
    _loopback_up()
NODE = {"num_cpus": 1, "object_store_memory": 80 << 20}
HTTP_PORT = 8000


class RayCluster:
    def __init__(self):
        import ray
        from ray.cluster_utils import Cluster

        self.cluster = Cluster(initialize_head=True, head_node_args=dict(NODE, include_dashboard=False))
        for _ in range(2):
            self.cluster.add_node(**NODE)
        self.cluster.wait_for_nodes()
        ray.init(address=self.cluster.address, namespace="bit-trt-tests", log_to_driver=False)
        self.head_id = self.cluster.head_node.node_id

    def alive_node_ids(self) -> set[str]:
        import ray

        return {n["NodeID"] for n in ray.nodes() if n["Alive"]}

    def kill(self, node_id: str) -> None:
        """The node's raylet and every worker on it, SIGKILLed: a machine lost, not a drained one."""
        (node,) = [n for n in self.cluster.worker_nodes if n.node_id == node_id]
        self.cluster.remove_node(node, allow_graceful=False)

    def add_worker(self) -> None:
        self.cluster.add_node(**NODE)
        self.cluster.wait_for_nodes()

    @staticmethod
    def actor_nodes(class_name: str) -> list[str]:
        """Node IDs of the live actors whose class name contains `class_name`, from the GCS's actor table (the
        state API would need the dashboard, which these nodes do not run)."""
        from ray._private import state

        return [
            a["Address"]["NodeID"]
            for a in state.actors().values()
            if a["State"] == "ALIVE" and class_name in a["ActorClassName"]
        ]

    def shutdown(self) -> None:
        import ray
        from ray import serve

        serve.shutdown()
        ray.shutdown()
        self.cluster.shutdown()


@pytest.fixture(scope="session")
def cluster():
    if os.environ.get("BIT_TRT_RAY_NETNS") != "1":
        pytest.fail("run through tests/scale/test_ray_cluster.py, which gives the cluster its own network namespace")
    c = RayCluster()
    yield c
    c.shutdown()


@pytest.fixture(scope="session")
def bundle() -> str:
    return os.environ[BUNDLE_ENV]


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    """~200 images of varied sizes and formats, and three that are not images (garbage, a truncated JPEG, empty)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(21)
    for i in range(200):
        h, w = rng.integers(24, 96, size=2)
        image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        sub = root / f"d{i % 4}"
        sub.mkdir(exist_ok=True)
        cv2.imwrite(str(sub / f"img{i:03d}.{'png' if i % 2 else 'jpg'}"), image)
    (root / "d0" / "garbage.png").write_bytes(b"this is not an image" * 10)
    good = cv2.imencode(".jpg", np.zeros((40, 40, 3), np.uint8))[1].tobytes()
    (root / "d1" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "d2" / "empty.png").write_bytes(b"")
    return root


@pytest.fixture(scope="session")
def serial(bundle, image_dir):
    """path -> (logits, None) or (None, the engine's error): the in-process Classifier, one image at a time."""
    from bit_trt.engine.classifier import Classifier
    from bit_trt.engine.errors import BitError
    from bit_trt.scale.bulk import collect_inputs

    answers = {}
    with Classifier(bundle, backend="ort-cpu") as clf:
        for path in collect_inputs([str(image_dir)]):
            try:
                answers[path] = (clf.predict([path], [path]).logits[0], None)
            except BitError as exc:
                answers[path] = (None, str(exc))
    return answers


def post(path: str, body: bytes, timeout: float = 30.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=timeout)
    try:
        conn.request("POST", path, body=body)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def get_json(path: str, timeout: float = 10.0) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", HTTP_PORT, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        return response.status, json.loads(body) if body.startswith(b"{") else {"raw": body.decode(errors="replace")}
    finally:
        conn.close()


class Load:
    """Clients sending encoded images in a loop, each one request at a time, until `stop` is set or their bound:
    at most `max_requests` each and `max_seconds` in all. Leaving the `with` block waits for them (an exception
    in it stops them first). Every request is recorded as (start, end, status, answer)."""

    def __init__(self, bodies: list[bytes], clients: int, max_requests: int, max_seconds: float):
        self.bodies, self.records, self.stop = bodies, [], threading.Event()
        self.lock = threading.Lock()
        self.deadline = time.monotonic() + max_seconds
        self.threads = [
            threading.Thread(target=self._client, args=(i, max_requests), daemon=True) for i in range(clients)
        ]

    def _client(self, index: int, max_requests: int) -> None:
        for n in range(max_requests):
            if self.stop.is_set() or time.monotonic() > self.deadline:
                return
            body = self.bodies[(index * 7 + n) % len(self.bodies)]
            start = time.monotonic()
            try:
                status, answer = post("/v1/classify", body)
            except OSError as exc:
                status, answer = 0, f"{type(exc).__name__}: {exc}".encode()
            with self.lock:
                self.records.append((start, time.monotonic(), status, answer))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, kind, *exc):
        if kind is not None:
            self.stop.set()
        for t in self.threads:
            t.join(timeout=max(0.0, self.deadline - time.monotonic()) + 60)
        return False


def wait_until(condition, timeout: float, interval: float = 0.25):
    """Poll `condition` until it returns a true value (returned) or `timeout` seconds pass (None)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    return None
