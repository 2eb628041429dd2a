"""bit-check: the deployment host proves its engine against TF (live, or the logits stored in the bundle)."""

import hashlib
import json
import shutil

import pytest

from tests.conftest import run_cli

CHECK = "bit_trt.engine.check_cli"


def test_pass_with_live_tf(tiny_full_bundle, tmp_path):
    report = tmp_path / "r.json"
    proc = run_cli(CHECK, tiny_full_bundle, "--backend", "ort-cpu", "--json", report)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "against TF, computed here" in proc.stdout and proc.stdout.strip().endswith("PASS")
    data = json.loads(report.read_text())
    assert data["passed"] and data["top1_equal"] == [True] * len(data["images"]) == [True] * data["samples"]
    assert data["rel_l2"] < 3e-4


@pytest.mark.parametrize("backend,precision", [("openvino", "int8"), ("ort-cpu", "fp16")])
def test_pass_with_stored_reference(tiny_full_bundle, backend, precision):
    proc = run_cli(CHECK, tiny_full_bundle, "--backend", backend, "--precision", precision, "--reference", "stored")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "TF logits recorded at export" in proc.stdout


@pytest.fixture
def bundle_copy(tiny_full_bundle, copy_bundle):
    return copy_bundle(tiny_full_bundle)


def test_wrong_engine_fails_with_the_metric(bundle_copy):
    """An FP16 graph posing as the FP32 one (checksums updated): runs fine, but breaks FP32 parity."""
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    shutil.copy(bundle_copy / "model.fp16.onnx", bundle_copy / "model.fp32.onnx")
    for art in manifest["artifacts"]:
        if art["file"] == "model.fp32.onnx":
            art["sha256"] = hashlib.sha256((bundle_copy / "model.fp32.onnx").read_bytes()).hexdigest()
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli(CHECK, bundle_copy, "--backend", "ort-cpu", "--reference", "stored")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL: relative L2" in proc.stdout


def test_tampered_parity_set_and_missing_model(bundle_copy):
    with open(bundle_copy / "parity_inputs.npz", "r+b") as f:
        f.seek(100)
        f.write(b"\xff\xff")
    proc = run_cli(CHECK, bundle_copy, "--backend", "ort-cpu", "--reference", "stored")
    assert proc.returncode == 2 and "parity_inputs.npz does not match its manifest checksum" in proc.stderr
    (bundle_copy / "model.fp32.onnx").unlink()
    proc = run_cli(CHECK, bundle_copy, "--backend", "ort-cpu")
    assert proc.returncode == 2 and "missing model.fp32.onnx" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_reference_of_another_shape_is_a_clear_error(bundle_copy):
    """Stored TF logits for fewer classes than the model has (checksum updated): exit 2 with one line, no
    ValueError traceback from the comparison."""
    import numpy as np

    path = bundle_copy / "parity_inputs.npz"
    with np.load(path) as data:
        images, names, tf_logits = data["images"], data["names"], data["tf_logits"]
    np.savez_compressed(path, images=images, names=names, tf_logits=tf_logits[:, :10])
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["reference"]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    proc = run_cli(CHECK, bundle_copy, "--backend", "ort-cpu", "--reference", "stored")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        "bit-check: error: cannot compare logits of shape (4, 1000) with reference logits of shape (4, 10)"
        in proc.stderr
    )
    assert "Traceback" not in proc.stderr
