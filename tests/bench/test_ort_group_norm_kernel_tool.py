"""tools/ort_group_norm_kernel.py on the tiny INT8 bundle: the four graphs timed interleaved, the kernel's chains
profiled as its own ops, its accuracy beside ORT's own ops, and the bound's chains gone. No timing asserts."""

import json
import platform

import onnx
import pytest

from bit_trt.engine import ort_kernel_library
from bit_trt.engine.cpu_host import this_host
from tests.engine.ort_kernel import kernel_library
from tools.ort_group_norm_kernel import free_chains, main


def test_four_graphs_interleaved_with_profiles_and_accuracy(tiny_full_bundle, tmp_path):
    kernel_library()
    out = tmp_path / "kernel.json"
    argv = [str(tiny_full_bundle), "--rounds", "2", "--threads", "1", "--out", str(out)]
    main(argv)
    result = json.loads(out.read_text())
    assert result["command"] == "python -m tools.ort_group_norm_kernel " + " ".join(argv)
    (bundle,) = result["bundles"]
    assert bundle["chains_fused"] == 12
    fp32, stock, kernel, bound = bundle["variants"]
    assert [v["name"] for v in (fp32, stock, kernel, bound)] == [
        "ort fp32",
        "ort int8-ort",
        "ort int8-ort kernel",
        "bound: chains free",
    ]
    for v in (fp32, stock, kernel, bound):
        for b in ("b1", "b8"):
            assert v["latency_ms"][b]["samples"] == 2 * (3 if b == "b1" else 2) and v["latency_ms"][b]["median"] > 0
    ops = kernel["profile_b1"]["by_op_ms"]
    assert "QGroupNormRelu" in ops and "GroupNormReluQuantize" in ops and "InstanceNormalization" in ops  # the head's
    assert "InstanceNormalization" in stock["profile_b1"]["by_op_ms"]
    assert kernel["vs_tf"]["cosine_min"] > 0.98 and kernel["vs_int8_ort"]["cosine_min"] > 0.99
    assert "vs_tf" not in bound  # not a model: timed only


def test_the_bound_removes_every_chain(tiny_full_bundle, tmp_path):
    out = tmp_path / "free.onnx"
    assert free_chains(str(tiny_full_bundle / "model.int8-ort.onnx"), str(out)) == 12
    left = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert left.count("InstanceNormalization") == 1 and "Relu" in left  # only the head's GroupNorm is left


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 levels: an x86-64 host")
def test_each_prebuilt_level_this_cpu_runs_beside_the_native_build(tiny_full_bundle, tmp_path):
    kernel_library()
    kernels = tmp_path / "kernels"
    manifest = ort_kernel_library.build_prebuilt(str(kernels))
    out = tmp_path / "kernel.json"
    main([str(tiny_full_bundle), "--rounds", "1", "--threads", "1", "--prebuilt", str(kernels), "--out", str(out)])
    result = json.loads(out.read_text())
    host = this_host()
    runs = {level: name for level, name in manifest["builds"].items() if not host.lacks_for(level)}
    assert result["prebuilt_builds"] == runs and runs  # this CPU runs v2 at least
    levels = result["bundles"][0]["variants"][4:]
    assert [v["name"] for v in levels] == [f"ort int8-ort kernel {level}" for level in runs]
    for v in levels:
        assert v["max_abs_vs_native_build"] == 0.0  # the same arithmetic, whatever the vector width
        assert v["vs_tf"]["cosine_min"] > 0.98 and "speedup_vs_native_build" in v["latency_ms"]["b1"]
