"""TensorRT's Q/DQ placement rules (export/qdq_placement.py), each on a small real ONNX graph, then on the tiny
bundle's int8-trt graph as the exporter wrote it."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bit_trt.engine.errors import BitError
from bit_trt.export import qdq_placement


def _qdq(tensor: str, tag: str) -> list:
    return [
        helper.make_node("QuantizeLinear", [tensor, "s", "z"], [f"{tag}_q"], name=f"{tag}/Q"),
        helper.make_node("DequantizeLinear", [f"{tag}_q", "s", "z"], [f"{tag}_dq"], name=f"{tag}/DQ"),
    ]


def _model(nodes: list, outputs=("y",)):
    inits = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.int8), "z"),
        numpy_helper.from_array(np.ones((4, 4, 1, 1), np.float32), "w"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, [1, 4, 2, 2]) for o in outputs],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def _unit(first_output_qdq: bool = True):
    """x -> Q/DQ -> Conv a -> [Q/DQ] -> Add(., x) -> y, and a second Conv b reading Conv a's dequantized output."""
    nodes = _qdq("x", "in") + [helper.make_node("Conv", ["in_dq", "w"], ["a"], name="convA")]
    a = "a"
    if first_output_qdq:
        nodes += _qdq("a", "out")
        a = "out_dq"
    nodes += [helper.make_node("Add", [a, "x"], ["y"], name="add")]
    return _model(nodes)


def test_drop_weighted_outputs_removes_the_pair_that_splits_conv_add():
    model = _unit()
    assert qdq_placement.drop_weighted_outputs(model) == ["a"]
    add = next(n for n in model.graph.node if n.op_type == "Add")
    assert list(add.input) == ["a", "x"]
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) == 1  # the Conv's input pair stays
    onnx.checker.check_model(model)


def test_drop_weighted_outputs_keeps_a_pair_that_is_the_next_layers_input():
    nodes = _qdq("x", "in") + [helper.make_node("Conv", ["in_dq", "w"], ["a"], name="convA")]
    nodes += _qdq("a", "mid") + [helper.make_node("Conv", ["mid_dq", "w"], ["y"], name="convB")]
    model = _model(nodes)
    assert qdq_placement.drop_weighted_outputs(model) == []
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) == 2


def _ranges(**absmax):
    return {"data": {k: {"lowest": {"data": [-v]}, "highest": {"data": [v / 2]}} for k, v in absmax.items()}}


def test_quantize_residual_inputs_quantizes_the_shortcut_not_the_conv_branch():
    model = _unit(first_output_qdq=False)
    assert qdq_placement.quantize_residual_inputs(model, _ranges(x=2.54)) == ["x"]
    add = next(n for n in model.graph.node if n.op_type == "Add")
    assert add.input[0] == "a" and add.input[1] == "add/residual_dq"
    scale = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}["add/residual_scale"]
    assert scale == pytest.approx(2.54 / 127)
    onnx.checker.check_model(model)  # the inserted pair stands before the Add: still topologically sorted


def test_quantize_residual_inputs_fuses_the_later_conv_of_a_projection_unit():
    nodes = _qdq("x", "in") + [
        helper.make_node("Conv", ["in_dq", "w"], ["proj"], name="projection"),
        helper.make_node("Conv", ["in_dq", "w"], ["c3"], name="conv3"),
        helper.make_node("Add", ["c3", "proj"], ["y"], name="add"),
    ]
    model = _model(nodes)
    assert qdq_placement.quantize_residual_inputs(model, _ranges(proj=1.0, c3=1.0)) == ["proj"]


def test_one_tensor_that_is_the_residual_of_two_adds_gets_a_pair_for_each():
    nodes = _qdq("x", "in") + [
        helper.make_node("Conv", ["in_dq", "w"], ["a"], name="convA"),
        helper.make_node("Conv", ["in_dq", "w"], ["b"], name="convB"),
        helper.make_node("Add", ["a", "x"], ["ya"], name="addA"),
        helper.make_node("Add", ["b", "x"], ["yb"], name="addB"),
    ]
    model = _model(nodes, outputs=("ya", "yb"))
    assert qdq_placement.quantize_residual_inputs(model, _ranges(x=1.0)) == ["x", "x"]
    onnx.checker.check_model(model)  # names are unique: each pair is named after its Add


def test_quantize_residual_inputs_needs_the_residual_range():
    with pytest.raises(BitError, match="no calibrated range for the residual input 'x'"):
        qdq_placement.quantize_residual_inputs(_unit(first_output_qdq=False), _ranges(a=1.0))


def test_keep_in_float_weighs_error_share_against_work_share():
    assert qdq_placement.error_share(0.10, 0.08) == pytest.approx(0.36)
    assert qdq_placement.keep_in_float(0.10, 0.08, 0.10)  # 36% of the error for 10% of the work
    assert not qdq_placement.keep_in_float(0.10, 0.099, 0.03)  # 2% of the error for 3% of the work
    # R50x1's stem at 480: 3.4% of the error for 2.9% of the work is within the probe's noise; R50x3's is not
    assert not qdq_placement.keep_in_float(0.08653, 0.08503, 0.0289)
    assert qdq_placement.keep_in_float(0.10, 0.09807, 0.0100)
    assert not qdq_placement.keep_in_float(0.0, 0.0, 0.0)


def test_edge_layers_and_their_work(tiny_bundle):
    model = onnx.load(str(tiny_bundle / "model.fp32.onnx"))
    edges = qdq_placement.edge_layers(model)
    macs = qdq_placement.weighted_macs(model)
    assert edges == {"stem": "root_block/Conv2D", "head": "head/MatMul"}
    assert len(macs) == 18 and all(v > 0 for v in macs.values())
    stem = next(n for n in model.graph.node if n.name == edges["stem"])
    weight = {i.name: tuple(i.dims) for i in model.graph.initializer}[stem.input[1]]
    assert weight[1] == 3  # the stem reads the 3-channel image


def test_the_exported_int8_trt_graph_follows_the_rules(tiny_full_bundle):
    """Every residual Add reads one Conv directly and a DequantizeLinear on the other side; no Q/DQ pair sits on a
    weighted layer's output; the stem and head decisions are recorded with their measurements."""
    model = onnx.load(str(tiny_full_bundle / "model.int8-trt.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}
    adds = [n for n in model.graph.node if n.op_type == "Add" and n.name.endswith("/add")]
    assert len(adds) == 4
    for add in adds:
        assert sorted(producers[i].op_type for i in add.input) == ["Conv", "DequantizeLinear"], add.name
    for q in (n for n in model.graph.node if n.op_type == "QuantizeLinear"):  # a projection's output is a residual
        if producers.get(q.input[0]) is not None and producers[q.input[0]].op_type in ("Conv", "MatMul"):
            assert q.name.endswith("/ResidualQuantize"), q.name
    record = next(
        a
        for a in json.loads((tiny_full_bundle / "manifest.json").read_text())["artifacts"]
        if a["flavour"] == "int8-trt" and a["kind"] == "onnx"
    )
    # every quantized Conv/MatMul (17 Convs and the head's MatMul, less the edge layers measured to stay in float)
    # lost the pair on its output; each of the 4 units' Adds gained one on its residual
    quantized = 18 - sum(edge["in_float"] for edge in record["edge_layers"])
    assert record["placement"] == {"weighted_outputs_float": quantized, "residual_inputs_quantized": 4}
    assert [e["role"] for e in record["edge_layers"]] == ["stem", "head"]
    for edge in record["edge_layers"]:
        assert edge["in_float"] == (edge["error_share"] > qdq_placement.OUTLIER_FACTOR * edge["mac_share"])
        assert (edge["layer"] in record["float_layers"]) == edge["in_float"]
