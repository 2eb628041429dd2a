"""The KServe SDK's own environment, for tests/deploy/test_kserve_sdk.py.

Every kserve release from 0.11 pins protobuf < 7 and psutil < 6, and the main environment has TensorFlow's
protobuf 7 and psutil 7 (constraints.txt), so the SDK lives in <repo>/.venv-kserve (or $BIT_KSERVE_PYTHON), pinned
by constraints-kserve.txt and built here when missing or when that file changed since (a stamp file in the
environment holds its hash) by tests/side_venv.py, as .venv-serve is built. It holds kserve (without its model
server's dependencies: only its typed models are used) and the Kubernetes client, not bit-trt: the objects go to
tests/deploy/kserve_sdk_check.py as JSON on stdin. Where no package index answers, the tests that need it
skip and say why; any other failed build fails them in one line.
"""

import os

import pytest

from tests.side_venv import side_venv

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KSERVE_VENV = os.path.join(ROOT, ".venv-kserve")
CONSTRAINTS = "constraints-kserve.txt"
BUILD_TIMEOUT_S = 900
# the Kubernetes client with its dependencies, then kserve without its own
KSERVE_INSTALLS = (("-c", CONSTRAINTS, "kubernetes"), ("-c", CONSTRAINTS, "--no-deps", "kserve"))


@pytest.fixture(scope="session")
def kserve_python() -> str:
    """The KServe SDK environment's Python: $BIT_KSERVE_PYTHON, or <repo>/.venv-kserve built or refreshed here."""
    return side_venv(KSERVE_VENV, "BIT_KSERVE_PYTHON", (CONSTRAINTS,), KSERVE_INSTALLS, timeout_s=BUILD_TIMEOUT_S)
