"""Bad input to any runner: a clear BitError, and the runner answers the next good call correctly."""

import numpy as np
import pytest

from bit_trt.engine import backends
from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.classifier import Classifier
from bit_trt.engine.errors import BitError
from bit_trt.engine.parity_set import real_photo_paths
from tests.conftest import TINY_RES

GOOD = np.random.default_rng(0).random((2, TINY_RES, TINY_RES, 3), dtype=np.float32)
NAN = GOOD.copy()
NAN[0, 1, 2, 0] = np.nan
INF = GOOD.copy()
INF[1, 0, 0, 2] = np.inf

BAD = [
    (GOOD[0], "rank-4"),
    (GOOD[..., :1], "3 channels"),
    (np.zeros((2, TINY_RES, TINY_RES, 3), np.uint8), "float images"),
    (NAN, "NaN or Inf"),
    (INF, "NaN or Inf"),
    (GOOD[:0], "empty batch"),
    (GOOD.tolist(), "numpy batch"),
]


@pytest.fixture(scope="module", params=["ort-cpu", "openvino"])
def runner(request, tiny_full_bundle):
    with backends.create(load_bundle(str(tiny_full_bundle)), request.param, "fp32") as r:
        yield r


def test_bad_batches_are_refused_and_the_runner_stays_usable(runner):
    # on openvino a shape's second call compiles a model for it (engine/openvino_runner.py, static shapes), whose
    # float rounding differs from the dynamic model's: the answer compared is that model's
    runner.infer(GOOD)
    expected = runner.infer(GOOD)
    for batch, message in BAD:
        with pytest.raises(BitError, match=message):
            runner.infer(batch)
        np.testing.assert_array_equal(runner.infer(GOOD), expected)


@pytest.mark.parametrize(("max_batch", "sizes"), [(None, [5]), (2, [2, 2, 1]), (5, [5]), (4, [4, 1]), (1, [1] * 5)])
def test_batch_above_max_is_split(runner, monkeypatch, max_batch, sizes):
    """What each native call receives is recorded: ORT and OpenVINO take any batch, so equal logits alone
    would not show that the base split it at `max_batch` (a TensorRT profile's max)."""
    batch = np.random.default_rng(1).random((5, TINY_RES, TINY_RES, 3), dtype=np.float32)
    whole = runner.infer(batch)
    native = runner._infer
    received = []

    def recording_infer(chunk):
        received.append(chunk.copy())
        return native(chunk)

    monkeypatch.setattr(runner, "_infer", recording_infer)
    monkeypatch.setattr(runner, "max_batch", max_batch)
    split = runner.infer(batch)
    assert [len(chunk) for chunk in received] == sizes
    np.testing.assert_array_equal(np.concatenate(received), batch)  # in order, each image once
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-5)


def test_inactive_runner_says_so(tiny_full_bundle):
    r = backends.create(load_bundle(str(tiny_full_bundle)), "ort-cpu", "fp32")
    with pytest.raises(BitError, match="not active"):
        r.infer(GOOD)


def test_predict_takes_every_input_kind_and_mixed_sizes(tiny_full_bundle):
    import cv2

    photo = real_photo_paths()[0]
    rgb = cv2.cvtColor(cv2.imread(photo), cv2.COLOR_BGR2RGB)
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    with Classifier(str(tiny_full_bundle), backend="ort-cpu") as clf:
        base = clf.predict(photo).logits
        inputs = [photo, open(photo, "rb").read(), rgb, rgba, rgb.astype(np.float32) / 255, gray, rgb[:100, :37]]
        out = clf.predict(inputs)
        assert out.logits.shape == (len(inputs), 1000)
        for i in range(4):
            np.testing.assert_allclose(out.logits[i], base[0], rtol=1e-5, atol=1e-5)
        assert len(out.top(3)[6]) == 3
        with pytest.raises(BitError, match="not a decodable image"):
            clf.predict([photo, open(photo, "rb").read()[:500]])
        with pytest.raises(BitError, match="float images must be in"):
            clf.predict(rgb.astype(np.float32))
        with pytest.raises(BitError, match="empty batch"):
            clf.predict([])
        np.testing.assert_array_equal(clf.predict(photo).logits, base)
