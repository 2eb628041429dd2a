"""Which residual sums OpenVINO computes from the convolutions' float outputs: every sum of a quantized convolution.

The INT8 graph (int8-ort) quantizes and dequantizes every convolution's output, so that ONNX Runtime runs each as
a QLinearConv with a uint8 output. Each of BiT's residual Adds reads one or two of them: the unit's last
convolution, and in the first unit of each block the projection shortcut as well. OpenVINO's low-precision
transformations then add in the quantized domain and move the dequantization after the sum: a float residual is
brought into that domain first (a Subtract and a Multiply, a pass of its own over the unit's widest activation), and
the scale is applied to the sum after it. Where both summands are quantized convolutions the sum runs in f32, and
with the float layers in bf16 the GroupNorm after it reads that f32 tensor in another layout (two or three Reorders:
16-25% of INT8's time on R50x1 and R50x3 at 480 on a Xeon with AMX, by OpenVINO's performance counters).

`rewrite` feeds each such Add from the convolutions' outputs before their quantize. OpenVINO then adds in bf16, in
the float domain, with no pass to bring the residual into the quantized one, and the convolution itself still runs
INT8 (its input and weights stay quantized; the output's dequantization becomes its output scale). (Unlike the fp16
graph's, the sum is not fused into the convolution: docs/cpu.md says why.) The sum loses the roundings (and
the clipping to the calibrated range) of its summands, so it is nearer the float model, not further. Measured by
tools/openvino_requantized_sum.py on that Xeon (alternating rounds): docs/cpu.md, "INT8's residual sums on
OpenVINO". With the float layers in f32 it does not pay (0.92x-1.02x, one-off checks), so the runner applies it only
where the float layers run in bf16. The files on disk stay as exported: ONNX Runtime needs the quantize to fuse its
QLinearConvs.

Each sum so fed that has more than one reader is then read through `Maximum(sum, -inf)`, which is the sum itself for
every number. OpenVINO's low-precision transformations still add a float residual in the convolution's quantized
domain and scale the sum after it, but they give each reader of the Add a copy of that scale (the next GroupNorm's
statistics, its centring, the next sum), and OpenVINO's elementwise Subgraph then writes the sum once per copy:
three passes over the unit's widest activation where one does. Behind the Maximum the scale has one reader and the
sum is written once (docs/cpu.md, "Each sum written once").
"""

from __future__ import annotations

import numpy as np


def rewrite(model, write_once: bool = True) -> tuple[int, int]:
    """Feed every Add from the convolutions whose dequantized outputs it sums, and with `write_once` put each such
    Add read more than once behind a single reader (an ov.Model, changed in place); returns how many Adds were fed
    and how many of them were put behind one reader."""
    fed = once = 0
    for add in [op for op in model.get_ordered_ops() if op.get_type_name() == "Add"]:
        if add.get_input_size() != 2:
            continue
        sources = [_quantized_convolution(add.input_value(i)) for i in range(2)]
        for i, source in enumerate(sources):
            if source is not None:
                add.input(i).replace_source_output(source)
        if any(source is not None for source in sources):
            fed += 1
            once += write_once and _one_reader(add)
    if fed:
        model.validate_nodes_and_infer_types()
    return fed, once


def _one_reader(add) -> bool:
    """Put the Add's readers, if more than one, behind Maximum(add, -inf): the same numbers, one reader. Whether it
    did."""
    readers = list(add.output(0).get_target_inputs())
    if len(readers) < 2:
        return False
    import openvino.opset13 as ops

    lowest = ops.constant(np.array(-np.inf, dtype=add.get_output_element_type(0).to_dtype()))
    same = ops.maximum(add.output(0), lowest, name=f"{add.get_friendly_name()}/written_once")
    for reader in readers:
        reader.replace_source_output(same.output(0))
    return True


def _quantized_convolution(value):
    """The convolution output that `value` is the dequantized quantize of, as OpenVINO reads ONNX's
    DequantizeLinear(QuantizeLinear(Conv)): a Multiply by a constant scale, after an optional Subtract of a constant
    zero point, of a Convert to float of a Convert to 8 bits of a FakeQuantize of a Convolution, each step read
    only by the next. Else None."""
    node = value.get_node()
    if node.get_type_name() != "Multiply" or not _constant(node.input_value(1)) or not _only_use(node.output(0)):
        return None
    node = node.input_value(0).get_node()
    if node.get_type_name() == "Subtract":
        if not _constant(node.input_value(1)) or not _only_use(node.output(0)):
            return None
        node = node.input_value(0).get_node()
    steps = []
    for _ in range(2):  # to float, from 8 bits
        if node.get_type_name() != "Convert" or not _only_use(node.output(0)):
            return None
        steps.append(node.get_output_element_type(0).get_type_name())
        node = node.input_value(0).get_node()
    if steps[1] not in ("u8", "i8") or node.get_type_name() != "FakeQuantize" or not _only_use(node.output(0)):
        return None
    source = node.input_value(0)
    return source if source.get_node().get_type_name() == "Convolution" else None


def _constant(value) -> bool:
    node = value.get_node()
    if node.get_type_name() == "Convert":
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"


def _only_use(output) -> bool:
    return len(output.get_target_inputs()) == 1
