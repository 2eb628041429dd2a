"""The CPU and Ray images, really built and really run: docker/Dockerfile.cpu and docker/Dockerfile.ray on a Debian
bookworm base, then bit-export, bit-classify and bit-serve in containers of the first, and a one-node Ray cluster
in the second, checked from this host (docs/docker.md).

Needs a running Docker engine and PyPI from inside the builds. The base is $BIT_TRT_DOCKER_BASE when set, else the
local debootstrap base `bit-trt-base:bookworm` (built by docker/make_base.sh when missing, which needs root and
debootstrap), else debian:bookworm-slim from Docker Hub. Where the engine, a base or the builds' network is
missing, the tests skip and say which (tests/docker/test_skips.py); a build that fails otherwise fails them. Cold,
the base takes about 1.5 minutes here, the CPU image 4.5 (about 1 GB of wheels), the Ray image 2.5; after that
Docker's layer cache makes a rebuild take seconds (20-30 s after a source edit) unless pyproject.toml or a
constraints file changed. The images are left tagged `bit-trt:cpu-test` and `bit-trt:ray-test` for the next run;
every container is removed, also on failure.
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
DEFAULT_BASE = "debian:bookworm-slim"  # the Dockerfiles' own default (Docker Hub)
IMAGE_TAG = "bit-trt:cpu-test"
RAY_TAG = "bit-trt:ray-test"
BUILD_TIMEOUT_S = 3600  # cold: about 4 minutes here; PyPI downloads decide
BASE_TIMEOUT_S = 900  # debootstrap: about 1.5 minutes here
PULL_TIMEOUT_S = 300
RUN_TIMEOUT_S = 300
READY_TIMEOUT_S = 180
STOP_TIMEOUT_S = 30
LABEL = "bit-trt-test=docker"
# What a build or debootstrap prints when the network (a registry, PyPI, a Debian mirror, DNS) is not there: the
# test then skips with that line instead of failing, because the prerequisite is missing, not the image broken.
NETWORK_FAILURE = re.compile(
    r"Temporary failure (in name resolution|resolving)|Name or service not known|Could not resolve|"
    r"Network is unreachable|No route to host|Connection (refused|timed out|reset)|"
    r"Failed to establish a new connection|Max retries exceeded|Could not fetch URL|ConnectTimeout|"
    r"Read timed out|Failed getting release file|Couldn't download|Failed to fetch|"
    r"dial tcp|i/o timeout|TLS handshake timeout|pull access denied|toomanyrequests|"
    r"no such host|server misbehaving|net/http: request canceled",
    re.I,
)


def _docker(*args, timeout: float = 120, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *map(str, args)], capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        pytest.fail(f"docker {' '.join(map(str, args[:3]))} ... exited {proc.returncode}:\n{_tail(proc)}")
    return proc


def _tail(proc: subprocess.CompletedProcess, chars: int = 4000) -> str:
    return ((proc.stdout or "") + (proc.stderr or ""))[-chars:]


def _network_failure(text: str) -> str | None:
    """The last line among the last 60 of `text` (the failure, not an earlier retried hiccup) that says the
    network is missing, or None."""
    lines = text.splitlines()[-60:]
    return next((line.strip() for line in reversed(lines) if NETWORK_FAILURE.search(line)), None)


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
def base_image(docker_engine) -> str:
    """The BASE build argument of every image: $BIT_TRT_DOCKER_BASE, else the local debootstrap base (built by
    docker/make_base.sh where this is root with debootstrap), else the Dockerfiles' default pulled from Docker Hub.
    Skips, saying which, where none of them can be had; fails only where make_base.sh fails for another reason."""
    if os.environ.get("BIT_TRT_DOCKER_BASE"):
        return os.environ["BIT_TRT_DOCKER_BASE"]
    if _image_exists(BASE_TAG):
        return BASE_TAG
    why_not_local = None
    if os.geteuid() != 0:
        why_not_local = "make_base.sh needs root"
    elif not shutil.which("debootstrap"):
        why_not_local = "debootstrap is not installed"
    if why_not_local is None:
        try:
            proc = subprocess.run(
                ["bash", str(REPO / "docker" / "make_base.sh"), BASE_TAG],
                capture_output=True,
                text=True,
                timeout=BASE_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.skip(f"no base image: docker/make_base.sh took over {BASE_TIMEOUT_S} s (a slow Debian mirror?)")
        if proc.returncode == 0:
            return BASE_TAG
        network = _network_failure(_tail(proc))
        if network is None:
            pytest.fail(f"docker/make_base.sh failed:\n{_tail(proc)}")
        why_not_local = f"docker/make_base.sh could not reach the Debian mirror ({network})"
    if _image_exists(DEFAULT_BASE):
        return DEFAULT_BASE
    try:
        proc = _docker("pull", "-q", DEFAULT_BASE, check=False, timeout=PULL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc = subprocess.CompletedProcess([], 1, "", f"no answer in {PULL_TIMEOUT_S} s")
    if proc.returncode == 0:
        return DEFAULT_BASE
    why = (proc.stderr or proc.stdout).strip().splitlines()
    pytest.skip(
        f"no base image: no local {BASE_TAG} ({why_not_local}), and `docker pull {DEFAULT_BASE}` failed "
        f"({why[-1] if why else 'no output'}); set BIT_TRT_DOCKER_BASE to a Debian bookworm image"
    )


def _build(dockerfile: str, tag: str, base: str, log: Path) -> str:
    """`docker build` of docker/<dockerfile> on `base` as `tag`; skips where the build can't reach the network."""
    before = _docker("image", "inspect", "-f", "{{.Id}}", tag, check=False).stdout.strip()
    start = time.monotonic()
    with open(log, "w") as out:
        try:
            proc = subprocess.run(
                ["docker", "build", "-f", str(REPO / "docker" / dockerfile), "--build-arg", f"BASE={base}", "-t", tag]
                + [str(REPO)],
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=BUILD_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(f"docker build -f docker/{dockerfile} took over {BUILD_TIMEOUT_S} s (log: {log})")
    if proc.returncode != 0:
        text = log.read_text()
        network = _network_failure(text)
        if network is not None:
            pytest.skip(f"docker build -f docker/{dockerfile} could not reach the network ({network}; log: {log})")
        pytest.fail(f"docker build -f docker/{dockerfile} failed (base {base}):\n{text[-5000:]}")
    after, size = _docker("image", "inspect", "-f", "{{.Id}} {{.Size}}", tag).stdout.split()
    if before and before != after:  # the previous build, now untagged: its own top layers only (shared ones stay)
        _docker("rmi", before, check=False)
    print(f"built {tag} on {base} in {time.monotonic() - start:.0f} s, {int(size) / 1e9:.2f} GB")
    return tag


@pytest.fixture(scope="module")
def cpu_image(base_image, tmp_path_factory) -> str:
    return _build("Dockerfile.cpu", IMAGE_TAG, base_image, tmp_path_factory.mktemp("docker-build") / "build.log")


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
    # nor what built the kernels (docker/ort_kernels.sh): their wheel, venv, script and ONNX Runtime's header
    paths = "/src /tmp/wheel /opt/bit-trt/deps /opt/bit-trt/src /tmp/kernels /tmp/kernels-venv /tmp/onnxruntime-dev"
    script = f"for p in {paths}; do test -e $p && echo $p; done; ls /opt/bit-trt"
    listed = run_in(cpu_image, containers, "sh", "-c", script).stdout.split()
    assert listed == ["bin", "ort-kernels", "serve-venv", "venv"]


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


def test_int8_on_ort_runs_the_images_prebuilt_kernel(cpu_image, containers, data_dir):
    """The image has no compiler and no ONNX Runtime header: INT8 on ort-cpu runs the kernel prebuilt in it for this
    CPU's level (docker/Dockerfile.cpu), through the accuracy gate against TF, as the image's user."""
    volumes = [f"{data_dir}:/data"]
    assert run_in(cpu_image, containers, "sh", "-c", "command -v cc gcc clang || echo none").stdout.split() == ["none"]
    export = run_in(
        cpu_image, containers, "bit-export", *TINY_ARGS, "--precision", "int8", "--calib-synthetic",
        "--engine", "none", "--out", "/data/tiny-int8", volumes=volumes,
    )  # fmt: skip
    assert "PASS" in export.stdout, export.stdout
    proc = run_in(
        cpu_image, containers, "bit-classify", "/data/tiny-int8", "/data/image.png", "--backend", "ort-cpu",
        "--precision", "int8", volumes=volumes,
    )  # fmt: skip
    said = re.search(r"^backend: ort-cpu: .*$", proc.stderr, re.M)
    kernel = r"GroupNorm on bit-trt's kernel \(\d+ fused, build \S+-[0-9a-f]{24}\)"
    assert said and re.search(kernel, said[0]) and "own ops" not in said[0], proc.stderr
    assert len(re.findall(r"^\s+([\d.]+)%\s+(.+?)\s*$", proc.stdout, re.M)) == 5, proc.stdout


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


# ---- the Ray image: docker/Dockerfile.ray ----------------------------------------------------------------------

RAY_START_TIMEOUT_S = 240
# Ray in a container: /dev/shm holds its object store (Docker gives 64 MB by default), so the container gets
# more and Ray is told to use less than that.
RAY_SHM = "512m"
RAY_OBJECT_STORE_BYTES = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def ray_image(base_image, tmp_path_factory) -> str:
    return _build("Dockerfile.ray", RAY_TAG, base_image, tmp_path_factory.mktemp("docker-build") / "build-ray.log")


@pytest.fixture(scope="module")
def ray_token(tmp_path_factory) -> list[str]:
    """docker run's arguments that give a node the cluster's token as docs/docker.md does: an --env-file, 0600, so
    that the token is never on a command line."""
    path = tmp_path_factory.mktemp("ray-token") / "ray.env"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, f"RAY_AUTH_TOKEN={os.urandom(32).hex()}\n".encode())
    os.close(fd)
    return ["--env-file", str(path)]


RAY_INSTALL_CHECK = r"""
import importlib.metadata as md, importlib.util, json, os, sys
import ray, bit_trt.scale, bit_trt.engine, onnxruntime, openvino
from bit_trt.engine import ort_kernel_library
direct = json.loads(md.distribution("bit-trt").read_text("direct_url.json") or "{}")
print(json.dumps({
    "user": os.getuid(),
    "ray": ray.__version__,
    "scale": bit_trt.scale.__file__,
    "editable": bool(direct.get("dir_info", {}).get("editable")),
    "tensorflow": importlib.util.find_spec("tensorflow") is not None,
    "providers": onnxruntime.get_available_providers(),
    "prefix": sys.prefix,
    "kernel": ort_kernel_library.library(),
}))
"""


def _pinned(name: str) -> str:
    (line,) = [line for line in (REPO / "constraints.txt").read_text().splitlines() if line.startswith(f"{name}==")]
    return line.split("==", 1)[1]


def test_ray_image_environment(ray_image, containers):
    info = json.loads(run_in(ray_image, containers, "python", "-c", RAY_INSTALL_CHECK).stdout)
    assert info["user"] == 10001, info
    assert info["ray"] == _pinned("ray"), info  # every node of a cluster must run the same Ray
    assert info["prefix"] == "/opt/bit-trt/venv" and not info["editable"], info
    assert info["scale"].startswith("/opt/bit-trt/venv/lib/python3.11/site-packages/bit_trt/scale/"), info
    assert not info["tensorflow"], "the Ray image has no TensorFlow"
    assert "CPUExecutionProvider" in info["providers"], info
    assert re.fullmatch(r"/opt/bit-trt/ort-kernels/\S+-[0-9a-f]{24}/libbit_trt_ort_kernels\.so", info["kernel"]), info
    script = "for p in /src /tmp/wheel /opt/bit-trt/deps; do test -e $p && echo $p; done; ls /opt/bit-trt"
    assert run_in(ray_image, containers, "sh", "-c", script).stdout.split() == ["ort-kernels", "venv"]
    config = json.loads(_docker("image", "inspect", "-f", "{{json .Config}}", ray_image).stdout)
    assert config["User"] == "10001:10001" and config["Entrypoint"] == ["/usr/bin/tini", "--"], config
    assert set(config["ExposedPorts"]) == {"8000/tcp", "6379/tcp", "8265/tcp"}
    # the default command (a cluster manager sets its own) just works
    name = _name(containers, "ray-default")
    proc = subprocess.run(
        ["docker", "run", "--rm", "--name", name, "--label", LABEL, ray_image],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0 and "usage: bit-serve" in proc.stdout, _tail(proc)


RAY_HEAD = """
set -eu
ray start --head --port 6379 --num-cpus 1 --object-store-memory "$1" --dashboard-host 127.0.0.1 \\
    --disable-usage-stats
# the autoscaler's monitor reports the node a few seconds after the start ("No cluster status" until then)
for _ in $(seq 60); do
    ray status >/tmp/status.txt 2>&1 && grep -q " CPU" /tmp/status.txt && break
    sleep 1
done
cat /tmp/status.txt
# what KubeRay's default probes ask of a head pod (with this image's wget): GCS through the dashboard, the raylet
wget -T 10 -q -O- http://127.0.0.1:8265/api/gcs_healthz; echo
python -c 'import ray; ray.init(address="auto"); print("cluster CPUs", ray.cluster_resources()["CPU"]); \\
print("task", ray.get(ray.remote(lambda x: x * 2).remote(21)))'
# a client with no token, as another local user who reaches the published ports: the cluster refuses it
if RAY_AUTH_MODE=disabled RAY_AUTH_TOKEN= timeout 60 python -c 'import ray; ray.init(address="auto")' \\
    >/tmp/tokenless.txt 2>&1; then echo "tokenless client admitted"; else echo "tokenless client refused"; fi
grep -o "InvalidAuthToken" /tmp/tokenless.txt | head -1
ray stop
"""


def test_ray_head_in_the_container(ray_image, containers, ray_token):
    """A one-node Ray cluster as user bit inside one container, its token from an --env-file: ray start --head, ray
    status, a task, a client without the token refused, ray stop."""
    name = _name(containers, "ray-head")
    start = time.monotonic()
    try:
        proc = subprocess.run(
            ["docker", "run", "--rm", "--name", name, "--label", LABEL, "--shm-size", RAY_SHM, *ray_token, ray_image]
            + ["bash", "-c", RAY_HEAD, "ray-head", str(RAY_OBJECT_STORE_BYTES)],
            capture_output=True,
            text=True,
            timeout=RAY_START_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        pytest.fail(f"ray start/status/stop in {ray_image} took over {RAY_START_TIMEOUT_S} s")
    took = time.monotonic() - start
    assert proc.returncode == 0, _tail(proc)
    out = proc.stdout
    assert "Ray runtime started" in out + proc.stderr, _tail(proc)
    assert re.search(r"\b\d\.\d/1\.0 CPU\b", out), out  # ray status: this node's one CPU
    assert "success" in out, out  # the dashboard's GCS health check
    assert "cluster CPUs 1.0" in out and "task 42" in out, out
    assert "tokenless client refused\nInvalidAuthToken" in out, out
    assert "Stopped all" in out + proc.stderr, _tail(proc)
    print(f"ray head start/status/task/stop in {took:.0f} s")


def test_a_ray_node_without_a_token_does_not_start(ray_image, containers):
    """The image asks for token authentication (RAY_AUTH_MODE=token): a head given no token refuses to start, in
    one line, instead of starting a cluster that anyone who reaches its ports may run code on."""
    proc = run_in(ray_image, containers, "ray", "start", "--head", "--num-cpus", 1, check=False)
    assert proc.returncode != 0, _tail(proc)
    assert "Token authentication is enabled but no authentication token was found" in _tail(proc), _tail(proc)
    assert "Ray runtime started" not in proc.stdout + proc.stderr


def test_ray_node_stops_on_docker_stop(ray_image, containers, ray_token):
    """`ray start --block` (how a node runs by hand, docs/docker.md) behind tini: `docker stop` drains the node and
    ends the container by SIGTERM, well before Docker's deadline."""
    name = _name(containers, "ray-block")
    _docker(
        "run", "-d", "--name", name, "--label", LABEL, "--shm-size", RAY_SHM, *ray_token, ray_image,
        "ray", "start", "--head", "--block", "--num-cpus", 1, "--object-store-memory", RAY_OBJECT_STORE_BYTES,
        "--include-dashboard", "false",
    )  # fmt: skip
    deadline = time.monotonic() + RAY_START_TIMEOUT_S
    while "Ray runtime started" not in _tail(_docker("logs", name, check=False), 100000):
        state = json.loads(_docker("inspect", "-f", "{{json .State}}", name).stdout)
        if not state["Running"] or time.monotonic() > deadline:
            pytest.fail(f"ray start --block did not start (exit {state['ExitCode']}):\n{_tail(_docker('logs', name))}")
        time.sleep(1)
    start = time.monotonic()
    _docker("stop", "-t", STOP_TIMEOUT_S, name, timeout=STOP_TIMEOUT_S + 60)
    took = time.monotonic() - start
    state = json.loads(_docker("inspect", "-f", "{{json .State}}", name).stdout)
    assert not state["Running"] and state["ExitCode"] != 137 and not state["OOMKilled"], state
    assert took < STOP_TIMEOUT_S
    assert "received SIGTERM" in _tail(_docker("logs", name, check=False), 100000)


RAY_SERVE = """
set -eu
ray start --head --num-cpus 2 --object-store-memory "$1" --include-dashboard false --disable-usage-stats >/dev/null
python - <<'PY'
import json, time, urllib.request
from ray import serve
from bit_trt.scale.serve_app import app_builder

serve.run(app_builder({"bundle": "/data/tiny", "backend": "ort-cpu"}), blocking=False)
with urllib.request.urlopen("http://127.0.0.1:8000/v1/ready", timeout=60) as response:
    ready = json.loads(response.read())
body = open("/data/image.png", "rb").read()
request = urllib.request.Request("http://127.0.0.1:8000/v1/classify", data=body, method="POST")
with urllib.request.urlopen(request, timeout=60) as response:
    print("CLASSIFY " + json.dumps({"ready": ready, "answer": json.loads(response.read())}))
serve.shutdown()
PY
ray stop >/dev/null
"""


def test_ray_serve_app_in_the_container(ray_image, containers, ray_token, bundle, data_dir):
    """bit_trt.scale.serve_app's application on a one-node cluster in the Ray image, on the tiny bundle the CPU
    image exported: /v1/ready, then /v1/classify with bit-classify's top-5 (ONNX Runtime on this host)."""
    name = _name(containers, "ray-serve")
    try:
        proc = subprocess.run(
            ["docker", "run", "--rm", "--name", name, "--label", LABEL, "--shm-size", RAY_SHM, *ray_token]
            + ["-v", f"{data_dir}:/data:ro", ray_image]
            + ["bash", "-c", RAY_SERVE, "ray-serve", str(RAY_OBJECT_STORE_BYTES)],
            capture_output=True,
            text=True,
            timeout=RAY_START_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=60)
        pytest.fail(f"the Ray Serve application in {ray_image} took over {RAY_START_TIMEOUT_S} s")
    assert proc.returncode == 0, _tail(proc)
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("CLASSIFY ")]
    result = json.loads(line.removeprefix("CLASSIFY "))
    assert result["ready"]["ready"] is True and result["ready"]["backend"].startswith("ort-cpu"), result
    classes = [item.split(":", 2)[2] for item in result["answer"]["classes"]]
    assert classes == [label for label, _ in _host_top5(bundle, data_dir / "image.png")], result
