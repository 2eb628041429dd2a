"""The TF model against an independent NumPy implementation: the architecture traps, checked numerically."""

import numpy as np
import pytest

from bit_trt.export.bit_tf import BiTModule
from bit_trt.export.synthetic import synthetic_weights
from bit_trt.export.variants import get_variant
from tests import numpy_bit


def _rel_l2(test, reference):
    return np.linalg.norm(test - reference) / np.linalg.norm(reference)


@pytest.mark.parametrize("name", ["tiny", "tiny2"])
def test_tf_model_matches_numpy_reference(name):
    v = get_variant(name)
    weights = synthetic_weights(v, 7, seed=11)
    x = np.random.default_rng(0).random((2, 48, 40, 3), dtype=np.float32)  # non-square, any H,W
    tf_logits = BiTModule(weights, v)(x).numpy()
    np_logits = numpy_bit.forward(weights, x, v)
    assert tf_logits.shape == (2, 7)
    assert _rel_l2(tf_logits, np_logits) < 1e-4


def _max_pool_3x3_s2(x, pad_value):
    """The root block's pool with an explicit pad value: 0 (BiT) or -inf (TF's SAME pool, an ONNX MaxPool pad)."""
    x = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=pad_value)
    oh, ow = (x.shape[1] - 3) // 2 + 1, (x.shape[2] - 3) // 2 + 1
    return np.max([x[:, i : i + 2 * oh : 2, j : j + 2 * ow : 2, :] for i in range(3) for j in range(3)], axis=0)


def test_stem_pool_pads_with_zero_not_minus_inf(tiny, tiny_weights, monkeypatch):
    """The product's logits equal a forward pass whose stem pool pads with 0 and differ from one padding with -inf."""
    x = np.random.default_rng(0).random((2, 48, 40, 3), dtype=np.float32)
    stem_kernel = numpy_bit.standardize(tiny_weights["resnet/root_block/standardized_conv2d/kernel"])
    stem = numpy_bit.conv(x * 2 - 1, stem_kernel, stride=2, pad=3)
    zero_pooled, minus_inf_pooled = _max_pool_3x3_s2(stem, 0.0), _max_pool_3x3_s2(stem, -np.inf)
    # Without a border window whose every stem value is negative, the two paddings agree and prove nothing.
    assert (zero_pooled != minus_inf_pooled).sum() > 0
    np.testing.assert_array_equal(numpy_bit.max_pool_3x3_s2_zero_pad(stem), zero_pooled)

    product = BiTModule(tiny_weights, tiny)(x).numpy()
    zero_padded = numpy_bit.forward(tiny_weights, x, tiny)
    # The same independent forward pass, with only the stem pool's pad value changed.
    monkeypatch.setattr(numpy_bit, "max_pool_3x3_s2_zero_pad", lambda t: _max_pool_3x3_s2(t, -np.inf))
    minus_inf_padded = numpy_bit.forward(tiny_weights, x, tiny)

    assert _rel_l2(product, zero_padded) < 1e-4
    # Measured: 6e-3 here, against 2.5e-6 from the zero-padded pass; 1e-3 leaves room on both sides.
    assert _rel_l2(product, minus_inf_padded) > 1e-3
