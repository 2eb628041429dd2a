"""engine/openvino_group_norm.py: OpenVINO runs each GroupNorm on per-channel statistics, without reshaping the
activations into groups, with the grouped form's answers; what is not that form, and INT8 graphs, stay as read."""

import numpy as np
import pytest

from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.parity_set import load_parity_set
from bit_trt.engine.preprocess import scale_uint8

ov = pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from bit_trt.engine.openvino_group_norm import rewrite  # noqa: E402


def grouped_norm_model(path, channels=8, groups=2, unit_scale=1.0, grouped=True, beta_shape=None, gamma_input=False):
    """x [N,C,5,3] -> Reshape [N,G,-1] -> InstanceNormalization -> Reshape back -> gamma, beta: the bundle's form.
    unit_scale: the InstanceNormalization's scale (1 in the bundle's form); grouped=False: no reshape at all;
    beta_shape: beta's shape (one value per channel, [C,1,1], unless given); gamma_input: gamma is a second input
    of the model, not a constant."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.full(groups if grouped else channels, unit_scale, np.float32), "scale"),
        numpy_helper.from_array(np.zeros(groups if grouped else channels, np.float32), "bias"),
        numpy_helper.from_array(np.array([0, groups, -1], np.int64), "grouped_shape"),
        numpy_helper.from_array(np.array([0, channels, 5, 3], np.int64), "x_shape"),
        numpy_helper.from_array(rng.standard_normal((channels, 1, 1)).astype(np.float32), "gamma"),
        numpy_helper.from_array(rng.standard_normal(beta_shape or (channels, 1, 1)).astype(np.float32), "beta"),
    ]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, 5, 3])]
    if gamma_input:
        inputs.append(helper.make_tensor_value_info("gamma", TensorProto.FLOAT, [channels, 1, 1]))
    if grouped:
        nodes = [
            helper.make_node("Reshape", ["x", "grouped_shape"], ["g"]),
            helper.make_node("InstanceNormalization", ["g", "scale", "bias"], ["n"], epsilon=1e-5),
            helper.make_node("Reshape", ["n", "x_shape"], ["back"]),
        ]
    else:
        nodes = [helper.make_node("InstanceNormalization", ["x", "scale", "bias"], ["back"], epsilon=1e-5)]
    nodes += [helper.make_node("Mul", ["back", "gamma"], ["m"]), helper.make_node("Add", ["m", "beta"], ["y"])]
    graph = helper.make_graph(
        nodes,
        "group_norm",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", channels, 5, 3])],
        [i for i in inits if not (gamma_input and i.name == "gamma")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    gamma, beta = (numpy_helper.to_array(i) for i in inits[4:])
    return gamma, beta


def numpy_group_norm(x, groups, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    g = x.reshape(n, groups, -1).astype(np.float64)
    normed = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    return normed.reshape(n, c, h, w) * gamma + beta


def run(model, *inputs):
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled.create_infer_request().infer(dict(enumerate(inputs)))[0]


def test_the_grouped_form_becomes_channel_statistics_with_the_same_answers(tmp_path):
    gamma, beta = grouped_norm_model(tmp_path / "gn.onnx")
    model = ov.Core().read_model(str(tmp_path / "gn.onnx"))
    x = (np.random.default_rng(1).standard_normal((2, 8, 5, 3)) * 3 + 5).astype(np.float32)  # a mean to cancel
    assert rewrite(model) == (1, 1)
    kinds = {op.get_type_name() for op in model.get_ordered_ops()}
    assert "MVN" not in kinds and "ReduceMean" in kinds
    # no reshape of the activations is left: every Reshape now works on [N,C,1,1] statistics
    for op in model.get_ordered_ops():
        if op.get_type_name() == "Reshape":
            assert op.get_output_partial_shape(0)[-1].get_length() in (1, 4)  # [N,G,C/G] or [N,C,1,1]
    np.testing.assert_allclose(run(model, x), numpy_group_norm(x, 2, gamma, beta), rtol=1e-4, atol=1e-4)


def test_gamma_and_beta_fold_into_one_multiply_add_of_x(tmp_path):
    """The pass over x that normalizes reads x and two per-channel arrays; the centred tensor feeds the variance
    alone (it is written only as its square); a and b are computed on the [N,G,C/G] statistics."""
    grouped_norm_model(tmp_path / "gn.onnx")
    model = ov.Core().read_model(str(tmp_path / "gn.onnx"))
    x = model.get_parameters()[0].output(0)
    rewrite(model)
    add = model.get_results()[0].input_value(0).get_node()
    assert add.get_type_name() == "Add"
    multiply = next(v.get_node() for v in add.input_values() if v.get_node().get_type_name() == "Multiply")
    assert x in multiply.input_values()
    # x's a and the other summand's b: [N,C,1,1], each reshaped from [N,G,C/G]
    operands = multiply.input_values() + add.input_values()
    per_channel = [v.get_node() for v in operands if v not in (x, multiply.output(0))]
    assert [p.get_type_name() for p in per_channel] == ["Reshape", "Reshape"]
    assert all(list(p.input_value(0).get_partial_shape())[1:] == [2, 4] for p in per_channel)
    (centred,) = [op for op in model.get_ordered_ops() if op.get_type_name() == "Subtract" and op.input_value(0) == x]
    readers = {r.get_node().get_type_name() for r in centred.output(0).get_target_inputs()}
    assert readers == {"Multiply"} and len(centred.output(0).get_target_inputs()) == 2  # centred * centred


@pytest.mark.parametrize("kind", ["beta_for_all", "beta_along_w", "gamma_input"])
def test_gamma_and_beta_fold_only_where_they_are_constants_per_channel_or_for_all(tmp_path, kind):
    """One beta for every channel folds too; a beta of shape [W] (ONNX broadcasts it along W, not C) or a gamma that
    is an input stays after the normalization. The answers are the grouped form's either way."""
    shape = {"beta_for_all": (1,), "beta_along_w": (3,)}.get(kind)
    gamma, beta = grouped_norm_model(
        tmp_path / "gn.onnx", channels=3, groups=1, beta_shape=shape, gamma_input=kind == "gamma_input"
    )
    model = ov.Core().read_model(str(tmp_path / "gn.onnx"))
    x = (np.random.default_rng(3).standard_normal((2, 3, 5, 3)) * 3 + 5).astype(np.float32)
    inputs = (x, gamma) if kind == "gamma_input" else (x,)
    folds = kind == "beta_for_all"
    assert rewrite(model) == (1, int(folds))
    if not folds:  # the normalization alone is rewritten: beta's Add, then gamma's Multiply, of the normalized x
        add = model.get_results()[0].input_value(0).get_node()
        multiply = next(v.get_node() for v in add.input_values() if v.get_node().get_type_name() == "Multiply")
        assert any(v.get_node().get_type_name() == "Divide" for v in multiply.input_values())
    np.testing.assert_allclose(run(model, *inputs), numpy_group_norm(x, 1, gamma, beta), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("scale, grouped", [(2.0, True), (1.0, False)])
def test_what_is_not_the_bundles_form_is_left_as_read(tmp_path, scale, grouped):
    grouped_norm_model(tmp_path / "other.onnx", unit_scale=scale, grouped=grouped)
    model = ov.Core().read_model(str(tmp_path / "other.onnx"))
    x = np.random.default_rng(2).standard_normal((1, 8, 5, 3)).astype(np.float32)
    want = run(ov.Core().read_model(str(tmp_path / "other.onnx")), x)
    assert rewrite(model) == (0, 0)
    np.testing.assert_allclose(run(model, x), want, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny(tiny_bundle):
    bundle = load_bundle(str(tiny_bundle))
    images, _, tf_logits = load_parity_set(bundle)
    return bundle, scale_uint8(images), tf_logits


def test_the_runner_runs_the_bundles_float_graph_unreshaped_and_matches_tf(tiny):
    from bit_trt.engine.compare import FP32_PARITY, report
    from bit_trt.engine.openvino_runner import OpenVinoRunner

    bundle, x, tf_logits = tiny
    norms = sum(n.op_type == "InstanceNormalization" for n in onnx.load(bundle.artifact_path("fp32")).graph.node)
    with OpenVinoRunner(bundle.artifact_path("fp32"), static_shapes=0) as runner:
        logits = runner.infer(x)
        assert runner.rewrites.group_norms == norms > 0
        assert runner.rewrites.group_norms_folded == norms
        assert f"{norms} GroupNorms on channel statistics, {norms} with gamma and beta in one multiply-add" in (
            runner.describe()
        )
        assert not any(op.get_type_name() == "MVN" for op in runner.compiled.get_runtime_model().get_ordered_ops())
    assert report(logits, tf_logits, FP32_PARITY)["passed"]


def test_int8_graphs_are_rewritten_and_keep_their_int8_convolutions(tiny_full_bundle):
    from bit_trt.engine.compare import INT8_CHECK, report
    from bit_trt.engine.openvino_runner import OpenVinoRunner

    bundle = load_bundle(str(tiny_full_bundle))
    images, _, tf_logits = load_parity_set(bundle)
    with OpenVinoRunner(bundle.artifact_path("int8-ort"), static_shapes=0) as runner:
        logits = runner.infer(scale_uint8(images))
        assert runner.rewrites.group_norms > 0
        # folding constants first would have turned the weights' dequantization into float weights
        info = [op.get_rt_info() for op in runner.compiled.get_runtime_model().get_ordered_ops()]
        convolutions = {str(i["runtimePrecision"].value).lower() for i in info if i["layerType"].value == "Convolution"}
        assert convolutions and convolutions <= {"u8", "i8"}
    assert report(logits, tf_logits, INT8_CHECK)["passed"]
