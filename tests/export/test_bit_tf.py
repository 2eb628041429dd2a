"""The TF model against an independent NumPy implementation: the architecture traps, checked numerically."""
import numpy as np
import pytest

from bit_trt.export.bit_tf import BiTModule
from bit_trt.export.synthetic import synthetic_weights
from bit_trt.export.variants import get_variant
from tests import numpy_bit


@pytest.mark.parametrize("name", ["tiny", "tiny2"])
def test_tf_model_matches_numpy_reference(name):
    v = get_variant(name)
    weights = synthetic_weights(v, 7, seed=11)
    x = np.random.default_rng(0).random((2, 48, 40, 3), dtype=np.float32)  # non-square, any H,W
    tf_logits = BiTModule(weights, v)(x).numpy()
    np_logits = numpy_bit.forward(weights, x, v)
    assert tf_logits.shape == (2, 7)
    rel = np.linalg.norm(tf_logits - np_logits) / np.linalg.norm(np_logits)
    assert rel < 1e-4


def test_stem_pool_pads_with_zero_not_minus_inf(tiny):
    """The trap: with -inf padding the result differs, so the reference above would catch a regression."""
    x = np.full((1, 6, 6, 1), -1.0)
    zero_padded = numpy_bit.max_pool_3x3_s2_zero_pad(x)
    assert zero_padded[0, 0, 0, 0] == 0.0  # the border window sees the zero pad, not -1
