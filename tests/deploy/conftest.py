"""The KServe SDK's own environment, for tests/deploy/test_kserve_sdk.py.

Every kserve release from 0.11 pins protobuf < 7 and psutil < 6, and the main environment has TensorFlow's
protobuf 7 and psutil 7 (constraints.txt), so the SDK lives in <repo>/.venv-kserve (or $BIT_KSERVE_PYTHON), pinned
by constraints-kserve.txt and built here when missing or when that file changed since (a stamp file in the
environment holds its hash), as tests/serve/conftest.py builds .venv-serve. It holds kserve (without its model
server's dependencies: only its typed models are used) and the Kubernetes client, not bit-trt: the objects go to
tests/deploy/kserve_sdk_check.py as JSON on stdin. Where the environment cannot be built (no package index), the
tests that need it skip and say why.
"""

import fcntl
import hashlib
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KSERVE_VENV = os.path.join(ROOT, ".venv-kserve")
CONSTRAINTS = "constraints-kserve.txt"
STAMP = os.path.join(KSERVE_VENV, ".bit-kserve-stamp")
BUILD_TIMEOUT_S = 900
# what pip prints when it cannot reach an index (urllib3's and the resolver's words)
NO_NETWORK = (
    "NewConnectionError",
    "Failed to establish a new connection",
    "Name or service not known",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ConnectTimeout",
    "Could not fetch URL",
    "ProxyError",
)


def _stamp() -> str:
    with open(os.path.join(ROOT, CONSTRAINTS), "rb") as f:
        return hashlib.sha256(CONSTRAINTS.encode() + b"\0" + f.read()).hexdigest()


def _build_kserve_venv(python: str) -> str | None:
    """constraints-kserve.txt's build: the Kubernetes client with its dependencies, then kserve without its own.
    Returns why it failed, or None."""
    steps = [
        [python, "-m", "pip", "install", "-q", "-c", CONSTRAINTS, "kubernetes"],
        [python, "-m", "pip", "install", "-q", "-c", CONSTRAINTS, "--no-deps", "kserve"],
    ]
    if not os.path.exists(python):
        steps.insert(0, [sys.executable, "-m", "venv", KSERVE_VENV])
    for step in steps:
        try:
            proc = subprocess.run(step, cwd=ROOT, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(step[1:])}` took over {BUILD_TIMEOUT_S} s"
        if proc.returncode != 0:
            errors = [line for line in proc.stderr.splitlines() if line.startswith("ERROR")] or ["(no message)"]
            offline = any(sign in proc.stderr for sign in NO_NETWORK)
            return ("no package index reachable, " if offline else "") + f"`{' '.join(step[1:])}`: {errors[0]}"
    return None


@pytest.fixture(scope="session")
def kserve_python() -> str:
    """The KServe SDK environment's Python: $BIT_KSERVE_PYTHON, or <repo>/.venv-kserve built or refreshed here;
    skips the test, with the reason, where it cannot be built."""
    if os.environ.get("BIT_KSERVE_PYTHON"):
        python = os.environ["BIT_KSERVE_PYTHON"]
        assert os.path.exists(python), f"BIT_KSERVE_PYTHON={python} does not exist"
        return python
    python = os.path.join(KSERVE_VENV, "bin", "python")
    os.makedirs(KSERVE_VENV, exist_ok=True)
    with open(os.path.join(KSERVE_VENV, ".build-lock"), "w") as lock:  # one builder at a time (pytest-xdist)
        fcntl.flock(lock, fcntl.LOCK_EX)
        stamp = _stamp()
        current = open(STAMP).read().strip() if os.path.exists(STAMP) else None
        if not os.path.exists(python) or current != stamp:
            failure = _build_kserve_venv(python)
            if failure:
                pytest.skip(f"could not build .venv-kserve for the KServe SDK: {failure}")
            with open(STAMP, "w") as f:
                f.write(stamp + "\n")
    return python
