"""SavedModel weights -> ONNX with tf2onnx, without tf2onnx ever holding the weights.

Why: tf2onnx freezes variables into graph constants and then copies them through grappler and its own
optimizers; on R50x3 (870 MB of weights) that peaked above 24 GB and was killed. Here tf2onnx converts
the forward function with every weight as a *function input*, so its graph is a few hundred KB and the
conversion takes seconds whatever the model size. The weights are then bound to those inputs as ONNX
initializers, and `graph_cleanup.fold_constants` evaluates everything that only depends on them
(weight standardization, HWIO->OIHW kernel transposes) into plain constants.

The graph is traced in NCHW (`bit_tf.forward(layout="NCHW")`): TF's NCHW conv cannot *run* on a CPU,
but it only needs to be traced, and tf2onnx then emits Conv without the per-layer layout Transposes it
would put around every NHWC conv. The NHWC input is transposed once, inside the graph.
"""

from __future__ import annotations

import numpy as np

from ..engine.errors import BitError
from .tensorflow_import import import_tensorflow
from .variants import Variant

INPUT_NAME = "images"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 17
SUPPORTED_OPSETS = (17, 18)


def convert(
    weights,
    variant: Variant,
    resolution: int | None,
    opset: int = DEFAULT_OPSET,
    layout: str = "NCHW",
    bind: bool = True,
    consume: bool = False,
):
    """Convert the BiT forward pass with tf2onnx; return an onnx.ModelProto.

    resolution None makes H and W dynamic; batch is always dynamic. With bind=True the weights become
    initializers named by their checkpoint keys; with bind=False they stay graph inputs. consume: take each
    array out of `weights` (a dict) as it is bound, so that the two copies never coexist whole.
    """
    if opset not in SUPPORTED_OPSETS:
        raise BitError(f"opset {opset} is not supported; use one of {SUPPORTED_OPSETS}")
    tf = import_tensorflow()
    import tf2onnx

    from .bit_tf import forward

    keys = list(weights)
    arg_names = [f"w{i}" for i in range(len(keys))]
    signature = [tf.TensorSpec([None, resolution, resolution, 3], tf.float32, name=INPUT_NAME)]
    signature += [tf.TensorSpec(weights[k].shape, tf.float32, name=n) for k, n in zip(keys, arg_names)]

    @tf.function(input_signature=signature)
    def bit_forward(images, *ws):
        return forward(dict(zip(keys, ws)), images, variant, layout)

    model, _ = tf2onnx.convert.from_function(bit_forward, input_signature=signature, opset=opset)
    graph = model.graph
    _rename_tensor(graph, graph.output[0].name, OUTPUT_NAME)
    for name, key in zip(arg_names, keys):
        _rename_tensor(graph, name, key)
    graph.name = f"bit_{variant.name}"
    from ..engine.onnx_order import canonicalize

    canonicalize(model)  # before binding: only tf2onnx's small constants are initializers yet
    if bind:
        bind_initializers(model, weights, consume)
    return model


def convert_in_child(weights, variant: Variant, resolution: int | None, opset: int = DEFAULT_OPSET):
    """convert(..., bind=True, consume=True) with TF's part in a child process (export/tf_reference.py): the child
    traces and converts from the weights' shapes alone, and this process binds the weights, taking each array out
    of `weights` as it is bound. So the exporter never imports TF for weights that need none to be read (synthetic,
    .npz), and the memory TF keeps after converting goes with the child. Returns the model and the child's peak
    RSS in bytes."""
    import onnx

    from .tf_reference import weightless_graph

    # an unsupported opset is refused by convert() in the child, in the same line
    graph, child_peak = weightless_graph(variant.name, {k: a.shape for k, a in weights.items()}, resolution, opset)
    model = onnx.load_from_string(graph)
    bind_initializers(model, weights, consume=True)
    return model, child_peak


def _rename_tensor(graph, old: str, new: str) -> None:
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new
        for i, name in enumerate(node.output):
            if name == old:
                node.output[i] = new
    for value in list(graph.input) + list(graph.output):
        if value.name == old:
            value.name = new


def bind_initializers(model, arrays, consume: bool = False) -> None:
    """Turn graph inputs named like `arrays`' keys into initializers holding those arrays (taken out of `arrays`,
    a dict, one by one when `consume`)."""
    from onnx import numpy_helper

    graph = model.graph
    by_name = {v.name: v for v in graph.input}
    for name in list(arrays):
        if name not in by_name:
            raise BitError(f"internal: converted graph has no input {name!r} to bind")
        array = arrays.pop(name) if consume else arrays[name]
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        del array
        graph.input.remove(by_name[name])
