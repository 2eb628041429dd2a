"""Which residual sums OpenVINO computes from the convolutions' float outputs: a sum of two quantized convolutions.

The INT8 graph (int8-ort) quantizes and dequantizes every convolution's output, so that ONNX Runtime runs each as
a QLinearConv with a uint8 output. In the first unit of each of BiT's four blocks, the residual Add sums two of
them: the projection shortcut and the unit's last convolution. OpenVINO's low-precision transformations then add
the two in the quantized domain, in f32, and move the dequantization after the sum. Where the float layers run in
bf16, the GroupNorm after that sum reads an f32 tensor in another layout: two or three Reorders of the block's
widest activation. With the other Reorders that follow from it, they took 16-25% of INT8's time on R50x1 and R50x3
at 480 on a Xeon with AMX (OpenVINO's performance counters).

`rewrite` feeds each such Add from the two convolutions' outputs before their quantize, as every other unit's Add
already adds its convolution to a float residual. OpenVINO then fuses the sum into the last convolution in bf16,
as in those units. The sum loses two roundings (and the clipping to the calibrated range), so it is nearer the
float model, not further: INT8 against TF moved by rel L2 0.092 -> 0.090 (R50x1) and 0.089 -> 0.087 (R50x3) at
480. Measured by tools/openvino_requantized_sum.py on that Xeon (alternating rounds): INT8 1.24x / 1.39x faster on
R50x1 (batch 1 / 8) and 1.19x / 1.22x on R50x3, the Reorders down from 16-25% of the time to under 2%. With the
float layers in f32 it was 0.92x / 1.02x on R50x1 (a one-off check), so the runner applies it only where the float
layers run in bf16 (docs/cpu.md, "INT8's residual sums on OpenVINO"). Either branch alone gained 0.98-1.06x.
The files on disk stay as exported: ONNX Runtime needs the quantize to fuse its QLinearConvs.
"""

from __future__ import annotations


def rewrite(model) -> int:
    """Feed every Add of two dequantized convolution outputs from the convolutions themselves (an ov.Model, changed
    in place); returns how many Adds."""
    count = 0
    for add in [op for op in model.get_ordered_ops() if op.get_type_name() == "Add"]:
        if add.get_input_size() != 2:
            continue
        sources = [_quantized_convolution(add.input_value(i)) for i in range(2)]
        if any(source is None for source in sources):
            continue
        for i, source in enumerate(sources):
            add.input(i).replace_source_output(source)
        count += 1
    if count:
        model.validate_nodes_and_infer_types()
    return count


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
