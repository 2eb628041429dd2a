"""Every CPU backend on a real exported bundle, against the TF logits the bundle recorded."""

import os
import pathlib

import numpy as np
import pytest

from bit_trt.engine import backends, compare, gpu_host
from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.classifier import Classifier
from bit_trt.engine.errors import BitError
from bit_trt.engine.parity_set import load_parity_set
from bit_trt.engine.preprocess import scale_uint8

from .capped_process import run_capped

CPU_BACKENDS = ("ort-cpu", "openvino", "tf")


def _parity_set(path):
    images, _, tf_logits = load_parity_set(load_bundle(str(path)))
    return scale_uint8(images), tf_logits


@pytest.mark.parametrize(
    "backend,precision", [(b, p) for b in CPU_BACKENDS for p in ("fp32", "fp16", "int8") if b != "tf" or p == "fp32"]
)  # the TF reference is FP32 only
def test_backend_matches_tf(tiny_full_bundle, backend, precision):
    images, tf_logits = _parity_set(tiny_full_bundle)
    runner = backends.create(load_bundle(str(tiny_full_bundle)), backend, precision)
    with runner:
        logits = runner.infer(images)
    # judged in the arithmetic the backend chose on this host (OpenVINO's fp16 tier: bf16 on a bf16 CPU)
    failures = compare.tolerance_for(precision, getattr(runner, "compute", None)).check(
        compare.measure(logits, tf_logits)
    )
    assert not failures, f"{backend} {precision}: {failures}"


def test_int8_picks_the_graph_each_runtime_needs(tiny_full_bundle):
    bundle = load_bundle(str(tiny_full_bundle))
    assert backends.create(bundle, "ort-cpu", "int8").model.endswith("model.int8-ort.onnx")
    assert backends.create(bundle, "openvino", "int8").model_path.endswith("model.int8-ort.onnx")
    assert backends.create(bundle, "ort-cpu", "int8-trt").model.endswith("model.int8-trt.onnx")


@pytest.mark.skipif(gpu_host.has_gpu(), reason="checks the CPU-host choice")
def test_auto_on_a_cpu_host_picks_openvino_and_says_so(tiny_full_bundle):
    with Classifier(str(tiny_full_bundle)) as clf:
        assert clf.backend.startswith("openvino") and "f32" in clf.backend
        assert clf.skipped == []


@pytest.mark.skipif(gpu_host.has_gpu(), reason="checks the CPU-host errors")
@pytest.mark.parametrize(
    "backend,expected",
    [
        ("ort-cuda", "has no CUDAExecutionProvider"),
        ("ort-trt", "has no TensorrtExecutionProvider"),
        ("trt", "no NVIDIA GPU found on this host"),
    ],
)
def test_gpu_backends_on_a_cpu_host_say_why(tiny_full_bundle, backend, expected):
    with pytest.raises(BitError, match=expected):
        Classifier(str(tiny_full_bundle), backend=backend).predict(np.zeros((8, 8, 3), np.uint8))


def test_unknown_backend_and_precision(tiny_full_bundle):
    with pytest.raises(BitError, match="backend 'cuda' is not known"):
        Classifier(str(tiny_full_bundle), backend="cuda")
    with pytest.raises(BitError, match="unknown precision 'int4'; choose from: fp32, fp16, int8"):
        Classifier(str(tiny_full_bundle), backend="ort-cpu", precision="int4")


def test_trt_without_a_plan_for_the_precision(tiny_bundle):
    with pytest.raises(BitError, match="has no fp32 TensorRT plan"):
        backends.create(load_bundle(str(tiny_bundle)), "trt", "fp32")


def test_openvino_bf16_is_opt_in_and_reported_as_compiled(tiny_full_bundle):
    from bit_trt.engine.openvino_runner import import_openvino

    images, tf_logits = _parity_set(tiny_full_bundle)
    bundle = load_bundle(str(tiny_full_bundle))
    with backends.create(bundle, "openvino", "fp32") as runner:
        assert runner.compute == "f32"  # fp32 stays f32 even where the CPU has bf16
    with pytest.raises(BitError, match=r"bf16 applies to the fp16 and int8 variants.*; model.fp32.onnx is fp32$"):
        backends.create(bundle, "openvino", "fp32", inference_precision="bf16").activate()  # as the C++ refuses it
    with backends.create(bundle, "openvino", "fp16", inference_precision="bf16") as runner:
        if "BF16" in import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            assert runner.compute == "bf16" and runner.describe().endswith(", bf16)")
        else:  # what OpenVINO compiled, not what was asked: it runs f32 here, and says why
            assert runner.compute == "f32"
            assert "bf16 runs as f32: OpenVINO compiled f32" in runner.describe()
        metrics = compare.measure(runner.infer(images), tf_logits)
    assert metrics["cosine_min"] > 0.99  # bf16 still computes the same model
    with pytest.raises(BitError, match="inference precision must be f32 or bf16"):
        backends.create(bundle, "openvino", "fp32", inference_precision="int4")


_INT8_DESCRIBED = """
import json, sys
from bit_trt.engine.classifier import Classifier
print(json.dumps({b: Classifier(sys.argv[1], backend=b, precision="int8").backend for b in ("openvino", "ort-cpu")}))
"""


def test_int8_on_a_cpu_without_an_int8_dot_product_says_so(tiny_full_bundle):
    """oneDNN's AVX512_CORE cap makes OpenVINO dispatch as an AVX-512 CPU without VNNI (a Skylake-SP): its INT8
    line says the convolutions run on 16-bit multiply-adds there. ONNX Runtime's MLAS ignores the cap: its line
    says so only where this CPU itself has no INT8 dot product."""
    from bit_trt.engine.cpu_host import this_host

    described, _ = run_capped(_INT8_DESCRIBED, "AVX512_CORE", tiny_full_bundle)
    assert described["openvino"].endswith(
        "; int8 runs on 16-bit multiply-adds: this CPU has no INT8 dot product (amx_int8, avx512_vnni, avx_vnni, "
        "under ONEDNN_MAX_CPU_ISA=AVX512_CORE), so INT8 gains less over f32 (docs/cpu.md)"
    ), described["openvino"]
    note = this_host().int8_note()
    assert described["ort-cpu"].endswith(f"; {note}") if note else "int8 runs on" not in described["ort-cpu"]
    with Classifier(str(tiny_full_bundle), backend="openvino", precision="fp32") as clf:
        assert "int8 runs on" not in clf.backend  # only INT8 is said to


def test_ort_trt_keeps_its_engines_only_where_this_user_alone_may_write(tiny_bundle, tmp_path, monkeypatch):
    """ORT's TensorRT provider reads back the engines it built (code the GPU runs) and names them by the graph's
    names, not its weights: the folder is keyed by the artifact's files, and vetted when the session starts
    (OrtRunner.engine_folder; the provider itself needs a GPU, the choice does not)."""
    import shutil
    import warnings

    bundle_path = tmp_path / "tiny"
    shutil.copytree(tiny_bundle, bundle_path)
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path / "cache"))
    bundle = load_bundle(str(bundle_path))

    def engine_cache(precision="fp32"):
        return backends.create(bundle, "ort-trt", precision).engine_folder()

    old_umask = os.umask(0o002)  # as many desktops run: what bit-export and libraries write is group-writable
    try:
        bundle_path.chmod(0o775)  # a bundle folder others may write to: the user cache instead, made 0700
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            cached = engine_cache()
        assert cached.startswith(str(tmp_path / "cache" / "ort-trt" / "tiny" / ""))
        assert (tmp_path / "cache").stat().st_mode & 0o777 == 0o700
        (tmp_path / "cache").chmod(0o775)  # a root an earlier version made under this umask: tightened, kept
        (pathlib.Path(cached) / "engine.engine").write_bytes(b"engine")  # as the provider writes it: 0664
        assert engine_cache() == cached and (tmp_path / "cache").stat().st_mode & 0o777 == 0o755
        assert (pathlib.Path(cached) / "engine.engine").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old_umask)
    bundle_path.chmod(0o755)
    here = engine_cache()
    assert here.startswith(str(bundle_path / "cache" / "ort-trt" / "")) and here.rsplit("-", 2)[1] == "fp32"
    assert engine_cache("fp16") != here.replace("-fp32-", "-fp16-")  # the key is the artifact's, not the name's
    planted = pathlib.Path(here) / "planted.engine"
    planted.write_bytes(b"planted")
    planted.chmod(0o664)
    pathlib.Path(here).chmod(0o755)  # others could enter and rewrite it: the user cache instead
    assert engine_cache() == cached
    graph_only = backends._ort_trt_cache_places(bundle, "fp32", 0)
    art = bundle.artifacts("onnx")["fp32"]
    art["data_files"] = [{"file": "model.fp32.onnx.data", "sha256": "0" * 64}]  # weights beside the graph count
    assert backends._ort_trt_cache_places(bundle, "fp32", 0)[0][1] != graph_only[0][1]
    del art["data_files"]
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # a $BIT_TRT_CACHE in a folder anyone may write to (not sticky, as /tmp is)
    monkeypatch.setenv("BIT_TRT_CACHE", str(shared / "cache"))
    bundle_path.chmod(0o775)
    with pytest.warns(RuntimeWarning, match="ort-trt keeps no engine cache.*tiny is another user's.*shared is an"):
        assert engine_cache() is None
