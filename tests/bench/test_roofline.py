"""bench/roofline.py: FLOPs counted from ONNX graphs, GEMM peaks through each CPU backend, and % of peak."""

import sys

import numpy as np
import pytest

from bit_trt.bench.roofline import bench_columns, gemm_peak, graph_flops, roofline
from bit_trt.engine.errors import BitError

from ..engine.test_cpu_peak import SAPPHIRE_RAPIDS, UNKNOWN, ZEN3_MILAN, ZEN4_GENOA

# The hand-built graph below, multiply-accumulates per image worked out by hand:
# Conv 3->4, 3x3, stride 2, pad 1 on 8x8: 4x4x4 outputs x 3x3x3 each
CONV_MACS = 4 * 4 * 4 * (3 * 3 * 3)
# grouped Conv 4->6 in 2 groups, 3x3, no pad on 4x4: 6x2x2 outputs x (4/2)x3x3 each
GROUPED_MACS = 6 * 2 * 2 * (2 * 3 * 3)
# Gemm [1, 24] x [24, 10] (weight given transposed, transB=1)
GEMM_MACS = 24 * 10


def _hand_built(path, batch="N", spatial=8, quantized=False):
    """X [batch, 3, spatial, spatial] -> Conv -> grouped Conv -> Flatten -> Gemm, saved at `path`.

    quantized: the first Conv's weight through DequantizeLinear (as our INT8 variants) and the grouped Conv
    as ConvInteger, so that quantized forms are counted as the float ops they replace.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w2 = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    w3 = rng.standard_normal((10, 24)).astype(np.float32)
    inits = [numpy_helper.from_array(w3, "W3"), numpy_helper.from_array(np.zeros(10, np.float32), "C")]
    if quantized:
        inits += [
            numpy_helper.from_array(w1.astype(np.int8), "W1q"),
            numpy_helper.from_array(np.array(0.1, np.float32), "s"),
            numpy_helper.from_array(np.array(0, np.int8), "z"),
            numpy_helper.from_array(w2.astype(np.int8), "W2"),
            numpy_helper.from_array(np.array(0, np.uint8), "xz"),
        ]
        w1_nodes = [helper.make_node("DequantizeLinear", ["W1q", "s", "z"], ["W1"])]
        grouped = [
            helper.make_node("QuantizeLinear", ["Y1", "s", "xz"], ["Y1q"]),
            helper.make_node("ConvInteger", ["Y1q", "W2"], ["Y2i"], group=2),
            helper.make_node("Cast", ["Y2i"], ["Y2"], to=TensorProto.FLOAT),
        ]
    else:
        inits += [numpy_helper.from_array(w1, "W1"), numpy_helper.from_array(w2, "W2")]
        w1_nodes = []
        grouped = [helper.make_node("Conv", ["Y1", "W2"], ["Y2"], group=2)]
    nodes = [
        *w1_nodes,
        helper.make_node("Conv", ["X", "W1"], ["Y1"], strides=[2, 2], pads=[1, 1, 1, 1]),
        *grouped,
        helper.make_node("Flatten", ["Y2"], ["F"]),
        helper.make_node("Gemm", ["F", "W3", "C"], ["Y"], transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "hand_built",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [batch, 3, spatial, spatial])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


@pytest.mark.parametrize("batch,quantized", [("N", False), (4, False), ("N", True)])
def test_flops_of_a_hand_built_graph_are_exact(tmp_path, batch, quantized):
    flops = graph_flops(_hand_built(tmp_path / "m.onnx", batch=batch, quantized=quantized))
    assert flops["by_op"] == {
        "Conv": 2 * (CONV_MACS + GROUPED_MACS) / 1e9,
        "MatMul": 0 / 1e9,
        "Gemm": 2 * GEMM_MACS / 1e9,
    }
    assert flops["gflop_per_image"] == 2 * (CONV_MACS + GROUPED_MACS + GEMM_MACS) / 1e9
    assert flops["nodes_counted"] == 3


def test_a_symbolic_batch_counts_the_same_per_image_at_any_batch(tmp_path):
    path = _hand_built(tmp_path / "m.onnx")
    assert graph_flops(path, batch=8)["gflop_per_image"] == graph_flops(path)["gflop_per_image"]


def test_nodes_out_of_dependency_order_are_counted(tmp_path):
    """The FP16 converter appends its input Cast after the nodes that read it; shape inference needs order."""
    import onnx

    path = _hand_built(tmp_path / "m.onnx")
    model = onnx.load(path)
    nodes = list(reversed(model.graph.node))
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.save(model, str(tmp_path / "reversed.onnx"))
    assert graph_flops(str(tmp_path / "reversed.onnx")) == graph_flops(path)


def test_a_dynamic_spatial_size_is_refused(tmp_path):
    with pytest.raises(BitError, match="dynamic dimensions"):
        graph_flops(_hand_built(tmp_path / "m.onnx", spatial="H"))


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(BitError, match="cannot read ONNX model"):
        graph_flops(str(tmp_path / "bad.onnx"))


def test_every_precision_variant_of_a_bundle_counts_the_same_flops(tiny_full_bundle):
    counts = {
        variant: graph_flops(str(tiny_full_bundle / f"model.{variant}.onnx"))
        for variant in ("fp32", "fp16", "int8-ort", "int8-trt")
    }
    assert counts["fp32"]["gflop_per_image"] > 0
    assert counts["fp32"]["by_op"]["Conv"] > 0 and counts["fp32"]["by_op"]["MatMul"] > 0
    for variant, count in counts.items():
        assert count == counts["fp32"], variant


@pytest.mark.parametrize(
    "backend,precision,kernel_op",
    [("ort-cpu", "fp32", "MatMul"), ("ort-cpu", "int8", "QLinearMatMul"), ("openvino", "fp32", "FullyConnected")],
)
def test_gemm_peak_measures_a_named_kernel(backend, precision, kernel_op):
    if backend == "openvino":
        pytest.importorskip("openvino")
    peak = gemm_peak(backend, precision, threads=1, size=256, seconds=0.2)
    assert peak["gflops"] > 0 and peak["gflops_median"] > 0  # never a speed: the host may be busy
    assert (peak["backend"], peak["precision"], peak["threads"], peak["size"]) == (backend, precision, 1, 256)
    assert kernel_op in peak["kernel"]
    if precision == "int8":
        assert "int8 weights" in peak["kernel"]  # the peak of an integer kernel, not of a float fallback
    assert isinstance(peak["cpu_flags"], list)


def test_openvinos_fp16_gemm_runs_the_arithmetic_its_runner_picks():
    """bf16 where OpenVINO computes it natively, as the fp16 tier's rows do; f32 elsewhere."""
    from bit_trt.engine.openvino_runner import arithmetic_for, import_openvino

    pytest.importorskip("openvino")
    kernel = gemm_peak("openvino", "fp16", threads=1, size=256, seconds=0.2)["kernel"]
    assert kernel.endswith("(bf16)" if arithmetic_for(import_openvino().Core(), "fp16") == "bf16" else "(f32)"), kernel


def test_a_missing_backend_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now raises ImportError
    with pytest.raises(BitError, match=r"pip install 'bit-trt\[openvino\]'"):
        gemm_peak("openvino", "fp32", threads=1, size=8, seconds=0.01)


@pytest.mark.parametrize("backend,precision", [("tensorrt", "fp32"), ("ort-cpu", "bf16")])
def test_an_unknown_backend_or_precision_is_refused(backend, precision):
    with pytest.raises(BitError, match="unknown"):
        gemm_peak(backend, precision, threads=1)


def _host(text: str, cores: int = 2, max_mhz=None):
    from bit_trt.engine import cpu_host

    return cpu_host.parse(text, cores, max_mhz)


def test_roofline_is_achieved_over_peak():
    """On a CPU the table does not know, the peak is the measured GEMM, and says so."""
    peak = {"gflops": 100.0, "backend": "ort-cpu", "precision": "fp32", "threads": 2, "kernel": "k"}
    row = roofline(37.5, 2.0, peak, host=_host(UNKNOWN))
    assert row["achieved_gflops"] == 75.0
    assert row["percent_of_peak"] == 75.0
    assert (row["peak_gflops"], row["gemm_gflops"], row["percent_of_gemm"]) == (100.0, 100.0, 75.0)
    assert row["uarch"] == "unknown" and row["peak_source"].startswith("measured GEMM (CPU unknown")
    assert row["peak_warning"] is None
    assert (row["backend"], row["kernel"]) == ("ort-cpu", "k")
    with pytest.raises(BitError):
        roofline(37.5, -1.0, peak, host=_host(UNKNOWN))
    with pytest.raises(BitError):
        roofline(0.0, 2.0, peak, host=_host(UNKNOWN))


@pytest.mark.parametrize(
    "text,precision,threads,max_mhz,per_cycle,isa",
    [
        (SAPPHIRE_RAPIDS, "int8", 8, 3800.0, 2048, "AMX-INT8"),
        (ZEN4_GENOA, "int8", 4, 3700.0, 128, "AVX-512 VNNI"),
        (ZEN3_MILAN, "int8", 2, None, 64, "AVX2 vpmaddubsw"),
        (ZEN3_MILAN, "fp16", 2, None, 32, "AVX2 FMA"),  # CPU backends run fp16 graphs in f32
    ],
)
def test_the_peak_is_cores_times_clock_times_flop_per_cycle_of_the_dispatched_isa(
    text, precision, threads, max_mhz, per_cycle, isa
):
    gemm = {"gflops": 10.0, "backend": "openvino", "precision": precision, "threads": threads, "kernel": "k"}
    row = roofline(2.0, 3.0, gemm, host=_host(text, cores=64, max_mhz=max_mhz))
    clock = max_mhz or 4100  # Milan without cpufreq: the table's ceiling boost clock
    assert (row["cores"], row["clock_mhz"], row["flop_per_cycle"]) == (threads, clock, per_cycle)
    assert row["peak_gflops"] == pytest.approx(threads * clock * per_cycle / 1000)
    assert row["percent_of_peak"] == pytest.approx(100 * 6.0 / row["peak_gflops"])
    assert isa in row["isa"] and row["peak_source"] == "isa"
    assert (row["gemm_gflops"], row["percent_of_gemm"]) == (10.0, 60.0)  # the measured GEMM beside it


def test_the_rows_arithmetic_chooses_the_peak_for_fp16():
    """OpenVINO's fp16 tier runs bf16 where the CPU has it (the row's compute): the bf16 dot-product peak then."""
    gemm = {"gflops": 10.0, "backend": "openvino", "precision": "fp16", "threads": 4, "kernel": "k"}
    genoa = _host(ZEN4_GENOA, cores=64, max_mhz=3700.0)
    assert roofline(2.0, 3.0, gemm, host=genoa, compute="bf16")["flop_per_cycle"] == 64
    assert roofline(2.0, 3.0, gemm, host=genoa, compute="f32")["flop_per_cycle"] == 32
    assert roofline(2.0, 3.0, gemm, host=genoa)["flop_per_cycle"] == 32  # a row from before `compute`


@pytest.mark.parametrize("text", [ZEN3_MILAN, UNKNOWN])
def test_a_throughput_above_the_peak_is_clamped_to_100_and_flagged(text):
    """R50x3's 169% of a measured GEMM: above any peak, the peak is wrong; print 100% and say so."""
    gemm = {"gflops": 100.0, "backend": "openvino", "precision": "int8", "threads": 2, "kernel": "k"}
    row = roofline(1000.0, 1.69, gemm, host=_host(text))  # 1690 GFLOP/s on 2 cores
    assert row["percent_of_peak"] == 100.0
    assert row["peak_warning"].startswith("peak unreliable: measured 1690.0 GFLOP/s is above")
    assert row["percent_of_gemm"] == pytest.approx(1690.0)


def test_bench_columns_keep_the_old_names_and_add_the_peaks_provenance():
    gemm = {"gflops": 100.0, "backend": "ort-cpu", "precision": "int8", "threads": 2, "kernel": "MLAS QGEMM"}
    columns = bench_columns(roofline(12.3456, 2.0, gemm, host=_host(ZEN3_MILAN)))
    assert list(columns)[:5] == ["gflop_per_image", "achieved_gflops", "peak_gflops", "percent_of_peak", "peak_kernel"]
    assert columns["peak_gflops"] == 524.8 and columns["peak_kernel"] == "MLAS QGEMM"
    assert (columns["peak_uarch"], columns["peak_flop_per_cycle"], columns["gemm_gflops"]) == (
        "Zen 3 (EPYC Milan)",
        64,
        100.0,
    )
    assert columns["peak_warning"] is None and columns["percent_of_gemm"] == 24.7
