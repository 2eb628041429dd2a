"""Which GroupNorm form ONNX Runtime's CPU provider runs in an INT8 graph: bit-trt's fused kernel where it can load.

In the int8-ort graph every GroupNorm is the bundle's float chain between two quantized tensors:

    [DequantizeLinear] -> Reshape [N,G,-1] -> InstanceNormalization -> Reshape back -> Mul gamma -> Add beta -> Relu
    -> QuantizeLinear

ORT runs it as six float passes over the activations (its InstanceNormalization on one thread), and wraps every
channels-last QLinearConv in two Transposes because the float ops between them are channels-first. On R50x1 at 480
(this AMX Xeon, batch 1, 2 threads) those passes took 88 of the INT8 graph's 163 ms, and its convolutions alone
would run 3.1x ORT's FP32 (docs/cpu.md, "INT8 on ONNX Runtime: where the time goes"). No ORT CPU kernel does a
GroupNorm in one pass, so bit-trt brings its own (engine/cpu_kernels/group_norm_quantize.c, built by
engine/ort_kernel_library.py): one op per chain, uint8 or float in, uint8 out, channels-last. Where the chain's input is
a residual sum of a quantized convolution's output and a float tensor (the first GroupNorm of each block), the op
takes over the DequantizeLinear and the Add as well and writes the sum beside its uint8 output, for the next
residual: the same floats, one pass fewer.

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

from typing import NamedTuple

import numpy as np

from .errors import BitError, require

DOMAIN = "bit_trt"
# The kernel's ops: uint8 in; float in; a residual sum in (a quantized and a float addend), the sum out too.
OPS = ("QGroupNormRelu", "GroupNormReluQuantize", "QAddGroupNormRelu")
TO_NHWC = [0, 2, 3, 1]
TO_NCHW = [0, 3, 1, 2]


class Chain(NamedTuple):
    quantize: object  # the QuantizeLinear node that ends it
    x: str  # its input tensor: the DequantizeLinear's output, or a float tensor
    dequantize: object | None  # the DequantizeLinear that makes `x` from uint8, where only the chain reads it
    groups: int
    eps: float
    gamma: np.ndarray  # [C] float32
    beta: np.ndarray
    # where `x` is a residual sum: the Add, the DequantizeLinear of its quantized addend (read by it alone) and the
    # other addend (float); the sum is read elsewhere too (the next residual), so the kernel writes it as well
    add: object | None = None
    addend_dequantize: object | None = None
    addend_float: str = ""


def find_chains(model) -> list[Chain]:
    """The GroupNorm chains of `model` (an onnx.ModelProto) that the kernel computes exactly as the graph does."""
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

    found = (_chain(q, producer, readers, value) for q in graph.node if q.op_type == "QuantizeLinear")
    return [chain for chain in found if chain is not None]


def rewrite(model) -> int:
    """Replace every matching GroupNorm chain of `model` (an onnx.ModelProto, changed in place) by the fused kernel;
    returns how many. Nodes the chains leave unused are removed."""
    onnx = require("onnx")
    graph = model.graph
    replaced: dict[str, list] = {}
    chains = find_chains(model)
    count = len(chains)
    for number, chain in enumerate(chains):
        quantize, dequantize = chain.quantize, chain.dequantize
        tag = f"bit_trt_group_norm_{number}"
        gamma, beta = f"{tag}/gamma", f"{tag}/beta"
        graph.initializer.extend(
            [onnx.numpy_helper.from_array(chain.gamma, gamma), onnx.numpy_helper.from_array(chain.beta, beta)]
        )
        make = onnx.helper.make_node
        to_nhwc = [f"{tag}/nhwc_in"]
        outputs = [f"{tag}/nhwc_out"]
        back = [quantize.output[0]]
        if chain.add is not None:
            op, scale = OPS[2], list(chain.addend_dequantize.input[1:3])
            sources = [chain.addend_dequantize.input[0], chain.addend_float]
            to_nhwc.append(f"{tag}/nhwc_addend")
            outputs.append(f"{tag}/nhwc_sum")
            back.append(chain.x)
            replaced[chain.x] = []  # the Add: its sum is the kernel's second output now
        elif dequantize is not None:
            op, sources, scale = OPS[0], [dequantize.input[0]], list(dequantize.input[1:3])
        else:
            op, sources, scale = OPS[1], [chain.x], []
        inputs = [to_nhwc[0], *scale, *to_nhwc[1:], gamma, beta, quantize.input[1], quantize.input[2]]
        replaced[quantize.output[0]] = [
            *(make("Transpose", [a], [b], f"{b}/transpose", perm=TO_NHWC) for a, b in zip(sources, to_nhwc)),
            make(op, inputs, outputs, tag, domain=DOMAIN, groups=chain.groups, epsilon=chain.eps),
            *(
                make("Transpose", [a], [b], f"{tag}/to_nchw_{i}", perm=TO_NCHW)
                for i, (a, b) in enumerate(zip(outputs, back))
            ),
        ]
    if not count:
        return 0
    nodes = [new for node in graph.node for new in replaced.get(node.output[0] if node.output else "", [node])]
    drop_unread(model, _in_order(nodes))
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, 1))
    return count


def _in_order(nodes: list) -> list:
    """`nodes` sorted so that each comes after the producers of its inputs (ONNX's rule; a kernel that takes over a
    residual Add writes its sum where the chain's quantize was)."""
    produced = {out: i for i, node in enumerate(nodes) for out in node.output}
    done: set[int] = set()
    order: list = []

    def visit(i: int) -> None:
        stack = [(i, False)]
        while stack:
            at, expanded = stack.pop()
            if at in done:
                continue
            if expanded:
                done.add(at)
                order.append(nodes[at])
                continue
            stack.append((at, True))
            stack.extend((produced[n], False) for n in nodes[at].input if n in produced and produced[n] not in done)

    for i in range(len(nodes)):
        visit(i)
    return order


def drop_unread(model, nodes: list) -> None:
    """Make `nodes` the graph of `model`, less those whose outputs nothing reads (repeatedly: a chain's nodes once its
    quantize is replaced), and the initializers no node reads."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    while True:
        read = outputs | {name for node in nodes for name in node.input}
        kept = [node for node in nodes if any(out in read for out in node.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    initializers = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(initializers)


def _chain(quantize, producer, readers, value) -> Chain | None:
    """The chain `quantize` ends, where the kernel computes it exactly as the graph does; None where anything
    differs."""

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
    gamma, beta = gamma.reshape(-1).astype(np.float32), beta.reshape(-1).astype(np.float32)
    chain = Chain(quantize, x, dequantize, int(shape[1]), float(eps), gamma, beta)
    residual = producer.get(x) if dequantize is None else None
    if residual is not None and residual.op_type == "Add" and len(residual.input) == 2:
        for quantized, other in (residual.input, reversed(residual.input)):
            addend = producer.get(quantized)
            if addend is None or addend.op_type != "DequantizeLinear" or readers.get(quantized) != 1:
                continue
            if len(addend.input) == 3 and _scalar(value(addend.input[1]), np.floating):
                if _scalar(value(addend.input[2]), np.uint8) and value(other) is None:
                    return chain._replace(add=residual, addend_dequantize=addend, addend_float=other)
    return chain


def _per_channel(array) -> bool:
    """One value per channel: at most one axis longer than 1 ([C], [C,1,1], [1,C,1,1])."""
    return np.issubdtype(array.dtype, np.floating) and sum(d != 1 for d in array.shape) <= 1


def _scalar(array, kind) -> bool:
    return array is not None and array.size == 1 and np.issubdtype(array.dtype, kind)


def rewritten_bytes(model) -> tuple[bytes, int]:
    """`model` (a path or serialized bytes) with its GroupNorm chains fused, serialized, and how many; raises a
    BitError where it holds none (an FP32 graph, or one quantized some other way)."""
    onnx = require("onnx")
    proto = onnx.load_from_string(model) if isinstance(model, bytes) else onnx.load(model)
    count = rewrite(proto)
    if not count:
        raise BitError("the graph has no quantized GroupNorm chain for bit-trt's kernel")
    return proto.SerializeToString(), count
