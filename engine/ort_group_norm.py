"""Which GroupNorm form ONNX Runtime's CPU provider runs in an INT8 graph: bit-trt's fused kernel where it can load.

In the int8-ort graph every GroupNorm is the bundle's float chain between two quantized tensors:

    [DequantizeLinear] -> Reshape [N,G,-1] -> InstanceNormalization -> Reshape back -> Mul gamma -> Add beta -> Relu
    -> QuantizeLinear

ORT runs it as six float passes over the activations (its InstanceNormalization on one thread), and wraps every
channels-last QLinearConv in two Transposes because the float ops between them are channels-first. On R50x1 at 480
(this AMX Xeon, batch 1, 2 threads) those passes took 88 of the INT8 graph's 163 ms, and its convolutions alone
would run 3.1x ORT's FP32 (docs/cpu.md, "INT8 on ONNX Runtime: where the time goes"). No ORT CPU kernel does a
GroupNorm in one pass, so bit-trt brings its own (engine/cpu_kernels/group_norm_quantize.c, built by
engine/ort_kernel_library.py): one op per chain, uint8 or float in, uint8 out, channels-last.

`rewrite` replaces each chain of a ModelProto, in memory, by Transpose to NHWC -> the kernel -> Transpose back. ORT's
layout optimizer then cancels those Transposes against the ones around the channels-last convolutions, and the
activations stay uint8 and channels-last from one convolution to the next. The files on disk, their checksums and
what OpenVINO and TensorRT read stay as exported; the rewritten model is gated against TF on the host before it
serves (engine/compute_gate.py, compare.INT8_KERNEL_PARITY), and bit-check checks what it computes.

Only chains that match exactly are replaced: per-tensor activation scales, unit InstanceNormalization scale and zero
bias, one value of gamma and beta per channel, and no intermediate tensor read anywhere else. The GroupNorm before
the head (its Relu feeds the pooling, not a quantize) stays as it is.
"""

from __future__ import annotations

import numpy as np

from .errors import BitError, require

DOMAIN = "bit_trt"
OPS = ("QGroupNormRelu", "GroupNormReluQuantize")  # uint8 in, float in (the kernel's two ops)
TO_NHWC = [0, 2, 3, 1]
TO_NCHW = [0, 3, 1, 2]


def rewrite(model) -> int:
    """Replace every matching GroupNorm chain of `model` (an onnx.ModelProto, changed in place) by the fused kernel;
    returns how many. Nodes the chains leave unused are removed."""
    onnx = require("onnx")
    graph = model.graph
    consts = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            readers[name] = readers.get(name, 0) + 1
    for out in graph.output:
        readers[out.name] = readers.get(out.name, 0) + 1

    def value(name):
        return onnx.numpy_helper.to_array(consts[name]) if name in consts else None

    replaced: dict[str, list] = {}
    count = 0
    for quantize in [n for n in graph.node if n.op_type == "QuantizeLinear"]:
        chain = _chain(quantize, producer, readers, value)
        if chain is None:
            continue
        x, dequantize, groups, eps, gamma, beta = chain
        tag = f"bit_trt_group_norm_{count}"
        gamma_name, beta_name = f"{tag}/gamma", f"{tag}/beta"
        graph.initializer.extend(
            [onnx.numpy_helper.from_array(gamma, gamma_name), onnx.numpy_helper.from_array(beta, beta_name)]
        )
        if dequantize is not None:
            op, inputs = OPS[0], [dequantize.input[0], dequantize.input[1], dequantize.input[2]]
        else:
            op, inputs = OPS[1], [x]
        nhwc_in, nhwc_out = f"{tag}/nhwc_in", f"{tag}/nhwc_out"
        inputs[0] = nhwc_in
        inputs += [gamma_name, beta_name, quantize.input[1], quantize.input[2]]
        make = onnx.helper.make_node
        replaced[quantize.output[0]] = [
            make(
                "Transpose",
                [dequantize.input[0] if dequantize is not None else x],
                [nhwc_in],
                f"{tag}/to_nhwc",
                perm=TO_NHWC,
            ),
            make(op, inputs, [nhwc_out], tag, domain=DOMAIN, groups=groups, epsilon=eps),
            make("Transpose", [nhwc_out], [quantize.output[0]], f"{tag}/to_nchw", perm=TO_NCHW),
        ]
        count += 1
    if not count:
        return 0
    nodes = [new for node in graph.node for new in replaced.get(node.output[0] if node.output else "", [node])]
    del graph.node[:]
    graph.node.extend(_live(nodes, {o.name for o in graph.output}))
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    return count


def _chain(quantize, producer, readers, value):
    """(x, its DequantizeLinear or None, groups, epsilon, gamma[C], beta[C]) where `quantize` ends a GroupNorm chain
    that the kernel computes exactly as the graph does; None where anything differs."""

    def only_reader(node, op_type):
        found = producer.get(node.input[0])
        if found is None or found.op_type != op_type or readers.get(found.output[0]) != 1:
            return None
        return found

    if not _scalar(value(quantize.input[1]), np.floating) or len(quantize.input) < 3:
        return None
    if not _scalar(value(quantize.input[2]), np.uint8) or readers.get(quantize.output[0], 0) < 1:
        return None
    relu = only_reader(quantize, "Relu")
    add = relu and only_reader(relu, "Add")
    mul = add and only_reader(add, "Mul")
    back = mul and only_reader(mul, "Reshape")
    norm = back and only_reader(back, "InstanceNormalization")
    grouped = norm and only_reader(norm, "Reshape")
    if grouped is None:
        return None
    shape, scale, bias = value(grouped.input[1]), value(norm.input[1]), value(norm.input[2])
    if shape is None or shape.shape != (3,) or not shape[1] > 0 or scale is None or bias is None:
        return None
    if not (np.all(scale == 1) and np.all(bias == 0) and scale.size == shape[1]):
        return None
    gamma, beta = value(mul.input[1]), value(add.input[1])
    if gamma is None or beta is None or not (_per_channel(gamma) and _per_channel(beta)):
        return None
    if gamma.size != beta.size or gamma.size % int(shape[1]):
        return None
    eps = next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5)
    x = grouped.input[0]
    dequantize = producer.get(x)
    if dequantize is not None and dequantize.op_type == "DequantizeLinear" and readers.get(x) == 1:
        if not (_scalar(value(dequantize.input[1]), np.floating) and len(dequantize.input) == 3):
            dequantize = None
        elif not _scalar(value(dequantize.input[2]), np.uint8):
            dequantize = None
    else:
        dequantize = None
    as_vector = lambda a: a.reshape(-1).astype(np.float32)  # noqa: E731
    return x, dequantize, int(shape[1]), float(eps), as_vector(gamma), as_vector(beta)


def _per_channel(array) -> bool:
    """One value per channel: at most one axis longer than 1 ([C], [C,1,1], [1,C,1,1])."""
    return np.issubdtype(array.dtype, np.floating) and sum(d != 1 for d in array.shape) <= 1


def _scalar(array, kind) -> bool:
    return array is not None and array.size == 1 and np.issubdtype(array.dtype, kind)


def _live(nodes: list, outputs: set) -> list:
    """`nodes` less those whose outputs nothing reads, repeatedly (a chain's nodes once its quantize is replaced)."""
    while True:
        read = outputs | {name for node in nodes for name in node.input}
        kept = [node for node in nodes if any(out in read for out in node.output)]
        if len(kept) == len(nodes):
            return kept
        nodes = kept


def rewritten_bytes(model) -> tuple[bytes, int]:
    """`model` (a path or serialized bytes) with its GroupNorm chains fused, serialized, and how many; raises a
    BitError where it holds none (an FP32 graph, or one quantized some other way)."""
    onnx = require("onnx")
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    count = rewrite(proto)
    if not count:
        raise BitError("the graph has no quantized GroupNorm chain for bit-trt's kernel")
    return proto.SerializeToString(), count
