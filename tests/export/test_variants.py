import numpy as np
import pytest

from bit_trt.engine.errors import BitError
from bit_trt.export.checkpoint import expected_shapes
from bit_trt.export.variants import VARIANTS, get_variant

# Parameter counts of the published BiT models (1000-class heads), from the paper and timm's model cards.
PUBLISHED_PARAMS_M = {"r50x1": 25.5, "r50x3": 217.3, "r101x1": 44.5, "r101x3": 387.9, "r152x4": 936.5}


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS_M))
def test_parameter_counts_match_published(name):
    shapes = expected_shapes(get_variant(name), 1000)
    params = sum(int(np.prod(s)) for s in shapes.values())
    assert params / 1e6 == pytest.approx(PUBLISHED_PARAMS_M[name], abs=0.15)


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_group_norm_has_32_groups(name):
    for key, shape in expected_shapes(get_variant(name), 1000).items():
        if "group_norm" in key:
            assert shape[0] % 32 == 0, key


def test_projection_only_in_unit01():
    shapes = expected_shapes(get_variant("r50x1"), 1000)
    projs = [k for k in shapes if "/proj/" in k]
    assert projs == [f"resnet/block{b}/unit01/a/proj/standardized_conv2d/kernel" for b in range(1, 5)]


def test_unknown_variant_names_choices():
    with pytest.raises(BitError, match="unknown variant 'r50x2'.*r50x3"):
        get_variant("r50x2")
