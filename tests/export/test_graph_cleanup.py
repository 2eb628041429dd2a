"""Each rewrite of the converted graph: what it removes, and that the numbers do not move."""

import numpy as np
import onnxruntime as ort
import pytest

from bit_trt.export import graph_cleanup, tf2onnx_route
from bit_trt.export.bit_tf import BiTModule
from tests import numpy_bit

GN_PER_UNIT = 3


def _run(model, x):
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"images": x})[0]


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def raw(tiny, tiny_weights):
    return tf2onnx_route.convert(tiny_weights, tiny, 64)


def _copy(model):
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def test_raw_graph_is_what_tf2onnx_makes(raw):
    ops = graph_cleanup.histogram(raw)
    # Weight standardization and GroupNorm arrive decomposed, kernels arrive HWIO behind Transposes.
    assert ops["ReduceMean"] > 0 and ops["Sqrt"] > 0 and ops["Shape"] > 0
    assert ops["Transpose"] == 1 + ops["Conv"]
    assert graph_cleanup.layout_transposes(raw) == 1  # traced in NCHW: only the input is transposed


def test_nhwc_trace_is_what_the_nchw_trace_avoids(tiny, tiny_weights):
    nhwc = tf2onnx_route.convert(tiny_weights, tiny, 64, layout="NHWC")
    assert graph_cleanup.layout_transposes(nhwc) > 10  # tf2onnx's per-layer layout changes


def test_converting_leaves_the_collector_and_the_tf2onnx_switch_as_it_found_them(tiny, tiny_weights, monkeypatch):
    """tf2onnx converts with its per-pass graph copies off and the cyclic collector paused (tf2onnx_route): both
    come back as they were, whether the caller had set the switch or not."""
    import gc
    import os

    monkeypatch.setenv("TF2ONNX_CATCH_ERRORS", "the caller's")
    tf2onnx_route.convert(tiny_weights, tiny, 64)
    assert gc.isenabled() and os.environ["TF2ONNX_CATCH_ERRORS"] == "the caller's"
    monkeypatch.delenv("TF2ONNX_CATCH_ERRORS")
    tf2onnx_route.convert(tiny_weights, tiny, 64)
    assert gc.isenabled() and "TF2ONNX_CATCH_ERRORS" not in os.environ


def test_group_norm_fusion(raw, tiny, images64):
    model = _copy(raw)
    n_gn = GN_PER_UNIT * sum(tiny.units) + 1
    assert graph_cleanup.fuse_group_norms(model) == n_gn
    ops = graph_cleanup.histogram(model)
    assert ops["InstanceNormalization"] == n_gn
    assert "Shape" not in ops and "Cast" not in ops and "Concat" not in ops  # static targets, no dead chains
    assert ops["GlobalAveragePool"] == 1  # the head's pooling; the GroupNorm moments are gone
    assert _rel(_run(model, images64), _run(raw, images64)) < 1e-5


def test_full_cleanup_graph(raw, tiny, tiny_weights, images64):
    model = _copy(raw)
    graph_cleanup.fuse_group_norms(model)
    folded = graph_cleanup.fold_constants(model)
    graph_cleanup.remove_dead(model)
    ops = graph_cleanup.histogram(model)
    assert folded > 0
    assert graph_cleanup.layout_transposes(model) == 1  # the NHWC input, once
    assert ops.get("Transpose") == 1
    for gone in ("ReduceMean", "Sqrt", "Div", "Shape", "Cast", "Slice", "Concat", "Reciprocal", "Identity"):
        assert gone not in ops, gone
    assert ops["Conv"] == raw_convs(raw)
    # Every Conv weight is now a constant, already standardized: mean 0, variance 1 per output channel.
    from onnx import numpy_helper

    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = inits[node.input[1]].astype(np.float64)
            assert w.ndim == 4
            np.testing.assert_allclose(w.mean(axis=(1, 2, 3)), 0, atol=1e-5)
            np.testing.assert_allclose(w.var(axis=(1, 2, 3)), 1, atol=1e-3)
    # The stem pool's Pad pads with zero, in constant mode (the trap).
    pad = next(n for n in model.graph.node if n.op_type == "Pad")
    assert dict((a.name, a.s) for a in pad.attribute).get("mode", b"constant") == b"constant"
    if len(pad.input) > 2 and pad.input[2]:
        assert float(inits[pad.input[2]]) == 0.0
    want = numpy_bit.forward(tiny_weights, images64, tiny)
    assert _rel(_run(model, images64), want) < 1e-4


def raw_convs(raw):
    return graph_cleanup.histogram(raw)["Conv"]


def test_dynamic_spatial_keeps_one_shape_per_group_norm(tiny, tiny_weights):
    model = tf2onnx_route.convert(tiny_weights, tiny, None)
    n = graph_cleanup.fuse_group_norms(model)
    graph_cleanup.fold_constants(model)
    graph_cleanup.remove_dead(model)
    assert graph_cleanup.histogram(model)["Shape"] == n  # needed at run time, not dead
    ref = BiTModule(tiny_weights, tiny)
    for size in (64, 96):
        x = np.random.default_rng(size).random((2, size, size, 3), dtype=np.float32)
        assert _rel(_run(model, x), ref(x).numpy()) < 1e-4


def test_opset_18(tiny, tiny_weights, images64):
    model = tf2onnx_route.convert(tiny_weights, tiny, 64, opset=18)
    assert {o.domain: o.version for o in model.opset_import}[""] == 18
    graph_cleanup.fuse_group_norms(model)
    graph_cleanup.fold_constants(model)
    assert _rel(_run(model, images64), BiTModule(tiny_weights, tiny)(images64).numpy()) < 1e-4
