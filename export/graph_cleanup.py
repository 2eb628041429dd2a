"""Rewrites of the converted graph, each checked numerically against the graph before it.

- `fuse_group_norms`: tf2onnx decomposes every GroupNorm into Reshape/ReduceMean/Sub/Mul/Sqrt plus the
  Shape/Cast/Concat chains that build its shapes. Each GroupNorm is rewritten as
  Reshape[N,32,-1] -> InstanceNormalization -> Reshape[N,C,H,W] -> Mul(gamma) -> Add(beta), the pattern
  ONNX Runtime runs as one kernel and TensorRT's parser maps to its normalization layer. Regions are found
  by the TF name scope `group_norm` that `bit_tf` opens, so the match does not depend on how tf2onnx
  happens to decompose the moments.
- `fold_constants`: evaluates every node whose inputs are all constants: weight standardization and the
  HWIO->OIHW kernel transposes become plain Conv weights. The exporter folds before it fuses (`folded_copy`,
  the GroupNorm scopes skipped): the same graph, and the fold's check runs on constant kernels.
- `remove_dead`: Identity nodes, nodes nothing consumes, and unused initializers.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import numpy as np

from ..engine.errors import BitError
from ..engine.onnx_order import set_nodes
from .variants import GN_EPS, GN_GROUPS

GROUP_NORM_SCOPE = re.compile(r"^(?P<scope>(?:.*/)?group_norm(?:_\d+)?)/")
# Ops whose value depends on more than their inputs, or that carry subgraphs: never folded.
_NOT_FOLDABLE = {
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "If",
    "Loop",
    "Scan",
    "Shape",
    "Size",
}


def histogram(model) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def layout_transposes(model) -> int:
    """Transposes on the activation path (downstream of the image input); weight transposes don't count."""
    consts = {i.name for i in model.graph.initializer}
    live = {i.name for i in model.graph.input if i.name not in consts}
    count = 0
    for node in model.graph.node:  # topological order: one pass propagates reachability
        if any(i in live for i in node.input):
            live.update(node.output)
            count += node.op_type == "Transpose"
    return count


def _tensor_bytes(init) -> int:
    # From dims, not len(raw_data): reading a bytes field copies it, and these tensors are up to 100 MB.
    from onnx import helper

    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
    return int(np.prod(init.dims, dtype=np.int64)) * itemsize


def light_copy(model, max_bytes: int = 4096):
    """The model with every large initializer turned into a typed graph input: same shapes, no weight data.

    Shape inference and inspection on a copy like this costs kilobytes instead of the weights' size.
    The original's initializers are never copied or moved.
    """
    import onnx

    light = onnx.ModelProto()
    light.ir_version = model.ir_version
    light.opset_import.extend(model.opset_import)
    g = light.graph
    g.name = model.graph.name
    g.node.extend(model.graph.node)
    g.input.extend(model.graph.input)
    g.output.extend(model.graph.output)
    for init in model.graph.initializer:
        if _tensor_bytes(init) > max_bytes:
            g.input.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            g.initializer.append(init)
    return light


def static_shapes(model, data_prop: bool = False) -> dict[str, list]:
    """Tensor name -> inferred shape (ints for static dims, strings/None for dynamic ones)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(light_copy(model), data_prop=data_prop)
    shapes = {}
    for v in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = v.type.tensor_type.shape.dim
        shapes[v.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    return shapes


def graph_index(graph) -> tuple[dict, dict[str, list]]:
    """({tensor: the node that writes it}, {tensor: the nodes that read it}) of an ONNX graph."""
    producers = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producers, consumers


def _group_norm_regions(graph) -> dict[str, list]:
    regions: dict[str, list] = defaultdict(list)
    for node in graph.node:
        m = GROUP_NORM_SCOPE.match(node.name)
        if m:
            regions[m.group("scope")].append(node)
    return regions


def fuse_group_norms(model, groups: int = GN_GROUPS, eps: float = GN_EPS) -> int:
    """Replace each `group_norm` scope with the InstanceNormalization pattern; return how many.

    Each fused GroupNorm first reshapes back through `Shape(x)`; once all are fused, one shape inference
    sees every spatial size (the decomposed form hid them behind run-time shape arithmetic), and
    `_static_reshape_targets` replaces each Shape whose input is static with a constant.
    """
    graph = model.graph
    regions = _group_norm_regions(graph)
    if not regions:
        return 0
    inits = {i.name: i for i in graph.initializer}
    consumers = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(id(node))
    graph_outputs = {o.name for o in graph.output}
    position = {id(n): i for i, n in enumerate(graph.node)}
    doomed, insert_at = set(), {}
    for scope, nodes in regions.items():
        ids = {id(n) for n in nodes}
        fused = _fused_group_norm(graph, scope, nodes, ids, inits, consumers, graph_outputs, groups, eps)
        doomed |= ids
        # The fused nodes stand where the region's last node stood, so topological order holds.
        insert_at[max(position[i] for i in ids)] = fused
    kept = []
    for i, node in enumerate(graph.node):
        if id(node) not in doomed:
            kept.append(node)
        kept.extend(insert_at.get(i, []))
    set_nodes(graph, kept)
    _static_reshape_targets(model)
    remove_dead(model)
    return len(regions)


def _fused_group_norm(graph, scope, nodes, ids, inits, consumers, graph_outputs, groups, eps) -> list:
    from onnx import helper, numpy_helper

    produced = {o for n in nodes for o in n.output}
    inputs = {i for n in nodes for i in n.input if i and i not in produced}
    outputs = [o for o in produced if o in graph_outputs or any(c not in ids for c in consumers.get(o, []))]
    activations = [i for i in inputs if i not in inits]
    gammas = [i for i in inputs if i.endswith("/gamma") and i in inits]
    betas = [i for i in inputs if i.endswith("/beta") and i in inits]
    if len(outputs) != 1 or len(activations) != 1 or len(gammas) != 1 or len(betas) != 1:
        raise BitError(
            f"GroupNorm scope {scope!r} does not have the expected shape "
            f"(inputs {sorted(inputs)}, outputs {outputs}); refusing to rewrite it"
        )
    x, y = activations[0], outputs[0]
    gamma = numpy_helper.to_array(inits[gammas[0]])
    beta = numpy_helper.to_array(inits[betas[0]])
    channels = gamma.shape[0]
    s = f"{scope}_fused"  # a name the region pattern does not match again
    graph.initializer.extend(
        [
            numpy_helper.from_array(np.array([0, groups, -1], np.int64), f"{s}/grouped_shape"),
            numpy_helper.from_array(np.ones(groups, np.float32), f"{s}/unit_scale"),
            numpy_helper.from_array(np.zeros(groups, np.float32), f"{s}/zero_bias"),
            numpy_helper.from_array(gamma.reshape(channels, 1, 1), f"{s}/gamma_c11"),
            numpy_helper.from_array(beta.reshape(channels, 1, 1), f"{s}/beta_c11"),
        ]
    )
    return [
        helper.make_node("Shape", [x], [f"{s}/x_shape"], name=f"{s}/Shape"),
        helper.make_node("Reshape", [x, f"{s}/grouped_shape"], [f"{s}/grouped"], name=f"{s}/ReshapeGroups"),
        helper.make_node(
            "InstanceNormalization",
            [f"{s}/grouped", f"{s}/unit_scale", f"{s}/zero_bias"],
            [f"{s}/normalized"],
            name=f"{s}/InstanceNormalization",
            epsilon=eps,
        ),
        helper.make_node("Reshape", [f"{s}/normalized", f"{s}/x_shape"], [f"{s}/ungrouped"], name=f"{s}/ReshapeBack"),
        helper.make_node("Mul", [f"{s}/ungrouped", f"{s}/gamma_c11"], [f"{s}/scaled"], name=f"{s}/Gamma"),
        helper.make_node("Add", [f"{s}/scaled", f"{s}/beta_c11"], [y], name=f"{s}/Beta"),
    ]


def _static_reshape_targets(model) -> None:
    """Shape(x) -> Reshape becomes a constant [0, C, H, W] wherever C, H, W are static (not batch)."""
    from onnx import numpy_helper

    shapes = static_shapes(model, data_prop=True)
    graph = model.graph
    kept = []
    for node in graph.node:
        dims = shapes.get(node.input[0]) if node.op_type == "Shape" and node.name.endswith("_fused/Shape") else None
        if dims and len(dims) == 4 and all(isinstance(d, int) and d > 0 for d in dims[1:]):
            graph.initializer.append(numpy_helper.from_array(np.array([0] + dims[1:], np.int64), node.output[0]))
            continue
        kept.append(node)
    if len(kept) != len(graph.node):
        set_nodes(graph, kept)


def fold_constants(model) -> int:
    """Evaluate every node whose inputs are all initializers, in place; return how many nodes were folded."""
    folded, count = folded_copy(model)
    model.CopyFrom(folded)
    return count


def folded_copy(model, skip=None):
    """(a new model with every node whose inputs are all initializers evaluated, how many nodes were folded);
    nodes whose name `skip` (a compiled pattern) matches are kept as they are.

    A new model, not `model` rewritten: Python protobuf (upb) keeps a message's tensors in an arena that deleting
    them does not shrink, so folding in place would hold the old weights and the folded ones until the model is
    dropped. Here the caller drops `model` and the two copies end there. Memory stays near two copies of the
    weights: intermediates are freed as soon as nothing else needs them, and the folded tensors are copied into
    the new model one at a time, each array freed as it goes.
    """
    from onnx import numpy_helper

    graph = model.graph
    opset = {o.domain: o.version for o in model.opset_import}
    inits = {i.name: i for i in graph.initializer}
    consts = set(inits)
    values: dict[str, np.ndarray] = {}
    remaining_uses = Counter(i for n in graph.node for i in n.input)
    keep_names = {o.name for o in graph.output}

    def value(name):
        return values[name] if name in values else numpy_helper.to_array(inits[name])

    kept, folded = [], 0
    for node in graph.node:
        if (
            node.op_type in _NOT_FOLDABLE
            or (skip is not None and skip.match(node.name))
            or node.domain not in ("", "ai.onnx")
            or not all((not i) or i in consts for i in node.input)
        ):
            kept.append(node)
            continue
        results = _evaluate(node, [value(i) if i else None for i in node.input], opset.get("", 17))
        for name, arr in zip(node.output, results):
            values[name] = arr
            consts.add(name)
        folded += 1
        for name in node.input:
            remaining_uses[name] -= 1
            if remaining_uses[name] == 0 and name not in keep_names:
                values.pop(name, None)
    live = {i for n in kept for i in n.input} | keep_names
    out = _model_without_weights(model, kept)
    for init in graph.initializer:
        if init.name in live and init.name not in values:
            out.graph.initializer.add().CopyFrom(init)
    for name in [n for n in values if n in live]:
        arr = values.pop(name)  # one folded tensor at a time is converted, then its array freed
        out.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
    return out, folded


def _model_without_weights(model, nodes=()):
    """A new ModelProto with everything of `model` but its graph's initializers, and `nodes` as its graph's nodes."""
    import onnx

    out = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(out, field, value)
    for field, value in model.graph.ListFields():
        if field.name not in ("node", "initializer"):
            _copy_field(out.graph, field, value)
    out.graph.node.extend(nodes)
    return out


def model_bytes(model) -> int:
    """`model.ByteSize()` without its cost: Python protobuf (upb) computes ByteSize by serializing the whole message
    into a buffer that grows by doubling (R50x3: 1.7 GB for an 870 MB model). Here one tensor at a time is
    measured, plus the model without them, with protobuf's framing: the same number, exactly."""
    light = _model_without_weights(model, model.graph.node)
    light_graph = light.graph.ByteSize()
    graph = light_graph
    for init in model.graph.initializer:
        size = init.ByteSize()
        graph += 1 + len(_varint(size)) + size  # GraphProto.initializer: tag, length, message
    framing = lambda n: 1 + len(_varint(n)) + n  # noqa: E731  ModelProto.graph: tag, length, message
    return light.ByteSize() - framing(light_graph) + framing(graph)


def save_streamed(model, path: str) -> None:
    """Write `model` to `path` as one ONNX file without ever holding its serialized whole: the model without its
    initializers first, then each initializer as a message of its own. Protobuf merges concatenated messages
    (repeated fields append), so any reader parses this as the model; the largest transient copy is one tensor.
    The file is byte-stable: the same model always gives the same bytes."""
    out = _model_without_weights(model, model.graph.node)
    with open(path, "wb") as f:
        f.write(out.SerializeToString())
        del out
        for init in model.graph.initializer:
            tensor = init.SerializeToString()
            graph_field = b"\x2a" + _varint(len(tensor))  # GraphProto.initializer = 5, length-delimited
            f.write(b"\x3a" + _varint(len(graph_field) + len(tensor)))  # ModelProto.graph = 7, length-delimited
            f.write(graph_field)
            f.write(tensor)
            del tensor


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _copy_field(message, field, value) -> None:
    if field.is_repeated:
        getattr(message, field.name).extend(value)
    elif field.message_type is not None:
        getattr(message, field.name).CopyFrom(value)
    else:
        setattr(message, field.name, value)


def _evaluate(node, inputs, opset_version: int):
    from onnx import TensorProto, helper
    from onnx.reference import ReferenceEvaluator

    feeds, graph_inputs = {}, []
    for name, arr in zip(node.input, inputs):
        if name:
            feeds[name] = arr
            graph_inputs.append(
                helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), list(arr.shape))
            )
    graph_outputs = [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None) for o in node.output]
    single = helper.make_model(
        helper.make_graph([node], "fold", graph_inputs, graph_outputs),
        opset_imports=[helper.make_opsetid("", opset_version)],
    )
    return ReferenceEvaluator(single).run(None, feeds)


def remove_dead(model) -> int:
    """Drop Identity nodes (rewiring their consumers), unconsumed nodes and unused initializers."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    rename = {}
    nodes = []
    for n in graph.node:
        if n.op_type == "Identity" and n.output[0] not in outputs:
            rename[n.output[0]] = rename.get(n.input[0], n.input[0])
            continue
        for i, name in enumerate(n.input):
            if name in rename:
                n.input[i] = rename[name]
        nodes.append(n)
    removed = len(graph.node) - len(nodes)
    changed = True
    while changed:
        used = {i for n in nodes for i in n.input} | outputs
        alive = [n for n in nodes if any(o in used for o in n.output)]
        changed = len(alive) != len(nodes)
        removed += len(nodes) - len(alive)
        nodes = alive
    used = {i for n in nodes for i in n.input} | outputs
    _drop_initializers(graph, lambda init: init.name not in used)
    if removed:
        set_nodes(graph, nodes)
    return removed


def _drop_initializers(graph, doomed) -> None:
    # Delete by index: `remove()` would compare whole tensors, and rebuilding the list would copy them.
    for index in reversed([i for i, init in enumerate(graph.initializer) if doomed(init)]):
        del graph.initializer[index]
