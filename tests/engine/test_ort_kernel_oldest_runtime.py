"""bit-trt's ONNX Runtime kernel on the oldest onnxruntime it supports (constraints-ort-oldest.txt: 1.17, the C API
version the kernel asks for), in a side environment (.venv-ort-oldest, or $BIT_ORT_OLDEST_PYTHON), built by
tests/side_venv.py as the serving one is. The library is the one built here against a newer header: ORT's C API is
append-only, so a library that asks for version 17 must load and compute the same on 1.17's runtime."""

import json
import os
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from bit_trt.engine import compare, ort_group_norm
from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.parity_set import load_parity_set
from bit_trt.engine.preprocess import scale_uint8
from tests.side_venv import ROOT, side_venv

from .ort_kernel import assert_within_one_step, chain_model, kernel_library

CONSTRAINTS = "constraints-ort-oldest.txt"
# Run in the side environment: each model with and without the library, its outputs saved beside its inputs.
RUN = """
import json, sys
import numpy as np, onnxruntime as ort
jobs = json.loads(sys.argv[1])
for job in jobs:
    options = ort.SessionOptions()
    if job["library"]:
        options.register_custom_ops_library(job["library"])
    session = ort.InferenceSession(job["model"], options, providers=["CPUExecutionProvider"])
    feeds = dict(np.load(job["inputs"]))
    np.savez(job["outputs"], *session.run(None, feeds))
print(ort.__version__)
"""


@pytest.fixture(scope="session")
def oldest_python() -> str:
    installs = [("-c", CONSTRAINTS, "onnxruntime", "numpy")]
    venv = os.path.join(ROOT, ".venv-ort-oldest")
    return side_venv(venv, "BIT_ORT_OLDEST_PYTHON", (CONSTRAINTS,), installs, timeout_s=900)


def _oldest_pin() -> str:
    pins = [line for line in open(os.path.join(ROOT, CONSTRAINTS)) if line.startswith("onnxruntime==")]
    return pins[0].strip().split("==")[1]


def _run_oldest(python: str, jobs: list[dict]) -> str:
    proc = subprocess.run([python, "-c", RUN, json.dumps(jobs)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip()


def _save(model: onnx.ModelProto, path) -> str:
    model.ir_version = 8  # what the bundles' graphs carry (1.17 reads up to 9)
    onnx.save(model, str(path))
    return str(path)


def test_the_kernel_loads_and_computes_the_same_on_the_oldest_onnxruntime(oldest_python, tmp_path):
    library = kernel_library()  # skips where this host can't build it
    rng = np.random.default_rng(5)
    jobs = []
    for name, kwargs in {
        "uint8-in": {"quantized_input": True},
        "float-in": {"quantized_input": False},
        "residual": {"quantized_input": False, "residual": True},
    }.items():
        stock = chain_model(64, 32, 9, **kwargs)
        fused = onnx.ModelProto()
        fused.CopyFrom(stock)
        assert ort_group_norm.rewrite(fused) == 1
        feeds = {"X": rng.normal(0.3, 2.0, (2, 64, 9, 9)).astype(np.float32)}
        if kwargs.get("residual"):
            feeds["A"] = rng.normal(0.3, 2.0, (2, 64, 9, 9)).astype(np.float32)
        np.savez(tmp_path / f"{name}.in.npz", **feeds)
        for form, model, lib in (("stock", stock, ""), ("fused", fused, library)):
            jobs.append(
                {
                    "model": _save(model, tmp_path / f"{name}.{form}.onnx"),
                    "library": lib,
                    "inputs": str(tmp_path / f"{name}.in.npz"),
                    "outputs": str(tmp_path / f"{name}.{form}.out.npz"),
                }
            )
    version = _run_oldest(oldest_python, jobs)
    assert version == _oldest_pin() and version != ort.__version__  # the old runtime ran it, not this one
    for name in ("uint8-in", "float-in", "residual"):
        stock, fused = (np.load(tmp_path / f"{name}.{form}.out.npz") for form in ("stock", "fused"))
        assert_within_one_step(fused["arr_0"], stock["arr_0"])
        if name == "residual":
            np.testing.assert_array_equal(fused["arr_1"], stock["arr_1"])


def test_the_rewritten_int8_graph_runs_on_the_oldest_onnxruntime(oldest_python, tiny_full_bundle, tmp_path):
    library = kernel_library()
    bundle = load_bundle(str(tiny_full_bundle))
    images, _, tf_logits = load_parity_set(bundle)
    batch = scale_uint8(images)
    rewritten, count = ort_group_norm.rewritten_bytes(bundle.artifact_path("int8-ort"))
    model = onnx.load_from_string(rewritten)
    path = _save(model, tmp_path / "int8-ort.fused.onnx")
    name = model.graph.input[0].name
    np.savez(tmp_path / "in.npz", **{name: batch})
    job = {"model": path, "library": library, "inputs": str(tmp_path / "in.npz"), "outputs": str(tmp_path / "out.npz")}
    _run_oldest(oldest_python, [job])
    oldest = np.load(tmp_path / "out.npz")["arr_0"]
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    here = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]).run(None, {name: batch})[0]
    assert count > 0 and oldest.shape == here.shape == tf_logits.shape
    assert compare.measure(oldest, here)["cosine_min"] > 0.999  # the same kernel and integer convolutions
    verdict = compare.report(oldest, tf_logits, compare.INT8_KERNEL_PARITY)
    assert verdict["passed"], verdict["failures"]
