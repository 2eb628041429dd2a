"""The official BiT checkpoint layout: key names, shapes, and reading/writing `.npz` files in it.

Every source (npz, SavedModel, synthetic) produces a dict in this layout, so the model has one way in.
Kernels are HWIO, GroupNorm gamma/beta are [C], the head is a 1x1 conv with bias.
"""

from __future__ import annotations

import os
import zipfile
from collections import OrderedDict

import numpy as np

from ..engine.errors import BitError
from .variants import Variant


def unit_prefix(block: int, unit: int) -> str:
    return f"resnet/block{block}/unit{unit:02d}"


def expected_shapes(variant: Variant, num_classes: int) -> OrderedDict[str, tuple[int, ...]]:
    """Every key of a checkpoint for `variant`, in network order, with its shape."""
    shapes: OrderedDict[str, tuple[int, ...]] = OrderedDict()
    stem = variant.stem_channels
    shapes["resnet/root_block/standardized_conv2d/kernel"] = (7, 7, 3, stem)
    in_ch = stem
    for block, units in enumerate(variant.units, start=1):
        mid, out = variant.mid_channels(block), variant.out_channels(block)
        for unit in range(1, units + 1):
            p = unit_prefix(block, unit)
            shapes[f"{p}/a/group_norm/gamma"] = (in_ch,)
            shapes[f"{p}/a/group_norm/beta"] = (in_ch,)
            if unit == 1:  # projection only in unit01: channels (and, after block1, stride) change there
                shapes[f"{p}/a/proj/standardized_conv2d/kernel"] = (1, 1, in_ch, out)
            shapes[f"{p}/a/standardized_conv2d/kernel"] = (1, 1, in_ch, mid)
            shapes[f"{p}/b/group_norm/gamma"] = (mid,)
            shapes[f"{p}/b/group_norm/beta"] = (mid,)
            shapes[f"{p}/b/standardized_conv2d/kernel"] = (3, 3, mid, mid)
            shapes[f"{p}/c/group_norm/gamma"] = (mid,)
            shapes[f"{p}/c/group_norm/beta"] = (mid,)
            shapes[f"{p}/c/standardized_conv2d/kernel"] = (1, 1, mid, out)
            in_ch = out
    shapes["resnet/group_norm/gamma"] = (in_ch,)
    shapes["resnet/group_norm/beta"] = (in_ch,)
    shapes["resnet/head/conv2d/kernel"] = (1, 1, in_ch, num_classes)
    shapes["resnet/head/conv2d/bias"] = (num_classes,)
    return shapes


HEAD_KERNEL = "resnet/head/conv2d/kernel"


def infer_num_classes(weights) -> int:
    if HEAD_KERNEL not in weights:
        raise BitError(f"checkpoint has no key {HEAD_KERNEL!r}: not a BiT classification checkpoint")
    shape = tuple(weights[HEAD_KERNEL].shape)
    if len(shape) != 4:
        raise BitError(f"key {HEAD_KERNEL!r} has shape {shape}; expected (1, 1, features, classes)")
    return int(shape[-1])


def validate(weights, variant: Variant, source: str) -> int:
    """Check keys and shapes against `variant`; return the class count. Errors name the offending key."""
    num_classes = infer_num_classes(weights)
    expected = expected_shapes(variant, num_classes)
    missing = [k for k in expected if k not in weights]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise BitError(f"{source}: missing key {missing[0]!r}{more} for variant {variant.name}")
    extra = sorted(k for k in weights if k not in expected)
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise BitError(f"{source}: unexpected key {extra[0]!r}{more} for variant {variant.name}")
    for key, shape in expected.items():
        got = tuple(weights[key].shape)
        if got != shape:
            raise BitError(f"{source}: key {key!r} has shape {got}, expected {shape} for variant {variant.name}")
    return num_classes


def read_npz(path: str) -> dict:
    """All arrays of an `.npz` file, read once; an unreadable file is a BitError naming it."""
    if not os.path.isfile(path):
        raise BitError(f"checkpoint {path!r} does not exist")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        raise BitError(f"{path!r} is not a readable .npz checkpoint ({exc})") from exc


def in_network_order(weights, variant: Variant, source: str) -> tuple[OrderedDict[str, np.ndarray], int]:
    """Validate, then return float32 arrays in network order and the class count."""
    num_classes = validate(weights, variant, source)
    ordered = OrderedDict(
        (k, np.ascontiguousarray(weights[k], dtype=np.float32)) for k in expected_shapes(variant, num_classes)
    )
    return ordered, num_classes


def save_npz(path: str, weights) -> None:
    """Write weights in the official layout (used to make checkpoints for tests and for `--save-npz`)."""
    np.savez(path, **{k: np.asarray(v, dtype=np.float32) for k, v in weights.items()})
