import cv2
import numpy as np
import pytest

from bit_trt.engine.errors import BitError
from bit_trt.engine.preprocess import InputSpec, decode, preprocess

SPEC = InputSpec(resolution=32)


def _png(arr):
    ok, buf = cv2.imencode(".png", arr)
    assert ok
    return buf.tobytes()


def test_pipeline_is_decode_rgb_resize_scale():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    got = preprocess([_png(bgr)], SPEC)
    want = cv2.resize(bgr[:, :, ::-1], (32, 32), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    assert got.shape == (1, 32, 32, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], want, atol=1e-6)


def test_grayscale_and_rgba_become_rgb():
    gray = np.full((10, 10), 77, np.uint8)
    rgba = np.zeros((10, 10, 4), np.uint8)
    rgba[..., 2] = 200  # red in BGRA
    rgba[..., 3] = 10
    assert decode(_png(gray)).shape == (10, 10, 3)
    rgb = decode(_png(rgba))
    assert rgb.shape == (10, 10, 3) and rgb[0, 0, 0] == 200 and rgb[0, 0, 2] == 0


def test_mixed_inputs_and_sizes(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(_png(np.zeros((40, 20, 3), np.uint8)))
    batch = preprocess([str(path), np.ones((8, 9, 3), np.uint8) * 255, np.full((5, 5, 3), 0.5, np.float32)], SPEC)
    assert batch.shape == (3, 32, 32, 3)
    assert batch[0].max() == 0 and batch[1].min() == 1 and np.allclose(batch[2], 0.5)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty file"),
        (b"this is text, not an image", "not a decodable image"),
    ],
)
def test_bad_bytes(data, message):
    with pytest.raises(BitError, match=message):
        preprocess([data], SPEC)


def test_truncated_jpeg():
    ok, buf = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(BitError, match="not a decodable image"):
        preprocess([buf.tobytes()[:100]], SPEC)


@pytest.mark.parametrize(
    "arr, message",
    [
        (np.zeros((4, 4, 2), np.uint8), "3 \\(RGB\\) or 4 \\(RGBA\\) channels"),
        (np.full((4, 4, 3), np.nan, np.float32), "NaN or Inf"),
        (np.full((4, 4, 3), 2.0, np.float32), "must be in \\[0, 1\\]"),
        (np.zeros((4, 4, 3), np.int32), "unsupported image dtype"),
    ],
)
def test_bad_arrays(arr, message):
    with pytest.raises(BitError, match=message):
        preprocess([arr], SPEC)


def test_empty_batch():
    with pytest.raises(BitError, match="empty batch"):
        preprocess([], SPEC)


def test_manifest_roundtrip_and_unknown_resize():
    assert InputSpec.from_manifest(SPEC.to_manifest()) == SPEC
    with pytest.raises(BitError, match="resize 'lanczos9'"):
        InputSpec.from_manifest({**SPEC.to_manifest(), "resize": "lanczos9"})
