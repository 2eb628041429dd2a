"""Official `.npz` checkpoints: written here in the exact official layout, then read back through `--model`."""

import numpy as np
import pytest

from bit_trt.engine.errors import BitError
from bit_trt.export import sources, tf2onnx_route
from bit_trt.export.checkpoint import expected_shapes, save_npz
from tests import numpy_bit


@pytest.fixture
def npz_path(tmp_path, tiny_weights):
    path = tmp_path / "BiT-S-tiny.npz"
    save_npz(str(path), tiny_weights)
    return path


def test_every_key_lands_in_its_place(npz_path, tiny_weights, tiny, images64):
    loaded = sources.load(str(npz_path))
    assert loaded.variant.name == "tiny" and loaded.num_classes == 10
    assert list(loaded.weights) == list(expected_shapes(tiny, 10))
    for key, arr in tiny_weights.items():
        np.testing.assert_array_equal(loaded.weights[key], arr, err_msg=key)
    # Each initializer of the converted graph carries its checkpoint key and exact value ...
    from onnx import numpy_helper

    model = tf2onnx_route.convert(loaded.weights, tiny, 64)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for key, arr in tiny_weights.items():
        np.testing.assert_array_equal(inits[key], arr, err_msg=key)
    # ... and the graph computes what the independent NumPy BiT computes from the same checkpoint.
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"images": images64})[0]
    want = numpy_bit.forward(tiny_weights, images64, tiny)
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-4


def _write(tmp_path, weights):
    path = tmp_path / "bad.npz"
    np.savez(path, **weights)
    return str(path)


def test_missing_key_is_named(tmp_path, tiny_weights):
    w = dict(tiny_weights)
    del w["resnet/block3/unit01/b/group_norm/beta"]
    with pytest.raises(BitError, match="missing key 'resnet/block3/unit01/b/group_norm/beta'"):
        sources.load(_write(tmp_path, w))


def test_extra_key_is_named(tmp_path, tiny_weights):
    w = dict(tiny_weights, **{"resnet/block1/unit01/d/group_norm/gamma": np.ones(32, np.float32)})
    with pytest.raises(BitError, match="unexpected key 'resnet/block1/unit01/d/group_norm/gamma'"):
        sources.load(_write(tmp_path, w))


def test_misshaped_key_is_named(tmp_path, tiny_weights):
    w = dict(tiny_weights)
    w["resnet/block2/unit01/b/standardized_conv2d/kernel"] = np.zeros((1, 1, 64, 64), np.float32)
    with pytest.raises(
        BitError,
        match=r"key 'resnet/block2/unit01/b/standardized_conv2d/kernel' has shape \(1, 1, 64, 64\), "
        r"expected \(3, 3, 64, 64\)",
    ):
        sources.load(_write(tmp_path, w))


def test_variant_mismatch_is_an_error(npz_path):
    with pytest.raises(BitError, match="holds a tiny model, but --variant r50x1"):
        sources.load(str(npz_path), variant="r50x1")


def test_corrupt_npz(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive")
    with pytest.raises(BitError, match="not a readable .npz"):
        sources.load(str(path))
