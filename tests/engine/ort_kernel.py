"""What the tests of bit-trt's ONNX Runtime kernel share: the kernel library, built once per session where this host
has a C compiler and ONNX Runtime's C API header (.ci/run fetches it, tools/onnxruntime_header.sh), else those tests
skip and say why; and one GroupNorm chain as the int8-ort graph writes it, the kernel's input."""

import functools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from bit_trt.engine import ort_kernel_library
from bit_trt.engine.errors import BitError


@functools.lru_cache(maxsize=1)
def _built() -> tuple[str | None, str]:
    try:
        return ort_kernel_library.library(), ""
    except BitError as exc:
        return None, str(exc)


def kernel_library() -> str:
    """The built library's path; skips the calling test where it can't be built here."""
    path, why = _built()
    if path is None:
        pytest.skip(f"bit-trt's ONNX Runtime kernel can't be built here: {why}")
    return path


def chain_model(
    channels: int, groups: int, size: int, quantized_input: bool, seed: int = 0, residual: bool = False
) -> onnx.ModelProto:
    """X float [N,C,H,W] -> (Q -> DQ) -> the bundle's GroupNorm chain -> Relu -> Q: uint8 out, as int8-ort writes it.
    residual: the chain's input is the sum S = DQ(Q(A)) + X instead, an output of the graph too (the next residual)."""
    rng = np.random.default_rng(seed)
    consts = {
        "x_scale": np.float32(0.05),
        "x_zp": np.uint8(7),
        "grouped": np.array([0, groups, -1], np.int64),
        "back": np.array([0, channels, size, size], np.int64),
        "unit": np.ones(groups, np.float32),
        "zero": np.zeros(groups, np.float32),
        "gamma": rng.normal(0, 1, (channels, 1, 1)).astype(np.float32),  # negative too: the ReLU matters
        "beta": rng.normal(0, 0.5, (channels, 1, 1)).astype(np.float32),
        "y_scale": np.float32(0.02),
        "y_zp": np.uint8(3),
    }
    nodes = []
    x = "X"
    if residual:
        nodes += [
            helper.make_node("QuantizeLinear", ["A", "x_scale", "x_zp"], ["aq"]),
            helper.make_node("DequantizeLinear", ["aq", "x_scale", "x_zp"], ["ad"]),
            helper.make_node("Add", ["ad", "X"], ["S"]),
        ]
        x = "S"
    elif quantized_input:
        nodes += [
            helper.make_node("QuantizeLinear", ["X", "x_scale", "x_zp"], ["xq"]),
            helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zp"], ["xd"]),
        ]
        x = "xd"
    nodes += [
        helper.make_node("Reshape", [x, "grouped"], ["g"]),
        helper.make_node("InstanceNormalization", ["g", "unit", "zero"], ["n"], epsilon=1e-5),
        helper.make_node("Reshape", ["n", "back"], ["b"]),
        helper.make_node("Mul", ["b", "gamma"], ["m"]),
        helper.make_node("Add", ["m", "beta"], ["a"]),
        helper.make_node("Relu", ["a"], ["r"]),
        helper.make_node("QuantizeLinear", ["r", "y_scale", "y_zp"], ["Y"]),
    ]
    shape = ["n", channels, size, size]
    inputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name in ("X", "A")[: 1 + residual]]
    outputs = [helper.make_tensor_value_info("Y", TensorProto.UINT8, shape)]
    outputs += [helper.make_tensor_value_info("S", TensorProto.FLOAT, shape)] if residual else []
    graph = helper.make_graph(
        nodes,
        "chain",
        inputs,
        outputs,
        [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def assert_within_one_step(ours: np.ndarray, theirs: np.ndarray) -> None:
    """The kernel's uint8 output against ORT's own ops': the same arithmetic in another order, so a value on a rounding
    boundary may land one quantization step away, no further, and on under 1% of the values."""
    steps = np.abs(ours.astype(int) - theirs.astype(int))
    assert steps.max() <= 1 and (steps > 0).mean() < 0.01
