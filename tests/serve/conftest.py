"""bit-serve's own environment, and a real bit-serve (Triton through PyTriton) started from it.

PyTriton needs numpy < 2 and the tests' environment has TensorFlow's numpy 2, so the server runs in
<repo>/.venv-serve (or $BIT_SERVE_PYTHON), built here by tests/side_venv.py as CI builds it when missing or when
constraints-serve.txt or pyproject.toml changed since (a stamp file in the environment holds their hash).
"""

import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

import pytest

from tests.side_venv import side_venv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVE_VENV = os.path.join(ROOT, ".venv-serve")
STAMPED_FILES = ("constraints-serve.txt", "pyproject.toml")
SERVE_INSTALL = ("-c", "constraints-serve.txt", "-e", ".[serve,openvino]")
READY = re.compile(
    r"^bit-serve: ready: models \S+ \(float\) and \S+ \(encoded images\); (http://\S+|http off) grpc \S+ metrics \S+$",
    re.M,
)
READY_TIMEOUT_S = 240  # the model loads, then Triton starts and loads two Python-backend models
STOP_TIMEOUT_S = 60  # bit-serve's own deadline is 15 s (serve/pytriton_lifecycle.py STOP_DEADLINE_S)


@pytest.fixture(scope="session")
def serve_python() -> str:
    """The serving environment's Python: $BIT_SERVE_PYTHON, or <repo>/.venv-serve built or refreshed here
    (`python3 -m venv .venv-serve && pip install -c constraints-serve.txt -e '.[serve,openvino]'`)."""
    return side_venv(SERVE_VENV, "BIT_SERVE_PYTHON", STAMPED_FILES, [SERVE_INSTALL], timeout_s=1800)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class BitServe:
    """A running bit-serve: its process, log and addresses."""

    proc: subprocess.Popen
    log_path: str
    workspace: str
    http_port: int
    grpc_port: int
    metrics_port: int

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def tree(self) -> list[int]:
        """bit-serve and every process under it (Triton and its Python-backend stubs)."""
        from tools.serve_attack_bench import process_tree

        return process_tree(self.proc.pid)

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if READY.search(self.log()):
                return
            if self.proc.poll() is not None:
                pytest.fail(f"bit-serve exited with {self.proc.returncode} before it was ready:\n{self.log()[-4000:]}")
            time.sleep(0.2)
        self.proc.kill()
        pytest.fail(f"bit-serve was not ready within {READY_TIMEOUT_S} s:\n{self.log()[-4000:]}")

    def stop(self, sig=signal.SIGINT, group: bool = False) -> float:
        """Send `sig` (to the process group, as a terminal's Ctrl-C does, when `group`); returns the seconds it
        took to exit. Fails unless it exits 0 within STOP_TIMEOUT_S."""
        start = time.monotonic()
        if group:
            os.killpg(self.proc.pid, sig)
        else:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own group (start_new_session): the server and Triton
            self.proc.wait(10)
            pytest.fail(f"bit-serve did not exit within {STOP_TIMEOUT_S} s of {sig.name}:\n{self.log()[-4000:]}")
        assert code == 0, f"bit-serve exited with {code} on {sig.name}:\n{self.log()[-4000:]}"
        return time.monotonic() - start


def start_bit_serve(serve_python, bundle, workspace, *args, env=None) -> BitServe:
    """bit-serve on free ports in its own session (so a test can send the group a terminal's Ctrl-C); ready."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    os.makedirs(workspace, exist_ok=True)
    log_path = os.path.join(os.path.dirname(workspace), os.path.basename(workspace) + ".log")
    full_env = {**os.environ, **(env or {})}
    command = [serve_python, "-m", "bit_trt.serve.serve_cli", str(bundle), "--backend", "ort-cpu"]
    command += ["--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port)]
    command += ["--workspace", str(workspace), *map(str, args)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, env=full_env, start_new_session=True
        )
    server = BitServe(proc, log_path, str(workspace), http_port, grpc_port, metrics_port)
    server.wait_ready()
    return server


def leftovers(server: BitServe) -> list[str]:
    """What a stopped bit-serve must not leave: files in its workspace, the Python backend's shared memory in the
    host's /dev/shm (named after its pid; bit-serve's own are in a private /dev/shm), Triton's temporary copies of
    model configs (they name its workspace)."""
    found = [os.path.join(server.workspace, name) for name in os.listdir(server.workspace)]
    found += [f"/dev/shm/{name}" for name in os.listdir("/dev/shm") if name.startswith(f"pytrtion{server.proc.pid}-")]
    for name in os.listdir("/tmp"):
        config = os.path.join("/tmp", name, "config.pbtxt")
        if re.fullmatch(r"folder\w{6}", name) and os.path.exists(config):
            with open(config, errors="replace") as f:
                if server.workspace in f.read():
                    found.append(os.path.dirname(config))
    return found


SERVE_MAX_IMAGE_PIXELS = 16_000_000  # the shared server's image limit: a 4000x4000 photo passes, 8000x8000 does not
SERVE_MAX_DECODE_MB = 120  # and its decode memory: one 16-megapixel JPEG or PNG at a time (7 bytes a pixel)


@pytest.fixture(scope="session")
def bit_serve(serve_python, tiny_bundle, tmp_path_factory):
    """One bit-serve for the tiny bundle (ort-cpu), shared by the tests. At teardown, SIGINT must stop it cleanly."""
    workspace = tmp_path_factory.mktemp("bit-serve") / "ws"
    # a generous queue delay, so that the dynamic-batching test sees batches on a loaded 2-core host
    limits = ("--max-queue-delay-us", 20000, "--max-image-pixels", SERVE_MAX_IMAGE_PIXELS)
    limits += ("--max-decode-mb", SERVE_MAX_DECODE_MB)
    server = start_bit_serve(serve_python, tiny_bundle, workspace, *limits)
    try:
        yield server
    finally:
        if server.proc.poll() is None:
            server.stop(signal.SIGINT)
        assert leftovers(server) == []
