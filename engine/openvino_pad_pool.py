"""Which stem OpenVINO runs: the zero Pad before the stem's MaxPool, folded into the MaxPool.

BiT's stem pads the 7x7 convolution's output with one row and column of zeros on each side, then max-pools 3x3
with stride 2 and no padding of its own (TF's `tf.pad` then a VALID pool), and the bundle keeps that Pad.
OpenVINO 2026.4 runs the Pad with its reference kernel (`ref_f32` in its performance counters) over the model's
largest activation, and in an INT8 graph in f32, after the dequantization it does not move through a Pad. Folded,
INT8 runs 1.02-1.08x faster on a Xeon with AMX (R50x1 and R50x3 at 480) and the float graphs the same within the
rounds' noise (docs/cpu.md, "The stem's Pad on OpenVINO").

`rewrite` replaces each Pad (constant mode, zero value, spatial axes only) whose one consumer is a floor-rounded
MaxPool without padding of its own by that MaxPool padded by the same amounts, which OpenVINO pads with -inf inside
its kernel, followed by one Maximum with a constant [1,1,Ho,Wo] that is 0 where the original window covered a
padded zero and -inf elsewhere: the maximum over a window holding zeros is max(its real values' maximum, 0). Exact
in every precision: the same values, compared, not computed. In an INT8 graph OpenVINO then moves the
dequantization through the MaxPool, which runs on INT8. The files on disk stay as exported: ONNX Runtime and
TensorRT run their own Pad kernels (on ONNX Runtime, about 2 ms of R50x1's 124 in INT8 on the same host).
"""

from __future__ import annotations

import numpy as np


def rewrite(model) -> int:
    """Fold every zero Pad that feeds only a MaxPool into that MaxPool (an ov.Model, changed in place); returns how
    many."""
    count = 0
    for pad in [op for op in model.get_ordered_ops() if op.get_type_name() == "Pad"]:
        found = _pool_after(pad)
        if found is not None and _replace(pad, *found):
            count += 1
    if count:
        model.validate_nodes_and_infer_types()
    return count


def _pool_after(pad):
    """(pads begin, pads end, the MaxPool) where `pad` adds zeros on the spatial axes of a 4-D tensor of static
    height and width and its only consumer is a floor-rounded MaxPool with no padding and no used indices; else
    None."""
    if pad.get_attributes().get("pad_mode") != "constant":
        return None
    constants = [pad.input_value(i).get_node() for i in range(1, pad.get_input_size())]
    if any(c.get_type_name() != "Constant" for c in constants):
        return None
    begin, end = (c.get_data().astype(np.int64).reshape(-1) for c in constants[:2])
    if len(constants) > 2 and np.any(constants[2].get_data() != 0):  # without a value input, ONNX's Pad pads zeros
        return None
    shape = pad.input_value(0).get_partial_shape()
    if shape.rank.is_dynamic or shape.rank.get_length() != 4 or len(begin) != 4 or len(end) != 4:
        return None
    if shape[2].is_dynamic or shape[3].is_dynamic:  # the window mask needs the height and width
        return None
    if np.any(begin[:2]) or np.any(end[:2]) or np.any(begin < 0) or np.any(end < 0) or not np.any(begin + end):
        return None
    consumers = list(pad.output(0).get_target_inputs())
    if len(consumers) != 1 or consumers[0].get_node().get_type_name() != "MaxPool":
        return None
    pool = consumers[0].get_node()
    attrs = pool.get_attributes()
    auto_pad = attrs.get("auto_pad", "explicit").lower()
    own_pads = any(attrs.get("pads_begin", [])) or any(attrs.get("pads_end", []))
    if attrs.get("rounding_type", "floor").lower() != "floor" or auto_pad not in ("explicit", "valid"):
        return None
    if auto_pad == "explicit" and own_pads:
        return None
    # MaxPool v8 and v14 also return indices, which would index the padded tensor (v1 has no dilations either)
    if pool.get_output_size() > 1 and pool.output(1).get_target_inputs():
        return None
    return [int(v) for v in begin[2:]], [int(v) for v in end[2:]], pool


def window_mask(size, begin, end, kernel, stride, dilation, out) -> np.ndarray:
    """[out_h, out_w]: True where a pooling window over the input of spatial `size`, zero-padded by `begin` and
    `end`, covers a padded zero. A window covers one if it takes a padded row at a column inside the padded input,
    or a padded column at a row inside it."""

    def per_axis(n, b, e, k, s, d, o):
        taps = np.arange(o)[:, None] * s + np.arange(k)[None, :] * d - b  # rows (or columns) of the input
        inside = (taps >= -b) & (taps < n + e)
        padded = inside & ((taps < 0) | (taps >= n))
        return padded.any(axis=1), inside.any(axis=1)

    rows_padded, rows_inside = per_axis(size[0], begin[0], end[0], kernel[0], stride[0], dilation[0], out[0])
    cols_padded, cols_inside = per_axis(size[1], begin[1], end[1], kernel[1], stride[1], dilation[1], out[1])
    return (rows_padded[:, None] & cols_inside[None, :]) | (rows_inside[:, None] & cols_padded[None, :])


def _replace(pad, begin: list[int], end: list[int], pool) -> bool:
    """Put MaxPool(x, padded by -inf) then Maximum(that, the zero-window mask) where `pool`'s output was; False,
    and the graph untouched, where the padded pool's output shape differs from `pool`'s."""
    import openvino.opset13 as ops

    attrs = pool.get_attributes()
    x = pad.input_value(0)
    kernel, strides = list(attrs["kernel"]), list(attrs["strides"])
    dilations = list(attrs.get("dilations", [1, 1]))
    padded_pool = ops.max_pool(x, strides, dilations, begin, end, kernel, "floor", "explicit")
    out_shape = padded_pool.get_output_partial_shape(0)
    if out_shape != pool.get_output_partial_shape(0) or out_shape[2].is_dynamic or out_shape[3].is_dynamic:
        return False
    x_shape = x.get_partial_shape()
    size = [x_shape[2].get_length(), x_shape[3].get_length()]
    out = [out_shape[2].get_length(), out_shape[3].get_length()]
    covers = window_mask(size, begin, end, kernel, strides, dilations, out)
    dtype = x.get_element_type().to_dtype()
    mask = np.where(covers, 0, -np.inf).astype(dtype).reshape(1, 1, *out)
    folded = ops.maximum(padded_pool.output(0), ops.constant(mask))
    folded.set_friendly_name(pool.get_friendly_name())
    pool.output(0).replace(folded.output(0))
    return True
