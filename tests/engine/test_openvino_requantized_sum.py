"""engine/openvino_requantized_sum.py: OpenVINO adds quantized convolutions from their float outputs, where the
float layers run in bf16, whether the other summand is a quantized convolution too or a float tensor; any other Add
stays as read; a sum read more than once is put behind one reader, so that OpenVINO writes it once, with the same
numbers; every residual sum of the bundle's INT8 graph is rewritten, its float graphs have none, and the runner
rewrites them only with bf16 float layers, still within the INT8 bf16 gate against TF."""

import numpy as np
import pytest

ov = pytest.importorskip("openvino")
onnx = pytest.importorskip("onnx")

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from bit_trt.engine import openvino_group_norm  # noqa: E402
from bit_trt.engine.openvino_requantized_sum import rewrite  # noqa: E402

SCALE, ZERO = 0.05, 128  # the outputs' uint8 quantization: [-6.4, 6.35] in steps of 0.05


def sum_model(
    path, quantized=(True, True), extra_reader=False, relu_branch=False, output_q=True, residual=False, next_unit=False
):
    """x [1,4,6,6] -> two 1x1 convolutions on its dequantized quantize (int8 weights), each output quantized and
    dequantized where `quantized` says, then summed. extra_reader: the first branch's dequantized tensor is also a
    graph output; relu_branch: the first branch quantizes a Relu of its convolution; output_q=False: the
    graph without the outputs' Q/DQ at all (what the rewrite computes); residual: the second summand is x itself (a
    float residual); next_unit: the sum is read as a residual unit reads it, three times (its mean, its centring,
    and the next sum, of itself and a float convolution of the centred tensor's Relu), and that next sum is the
    output."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array(np.array(0.02, np.float32), "xs"),
        numpy_helper.from_array(np.array(128, np.uint8), "xz"),
        numpy_helper.from_array(np.array(SCALE, np.float32), "s"),
        numpy_helper.from_array(np.array(ZERO, np.uint8), "z"),
        numpy_helper.from_array(np.array([0.01] * 4, np.float32), "ws"),
        numpy_helper.from_array(np.zeros(4, np.int8), "wz"),
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
    ]
    outputs = []
    summands = []
    for b in range(2):
        w = rng.integers(-127, 128, (4, 4, 1, 1)).astype(np.int8)
        inits.append(numpy_helper.from_array(w, f"w{b}"))
        nodes += [
            helper.make_node("DequantizeLinear", [f"w{b}", "ws", "wz"], [f"wd{b}"], axis=0),
            helper.make_node("Conv", ["xd", f"wd{b}"], [f"c{b}"]),
        ]
        tensor = f"c{b}"
        if relu_branch and b == 0:
            nodes.append(helper.make_node("Relu", [tensor], ["r0"]))
            tensor = "r0"
        if output_q and quantized[b]:
            nodes += [
                helper.make_node("QuantizeLinear", [tensor, "s", "z"], [f"q{b}"]),
                helper.make_node("DequantizeLinear", [f"q{b}", "s", "z"], [f"d{b}"]),
            ]
            tensor = f"d{b}"
        summands.append(tensor)
    if residual:
        summands[1] = "x"
    nodes.append(helper.make_node("Add", summands, ["y"]))
    if next_unit:
        inits.append(numpy_helper.from_array(rng.normal(0, 0.3, (4, 4, 1, 1)).astype(np.float32), "w_next"))
        nodes += [
            helper.make_node("ReduceMean", ["y"], ["mean"], axes=[2, 3], keepdims=1),
            helper.make_node("Sub", ["y", "mean"], ["centred"]),
            helper.make_node("Relu", ["centred"], ["h"]),
            helper.make_node("Conv", ["h", "w_next"], ["c_next"]),
            helper.make_node("Add", ["y", "c_next"], ["z"]),
        ]
    outputs.append(helper.make_tensor_value_info("z" if next_unit else "y", TensorProto.FLOAT, None))
    if extra_reader:
        outputs.append(helper.make_tensor_value_info(summands[0], TensorProto.FLOAT, None))
    graph = helper.make_graph(
        nodes, "sum", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])], outputs, inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return str(path)


def run(model, x):
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled.create_infer_request().infer({0: x})[0]


def inputs():
    return np.random.default_rng(1).uniform(-2, 2, (1, 4, 6, 6)).astype(np.float32)


@pytest.mark.parametrize(
    "quantized",
    [
        (True, True),  # a projection shortcut's sum: both from their convolutions
        (True, False),  # a float residual (here a float convolution): the quantized summand from its convolution
    ],
)
def test_a_sum_of_quantized_convolutions_is_taken_from_their_float_outputs(tmp_path, quantized):
    model = ov.Core().read_model(sum_model(tmp_path / "sum.onnx", quantized))
    assert rewrite(model) == (1, 0)  # fed, and read by nothing but the output
    add = next(op for op in model.get_ordered_ops() if op.get_type_name() == "Add")
    assert [add.input_value(i).get_node().get_type_name() for i in range(2)] == ["Convolution", "Convolution"]
    assert "FakeQuantize" in {op.get_type_name() for op in model.get_ordered_ops()}  # the input's, kept
    x = inputs()
    got = run(model, x)
    # the graph without the outputs' Q/DQ: the same arithmetic
    np.testing.assert_allclose(got, run(ov.Core().read_model(sum_model(tmp_path / "f.onnx", output_q=False)), x), 1e-5)
    # and not the graph as read: the outputs' roundings are gone
    as_read = run(ov.Core().read_model(str(tmp_path / "sum.onnx")), x)
    assert np.abs(got - as_read).max() > 0.1 * SCALE


@pytest.mark.parametrize(
    "change",
    [
        {"quantized": (False, False)},  # two float summands: nothing to take
        {"extra_reader": True, "quantized": (True, False)},  # the dequantized tensor is read elsewhere too
        {"relu_branch": True, "quantized": (True, False)},  # the quantize is of a Relu, not a convolution
    ],
)
def test_any_other_sum_is_left_as_read(tmp_path, change):
    model = ov.Core().read_model(sum_model(tmp_path / "other.onnx", **change))

    def summands():
        adds = [op for op in model.get_ordered_ops() if op.get_type_name() == "Add"]
        return [add.input_value(i).get_node().get_type_name() for add in adds for i in range(2)]

    before = summands()
    assert rewrite(model) == (0, 0)
    assert summands() == before


def sum_writes(model) -> list[int]:
    """How many tensors each compiled node that computes the sum `y` writes."""
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return [
        len(node.outputs())
        for node in compiled.get_runtime_model().get_ordered_ops()
        if "y" in node.get_rt_info()["originalLayersNames"].astype(str).split(",")
    ]


def test_a_sum_read_three_times_is_written_once_with_the_same_numbers(tmp_path):
    path = sum_model(tmp_path / "unit.onnx", (True, False), residual=True, next_unit=True)
    per_reader, once = ov.Core().read_model(path), ov.Core().read_model(path)
    assert rewrite(per_reader, write_once=False) == (1, 0) and rewrite(once) == (1, 1)
    add = next(op for op in once.get_ordered_ops() if op.get_friendly_name() == "y")
    readers = [reader.get_node().get_type_name() for reader in add.output(0).get_target_inputs()]
    assert readers == ["Maximum"]
    # OpenVINO gives each of the sum's three readers its own copy of the dequantization scale and writes the sum
    # once per copy; behind the Maximum it writes it once
    assert sum_writes(per_reader) == [3]
    assert sum_writes(once) == [1]
    x = inputs()
    np.testing.assert_array_equal(run(once, x), run(per_reader, x))  # max(x, -inf) is x


def test_a_sum_read_once_gets_no_maximum(tmp_path):
    model = ov.Core().read_model(sum_model(tmp_path / "sum.onnx", (True, False), residual=True))
    assert rewrite(model) == (1, 0)
    assert "Maximum" not in {op.get_type_name() for op in model.get_ordered_ops()}


def test_every_residual_sum_of_the_bundles_int8_graph_is_rewritten_and_its_float_graphs_have_none(tiny_full_bundle):
    def read(variant):
        return ov.Core().read_model(str(tiny_full_bundle / f"model.{variant}.onnx"))

    # the residual sums, as the float graph has them: Adds that read a convolution
    fp32 = read("fp32")
    residual = [
        op
        for op in fp32.get_ordered_ops()
        if op.get_type_name() == "Add"
        and any(op.input_value(i).get_node().get_type_name() == "Convolution" for i in range(2))
    ]
    assert len(residual) >= 2
    assert rewrite(fp32) == (0, 0) and rewrite(read("fp16")) == (0, 0)
    int8 = read("int8-ort")
    # those with a projection shortcut and those with a float residual; as the file has them, each is read once (one
    # unit per block here: by the next GroupNorm's Reshape into groups)
    assert rewrite(int8) == (len(residual), 0)
    assert rewrite(int8) == (0, 0)  # nothing left to take
    # as the runner reads the file, with its GroupNorms on channel statistics, each is read by their statistics and
    # their centring: each is put behind one reader
    int8 = read("int8-ort")
    openvino_group_norm.rewrite(int8)
    assert rewrite(int8) == (len(residual), len(residual))
    assert rewrite(int8) == (0, 0)  # nothing left to take


@pytest.mark.parametrize("arithmetic", ["bf16", "f32"])
def test_the_runner_rewrites_the_sums_only_with_bf16_float_layers_within_the_gate(tiny_full_bundle, arithmetic):
    from bit_trt.engine import backends
    from bit_trt.engine.bundle import load_bundle
    from bit_trt.engine.compare import INT8_BF16_PARITY, INT8_CHECK, report
    from bit_trt.engine.parity_set import load_parity_set
    from bit_trt.engine.preprocess import scale_uint8

    bundle = load_bundle(str(tiny_full_bundle))
    images, _, tf_logits = load_parity_set(bundle)
    with backends.create(bundle, "openvino", "int8", inference_precision=arithmetic) as runner:
        logits = runner.infer(scale_uint8(images))
        described = runner.describe()
    # asked in bf16 it is rewritten, whether or not this CPU computes bf16 (then it says it runs f32)
    assert ("convolutions without their Q/DQ" in described) == (arithmetic == "bf16"), described
    verdict = report(logits, tf_logits, INT8_BF16_PARITY if runner.compute == "bf16" else INT8_CHECK)
    assert verdict["passed"], verdict["failures"]
