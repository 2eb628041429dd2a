import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.errors import BitError
from bit_trt.export.bundle_writer import BundleWriter


def _matmul_model(n=512):
    w = np.random.default_rng(0).standard_normal((n, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, n])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(w, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), w


def test_large_models_get_external_data(tmp_path):
    """The R152x4 path (over 2 GB) with a 100 KB threshold: data file beside the model, both checksummed."""
    model, w = _matmul_model()
    out = tmp_path / "b"
    with BundleWriter(str(out)) as writer:
        info = writer.write_onnx("model.fp32.onnx", model, external_above=100_000)
        writer.publish({"artifacts": [{**info, "kind": "onnx", "precision": "fp32", "flavour": "fp32"}]})
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "model.fp32.onnx", "model.fp32.onnx.data"]
    assert (out / "model.fp32.onnx").stat().st_size < 10_000
    bundle = load_bundle(str(out))
    x = np.ones((1, 512), np.float32)
    sess = __import__("onnxruntime").InferenceSession(bundle.artifact_path("fp32"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"x": x})[0], x @ w, rtol=1e-4, atol=1e-3)
    with open(out / "model.fp32.onnx.data", "r+b") as f:
        f.write(b"\xff\xff\xff\xff")
    with pytest.raises(BitError, match="model.fp32.onnx.data does not match"):
        bundle.artifact_path("fp32")


def test_failure_inside_leaves_nothing(tmp_path):
    out = tmp_path / "b"
    with pytest.raises(RuntimeError):
        with BundleWriter(str(out)) as writer:
            writer.write_json("labels.json", ["a"])
            raise RuntimeError("export failed half way")
    assert list(tmp_path.iterdir()) == []


def test_missing_parents_are_created_and_removed_on_failure(tmp_path):
    out = tmp_path / "a" / "b" / "bundle"
    with pytest.raises(RuntimeError):
        with BundleWriter(str(out)):
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with BundleWriter(str(out)) as writer:
        writer.publish({})
    assert (out / "manifest.json").is_file()


def test_parent_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(BitError, match="exists and is not a directory"):
        BundleWriter(str(tmp_path / "file" / "sub" / "bundle"))


def test_a_published_bundle_has_the_mode_mkdir_gives_not_mkdtemps_private_one(tmp_path):
    """A server in a container runs as another user: it must be able to read the bundle (umask decides)."""
    import os

    old = os.umask(0o027)
    try:
        with BundleWriter(str(tmp_path / "b")) as writer:
            writer.write_json("labels.json", ["a"])
            writer.publish({"artifacts": []})
    finally:
        os.umask(old)
    assert (tmp_path / "b").stat().st_mode & 0o777 == 0o750
    (tmp_path / "plain").mkdir()  # what os.mkdir gives under the usual umask: the same rule
    assert (tmp_path / "plain").stat().st_mode & 0o777 == 0o777 & ~old
