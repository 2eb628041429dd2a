"""Roofline numbers for bit-bench: what fraction of this machine's arithmetic peak does a measured throughput reach?

Four parts, each answering one question:
- `graph_flops`: how much arithmetic is one image? Counted from the ONNX graph's Conv and MatMul/Gemm shapes,
  the same number for every precision variant of a model (Q/DQ and quantized ops count as the float op).
- `cpu_peak.physical_peak` (engine/cpu_peak.py): what can this CPU do at most? Cores x maximum boost clock x
  FLOP/cycle/core of the instruction set a backend dispatches for the data type (AMX, VNNI, FMA, ...).
- `gemm_peak`: how fast does this backend's library do a large square GEMM here, in the same precision, with
  the same threads and session settings as our runners? Reported beside the peak; it is the peak only on a CPU
  the table does not know (a model's convolutions can beat a GEMM, so a measured GEMM is no peak).
- `roofline`: achieved GFLOP/s and its percentage of the peak, never above 100: a throughput above the peak
  means the peak is wrong, and the result says so.

Only the GEMM-like ops are counted: they are almost all of a ResNet's arithmetic, and they are what the peak
measures. GroupNorm, ReLU, adds, pooling and Q/DQ are memory-bound elementwise work that a FLOP count
would only blur; a low percentage of peak is where that work, or a poor kernel, shows.
"""

from __future__ import annotations

import math
import os
import statistics
import tempfile
import time

import numpy as np

from ..engine import cpu_peak
from ..engine.cpu_host import this_host
from ..engine.errors import BitError, require
from ..engine.onnx_order import canonicalize
from ..engine.precision import check_precision

# The backends whose GEMM peak this module can measure (CPU libraries called directly).
ROOFLINE_BACKENDS = ("ort-cpu", "openvino")

# Convolutions, by where their weight is: FLOPs are read from the weight's shape [Cout, Cin/group, k...],
# which holds the group count already. Quantized forms count as the Conv they replace.
CONV_WEIGHT_INPUT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
# Matrix products: A is input 0 in each. Quantized forms count as the MatMul they replace.
MATMUL_OPS = ("MatMul", "MatMulInteger", "QLinearMatMul")
COUNTED_FAMILIES = ("Conv", "MatMul", "Gemm")

# Ops of the GEMM in an ORT-optimized graph, and of OpenVINO's execution graph, that name the kernel measured.
ORT_GEMM_OPS = (
    "MatMul",
    "FusedMatMul",
    "Gemm",
    "QLinearMatMul",
    "MatMulInteger",
    "MatMulIntegerToFloat",
    "DynamicQuantizeMatMul",
)
ORT_B_INPUT = {"QLinearMatMul": 3}  # the weight operand; input 1 for the others
# The activation's zero point, whose type is the quantized activation's (U8S8 or S8S8 decides the MLAS kernel).
ORT_A_ZERO_POINT_INPUT = {"QLinearMatMul": 2, "MatMulInteger": 2, "MatMulIntegerToFloat": 4}
OPENVINO_GEMM_LAYERS = ("FullyConnected", "MatMul", "Gemm")


# ---------------------------------------------------------------- FLOPs of a graph


def graph_flops(onnx_path: str, batch: int = 1) -> dict:
    """FLOPs per image of the model at `onnx_path`, counted as 2 x multiply-accumulates of its Conv and
    MatMul/Gemm nodes (bias adds, and everything else, are not counted: see the module docstring).

    Weights are never loaded: shapes come from the initializers' dims (present without their external data,
    so a model above 2 GB costs no memory) and from ONNX shape inference. A symbolic batch dimension is set
    to `batch`; the total is divided by the batch the graph then runs, so the result is per image either way.
    Returns {"gflop_per_image", "by_op": {"Conv", "MatMul", "Gemm"} in GFLOP per image, "nodes_counted"}.
    """
    onnx = require("onnx")
    try:
        model = onnx.load(onnx_path, load_external_data=False)
    except Exception as exc:  # a missing file, or protobuf's DecodeError for one that is not a model
        raise BitError(f"cannot read ONNX model {onnx_path}: {exc}") from exc
    images = _fix_batch(model, batch)
    _forget_shapes(model.graph)
    # in dependency order: fp16 variants exported before export/fp16.py sorted them list the input Cast last
    canonicalize(model, initializers=False)
    try:
        # data_prop: shapes computed by Shape/Gather chains, as tf2onnx writes them, become static too
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception as exc:  # onnx raises its own InferenceError types
        raise BitError(f"ONNX shape inference failed on {onnx_path}: {str(exc).splitlines()[0][:300]}") from exc
    shapes = _tensor_shapes(inferred.graph)
    flops = dict.fromkeys(COUNTED_FAMILIES, 0)
    counted = 0
    for node in inferred.graph.node:
        family = _family(node.op_type)
        if family is None:
            continue
        flops[family] += 2 * _node_macs(node, family, shapes)
        counted += 1
    return {
        "gflop_per_image": sum(flops.values()) / images / 1e9,
        "by_op": {family: total / images / 1e9 for family, total in flops.items()},
        "nodes_counted": counted,
    }


def _fix_batch(model, batch: int) -> int:
    """Pin a symbolic batch dimension of the graph's inputs to `batch`; returns the batch the graph runs.

    Any other symbolic dimension (a --dynamic-spatial export) is refused: FLOPs depend on it.
    """
    if batch < 1:
        raise BitError(f"batch must be at least 1, got {batch}")
    weights = {init.name for init in model.graph.initializer}
    images = None
    for value in model.graph.input:
        if value.name in weights:  # older IRs list initializers as inputs too
            continue
        dims = value.type.tensor_type.shape.dim
        if not dims:
            continue
        if not dims[0].HasField("dim_value"):
            dims[0].dim_value = batch
        dynamic = [i for i, dim in enumerate(dims) if not dim.HasField("dim_value")]
        if dynamic:
            raise BitError(
                f"input {value.name!r} has dynamic dimensions {dynamic} besides the batch: its FLOPs depend on "
                "them; count the FLOPs of an export with a fixed --resolution"
            )
        images = images or dims[0].dim_value
    return images or batch


def _forget_shapes(graph) -> None:
    """Drop the shapes a converter recorded, so that every counted shape is inferred from the pinned batch.

    They are hints: where inference cannot reach a tensor, it keeps them unchecked (the FP16 converter's
    carry the symbolic batch), and a count would then rest on a stale or symbolic shape.
    """
    del graph.value_info[:]
    for value in graph.output:
        value.type.tensor_type.ClearField("shape")


def _tensor_shapes(graph) -> dict[str, tuple]:
    """Tensor name -> shape, a dim None where it is unknown, from inference, the graph's I/O and initializers."""
    shapes = {}
    for value in (*graph.input, *graph.value_info, *graph.output):
        if value.type.HasField("tensor_type") and value.type.tensor_type.HasField("shape"):
            dims = value.type.tensor_type.shape.dim
            shapes[value.name] = tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in dims)
    for init in graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes


def _family(op_type: str) -> str | None:
    """Which counted family (Conv, MatMul, Gemm) an op belongs to, or None for an op that is not counted."""
    if op_type in CONV_WEIGHT_INPUT:
        return "Conv"
    if op_type in MATMUL_OPS:
        return "MatMul"
    if op_type == "Gemm":
        return "Gemm"
    return None


def _known_shape(node, name: str, shapes: dict) -> tuple:
    shape = shapes.get(name)
    if shape is None or None in shape:
        raise BitError(
            f"cannot count the FLOPs of {node.op_type} {node.name!r}: the shape of {name!r} is "
            f"{'unknown' if shape is None else shape} after shape inference"
        )
    return shape


def _node_macs(node, family: str, shapes: dict) -> int:
    """Multiply-accumulates of one Conv/MatMul/Gemm node, from its output shape and the reduced dimension."""
    output = _known_shape(node, node.output[0], shapes)
    if family == "Conv":
        # each output element reduces over Cin/group x kernel: the weight's dims after Cout
        weight = _known_shape(node, node.input[CONV_WEIGHT_INPUT[node.op_type]], shapes)
        return math.prod(output) * math.prod(weight[1:])
    a = _known_shape(node, node.input[0], shapes)
    if family == "Gemm" and _int_attribute(node, "transA"):
        return math.prod(output) * a[0]
    return math.prod(output) * a[-1]


def _int_attribute(node, name: str, default: int = 0) -> int:
    return next((attr.i for attr in node.attribute if attr.name == name), default)


# ---------------------------------------------------------------- the GEMM peak of a backend


def gemm_peak(backend: str, precision: str, threads: int, size: int = 2048, seconds: float = 2.0) -> dict:
    """The GFLOP/s of a size x size x size GEMM in `precision` on `backend` with `threads` threads.

    The model is one MatMul in the form our variants use: float32; float16 between Casts (float I/O, as
    model.fp16.onnx); INT8 as Q/DQ with uint8 per-tensor activations and int8 per-channel weights stored
    quantized (as model.int8-ort.onnx; OpenVINO gets the same graph). Weights are an initializer, so a backend
    may pre-pack them as it does a model's; the activation is the input. Sessions use our runners' settings.

    Runs repeat for `seconds` after a warm-up; `gflops` is the fastest run (`gflops_median` the median): a
    peak is what the machine can do, and on a shared host noise only ever slows a run down. The Casts or Q/DQ
    around the GEMM are O(size^2) against its O(size^3), so they are inside the timing but not the number.
    """
    if backend not in ROOFLINE_BACKENDS:
        raise BitError(f"unknown backend {backend!r} for a GEMM peak; choose one of: {', '.join(ROOFLINE_BACKENDS)}")
    check_precision(precision)
    if threads < 1 or size < 1 or seconds <= 0:
        raise BitError(f"threads and size must be positive and seconds above 0, got {threads}, {size}, {seconds}")
    measure = _ort_gemm if backend == "ort-cpu" else _openvino_gemm
    with tempfile.TemporaryDirectory(prefix="bit-trt-gemm-") as workdir:
        model_path = os.path.join(workdir, f"matmul.{precision}.onnx")
        require("onnx").save(_matmul_model(precision, size), model_path)
        activation = np.random.default_rng(0).random((size, size), dtype=np.float32)
        try:
            run, kernel = measure(model_path, precision, activation, threads, workdir)
            times = _time_runs(run, seconds)
        except BitError:
            raise
        except Exception as exc:  # ORT raises its own Exception types, OpenVINO RuntimeError: bit-bench reports both
            raise BitError(
                f"{backend} cannot run the {precision} GEMM: {str(exc).strip().splitlines()[-1][:300]}"
            ) from exc
    flop = 2 * size**3
    return {
        "gflops": flop / min(times) / 1e9,
        "gflops_median": flop / statistics.median(times) / 1e9,
        "runs": len(times),
        "size": size,
        "threads": threads,
        "precision": precision,
        "backend": backend,
        "kernel": kernel,
        "cpu_flags": this_host().kernel_flags(),  # the GEMM-relevant ISA flags, as cpuinfo spells them
    }


def _matmul_model(precision: str, size: int):
    """A single-MatMul ModelProto, float32 input A [size, size] and output Y, in our variants' form."""
    onnx = require("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    weights = rng.standard_normal((size, size), dtype=np.float32) / math.sqrt(size)
    if precision == "fp32":
        nodes = [helper.make_node("MatMul", ["A", "B"], ["Y"])]
        initializers = [numpy_helper.from_array(weights, "B")]
    elif precision == "fp16":
        nodes = [
            helper.make_node("Cast", ["A"], ["A16"], to=TensorProto.FLOAT16),
            helper.make_node("MatMul", ["A16", "B"], ["Y16"]),
            helper.make_node("Cast", ["Y16"], ["Y"], to=TensorProto.FLOAT),
        ]
        initializers = [numpy_helper.from_array(weights.astype(np.float16), "B")]
    else:
        nodes, initializers = _qdq_matmul(rng, size)
    graph = helper.make_graph(
        nodes,
        f"gemm_peak_{precision}",
        [helper.make_tensor_value_info("A", TensorProto.FLOAT, [size, size])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [size, size])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 8)  # opset 17's IR, which every supported runtime reads
    onnx.checker.check_model(model)
    return model


def _qdq_matmul(rng, size: int) -> tuple[list, list]:
    """The Q/DQ MatMul of model.int8-ort.onnx: Q/DQ uint8 activations in and out, int8 per-column weights."""
    from onnx import helper, numpy_helper

    nodes = [
        helper.make_node("QuantizeLinear", ["A", "a_scale", "a_zero"], ["Aq"]),
        helper.make_node("DequantizeLinear", ["Aq", "a_scale", "a_zero"], ["Adq"]),
        helper.make_node("DequantizeLinear", ["Bq", "b_scale", "b_zero"], ["Bdq"], axis=1),
        helper.make_node("MatMul", ["Adq", "Bdq"], ["Yf"]),
        helper.make_node("QuantizeLinear", ["Yf", "y_scale", "y_zero"], ["Yq"]),
        helper.make_node("DequantizeLinear", ["Yq", "y_scale", "y_zero"], ["Y"]),
    ]
    initializers = [
        numpy_helper.from_array(np.array(1 / 255, np.float32), "a_scale"),  # A is in [0, 1)
        numpy_helper.from_array(np.array(0, np.uint8), "a_zero"),
        numpy_helper.from_array(rng.integers(-127, 128, (size, size), dtype=np.int8), "Bq"),
        numpy_helper.from_array(np.full(size, 0.01, np.float32), "b_scale"),
        numpy_helper.from_array(np.zeros(size, np.int8), "b_zero"),
        numpy_helper.from_array(np.array(size / 255, np.float32), "y_scale"),
        numpy_helper.from_array(np.array(128, np.uint8), "y_zero"),
    ]
    return nodes, initializers


def _time_runs(run, seconds: float, warmup: int = 2, min_runs: int = 3) -> list[float]:
    """Seconds per call of `run`, repeated for `seconds` (at least `min_runs` times) after `warmup` calls."""
    for _ in range(warmup):  # first calls allocate and pack; later ones are what a benchmark sees
        run()
    times = []
    deadline = time.perf_counter() + seconds
    while len(times) < min_runs or time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def _ort_gemm(model_path: str, precision: str, activation: np.ndarray, threads: int, workdir: str):
    """(run, kernel) for ONNX Runtime's CPU provider, with OrtRunner's settings (all optimizations)."""
    from ..engine.ort_runner import import_onnxruntime

    ort = import_onnxruntime()
    session = ort.InferenceSession(model_path, _ort_options(ort, threads), providers=["CPUExecutionProvider"])
    # A second session saves the graph ORT runs after its fusions, to name the node (so the MLAS kernel) that
    # does the GEMM; the timed session is left exactly as OrtRunner makes it.
    naming = _ort_options(ort, threads)
    naming.optimized_model_filepath = os.path.join(workdir, "optimized.onnx")
    ort.InferenceSession(model_path, naming, providers=["CPUExecutionProvider"])
    kernel = f"onnxruntime {ort.__version__} CPU {_ort_gemm_node(naming.optimized_model_filepath, precision)}"
    feed = {"A": activation}
    return (lambda: session.run(None, feed)), kernel


def _ort_options(ort, threads: int):
    """OrtRunner's session settings: all graph optimizations, `threads` intra-op threads, one inter-op."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return opts


def _ort_gemm_node(optimized_path: str, precision: str) -> str:
    """'<op type> (MLAS <GEMM>, <operand types>)' of the GEMM node in ORT's optimized graph.

    Where ORT has no float16 kernel for the CPU it casts the node to float32 (and folds the weight's Cast):
    the weight type says which GEMM really ran.
    """
    onnx = require("onnx")
    graph = onnx.load(optimized_path).graph
    gemms = [node for node in graph.node if node.op_type in ORT_GEMM_OPS]
    if len(gemms) != 1:
        raise BitError(f"expected one GEMM node in ONNX Runtime's optimized graph, found {len(gemms)}")
    node = gemms[0]
    dtypes = {init.name: onnx.helper.tensor_dtype_to_np_dtype(init.data_type).name for init in graph.initializer}
    weight = dtypes.get(_input(node, ORT_B_INPUT.get(node.op_type, 1)), "unknown")
    if node.op_type in ORT_A_ZERO_POINT_INPUT:
        activation = dtypes.get(_input(node, ORT_A_ZERO_POINT_INPUT[node.op_type]), "uint8")  # no zero point: uint8
        return f"{node.op_type} (MLAS QGEMM, {activation} activations x {weight} weights)"
    mlas = {"float32": "SGEMM", "float16": "HGEMM"}.get(weight, "GEMM")
    cast = ", the fp16 graph cast to float32 by ORT" if precision == "fp16" and weight == "float32" else ""
    return f"{node.op_type} (MLAS {mlas}, {weight} weights{cast})"


def _input(node, index: int) -> str:
    """The name of a node's input `index`, '' where the optional input is absent."""
    return node.input[index] if index < len(node.input) else ""


def _openvino_gemm(model_path: str, precision: str, activation: np.ndarray, threads: int, workdir: str):
    """(run, kernel) for OpenVINO's CPU plugin, with OpenVinoRunner's settings (LATENCY; the arithmetic it picks).

    As the runner: f32 for fp32 graphs, and for the fp16 and INT8 tiers bf16 where it computes faster than f32 here,
    else f32 (so the GEMM beside a bf16 row is a bf16 GEMM). `workdir` is unused: the signature is
    _ort_gemm's.
    """
    from ..engine.openvino_runner import arithmetic_for, import_openvino

    ov = import_openvino()
    core = ov.Core()
    arithmetic = arithmetic_for(core, precision)
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": arithmetic, "INFERENCE_NUM_THREADS": threads}
    compiled = core.compile_model(model_path, "CPU", config)
    request = compiled.create_infer_request()
    request.infer({0: activation})  # a primitive may be chosen on the first inference
    version = ov.__version__.split("-")[0]
    kernel = f"openvino {version} CPU {_openvino_gemm_layer(compiled)}"
    return (lambda: request.infer({0: activation})), kernel


def _openvino_gemm_layer(compiled) -> str:
    """'<layer type> <primitive> (<runtime precision>)' of the GEMM in OpenVINO's execution graph."""
    layers = []
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = {key: str(value.value) for key, value in op.get_rt_info().items()}
        if info.get("layerType") in OPENVINO_GEMM_LAYERS:
            layers.append(f"{info['layerType']} {info.get('primitiveType', '?')} ({info.get('runtimePrecision', '?')})")
    if len(layers) != 1:
        raise BitError(f"expected one GEMM layer in OpenVINO's execution graph, found {layers or 'none'}")
    return layers[0]


# ---------------------------------------------------------------- the roofline


# The data type a CPU backend computes each precision in, where the row does not say (its `compute`): fp16 graphs
# run in f32 on the CPU (ONNX Runtime casts them; OpenVINO runs f32 unless the CPU has bf16, and then says bf16).
COMPUTED_DTYPE = {"fp32": "f32", "fp16": "f32", "int8": "int8", "int8+bf16": "int8", "bf16": "bf16", "f32": "f32"}


def roofline(gflop_per_image: float, images_per_s: float, gemm: dict, host=None, compute: str | None = None) -> dict:
    """Achieved GFLOP/s (`gflop_per_image` x `images_per_s`) and its percentage of this CPU's physical peak.

    `gemm` is a gemm_peak result (its `precision` and `threads` choose the peak; its GFLOP/s is reported beside
    it); `compute`, the arithmetic the row ran in (Classifier.compute: bf16 on OpenVINO's fp16 tier where the CPU
    has it), overrides the precision's. `host`: an engine.cpu_host.CpuHost, this machine's by default. The peak
    is cores x maximum boost clock x FLOP/cycle/core of the instruction set dispatched (engine/cpu_peak.py); for
    a CPU its table does not know, the measured GEMM, labelled so. A throughput above the peak means the peak is
    wrong: the percentage is clamped to 100 and `peak_warning` says so.
    """
    gemm_gflops = gemm.get("gflops") or 0
    if gflop_per_image <= 0 or images_per_s < 0:
        raise BitError(
            f"a roofline needs positive FLOPs and a throughput, got {gflop_per_image} GFLOP/image, "
            f"{images_per_s} images/s"
        )
    host = host or this_host()
    precision = gemm.get("precision")  # an INT8 row's convolutions run INT8 whatever its float layers run in
    dtype = "int8" if precision == "int8" else COMPUTED_DTYPE.get(compute or precision, "f32")
    physical = cpu_peak.physical_peak(host, dtype, gemm.get("threads"))
    if physical["known"]:
        peak, source = physical["gflops"], "isa"
    else:
        if gemm_gflops <= 0:
            raise BitError(f"no peak for a roofline: {physical['reason']}, and no measured GEMM")
        peak, source = gemm_gflops, f"measured GEMM (CPU unknown: {physical['reason']})"
    achieved = gflop_per_image * images_per_s
    percent = 100 * achieved / peak
    warning = None
    if percent > 100:
        warning = (
            f"peak unreliable: measured {achieved:.1f} GFLOP/s is above the {peak:.1f} GFLOP/s peak "
            f"({percent:.0f}%); percent_of_peak is clamped to 100"
        )
    return {
        "gflop_per_image": gflop_per_image,
        "images_per_s": images_per_s,
        "achieved_gflops": achieved,
        "peak_gflops": peak,
        "percent_of_peak": min(percent, 100.0),
        "peak_warning": warning,
        "peak_source": source,
        "uarch": physical["uarch"],
        "isa": physical.get("isa"),
        "flop_per_cycle": physical.get("flop_per_cycle"),
        "cores": physical.get("cores"),
        "clock_mhz": physical.get("clock_mhz"),
        "clock_source": physical.get("clock_source"),
        "gemm_gflops": gemm_gflops or None,
        "percent_of_gemm": 100 * achieved / gemm_gflops if gemm_gflops > 0 else None,
        "backend": gemm.get("backend"),
        "precision": gemm.get("precision"),
        "threads": gemm.get("threads"),
        "kernel": gemm.get("kernel"),
    }


def bench_columns(roof: dict) -> dict:
    """A roofline() result as bit-bench's row["roofline"]: the columns results files have had (gflop_per_image,
    achieved_gflops, peak_gflops, percent_of_peak, peak_kernel: the measured GEMM's kernel), then the peak's
    provenance and the measured GEMM beside it."""

    def rounded(value, digits):
        return None if value is None else round(value, digits)

    return {
        "gflop_per_image": round(roof["gflop_per_image"], 3),
        "achieved_gflops": round(roof["achieved_gflops"], 2),
        "peak_gflops": round(roof["peak_gflops"], 2),
        "percent_of_peak": round(roof["percent_of_peak"], 1),
        "peak_kernel": roof["kernel"],
        "peak_warning": roof["peak_warning"],
        "peak_source": roof["peak_source"],
        "peak_uarch": roof["uarch"],
        "peak_isa": roof["isa"],
        "peak_flop_per_cycle": roof["flop_per_cycle"],
        "peak_cores": roof["cores"],
        "peak_clock_mhz": rounded(roof["clock_mhz"], 0),
        "peak_clock_source": roof["clock_source"],
        "gemm_gflops": rounded(roof["gemm_gflops"], 2),
        "percent_of_gemm": rounded(roof["percent_of_gemm"], 1),
    }
