"""The GPU proof command, where it can be checked without a GPU: its refusal, what it carries, how it reads tests."""

import shutil

import pytest

from tests.conftest import run_cli
from tools import gpu_proof, pycuda_build

NO_GPU = pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this host has a GPU")


@NO_GPU
def test_without_a_gpu_it_stops_at_once_with_one_line():
    proc = run_cli("tools.gpu_proof")
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "no NVIDIA GPU" in proc.stderr


def test_fetch_brings_pycuda_and_what_it_imports(tmp_path):
    """The carried folder holds pycuda's source archive and a Python 3.12 wheel for each run-time import."""
    names = pycuda_build.fetch(str(tmp_path))
    archive, wheels = pycuda_build.carried_files(str(tmp_path))
    assert archive.endswith("pycuda-2026.1.tar.gz")
    for package in ("pytools", "siphash24", "platformdirs", "mako", "typing_extensions"):
        assert any(n.lower().startswith(package) for n in names), package
    assert any("cp312" in w for w in wheels) and all("cp31" in w or "py3-none-any" in w for w in wheels)
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) < 8 << 20  # far inside the 64 MiB that travels


def test_missing_carried_folder_says_how_to_fetch_it(tmp_path):
    with pytest.raises(Exception, match="--fetch"):
        pycuda_build.carried_files(str(tmp_path))


@NO_GPU
def test_gpu_test_outcomes_are_read_per_test(tmp_path):
    """On this host every gpu test skips; the proof's reader must list each one with its reason."""
    result = gpu_proof.run_gpu_tests([], str(tmp_path / "gpu_tests.log"))
    assert result["exit_code"] == 0 and result["passed"] == 0
    machinery = [t for t in result["tests"] if t.startswith("test_trt_runner_machinery_gpu::")]
    assert "test_trt_runner_machinery_gpu::test_twelve_threads_on_three_workers_equal_serial" in machinery
    assert not any(t.startswith("test_trt_gpu::") for t in result["tests"])  # marked tensorrt: deselected
    reasons = set(result["not_passed"].values())
    assert len(result["not_passed"]) == len(result["tests"])
    assert reasons == {"skipped: needs an NVIDIA GPU (no nvidia-smi on this host)"}


def test_the_files_it_collects_hold_every_gpu_test():
    """What pytest itself selects with -m gpu (here, where every test module imports) is in gpu_test_files."""
    proc = run_cli("pytest", "-m", "gpu", "--collect-only", "-q", "-p", "no:cacheprovider", "tests")
    selected = {line.split("::")[0] for line in proc.stdout.splitlines() if "::" in line}
    assert "tests/engine/test_trt_runner_machinery_gpu.py" in selected
    assert selected == set(gpu_proof.gpu_test_files())
