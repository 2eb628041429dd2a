"""Which GroupNorm form OpenVINO runs: the bundle's grouped reshape, rewritten so the activations are never reshaped.

The bundle writes each GroupNorm as Reshape [N,C,H,W] -> [N,G,C/G*H*W], InstanceNormalization, Reshape back,
then the per-channel gamma and beta (export/graph_cleanup.py): one kernel on ONNX Runtime, and the form TF parity
was checked in. OpenVINO reads the normalization as an MVN over the grouped tensor. Its convolutions keep
activations in blocked or channels-last layouts, and a reshape that splits the channels into groups can't be done
in those, so every GroupNorm costs a Reorder into the planar layout and one back: on a Xeon with AMX (R50x1 at
480, batch 8, bf16) 98 Reorders took 44% of the time, more than all the convolutions (docs/cpu.md, "GroupNorm
on OpenVINO").

`rewrite` replaces each Reshape -> MVN -> (unit scale, zero bias) -> Reshape chain of an ov.Model, in memory
after it is read, by the same arithmetic on the [N,C,H,W] tensor as it is: per-channel means (ReduceMean over H
and W), averaged over each group's channels on the small [N,C,1,1] tensor, subtracted; the same for the variance
of the difference (two passes, as MVN computes it, not E[x^2] - E[x]^2, which cancels in bf16); then multiplied
by 1/sqrt(var + eps). Every op is elementwise or a reduction over H and W, which OpenVINO runs in any layout. The
gamma and beta after it are folded in where they are per-channel constants: the normalization, gamma and beta
become x*a + b, with a = gamma/sqrt(var + eps) and b = beta - mean*a computed per channel on the small [N,G,C/G]
statistics. So the pass that normalizes reads x and two per-channel arrays (it read the centred tensor, the
deviation, gamma and beta, and in INT8 the quantize's scale and zero point as arrays too), and the centred tensor is
written only as its square, for the variance (docs/cpu.md, "Gamma and beta in one multiply-add": 1.05-1.16x on R50x1
at 480 in f32, bf16 and INT8, 1.02-1.05x on R50x3). INT8 graphs too: OpenVINO's low-precision transformations
still run their convolutions in INT8, because no constant is folded here (folding first turned the weights'
dequantization into float weights, and every convolution ran in f32: 186 against 64 ms per image). The files on
disk, their checksums and what ONNX Runtime and TensorRT read stay as exported; the rewritten model passes the same
parity checks (bit-check, the bf16 gate).
"""

from __future__ import annotations

import numpy as np

# The ops between the MVN and the Reshape back that InstanceNormalization's unit scale and zero bias become (each
# with a constant, maybe reshaped: nothing is folded), and the value that constant must hold to be left out.
_IDENTITY = {"Multiply": 1.0, "Add": 0.0}
# Ops that change a constant's shape, not its values.
_RESHAPES = ("Reshape", "Unsqueeze", "Squeeze", "Broadcast")


def rewrite(model, fold: bool = True) -> tuple[int, int]:
    """Rewrite every grouped-reshape GroupNorm of `model` (an ov.Model, changed in place); returns how many, and how
    many of them with their gamma and beta folded in (none without `fold`: the form before the fold, which
    tools/openvino_group_norm_affine.py measures against it)."""
    count = folded = 0
    for mvn in [op for op in model.get_ordered_ops() if op.get_type_name() == "MVN"]:
        chain = _chain(mvn)
        if chain is not None:
            affine = _affine(*chain) if fold else None
            _replace(*chain, affine)
            count += 1
            folded += affine is not None
    if count:
        model.validate_nodes_and_infer_types()
    return count, folded


def _chain(mvn):
    """(x, groups, eps, whether eps is inside the square root, the Reshape back) where `mvn` normalizes a grouped
    reshape of a 4-D x with static channels and its output, through identity ops only, is reshaped back to x's
    shape; else None."""
    grouped = mvn.input_value(0).get_node()
    if grouped.get_type_name() != "Reshape":
        return None
    x = grouped.input_value(0)
    x_shape, g_shape = x.get_partial_shape(), grouped.get_output_partial_shape(0)
    if (
        x_shape.rank.is_dynamic
        or g_shape.rank.is_dynamic
        or (x_shape.rank.get_length(), g_shape.rank.get_length()) != (4, 3)
    ):
        return None
    channels, groups = x_shape[1], g_shape[1]
    if (
        channels.is_dynamic
        or groups.is_dynamic
        or groups.get_length() < 1
        or channels.get_length() % groups.get_length()
    ):
        return None
    attrs = mvn.get_attributes()
    axes = mvn.input_value(1).get_node()
    if not attrs.get("normalize_variance") or axes.get_type_name() != "Constant":
        return None
    if sorted(int(a) % 3 for a in axes.get_data().reshape(-1)) != [2]:  # over each group, not across groups
        return None
    node = mvn
    while True:
        # ShapeOf only reads the shape, to broadcast InstanceNormalization's scale and bias: it goes with the chain
        consumers = [c for c in node.output(0).get_target_inputs() if c.get_node().get_type_name() != "ShapeOf"]
        if len(consumers) != 1:
            return None
        node = consumers[0].get_node()
        kind = node.get_type_name()
        if kind == "Reshape":
            break
        if kind not in _IDENTITY or not _constant_equal(node, _IDENTITY[kind]):
            return None
    if node.get_output_partial_shape(0) != x_shape and not _same_static(node.get_output_partial_shape(0), x_shape):
        return None
    return x, groups.get_length(), float(attrs["eps"]), attrs["eps_mode"].upper() == "INSIDE_SQRT", node


def _constant_equal(node, value: float) -> bool:
    """Whether one input of the elementwise `node` is a constant holding only `value`, maybe reshaped (constants
    are not folded first: folding would also fold an INT8 graph's weight dequantization into float weights)."""
    for i in range(node.get_input_size()):
        source = node.input_value(i).get_node()
        while source.get_type_name() in _RESHAPES:
            source = source.input_value(0).get_node()
        if source.get_type_name() == "Constant":
            return bool(np.all(source.get_data() == value))
    return False


def _same_static(a, b) -> bool:
    """Whether two partial shapes agree on every dimension both know (the batch may be dynamic in one)."""
    if a.rank.is_dynamic or b.rank.is_dynamic or a.rank.get_length() != b.rank.get_length():
        return False
    return all(p.is_dynamic or q.is_dynamic or p.get_length() == q.get_length() for p, q in zip(a, b))


def _affine(x, groups, eps, inside_sqrt, back):
    """(gamma, beta, the Add of beta) where `back` is read only by a Multiply by gamma, read only by an Add of beta,
    each a constant with one value per channel (maybe converted or reshaped); else None."""
    channels = x.get_partial_shape()[1].get_length()
    values = []
    node = back
    for kind in ("Multiply", "Add"):
        readers = list(node.output(0).get_target_inputs())
        if len(readers) != 1 or readers[0].get_node().get_type_name() != kind:
            return None
        node = readers[0].get_node()
        value = node.input_value(1 - readers[0].get_index())
        if not _per_channel_constant(value, channels):
            return None
        values.append(value)
    return values[0], values[1], node


def _per_channel_constant(value, channels: int) -> bool:
    """Whether `value` is a constant (maybe converted or reshaped) holding one value per channel of an [N,C,H,W]
    tensor: shape [C,1,1] or [1,C,1,1] (a [C] would broadcast along W), or one value for all."""
    shape = value.get_partial_shape()
    if shape.is_dynamic:
        return False
    dims = list(shape.to_shape())
    size = int(np.prod(dims))
    if size != 1 and (size != channels or len(dims) not in (3, 4) or dims[-3:] != [channels, 1, 1]):
        return False
    node = value.get_node()
    while node.get_type_name() in _RESHAPES + ("Convert",):
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"


def _replace(x, groups: int, eps: float, inside_sqrt: bool, back, affine=None) -> None:
    """Put (x - group mean) / sqrt(group variance + eps), computed on x's own shape, where `back`'s output was; or,
    with `affine` (gamma, beta, the Add of beta), that times gamma plus beta as x*a + b where the Add's output was."""
    import openvino.opset13 as ops

    channels = x.get_partial_shape()[1].get_length()
    per_group = channels // groups
    dtype = x.get_element_type().to_dtype()

    def const(values, kind=np.int64):
        return ops.constant(np.asarray(values, dtype=kind))

    def group_mean(per_channel):  # [N,C,1,1] -> each group's mean, [N,G,1]
        split = ops.reshape(per_channel, const([0, groups, per_group]), special_zero=True)
        return ops.reduce_mean(split, const([2]), keep_dims=True)

    def tiled(group):  # [N,G,1] -> [N,G,C/G]
        return ops.tile(group, const([1, 1, per_group]))

    def per_channel(grouped):  # [N,G,C/G] -> [N,C,1,1]
        return ops.reshape(grouped, const([0, channels, 1, 1]), special_zero=True)

    hw = const([2, 3])
    mean = group_mean(ops.reduce_mean(x, hw, keep_dims=True))
    centred = ops.subtract(x, per_channel(tiled(mean)))
    variance = group_mean(ops.reduce_mean(ops.multiply(centred, centred), hw, keep_dims=True))
    epsilon = ops.constant(np.asarray(eps, dtype=dtype))
    if inside_sqrt:
        deviation = ops.sqrt(ops.add(variance, epsilon))
    else:
        deviation = ops.add(ops.sqrt(variance), epsilon)
    if affine is None:
        out, replaced = ops.divide(centred, per_channel(tiled(deviation))), back
    else:
        # a and b on the [N,G,C/G] statistics, before the Reshape to [N,C,1,1]: OpenVINO fuses elementwise ops on
        # small tensors into the pass over x that reads them, and would compute them once per pixel there
        gamma, beta, replaced = affine

        def grouped(value):  # per channel as [1,G,C/G]; one value for all as [1,1,1]
            shape = [1, groups, per_group] if int(np.prod(list(value.get_shape()))) == channels else [1, 1, 1]
            return ops.reshape(ops.convert(value, dtype), const(shape), special_zero=False)

        one = ops.constant(np.asarray(1, dtype=dtype))
        a = ops.multiply(tiled(ops.divide(one, deviation)), grouped(gamma))
        b = ops.subtract(grouped(beta), ops.multiply(tiled(mean), a))
        out = ops.add(ops.multiply(x, per_channel(a)), per_channel(b))
    out.set_friendly_name(replaced.get_friendly_name())
    replaced.output(0).replace(out.output(0))
