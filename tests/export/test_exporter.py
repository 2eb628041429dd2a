"""A whole export of the tiny variant: the bundle, its manifest, and the checks a reader runs on it."""

import json

import numpy as np
import pytest

from bit_trt.engine import compare
from bit_trt.engine.bundle import load_bundle, sha256_file
from bit_trt.engine.errors import BitError
from bit_trt.engine.ort_runner import OrtRunner


def test_bundle_layout_and_manifest(tiny_bundle):
    names = sorted(p.name for p in tiny_bundle.iterdir())
    assert names == [
        "labels.json",
        "manifest.json",
        "model.fp16.onnx",
        "model.fp32.onnx",
        "parity_inputs.npz",
        "parity_inputs.raw",
    ]
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    assert m["format"] == "bit-trt-bundle" and m["format_version"] == 2
    assert [(a["precision"], a["flavour"]) for a in m["artifacts"]] == [("fp32", "fp32"), ("fp16", "fp16")]
    # the gate a host running the fp16 file in bf16 holds it to, for readers in any language (bit::Classifier)
    assert m["artifacts"][1]["bf16_tolerance"] == compare.BF16_PARITY.to_dict()
    assert "bf16_tolerance" not in m["artifacts"][0]
    assert m["flavours"]["openvino"] == {"fp32": "fp32", "fp16": "fp16", "int8": "int8-ort"}
    assert m["flavours"]["trt"]["int8"] == "int8-trt"
    assert m["model"]["variant"] == "tiny" and m["model"]["num_classes"] == 1000
    assert m["model"]["trained"] is False and "NOT trained" in m["model"]["source"]["description"]
    assert m["input"] == {
        "name": "images",
        "layout": "NHWC",
        "dtype": "float32",
        "color": "RGB",
        "value_range": [0.0, 1.0],
        "resolution": 64,
        "resize": "bilinear",
        "decoder": "opencv",
    }
    art = m["artifacts"][0]
    assert art["precision"] == "fp32" and art["opset"] == 17
    assert art["sha256"] == sha256_file(tiny_bundle / art["file"])
    assert art["parity"]["passed"] and art["parity"]["samples"] >= 4
    assert any(n.startswith("photo:") for n in art["parity"]["inputs"])
    g = art["graph"]
    assert g["after_cleanup"]["layout_transposes"] == 1 and g["before_cleanup"]["nodes"] > g["after_cleanup"]["nodes"]
    assert m["export"]["peak_rss_bytes"] > 0 and "tensorflow-cpu" in m["tools"] and "tf2onnx" in m["tools"]
    steps = m["export"]["steps_s"]
    # in the order they ran; tf2onnx's conversion, done in the TF child, is booked to convert, not to reference
    assert list(steps)[:5] == ["reference", "load", "convert", "fold", "fuse"]
    assert 0 < sum(steps.values()) <= m["export"]["wall_s"] + 0.05


def test_the_int8_record_openvino_loads_holds_its_bf16_gate(tiny_full_bundle):
    """The int8-ort record carries the bound a host that runs its float layers in bf16 holds it to (openvino: the
    C++ library reads it there); int8-trt, which no CPU backend loads, carries none."""
    m = json.loads((tiny_full_bundle / "manifest.json").read_text())
    records = {a["flavour"]: a for a in m["artifacts"] if a["kind"] == "onnx"}
    assert records["int8-ort"]["bf16_tolerance"] == compare.INT8_BF16_PARITY.to_dict()
    assert "bf16_tolerance" not in records["int8-trt"] and "bf16_tolerance" not in records["fp32"]


def test_returned_manifest_is_the_one_written(tiny_bundle):
    from tests.conftest import RETURNED_MANIFESTS

    assert RETURNED_MANIFESTS[str(tiny_bundle)] == json.loads((tiny_bundle / "manifest.json").read_text())


def test_no_partial_directories_left(tiny_bundle):
    assert [p.name for p in tiny_bundle.parent.iterdir() if p.name.startswith(".")] == []


def test_recorded_reference_reproduces_on_this_host(tiny_bundle):
    """What `bit-check` will do on a deployment host without TF: the stored TF logits against ORT."""
    bundle = load_bundle(str(tiny_bundle))
    ref = np.load(tiny_bundle / "parity_inputs.npz")
    with OrtRunner(bundle.artifact_path("fp32")) as runner:
        logits = runner.infer(ref["images"].astype(np.float32) / 255)
    assert not compare.FP32_PARITY.check(compare.measure(logits, ref["tf_logits"]))


def test_labels_are_imagenet_in_wnid_order(tiny_bundle):
    labels = load_bundle(str(tiny_bundle)).labels()
    assert len(labels) == 1000
    assert labels[0]["wnid"] == "n01440764" and labels[0]["name"] == "tench"
    assert [entry["wnid"] for entry in labels] == sorted(entry["wnid"] for entry in labels)


@pytest.fixture
def bundle_copy(tiny_bundle, copy_bundle):
    return copy_bundle(tiny_bundle)


def test_checksum_mismatch_is_refused(bundle_copy):
    with open(bundle_copy / "model.fp32.onnx", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00\x01\x02\x03")
    with pytest.raises(BitError, match="does not match its manifest checksum"):
        load_bundle(str(bundle_copy)).artifact_path("fp32")


def test_missing_file_is_named(bundle_copy):
    (bundle_copy / "model.fp32.onnx").unlink()
    with pytest.raises(BitError, match="missing model.fp32.onnx"):
        load_bundle(str(bundle_copy)).artifact_path("fp32")


def test_other_format_version_is_refused(bundle_copy):
    m = json.loads((bundle_copy / "manifest.json").read_text())
    m["format_version"] = 99
    (bundle_copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BitError, match="format version 99 is not supported"):
        load_bundle(str(bundle_copy))


def test_directory_without_manifest(tmp_path):
    with pytest.raises(BitError, match="not a bit-trt bundle"):
        load_bundle(str(tmp_path))


def test_truncated_model_is_a_clear_error(bundle_copy):
    path = bundle_copy / "model.fp32.onnx"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(BitError, match="ONNX Runtime cannot load"):
        OrtRunner(str(path)).activate()
