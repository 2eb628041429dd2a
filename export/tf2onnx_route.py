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

import contextlib
import gc
import os

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

    # autograph off: forward() is plain Python over static loops; rewriting it first costs R50x3 about a second
    @tf.function(input_signature=signature, autograph=False)
    def bit_forward(images, *ws):
        return forward(dict(zip(keys, ws)), images, variant, layout)

    with _lean_tf2onnx():
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


@contextlib.contextmanager
def _lean_tf2onnx():
    """tf2onnx without two costs that buy us nothing (R50x3's conversion, with autograph off as well: 8.6-10.3 s
    before, 5.2-6.0 s after, measured on one host):
    - It deep-copies its whole graph before each of its 12 optimizer passes, in every round, only to fall back to
      the copy if the pass raises. Off (its TF2ONNX_CATCH_ERRORS switch): a pass that raises fails the conversion
      instead of being skipped without a word, and our cleanup, keyed on the optimized graph, never meets a graph
      one pass short. (tf2onnx 1.17 turns it off for any value of the variable: it compares the name, not the value.)
    - It makes millions of short-lived objects, and each full cyclic collection walks every object TF's modules
      hold. The collector is paused while it converts and run once after."""
    from tf2onnx.constants import ENV_TF2ONNX_CATCH_ERRORS as CATCH_ERRORS

    saved = os.environ.get(CATCH_ERRORS)
    os.environ[CATCH_ERRORS] = "FALSE"
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(CATCH_ERRORS, None)
        else:
            os.environ[CATCH_ERRORS] = saved
        if collecting:
            gc.enable()
        gc.collect()


def bind_graph(graph: bytes, weights):
    """The model from a weightless graph (`convert(..., bind=False)`, serialized; the TF child makes it, see
    export/tf_reference.py) with `weights` bound, each array taken out of `weights` (a dict) as it is bound."""
    import onnx

    model = onnx.load_from_string(graph)
    bind_initializers(model, weights, consume=True)
    return model


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
