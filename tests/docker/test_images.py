"""The CPU image, really built and really run: docker/Dockerfile.cpu on a Debian bookworm base, then bit-export,
bit-classify and bit-serve inside containers, checked from this host (docs/docker.md).

Needs a running Docker engine (skipped with the reason otherwise) and PyPI from inside the build. The base is
$BIT_TRT_DOCKER_BASE when set (e.g. debian:bookworm-slim where Docker Hub is reachable), else the local
debootstrap base `bit-trt-base:bookworm` (built by docker/make_base.sh when missing, which needs root and
debootstrap), else the Dockerfile's default. A cold build downloads about 1 GB of wheels and takes about 4 minutes
here; after that Docker's layer cache makes a rebuild take seconds unless pyproject.toml or a constraints file
changed. The image is left tagged `bit-trt:cpu-test` for the next run; every container is removed, also on failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import TINY_ARGS, TINY_RES

pytestmark = [pytest.mark.docker, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
BASE_TAG = "bit-trt-base:bookworm"
IMAGE_TAG = "bit-trt:cpu-test"
BUILD_TIMEOUT_S = 3600  # cold: about 4 minutes here; PyPI downloads decide
BASE_TIMEOUT_S = 900  # debootstrap: about 1 minute here
RUN_TIMEOUT_S = 300
READY_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30
LABEL = "bit-trt-test=docker"


def _docker(*args, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        pytest.fail(f"docker {' '.join(map(str, args[:3]))} ... exited {proc.returncode}:\n{_tail(proc)}")
    return proc


def _tail(proc: subprocess.CompletedProcess, chars: int = 4000) -> str:
    return ((proc.stdout or "") + (proc.stderr or ""))[-chars:]


def _image_exists(tag: str) -> bool:
    return _docker("image", "inspect", tag, check=False, timeout=60).returncode == 0


@pytest.fixture(scope="module")
def docker_engine():
    if shutil.which("docker") is None:
        pytest.skip("needs Docker: no docker CLI on this host")
    try:
        proc = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.skip("needs a running Docker engine: `docker info` did not answer in 30 s")
    if proc.returncode != 0:
        why = (proc.stderr or proc.stdout).strip().splitlines()
        pytest.skip(f"needs a running Docker engine: `docker info` failed ({why[-1] if why else 'no output'})")


@pytest.fixture(scope="module")
def base_image(docker_engine) -> str | None:
    """The BASE build argument, or None for the Dockerfile's default (which needs Docker Hub)."""
    if os.environ.get("BIT_TRT_DOCKER_BASE"):
        return os.environ["BIT_TRT_DOCKER_BASE"]
    if _image_exists(BASE_TAG):
        return BASE_TAG
    if os.geteuid() == 0 and shutil.which("debootstrap"):
        proc = subprocess.run(
            ["bash", str(REPO / "docker" / "make_base.sh"), BASE_TAG],
            capture_output=True,
            text=True,
            timeout=BASE_TIMEOUT_S,
        )
        if proc.returncode != 0:
            pytest.fail(f"docker/make_base.sh failed:\n{_tail(proc)}")
        return BASE_TAG
    return None


@pytest.fixture(scope="module")
def cpu_image(base_image, tmp_path_factory) -> str:
    build_args = ["--build-arg", f"BASE={base_image}"] if base_image else []
    log = tmp_path_factory.mktemp("docker-build") / "build.log"
    before = _docker("image", "inspect", "-f", "{{.Id}}", IMAGE_TAG, check=False).stdout.strip()
    start = time.monotonic()
    with open(log, "w") as out:
        try:
            proc = subprocess.run(
                [
                    "docker",
                    "build",
                    "-f",
                    str(REPO / "docker" / "Dockerfile.cpu"),
                    *build_args,
                    "-t",
                    IMAGE_TAG,
                    str(REPO),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"docker build took over {BUILD_TIMEOUT_S} s (log: {log})")
    if proc.returncode != 0:
        pytest.fail(
            f"docker build -f docker/Dockerfile.cpu failed (base {base_image or 'default'}):\n{log.read_text()[-5000:]}"
        )
    after, size = _docker("image", "inspect", "-f", "{{.Id}} {{.Size}}", IMAGE_TAG).stdout.split()
    if before and before != after:  # the previous build, now untagged: its own top layers only (shared ones stay)
        _docker("rmi", before, check=False)
    size = int(size)
    took = time.monotonic() - start
    print(f"built {IMAGE_TAG} on {base_image or 'the default base'} in {took:.0f} s, {size / 1e9:.2f} GB")
    return IMAGE_TAG


@pytest.fixture(scope="module")
def containers(docker_engine):
    """Names of the containers this module starts: each is removed at the end, whatever happened."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)


def _name(containers: list[str], what: str) -> str:
    name = f"bit-trt-test-{what}-{uuid.uuid4().hex[:8]}"
    containers.append(name)
    return name


def run_in(image: str, containers: list[str], *cmd, volumes=(), timeout: float = RUN_TIMEOUT_S, check: bool = True):
    """`docker run --rm` of one command, named so that a timed-out container is still removed."""
    name = _name(containers, "run")
    mounts = [arg for volume in volumes for arg in ("-v", volume)]
    try:
        proc = subprocess.run(
            ["docker", "run", "--rm", "--name", name, "--label", LABEL, *mounts, image, *map(str, cmd)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        pytest.fail(f"`{' '.join(map(str, cmd))}` in {image} took over {timeout} s")
    if check and proc.returncode != 0:
        pytest.fail(f"`{' '.join(map(str, cmd))}` in {image} exited {proc.returncode}:\n{_tail(proc)}")
    return proc


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, cpu_image, containers):
    """A host folder mounted at /data: a test image, and the bundle the container exports there.

    World-writable, because the container's user (uid 10001) is not this host's; at the end the container
    opens what it wrote to everyone, so that this host's user can read and remove it."""
    import cv2

    folder = tmp_path_factory.mktemp("docker-data")
    folder.chmod(0o777)
    rng = np.random.default_rng(11)
    assert cv2.imwrite(str(folder / "image.png"), rng.integers(0, 256, (90, 120, 3), np.uint8))
    yield folder
    run_in(cpu_image, containers, "chmod", "-R", "a+rwX", "/data", volumes=[f"{folder}:/data"], check=False)


@pytest.fixture(scope="module")
def bundle(cpu_image, containers, data_dir) -> Path:
    proc = run_in(cpu_image, containers, "bit-export", *TINY_ARGS, "--out", "/data/tiny", volumes=[f"{data_dir}:/data"])
    assert "PASS" in proc.stdout, proc.stdout
    run_in(cpu_image, containers, "chmod", "-R", "a+rX", "/data/tiny", volumes=[f"{data_dir}:/data"])
    return data_dir / "tiny"


# ---- the image's make-up --------------------------------------------------------------------------------------

INSTALL_CHECK = r"""
import importlib.metadata as md, json, os, sys
import bit_trt.engine
dist = md.distribution("bit-trt")
direct = json.loads(dist.read_text("direct_url.json") or "{}")
sites = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
hooks = [f for s in sites for f in os.listdir(s) if f.startswith("__editable__") or f.endswith(".egg-link")]
print(json.dumps({
    "module": bit_trt.engine.__file__,
    "editable": bool(direct.get("dir_info", {}).get("editable")),
    "editable_hooks": sorted(hooks),
    "numpy": md.version("numpy"),
    "prefix": sys.prefix,
}))
"""


def test_runs_as_non_root(cpu_image, containers):
    proc = run_in(cpu_image, containers, "sh", "-c", "id -u; id -un; pwd; test -w /work && echo writable")
    uid, user, cwd, writable = proc.stdout.split()
    assert uid != "0" and user == "bit" and cwd == "/work" and writable == "writable"
    config = json.loads(_docker("image", "inspect", "-f", "{{json .Config}}", cpu_image).stdout)
    assert config["User"] not in ("", "0", "root", "0:0")
    assert {"8000/tcp", "8001/tcp", "8002/tcp"} <= set(config["ExposedPorts"])


@pytest.mark.parametrize(
    "python, numpy_major",
    [("/opt/bit-trt/venv/bin/python", "2"), ("/opt/bit-trt/serve-venv/bin/python", "1")],
    ids=["main", "serve"],
)
def test_real_install_in_each_environment(cpu_image, containers, python, numpy_major):
    info = json.loads(run_in(cpu_image, containers, python, "-c", INSTALL_CHECK).stdout)
    prefix = os.path.dirname(os.path.dirname(python))
    assert info["prefix"] == prefix
    assert info["module"].startswith(f"{prefix}/lib/python3.11/site-packages/bit_trt/engine/"), info
    assert not info["editable"] and not info["editable_hooks"], info
    assert info["numpy"].split(".")[0] == numpy_major, info  # TF 2.21 needs numpy 2, PyTriton 0.7 numpy < 2


def test_verbs_come_from_their_environment(cpu_image, containers):
    verbs = ["bit-export", "bit-engine", "bit-classify", "bit-check", "bit-bench", "bit-triton", "bit-serve"]
    script = 'for v in "$@"; do printf "%s %s\\n" "$v" "$(readlink -f "$(command -v "$v")")"; done'
    proc = run_in(cpu_image, containers, "sh", "-c", script, "sh", *verbs)
    where = dict(line.split() for line in proc.stdout.splitlines())
    assert where.pop("bit-serve") == "/opt/bit-trt/serve-venv/bin/bit-serve"
    assert where == {verb: f"/opt/bit-trt/venv/bin/{verb}" for verb in verbs[:-1]}


def test_source_is_not_in_the_image(cpu_image, containers):
    script = (
        "for p in /src /tmp/wheel /opt/bit-trt/deps /opt/bit-trt/src; do test -e $p && echo $p; done; ls /opt/bit-trt"
    )
    assert run_in(cpu_image, containers, "sh", "-c", script).stdout.split() == ["bin", "serve-venv", "venv"]


# ---- export, classify, serve ----------------------------------------------------------------------------------


def test_export_in_the_container(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["model"]["variant"] == "tiny"
    assert (bundle / "model.fp32.onnx").is_file()


def _host_top5(bundle: Path, image: Path) -> list[tuple[str, float]]:
    from bit_trt.engine import Classifier

    with Classifier(str(bundle), backend="ort-cpu") as clf:
        return clf.predict(str(image)).top(5)[0]


def test_classify_in_the_container(cpu_image, containers, bundle, data_dir):
    proc = run_in(
        cpu_image, containers, "bit-classify", "/data/tiny", "/data/image.png", volumes=[f"{data_dir}:/data:ro"]
    )
    assert re.search(r"^backend: openvino", proc.stderr, re.M), proc.stderr  # auto on a CPU host
    rows = re.findall(r"^\s+([\d.]+)%\s+(.+?)\s*$", proc.stdout, re.M)
    assert len(rows) == 5, proc.stdout
    host = _host_top5(bundle, data_dir / "image.png")
    assert [label for _, label in rows] == [label for label, _ in host]
    for (percent, _), (_, probability) in zip(rows, host):
        assert abs(float(percent) - 100 * probability) <= 0.011


def _http_json(url: str, body: dict | None = None, timeout: float = 30):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)


def _wait_ready(name: str, urls: list[str]) -> None:
    """Until every URL answers 200 (Triton's /v2/health/ready can say 200 before bit-serve has loaded its models)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    pending = list(urls)
    while time.monotonic() < deadline:
        state = json.loads(_docker("inspect", "-f", "{{json .State}}", name).stdout)
        if not state["Running"]:
            logs = _docker("logs", name, check=False)
            pytest.fail(f"bit-serve exited {state['ExitCode']} before it was ready:\n{_tail(logs)}")
        try:
            while pending and _http_json(pending[0], timeout=5)[0] == 200:
                pending.pop(0)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if not pending:
            return
        time.sleep(1)
    pytest.fail(
        f"bit-serve not ready in {READY_TIMEOUT_S} s ({pending[0]}):\n{_tail(_docker('logs', name, check=False))}"
    )


def _host_port(name: str, port: int) -> int:
    mapped = _docker("port", name, f"{port}/tcp").stdout.split()[0]  # 127.0.0.1:49153
    host, _, number = mapped.rpartition(":")
    assert host == "127.0.0.1", mapped
    return int(number)


def test_serve_in_the_container(cpu_image, containers, bundle, data_dir):
    name = _name(containers, "serve")
    _docker(
        "run", "-d", "--name", name, "--label", LABEL,
        "-p", "127.0.0.1::8000", "-p", "127.0.0.1::8001", "-p", "127.0.0.1::8002",
        "-v", f"{data_dir}:/data:ro",
        cpu_image,
        "bit-serve", "/data/tiny", "--host", "0.0.0.0", "--http-port", 8000, "--grpc-port", 8001,
        "--metrics-port", 8002, "--backend", "ort-cpu",
    )  # fmt: skip
    http, grpc, metrics = (_host_port(name, port) for port in (8000, 8001, 8002))
    base = f"http://127.0.0.1:{http}"
    _wait_ready(
        name, [f"{base}/v2/health/ready", f"{base}/v2/models/bit_tiny/ready", f"{base}/v2/models/bit_tiny_image/ready"]
    )

    # the float model through Triton's plain JSON protocol: the same logits as ONNX Runtime on this host
    images = np.random.default_rng(5).random((2, TINY_RES, TINY_RES, 3), dtype=np.float32)
    request = {
        "inputs": [{"name": "images", "shape": list(images.shape), "datatype": "FP32", "data": images.ravel().tolist()}]
    }
    status, answer = _http_json(f"{base}/v2/models/bit_tiny/infer", request)
    assert status == 200
    (logits,) = [out for out in answer["outputs"] if out["name"] == "logits"]
    served = np.asarray(logits["data"], np.float32).reshape(logits["shape"])
    from bit_trt.engine import Classifier

    with Classifier(str(bundle), backend="ort-cpu") as clf:
        direct = clf.predict(images).logits
    np.testing.assert_allclose(served, direct, rtol=1e-4, atol=1e-4)

    # the encoded-image model through tritonclient (HTTP and gRPC): bit-classify's top-5
    tritonclient_http = pytest.importorskip("tritonclient.http", reason="needs tritonclient (the test extra)")
    client = tritonclient_http.InferenceServerClient(f"127.0.0.1:{http}", connection_timeout=10, network_timeout=60)
    encoded = tritonclient_http.InferInput("image", [1, 1], "BYTES")
    encoded.set_data_from_numpy(np.array([[(data_dir / "image.png").read_bytes()]], dtype=object))
    result = client.infer("bit_tiny_image", [encoded])
    classes = [item.decode().split(":", 2)[2] for item in result.as_numpy("classes")[0]]
    assert classes == [label for label, _ in _host_top5(bundle, data_dir / "image.png")]
    tritonclient_grpc = pytest.importorskip("tritonclient.grpc", reason="needs tritonclient[grpc]")
    assert tritonclient_grpc.InferenceServerClient(f"127.0.0.1:{grpc}").is_model_ready("bit_tiny_image")
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics", timeout=30) as response:
        assert b"nv_inference_request_success" in response.read()

    # docker stop: tini hands SIGTERM to bit-serve, which stops Triton; not killed at the deadline
    start = time.monotonic()
    _docker("stop", "-t", STOP_TIMEOUT_S, name, timeout=STOP_TIMEOUT_S + 60)
    state = json.loads(_docker("inspect", "-f", "{{json .State}}", name).stdout)
    assert not state["Running"] and state["ExitCode"] != 137 and not state["OOMKilled"], state
    assert time.monotonic() - start < STOP_TIMEOUT_S
