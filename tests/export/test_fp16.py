"""The FP16 variant: float16 inside, float32 at the edges, islands by measurement, parity against TF and FP32."""

import json

import numpy as np
import onnx
import pytest

from bit_trt.engine import compare
from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.errors import BitError
from bit_trt.engine.ort_runner import OrtRunner
from bit_trt.export import fp16


def test_fp16_artifact(tiny_bundle):
    m = json.loads((tiny_bundle / "manifest.json").read_text())
    art = next(a for a in m["artifacts"] if a["precision"] == "fp16")
    assert art["parity"]["passed"] and art["io_dtype"] == "float32"
    assert art["island_search"] and art["island_search"][0]["keep_fp32"] == []
    model = onnx.load(str(tiny_bundle / "model.fp16.onnx"))
    f16 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    f32 = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.dims) == 4]
    assert len(f16) > 10 and not f32  # every conv kernel is float16
    for value in list(model.graph.input) + list(model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # Half the bytes of FP32, give or take the non-weight tensors.
    assert art["bytes"] < 0.55 * m["artifacts"][0]["bytes"]
    onnx.checker.check_model(model, full_check=True)  # nodes in topological order, as the converter left them not


def test_fp16_matches_fp32_on_the_recorded_inputs(tiny_bundle):
    bundle = load_bundle(str(tiny_bundle))
    ref = np.load(tiny_bundle / "parity_inputs.npz")
    x = ref["images"].astype(np.float32) / 255
    with OrtRunner(bundle.artifact_path("fp16")) as half, OrtRunner(bundle.artifact_path("fp32")) as full:
        assert not compare.FP16_PARITY.check(compare.measure(half.infer(x), full.infer(x)))


def test_island_search_escalates_then_gives_up(tiny_bundle):
    """An impossible tolerance: every candidate island is measured, then a clear error."""
    fp32_model = onnx.load(str(tiny_bundle / "model.fp32.onnx"))
    x = np.load(tiny_bundle / "parity_inputs.npz")["images"][:2]
    with OrtRunner(str(tiny_bundle / "model.fp32.onnx")) as runner:
        fp32_logits = runner.infer(x.astype(np.float32) / 255)
    impossible = compare.Tolerance(rel_l2=1e-12, cosine_min=1.0, max_abs_over_scale=1e-12)
    seen = []
    with pytest.raises(BitError, match="FP16 misses its tolerance even with"):
        fp16.search_islands(fp32_model, x, fp32_logits, tolerance=impossible, progress=seen.append)
    candidates = {op for op in fp16.CANDIDATE_ISLANDS if any(n.op_type == op for n in fp32_model.graph.node)}
    assert len(seen) == 1 + 2 * len(candidates)  # all-FP16, each alone, then the greedy accumulation


def test_keeping_an_op_in_fp32_really_keeps_it(tiny_bundle):
    fp32_model = onnx.load(str(tiny_bundle / "model.fp32.onnx"))
    half = fp16.to_fp16(fp32_model, ("InstanceNormalization",))
    casts = [n for n in half.graph.node if n.op_type == "Cast"]
    norms = [n for n in half.graph.node if n.op_type == "InstanceNormalization"]
    assert norms and len(casts) >= 2 * len(norms)  # a cast in and out of every island
    # The source model is left as it was.
    assert all(i.data_type != onnx.TensorProto.FLOAT16 for i in fp32_model.graph.initializer)
