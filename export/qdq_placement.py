"""Where TensorRT's INT8 graph has its Q/DQ pairs: NVIDIA's placement rules, each a function over the ONNX graph.

ONNX Runtime's static quantizer (export/int8.py) puts a Q/DQ pair on every input *and output* of each Conv and
MatMul. That is ORT's convention, not TensorRT's. The TensorRT developer guide's placement recommendations
(docs/tensorrt.md links each one) say:

- `drop_weighted_outputs`: quantize the inputs of weighted layers, not their outputs. A Q/DQ pair on a Conv
  output that feeds the residual Add splits the Conv+Add fusion, and on the head's MatMul it rounds the logits
  themselves to 256 levels.
- `quantize_residual_inputs`: TensorRT fuses an element-wise Add into the Conv that produces one of its inputs,
  in INT8, when the Add's *other* input is quantized. In BiT's pre-activation units that other input is the
  shortcut: the unit's input, or the projection Conv's output.
- The first and last weighted layers (the 3-channel stem, the classifier head) are kept in float only where a
  measurement says so (`edge_layers`, `keep_in_float`; int8.py measures them on every export and records why).

Each rule returns what it changed, so the manifest and the tests can name it.
"""

from __future__ import annotations

import numpy as np

from ..engine.errors import BitError
from .graph_cleanup import graph_index, static_shapes

# The layers TensorRT runs in INT8 from Q/DQ inputs, and the only ones int8.py quantizes.
WEIGHTED_OPS = ("Conv", "MatMul")


def drop_weighted_outputs(model) -> list[str]:
    """Remove each Q/DQ pair on a Conv/MatMul output whose dequantized value feeds no weighted layer (those pairs
    are the next layer's input quantization and stay). Returns the tensors that are float again."""
    graph = model.graph
    producers, consumers = graph_index(graph)
    rename, doomed, freed = {}, set(), []
    for q in graph.node:
        source = producers.get(q.input[0]) if q.op_type == "QuantizeLinear" else None
        if source is None or source.op_type not in WEIGHTED_OPS:
            continue
        dqs = consumers.get(q.output[0], [])
        if not dqs or any(dq.op_type != "DequantizeLinear" for dq in dqs):
            continue
        readers = [r for dq in dqs for r in consumers.get(dq.output[0], [])]
        if any(r.op_type in WEIGHTED_OPS for r in readers):
            continue
        for dq in dqs:
            rename[dq.output[0]] = q.input[0]
            doomed.add(id(dq))
        doomed.add(id(q))
        freed.append(q.input[0])
    _rewire(graph, rename, doomed)
    return freed


def quantize_residual_inputs(model, ranges: dict) -> list[str]:
    """Give each Add that one Conv feeds a Q/DQ pair on its other input (the residual), with the calibrated range
    of that tensor, so TensorRT can fuse the Add into the Conv in INT8. Where both inputs are Conv outputs (a
    projection unit), the later Conv is fused and the earlier one's output is the residual. Returns the tensors
    quantized."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producers, consumers = graph_index(graph)
    order = {id(n): i for i, n in enumerate(graph.node)}
    data = ranges.get("data", ranges)
    constants = {i.name for i in graph.initializer}
    inserted, added = {}, []
    for add in graph.node:
        if add.op_type != "Add" or len(add.input) != 2 or any(i in constants for i in add.input):
            continue  # a bias or a GroupNorm's beta, not a residual
        fusable = [
            i for i in add.input if i in producers and producers[i].op_type == "Conv" and len(consumers.get(i, [])) == 1
        ]
        if not fusable:
            continue
        fused = max(fusable, key=lambda i: order[id(producers[i])])
        residual = next(i for i in add.input if i != fused)
        if residual in producers and producers[residual].op_type == "DequantizeLinear":
            continue
        if residual not in data:
            raise BitError(f"no calibrated range for the residual input {residual!r} of {add.name!r}; recalibrate")
        absmax = max(abs(float(data[residual]["lowest"]["data"][0])), abs(float(data[residual]["highest"]["data"][0])))
        # named after the Add: one tensor may be the residual of more than one Add
        scale, zero, q_out, dq_out = (f"{add.name}/residual_{x}" for x in ("scale", "zero_point", "q", "dq"))
        graph.initializer.extend(
            [
                numpy_helper.from_array(np.array(max(absmax, 1e-12) / 127.0, np.float32), scale),
                numpy_helper.from_array(np.array(0, np.int8), zero),
            ]
        )
        q = helper.make_node("QuantizeLinear", [residual, scale, zero], [q_out], name=f"{add.name}/ResidualQuantize")
        dq = helper.make_node("DequantizeLinear", [q_out, scale, zero], [dq_out], name=f"{add.name}/ResidualDequantize")
        add.input[list(add.input).index(residual)] = dq_out
        inserted[id(add)] = [q, dq]
        added.append(residual)
    nodes = []
    for node in graph.node:
        nodes.extend(inserted.get(id(node), []))
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return added


def edge_layers(model) -> dict[str, str]:
    """The first and the last weighted layer: {"stem": name, "head": name} (the layers whose quantization
    int8.py decides by measurement)."""
    weighted = [n.name for n in model.graph.node if n.op_type in WEIGHTED_OPS]
    if not weighted:
        raise BitError("the model has no Conv or MatMul to quantize")
    return {"stem": weighted[0], "head": weighted[-1]}


def weighted_macs(model) -> dict[str, int]:
    """Multiply-accumulates per image of each Conv/MatMul of a float model with static spatial shapes."""
    shapes = static_shapes(model)
    inits = {i.name: i for i in model.graph.initializer}
    macs = {}
    for node in model.graph.node:
        if node.op_type not in WEIGHTED_OPS or node.input[1] not in inits:
            continue
        weight = tuple(inits[node.input[1]].dims)
        out = shapes.get(node.output[0]) or []
        per_output = 1
        for d in weight[1:] if node.op_type == "Conv" else weight[:1]:
            per_output *= int(d)
        outputs = 1
        for d in out[1:]:
            outputs *= int(d) if isinstance(d, int) and d > 0 else 1
        macs[node.name] = per_output * outputs
    return macs


# How much more of the INT8 error than of the work an edge layer must cause to stay in float: twice the model's
# average per MAC. The probe is 8 images: it ranks layers but does not resolve small differences. Measured
# (synthetic weights, 480 px): R50x1's stem causes 3.4% of the error for 2.9% of the MACs (1.2x: noise, and
# ModelOpt quantizes it at equal accuracy, bench/results/int8_trt_vs_modelopt_r50x1.json); R50x3's stem 3.8% for
# 1.0% (3.8x) and both heads 1-1.5% for 0.01% stay in float.
OUTLIER_FACTOR = 2.0


def error_share(error_all: float, error_without: float) -> float:
    """The share of the INT8 error one layer causes: errors add as squares (independent rounding), so it is
    1 - (error without it / error)^2."""
    return 1.0 - (error_without / error_all) ** 2 if error_all > 0 else 0.0


def keep_in_float(error_all: float, error_without: float, mac_share: float) -> bool:
    """An edge layer stays in float when its share of the INT8 error is more than OUTLIER_FACTOR times its share
    of the work."""
    return error_share(error_all, error_without) > OUTLIER_FACTOR * mac_share


def _rewire(graph, rename: dict, doomed: set) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    for out in graph.output:
        if out.name in rename:
            raise BitError(f"cannot remove the Q/DQ pair on the graph output {out.name!r}")
    kept = [n for n in graph.node if id(n) not in doomed]
    del graph.node[:]
    graph.node.extend(kept)
    used = {i for n in graph.node for i in n.input}
    for index in reversed([i for i, init in enumerate(graph.initializer) if init.name not in used]):
        del graph.initializer[index]
