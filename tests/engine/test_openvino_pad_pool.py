"""engine/openvino_pad_pool.py: OpenVINO runs a zero Pad that feeds a MaxPool as that MaxPool, padded, with the
same answers to the last bit; what is not that form stays as read; the bundle's stem is that form, in f32, bf16
and INT8 graphs."""

import numpy as np
import pytest

from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.parity_set import load_parity_set
from bit_trt.engine.preprocess import scale_uint8

ov = pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from bit_trt.engine.openvino_pad_pool import rewrite, window_mask  # noqa: E402

SIZE = (9, 8)  # odd and even: the end padding is read by the last window of one axis and not of the other


def pad_pool_model(
    path,
    pads=(0, 0, 1, 1, 0, 0, 1, 1),
    value=0.0,
    mode="constant",
    kernel=3,
    stride=2,
    pool_pads=None,
    ceil=0,
    dilation=1,
    consumers=1,
    channels=3,
):
    """x [N,C,9,8] -> Pad -> MaxPool (-> a second consumer of the Pad's output where consumers=2)."""
    inits = [numpy_helper.from_array(np.array(pads, np.int64), "pads")]
    pad_inputs = ["x", "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), "value"))
        pad_inputs.append("value")
    pool = {"kernel_shape": [kernel, kernel], "strides": [stride, stride], "ceil_mode": ceil}
    if dilation != 1:
        pool["dilations"] = [dilation, dilation]
    if pool_pads:
        pool["pads"] = pool_pads
    nodes = [
        helper.make_node("Pad", pad_inputs, ["p"], mode=mode),
        helper.make_node("MaxPool", ["p"], ["y"], **pool),
    ]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if consumers == 2:
        nodes.append(helper.make_node("Relu", ["p"], ["r"]))
        outputs.append(helper.make_tensor_value_info("r", TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes,
        "pad_pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, *SIZE])],
        outputs,
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def run(model, x, precision="f32"):
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": precision})
    return compiled.create_infer_request().infer({0: x})[0]


def inputs(seed=1):
    """Mostly negative, so that a padded zero is the maximum of every window that covers one."""
    return (np.random.default_rng(seed).standard_normal((2, 3, *SIZE)) - 2).astype(np.float32)


@pytest.mark.parametrize(
    "pads, kernel, stride, dilation",
    [
        ((0, 0, 1, 1, 0, 0, 1, 1), 3, 2, 1),  # the bundle's stem
        ((0, 0, 2, 0, 0, 0, 1, 3), 3, 2, 1),  # uneven
        ((0, 0, 1, 1, 0, 0, 1, 1), 2, 1, 2),  # dilated
        ((0, 0, 0, 0, 0, 0, 2, 2), 3, 3, 1),  # end padding only
    ],
)
def test_a_zero_pad_before_a_max_pool_becomes_the_pools_padding_with_the_same_answers(
    tmp_path, pads, kernel, stride, dilation
):
    pad_pool_model(tmp_path / "pp.onnx", pads=pads, kernel=kernel, stride=stride, dilation=dilation)
    x = inputs()
    want = run(ov.Core().read_model(str(tmp_path / "pp.onnx")), x)
    model = ov.Core().read_model(str(tmp_path / "pp.onnx"))
    assert rewrite(model) == 1
    assert "Pad" not in {op.get_type_name() for op in model.get_ordered_ops()}
    got = run(model, x)
    assert got.shape == want.shape and (want == 0).any()  # some window's maximum is a padded zero
    assert (got == want).all()
    # and in bf16, where OpenVINO's default puts the float parts on a CPU that has it
    assert (run(model, x, "bf16") == run(ov.Core().read_model(str(tmp_path / "pp.onnx")), x, "bf16")).all()


@pytest.mark.parametrize(
    "change",
    [
        {"value": 1.0},  # not zeros
        {"mode": "reflect", "value": None},
        {"pads": (0, 1, 1, 1, 0, 0, 1, 1)},  # pads the channels
        {"pool_pads": [1, 1, 1, 1]},  # the pool pads too
        {"ceil": 1},  # ceil rounding: not handled
        {"consumers": 2},  # the padded tensor is read elsewhere
    ],
)
def test_what_is_not_that_form_is_left_as_read(tmp_path, change):
    pad_pool_model(tmp_path / "other.onnx", **change)
    model = ov.Core().read_model(str(tmp_path / "other.onnx"))
    assert rewrite(model) == 0
    assert "Pad" in {op.get_type_name() for op in model.get_ordered_ops()}


def test_a_pad_without_a_value_pads_zeros_and_is_rewritten(tmp_path):
    pad_pool_model(tmp_path / "novalue.onnx", value=None)
    x = inputs(3)
    want = run(ov.Core().read_model(str(tmp_path / "novalue.onnx")), x)
    model = ov.Core().read_model(str(tmp_path / "novalue.onnx"))
    assert rewrite(model) == 1
    assert (run(model, x) == want).all()


def test_the_window_mask_marks_the_windows_that_cover_a_padded_zero():
    # 4 rows padded by 1 at each end, kernel 3, stride 2: the windows start at padded rows 0 and 2, so only the
    # first covers the padding at the start, and none reaches the end padding
    mask = window_mask((4, 4), (1, 1), (1, 1), (3, 3), (2, 2), (1, 1), (2, 2))
    assert mask.tolist() == [[True, True], [True, False]]
    # stride 1 over 3 rows: the first and the last window cover padding
    assert window_mask((3, 1), (1, 0), (1, 0), (3, 1), (1, 1), (1, 1), (3, 1))[:, 0].tolist() == [True, False, True]


@pytest.mark.parametrize("variant", ["fp32", "fp16", "int8-ort"])
def test_the_runner_folds_the_bundles_stem_pad_and_still_matches_tf(tiny_full_bundle, variant):
    from bit_trt.engine.compare import FP32_PARITY, INT8_CHECK, report
    from bit_trt.engine.openvino_runner import OpenVinoRunner

    bundle = load_bundle(str(tiny_full_bundle))
    assert sum(n.op_type == "Pad" for n in onnx.load(bundle.artifact_path(variant)).graph.node) == 1
    images, _, tf_logits = load_parity_set(bundle)
    with OpenVinoRunner(bundle.artifact_path(variant), static_shapes=0, inference_precision="f32") as runner:
        logits = runner.infer(scale_uint8(images))
        assert runner.rewrites.pad_pools == 1 and "1 zero Pad in its MaxPool" in runner.describe()
        layers = {
            op.get_rt_info()["layerType"].value: op for op in runner.compiled.get_runtime_model().get_ordered_ops()
        }
        assert "Pad" not in layers
        if variant == "int8-ort":  # the dequantization moved through the pool: it runs on INT8
            pools = [
                str(op.get_rt_info()["runtimePrecision"].value).lower()
                for op in runner.compiled.get_runtime_model().get_ordered_ops()
                if op.get_rt_info()["layerType"].value == "Pooling"
            ]
            assert pools and set(pools) <= {"u8", "i8"}, pools
    # the same logits as the graph with only its GroupNorms rewritten, the Pad as read: folding it changed nothing
    from bit_trt.engine import openvino_group_norm

    unfolded = ov.Core().read_model(bundle.artifact_path(variant))
    assert openvino_group_norm.rewrite(unfolded)[0] > 0
    assert (run(unfolded, scale_uint8(images)) == logits).all()
    if variant != "fp16":
        assert report(logits, tf_logits, INT8_CHECK if variant == "int8-ort" else FP32_PARITY)["passed"]
