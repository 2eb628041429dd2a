"""FP16 and INT8 on a model that has learned something: BiT-tiny trained on scikit-learn's digits.

The accuracy numbers here are real: 450 held-out digits, labels known. Training takes ~40 s on 2 cores.
"""

import json

import cv2
import numpy as np
import pytest

from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.ort_runner import OrtRunner
from bit_trt.export.checkpoint import save_npz
from tests.conftest import run_cli
from tools import trained_tiny

EXPORT = "bit_trt.export.cli"


def _write_pngs(d, images):
    d.mkdir()
    for i, img in enumerate(images):
        cv2.imwrite(str(d / f"{i:04d}.png"), img[:, :, ::-1])
    return d


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    weights, tf_accuracy = trained_tiny.train(steps=300)
    save_npz(str(root / "bit-tiny-digits.npz"), weights)
    x_tr, y_tr, x_te, y_te = trained_tiny.digits_rgb()
    (root / "digits.txt").write_text("\n".join(trained_tiny.DIGIT_NAMES) + "\n")
    calib = _write_pngs(root / "calib", x_tr[:64])
    evaluation = _write_pngs(root / "eval", x_te[:200])
    cache = root / "cache"
    out = root / "bundle"
    proc = run_cli(
        EXPORT,
        "--model",
        root / "bit-tiny-digits.npz",
        "--resolution",
        trained_tiny.RESOLUTION,
        "--labels",
        root / "digits.txt",
        "--precision",
        "all",
        "--calib-images",
        calib,
        "--eval-images",
        evaluation,
        "--eval-count",
        200,
        "--out",
        out,
        "--int8-sensitivity",
        env={"BIT_TRT_CACHE": str(cache)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        "root": root,
        "bundle": out,
        "tf_accuracy": tf_accuracy,
        "x_te": x_te,
        "y_te": y_te,
        "calib": calib,
        "eval": evaluation,
        "cache": cache,
        "stdout": proc.stdout,
    }


def _accuracy(path, x_u8, y):
    with OrtRunner(path) as runner:
        logits = np.concatenate(
            [runner.infer(x_u8[i : i + 64].astype(np.float32) / 255) for i in range(0, len(x_u8), 64)]
        )
    return float((logits.argmax(1) == y).mean())


def test_trained_model_is_really_trained(trained):
    assert trained["tf_accuracy"] > 0.9


def test_every_variant_keeps_the_accuracy(trained):
    bundle = load_bundle(str(trained["bundle"]))
    acc = {
        v: _accuracy(bundle.artifact_path(v), trained["x_te"], trained["y_te"])
        for v in ("fp32", "fp16", "int8-trt", "int8-ort")
    }
    assert abs(acc["fp32"] - trained["tf_accuracy"]) <= 1 / 450 + 1e-9  # at most one digit differs
    assert acc["fp16"] >= acc["fp32"] - 0.005
    for v in ("int8-trt", "int8-ort"):
        assert acc[v] >= acc["fp32"] - 0.02, acc


def test_manifest_records_calibration_gate_and_sensitivity(trained):
    m = json.loads((trained["bundle"] / "manifest.json").read_text())
    int8_arts = [a for a in m["artifacts"] if a["kind"] == "onnx" and a["precision"] == "int8"]
    assert sorted(a["runtime"] for a in int8_arts) == ["onnxruntime", "tensorrt"]
    for a in int8_arts:
        assert a["calibration"]["kind"] == "directory" and a["calibration"]["count"] == 64
        assert a["gate"]["passed"] and a["gate"]["samples"] >= 200
        assert a["gate"]["confident_samples"] >= 150  # a trained model is sure of most digits
        assert a["sensitivity"] and all("rel_l2" in row for row in a["sensitivity"])
        assert a["calibration"]["cache_file"] == "calibration.minmax.json"
    assert m["labels"]["kind"] == "custom" and m["model"]["source"]["kind"] == "npz"


def test_qdq_layout_per_target(trained):
    import onnx
    from onnx import numpy_helper

    for variant, act_dtype in (("int8-trt", onnx.TensorProto.INT8), ("int8-ort", onnx.TensorProto.UINT8)):
        model = onnx.load(str(trained["bundle"] / f"model.{variant}.onnx"))
        ops = [n.op_type for n in model.graph.node]
        assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "InstanceNormalization" in ops
        inits = {i.name: i for i in model.graph.initializer}
        q_points = [inits[n.input[2]] for n in model.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2]
        assert q_points and all(z.data_type == act_dtype for z in q_points)
        if variant == "int8-trt":  # symmetric: every activation zero point is 0
            assert all(not numpy_helper.to_array(z).any() for z in q_points)


def _export_int8_again(trained, out):
    """The trained model's INT8 export once more, with the fixture's user cache (which holds its ranges)."""
    return run_cli(
        EXPORT,
        "--model",
        trained["root"] / "bit-tiny-digits.npz",
        "--resolution",
        32,
        "--labels",
        trained["root"] / "digits.txt",
        "--precision",
        "int8",
        "--calib-images",
        trained["calib"],
        "--out",
        out,
        "--engine",
        "none",
        env={"BIT_TRT_CACHE": str(trained["cache"])},
    )


def test_cache_is_reused_and_foreign_cache_refused(trained, tmp_path):
    again = tmp_path / "again"
    proc = _export_int8_again(trained, again)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "calibration ranges reused" in proc.stderr
    m = json.loads((again / "manifest.json").read_text())
    int8_arts = [a for a in m["artifacts"] if a["kind"] == "onnx" and a["precision"] == "int8"]
    assert len(int8_arts) == 2 and all(a["calibration"]["cache"] == "reused" for a in int8_arts)
    # The same cache file offered for a different model: refused, nothing written.
    foreign = run_cli(
        EXPORT,
        "--variant",
        "tiny",
        "--resolution",
        32,
        "--num-classes",
        10,
        "--precision",
        "int8",
        "--calib-images",
        trained["calib"],
        "--calib-cache",
        again / "calibration.minmax.json",
        "--out",
        tmp_path / "foreign",
        "--engine",
        "none",
    )
    assert foreign.returncode == 1 and "stale or foreign cache" in foreign.stderr
    assert not (tmp_path / "foreign").exists()


def test_ranges_in_the_user_cache_are_reused_only_if_this_user_alone_may_have_written_them(trained, tmp_path):
    """The ranges decide every scale of the INT8 graph: in a $BIT_TRT_CACHE others may write to, they are computed
    again rather than read (engine/user_cache.read_kept), and kept 0600."""
    (kept,) = (trained["cache"] / "calibration").glob("*.json")
    planted = json.loads(kept.read_text())
    planted["ranges"]["data"] = {}  # the right key, no ranges: quantizing from it would fail
    kept.write_text(json.dumps(planted))
    kept.chmod(0o664)
    proc = _export_int8_again(trained, tmp_path / "again")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "calibration ranges computed" in proc.stderr
    m = json.loads((tmp_path / "again" / "manifest.json").read_text())
    assert {a["calibration"]["cache"] for a in m["artifacts"] if a.get("precision") == "int8"} == {"computed"}
    assert kept.stat().st_mode & 0o777 == 0o600 and json.loads(kept.read_text())["ranges"]["data"]
    assert "calibration ranges reused" in _export_int8_again(trained, tmp_path / "third").stderr


def test_int8_without_calibration_data_is_refused_up_front(tmp_path):
    proc = run_cli(EXPORT, "--variant", "tiny", "--precision", "int8", "--out", tmp_path / "b")
    assert proc.returncode == 1 and "--calib-images DIR" in proc.stderr
