"""bit-trt's fused GroupNorm on ONNX Runtime (engine/ort_group_norm.py, engine/cpu_kernels/group_norm_quantize.c): the
kernel against ORT's own ops on one chain, the rewrite of a real INT8 graph, and the runner's choice, gate and
fallback."""

import platform
import shutil
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bit_trt.engine import backends, compare, compute_gate, ort_group_norm, ort_kernel_library
from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.errors import BitError
from bit_trt.engine.ort_runner import OrtRunner
from bit_trt.engine.parity_set import load_parity_set
from bit_trt.engine.preprocess import scale_uint8

from .ort_kernel import assert_within_one_step, chain_model, kernel_library


def _run(model: onnx.ModelProto, x: np.ndarray, library: str | None = None, a: np.ndarray | None = None):
    opts = ort.SessionOptions()
    if library:
        opts.register_custom_ops_library(library)
    session = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {"X": x} if a is None else {"X": x, "A": a})
    return outputs[0] if a is None else outputs


def _check_chain(library: str, quantized_input: bool, channels: int, groups: int, size: int) -> None:
    """The kernel (the library at `library`) against ORT's own ops on one chain: within one quantization step."""
    model = chain_model(channels, groups, size, quantized_input)
    x = np.random.default_rng(1).normal(0.3, 2.0, (2, channels, size, size)).astype(np.float32)
    x[1] *= 3  # a second image with other statistics: each is normalized on its own
    stock = _run(model, x)
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    assert ort_group_norm.rewrite(fused) == 1
    assert [n.op_type for n in fused.graph.node if n.domain == ort_group_norm.DOMAIN] == [
        ort_group_norm.OPS[0 if quantized_input else 1]
    ]
    out = _run(fused, x, library)
    assert out.dtype == np.uint8 and out.shape == stock.shape
    assert_within_one_step(out, stock)
    assert 0.1 < (stock == 3).mean() < 0.9  # the ReLU clipped some, not all


def _check_residual(library: str, channels: int, groups: int, size: int) -> None:
    """The residual form against DequantizeLinear, Add and ORT's chain: the sum bitwise, Y within one step."""
    model = chain_model(channels, groups, size, quantized_input=False, residual=True)
    rng = np.random.default_rng(3)
    x, a = (rng.normal(0.3, 2.0, (2, channels, size, size)).astype(np.float32) for _ in range(2))
    y_stock, s_stock = _run(model, x, a=a)
    fused = onnx.ModelProto()
    fused.CopyFrom(model)
    assert ort_group_norm.rewrite(fused) == 1
    ops = [n.op_type for n in fused.graph.node]
    assert ops.count(ort_group_norm.OPS[2]) == 1 and "Add" not in ops and "DequantizeLinear" not in ops
    y, s = _run(fused, x, library, a=a)
    np.testing.assert_array_equal(s, s_stock)  # DequantizeLinear then Add, in the same order: the same floats
    assert_within_one_step(y, y_stock)
    assert 0.1 < (y_stock == 3).mean() < 0.9


def _check_every_form(library: str) -> None:
    """The uint8-in, float-in and residual forms of the library at `library` against ORT's own ops."""
    for quantized_input in (True, False):
        _check_chain(library, quantized_input, 64, 32, 9)
    _check_residual(library, 8, 4, 70)


@pytest.mark.parametrize("quantized_input", [True, False], ids=["uint8-in", "float-in"])
@pytest.mark.parametrize("channels,groups,size", [(8, 4, 70), (64, 32, 9), (6, 1, 3)])
def test_the_kernel_computes_the_chain_as_ort_does(quantized_input, channels, groups, size):
    _check_chain(kernel_library(), quantized_input, channels, groups, size)


@pytest.mark.parametrize("channels,groups,size", [(8, 4, 70), (64, 32, 9)])
def test_the_kernel_takes_over_a_residual_sum_and_writes_it_too(channels, groups, size):
    _check_residual(kernel_library(), channels, groups, size)


# The library is built with -march=native, so the code a host without AVX-512 runs is whatever the compiler makes of
# the C for that host. Two x86-64 levels stand in for those hosts: v3 (AVX2 and FMA: Haswell to Zen 3) and v2
# (SSE4.2). Their builds run here too, since they use only instructions this CPU has.
@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 levels: an x86-64 host")
@pytest.mark.parametrize("march", ["x86-64-v3", "x86-64-v2"])
def test_the_kernel_built_for_a_cpu_without_avx512_computes_the_same(march, tmp_path, monkeypatch):
    kernel_library()  # skips where this host can't build it
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    flags = tuple(f"-march={march}" if f == "-march=native" else f for f in ort_kernel_library.FLAGS)
    assert flags != ort_kernel_library.FLAGS
    monkeypatch.setattr(ort_kernel_library, "FLAGS", flags)
    _check_every_form(ort_kernel_library.library())


# ort_kernel_library builds with $CC, else cc, gcc or clang: each compiler a host may have builds the same arithmetic
# (.ci/run installs clang beside gcc).
@pytest.mark.parametrize("cc", ["gcc", "clang"])
def test_each_compiler_builds_a_kernel_that_computes_the_same(cc, tmp_path, monkeypatch):
    kernel_library()  # skips where this host can't build it
    if shutil.which(cc) is None:
        pytest.skip(f"no {cc} on this host")
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CC", cc)
    _check_every_form(ort_kernel_library.library())


def test_a_chain_that_differs_is_left_alone():
    model = chain_model(8, 4, 5, quantized_input=True)
    unit = next(t for t in model.graph.initializer if t.name == "unit")
    unit.CopyFrom(numpy_helper.from_array(np.full(4, 2, np.float32), "unit"))  # a scale the kernel does not apply
    assert ort_group_norm.rewrite(model) == 0
    model = chain_model(8, 4, 5, quantized_input=True)
    model.graph.output.append(helper.make_tensor_value_info("n", TensorProto.FLOAT, None))  # an inner tensor is read
    assert ort_group_norm.rewrite(model) == 0


def test_bad_shapes_are_one_line_from_the_kernel():
    library = kernel_library()
    model = chain_model(8, 4, 5, quantized_input=False)
    ort_group_norm.rewrite(model)
    kernel = next(n for n in model.graph.node if n.domain == ort_group_norm.DOMAIN)
    next(a for a in kernel.attribute if a.name == "groups").i = 3  # 8 channels in 3 groups
    with pytest.raises(Exception, match="must be a multiple of groups"):
        _run(model, np.zeros((1, 8, 5, 5), np.float32), library)


def test_the_int8_graph_is_rewritten_and_the_fp32_graph_is_not(tiny_full_bundle):
    bundle = load_bundle(str(tiny_full_bundle))
    model = onnx.load(bundle.artifact_path("int8-ort"))
    norms = sum(n.op_type == "InstanceNormalization" for n in model.graph.node)
    count = ort_group_norm.rewrite(model)
    left = [n.op_type for n in model.graph.node]
    # every GroupNorm but the one before the head (its ReLU feeds the pooling)
    assert count == norms - 1 and left.count("InstanceNormalization") == 1
    kernels = [left.count(op) for op in ort_group_norm.OPS]
    assert sum(kernels) == count and all(kernels)  # each form occurs: after a convolution, the stem, a residual sum
    onnx.checker.check_model(model)  # in order: every node after the producers of its inputs
    with pytest.raises(BitError, match="no quantized GroupNorm"):
        ort_group_norm.rewritten_bytes(bundle.artifact_path("fp32"))


def test_ort_cpu_int8_runs_the_kernel_gated_and_agrees_with_orts_own_ops(tiny_full_bundle, tmp_path, monkeypatch):
    kernel_library()
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    bundle = load_bundle(str(tiny_full_bundle))
    images, _, tf_logits = load_parity_set(bundle)
    batch = scale_uint8(images)
    with (
        backends.create(bundle, "ort-cpu", "int8") as fused,
        backends.create(bundle, "ort-cpu", "int8", group_norm_kernel=False) as stock,
    ):
        assert "bit-trt's kernel (12 fused" in fused.describe() and "kernel" not in stock.describe()
        ours, theirs = fused.infer(batch), stock.infer(batch)
    verdict = compare.report(ours, tf_logits, compare.INT8_KERNEL_PARITY)
    assert verdict["passed"], verdict["failures"]
    assert compare.measure(ours, theirs)["cosine_min"] > 0.99
    kept = list((tmp_path / "cache" / "compute-gate").iterdir())
    assert len(kept) == 1 and "bit-trt's kernel" in kept[0].read_text()  # the gate ran, and its verdict is kept


def test_ort_cpu_int8_runs_a_prebuilt_kernel_where_nothing_can_be_built(tiny_full_bundle, tmp_path, monkeypatch):
    kernel_library()  # skips where this host can't build the set either
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    manifest = ort_kernel_library.build_prebuilt(str(tmp_path / "kernels"))
    monkeypatch.setenv("PATH", "/nonexistent")  # no compiler
    monkeypatch.setenv(ort_kernel_library.INCLUDE_ENV, str(tmp_path))  # no header
    monkeypatch.setenv(ort_kernel_library.PREBUILT_ENV, str(tmp_path / "kernels"))
    bundle = load_bundle(str(tiny_full_bundle))
    images, _, tf_logits = load_parity_set(bundle)
    with backends.create(bundle, "ort-cpu", "int8") as runner:
        said = runner.describe()
        ours = runner.infer(scale_uint8(images))
    assert any(f"bit-trt's kernel (12 fused, build {name})" in said for name in manifest["builds"].values()), said
    verdict = compare.report(ours, tf_logits, compare.INT8_KERNEL_PARITY)
    assert verdict["passed"], verdict["failures"]
    kept = list((tmp_path / "cache" / "compute-gate").iterdir())
    assert len(kept) == 1 and "build x86-64-v" in kept[0].read_text()  # gated, keyed by the prebuilt build
    assert not (tmp_path / "cache" / "ort-kernels").exists()  # nothing was built
    # A set that can't be had: ORT's own ops, and the line says why; asked for outright, an error.
    monkeypatch.setenv(ort_kernel_library.PREBUILT_ENV, str(tmp_path / "none"))
    with backends.create(bundle, "ort-cpu", "int8") as runner:
        said = runner.describe()
        assert "GroupNorm on ORT's own ops: BIT_TRT_ORT_KERNELS=" in said and "none is not a folder" in said, said
    with pytest.raises(BitError, match="none is not a folder"):
        backends.create(bundle, "ort-cpu", "int8", group_norm_kernel=True).activate()


def test_without_the_header_ort_runs_its_own_ops_and_says_why(tiny_full_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv(ort_kernel_library.INCLUDE_ENV, str(tmp_path))  # a folder without onnxruntime_c_api.h
    bundle = load_bundle(str(tiny_full_bundle))
    with backends.create(bundle, "ort-cpu", "int8") as runner:
        said = runner.describe()
        assert "GroupNorm on ORT's own ops" in said and "holds no onnxruntime_c_api.h" in said
        assert runner.infer(np.zeros((1, 64, 64, 3), np.float32)).shape == (1, 1000)
    with pytest.raises(BitError, match="holds no onnxruntime_c_api.h"):
        backends.create(bundle, "ort-cpu", "int8", group_norm_kernel=True).activate()
    with pytest.raises(BitError, match="ort-cpu only"):
        OrtRunner(bundle.artifact_path("int8-trt"), backend="ort-cuda", group_norm_kernel=True)


def test_a_kernel_that_fails_the_gate_is_refused_with_the_measured_error(tiny_full_bundle, tmp_path, monkeypatch):
    kernel_library()
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    bundle = load_bundle(str(tiny_full_bundle))
    impossible = compare.Tolerance(rel_l2=1e-9, cosine_min=1.0, max_abs_over_scale=1e-9, top1_decisive=0.0)

    def gate(infer, described):
        return compute_gate.check(bundle, "int8-ort", infer, described, tolerance=impossible, instead="its own ops")

    with OrtRunner(bundle.artifact_path("int8-ort"), gate=gate) as runner:
        said = runner.describe()
    assert "GroupNorm on ORT's own ops" in said and "fails the accuracy gate" in said and "relative L2" in said


def test_fp32_and_the_gpu_providers_never_try_the_kernel(tiny_full_bundle, tmp_path, monkeypatch):
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    bundle = load_bundle(str(tiny_full_bundle))
    with backends.create(bundle, "ort-cpu", "fp32") as runner:
        assert "GroupNorm" not in runner.describe()
    assert not (tmp_path / "cache" / "ort-kernels").exists()


def test_threads_share_the_kernel_session(tiny_full_bundle, tmp_path, monkeypatch):
    kernel_library()
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    bundle = load_bundle(str(tiny_full_bundle))
    batch = np.random.default_rng(2).random((3, 64, 64, 3), dtype=np.float32)
    with backends.create(bundle, "ort-cpu", "int8") as runner:
        assert "bit-trt's kernel" in runner.describe()
        ref = runner.infer(batch)
        with ThreadPoolExecutor(max_workers=4) as pool:
            for out in pool.map(lambda _: runner.infer(batch), range(8)):
                np.testing.assert_array_equal(out, ref)
