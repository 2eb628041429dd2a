"""bit-engine: plans added to an exported bundle for this host, with TensorRT-RTX here (a real builder)."""

import json
import os
import stat

import pytest

from bit_trt.engine.bundle import load_bundle, sha256_file
from tests.conftest import run_cli

ENGINE = "bit_trt.export.engine_cli"
rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is part of the CI install (.[rtx])")


@pytest.fixture
def bundle(tiny_bundle, copy_bundle):
    """A private copy of the tiny FP32+FP16 bundle, exported with --engine none."""
    return copy_bundle(tiny_bundle)


def _no_tensorflow(tmp_path) -> dict:
    """An environment where `import tensorflow` fails, as on a deployment host without the export extras."""
    shadow = tmp_path / "no-tf"
    shadow.mkdir(exist_ok=True)
    (shadow / "tensorflow.py").write_text("raise ImportError('TensorFlow is not installed on this host')\n")
    return {"PYTHONPATH": f"{shadow}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _state(path) -> dict:
    """Every file of the bundle and its checksum: what 'unchanged' means."""
    return {p.name: sha256_file(p) for p in sorted(path.iterdir()) if p.is_file()}


def test_adds_plans_and_the_bundle_stays_valid(bundle, tmp_path):
    before = json.loads((bundle / "manifest.json").read_text())
    proc = run_cli(ENGINE, bundle, "--max-batch", "4", "--opt-batch", "2", env=_no_tensorflow(tmp_path))
    assert proc.returncode == 0, proc.stderr
    after = load_bundle(str(bundle))
    plans = after.artifacts("engine")
    assert sorted(plans) == ["fp16", "fp32"]
    for variant, plan in plans.items():
        assert (
            plan["file"] == f"model.{variant}.rtx{rtx.__version__}.rtx.plan" and plan["from"] == f"model.{variant}.onnx"
        )
        assert plan["profile"] == {"min": 1, "opt": 2, "max": 4} and plan["built"]["by"] == "bit-engine"
        after.verify_file(plan)  # checksum recorded = file written
        assert plan["file"] in proc.stdout and "not checked here (" in proc.stdout  # no GPU here to run it
    assert after.manifest["artifacts"][: len(before["artifacts"])] == before["artifacts"]
    assert {k: v for k, v in after.manifest.items() if k != "artifacts"} == {
        k: v for k, v in before.items() if k != "artifacts"
    }
    assert not [p for p in bundle.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_an_existing_plan_is_refused_unless_forced(bundle):
    assert run_cli(ENGINE, bundle, "--precision", "fp16", "--max-batch", "2", "--opt-batch", "1").returncode == 0
    first = _state(bundle)
    proc = run_cli(ENGINE, bundle, "--precision", "fp16")
    assert proc.returncode == 1 and "pass --force to rebuild" in proc.stderr and _state(bundle) == first
    proc = run_cli(ENGINE, bundle, "--precision", "fp16", "--max-batch", "4", "--opt-batch", "2", "--force")
    assert proc.returncode == 0, proc.stderr
    (plan,) = load_bundle(str(bundle)).artifacts("engine").values()
    assert plan["profile"]["max"] == 4 and len(load_bundle(str(bundle)).manifest["artifacts"]) == 3


@pytest.mark.parametrize(
    "damage,message",
    [
        ("tamper", "model.fp16.onnx does not match its manifest checksum"),
        ("missing-variant", "has no int8-trt ONNX graph for TensorRT (it has: fp32, fp16)"),
        ("bad-precision", "unknown precision fp8; choose from fp32, fp16, int8, all"),
        ("bad-profile", "batch profile must satisfy 1 <= min <= opt <= max"),
    ],
)
def test_bad_requests_leave_the_bundle_unchanged(bundle, damage, message):
    args = ["--precision", "fp16"]
    if damage == "tamper":
        with open(bundle / "model.fp16.onnx", "r+b") as f:
            f.seek(2000)
            f.write(b"\x00\x01\x02")
    elif damage == "missing-variant":
        args = ["--precision", "int8"]
    elif damage == "bad-precision":
        args = ["--precision", "fp16,fp8"]
    else:
        args += ["--min-batch", "4", "--max-batch", "2"]
    before = _state(bundle)
    proc = run_cli(ENGINE, bundle, *args)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("bit-engine: error:") and "Traceback" not in proc.stderr
    assert _state(bundle) == before and not [p for p in bundle.iterdir() if p.name.startswith(".")]


def test_read_only_bundle(bundle):
    if os.geteuid() == 0:
        pytest.skip("root writes anywhere: a read-only bundle needs a non-root user")
    mode = bundle.stat().st_mode
    os.chmod(bundle, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    try:
        proc = run_cli(ENGINE, bundle)
        assert proc.returncode == 1 and "is not writable (Permission denied)" in proc.stderr
    finally:
        os.chmod(bundle, mode)


def test_missing_library_names_the_install_command(bundle, tmp_path):
    shadow = tmp_path / "no-trt"
    shadow.mkdir()
    (shadow / "tensorrt.py").write_text("raise ImportError('not installed')\n")
    env = {"PYTHONPATH": f"{shadow}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    before = _state(bundle)
    proc = run_cli(ENGINE, bundle, "--engine", "tensorrt", env=env)
    assert proc.returncode == 1 and "pip install 'bit-trt[gpu]'" in proc.stderr and _state(bundle) == before


def test_failed_build_leaves_nothing(bundle):
    """A build that fails (a compute capability that does not exist) leaves no plan, no staging directory
    and the old manifest."""
    before = _state(bundle)
    proc = run_cli(ENGINE, bundle, "--precision", "fp32,fp16", "--rtx-cc", "SM99")
    assert proc.returncode == 1 and "unknown compute capability 'SM99'" in proc.stderr
    assert _state(bundle) == before and not [p for p in bundle.iterdir() if p.name.startswith(".")]


def test_the_check_after_a_build_reports_like_bit_check(tiny_full_bundle, monkeypatch, capsys):
    """Where a plan passes the manifest check but cannot run (here: no pycuda), bit-engine says so in bit-check's
    words and exit code, from the library's check rather than bit-check's main."""
    from bit_trt.engine import plan_check
    from bit_trt.export import engine_cli

    monkeypatch.setattr(plan_check, "check_plan", lambda *args: None)  # as if this host had the plan's GPU
    (plan,) = [
        a
        for a in load_bundle(str(tiny_full_bundle)).manifest["artifacts"]
        if a["file"].startswith("model.fp16") and a["kind"] == "engine"
    ]
    assert engine_cli._check_here(str(tiny_full_bundle), plan) == "bit-check FAILED (exit 2)"
    assert capsys.readouterr().err.startswith("bit-check: error: ")
