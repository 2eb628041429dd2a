"""Plans are built from ONNX's native GroupNormalization-21 (export/group_norm_form.py): rewritten in memory, checked
against TF on ONNX Runtime before NVIDIA's parser sees it, and recorded per plan."""

import json
import types

import numpy as np
import onnx
import pytest

from bit_trt.engine.errors import BitError
from bit_trt.export import group_norm_form, trt_engine
from bit_trt.export.ort_logits import ort_logits
from bit_trt.export.parity import PROBE_IMAGES


def test_to_native_makes_one_node_of_each_five_and_keeps_the_answers(tiny_bundle):
    path = str(tiny_bundle / "model.fp32.onnx")
    model = onnx.load(path)
    before = {n.op_type for n in model.graph.node}
    assert "InstanceNormalization" in before and "GroupNormalization" not in before
    counts = group_norm_form.to_native(model)
    assert counts == {"native": 13, "instance_norm": 0}
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("GroupNormalization") == 13 and "InstanceNormalization" not in ops
    assert next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == 21
    inits = {i.name: i for i in model.graph.initializer}
    scales = [inits[n.input[1]].dims for n in model.graph.node if n.op_type == "GroupNormalization"]
    assert all(len(d) == 1 for d in scales) and max(d[0] for d in scales) > 32  # per channel (21), not per group (18)
    onnx.checker.check_model(model)
    images = np.load(tiny_bundle / "parity_inputs.npz")["images"]
    native, instance = ort_logits(model, images), ort_logits(path, images)
    assert np.linalg.norm(native - instance) / np.linalg.norm(instance) < 1e-5


def test_every_plan_is_built_from_the_native_form_checked_against_tf(tiny_full_bundle):
    manifest = json.loads((tiny_full_bundle / "manifest.json").read_text())
    plans = [a for a in manifest["artifacts"] if a["kind"] == "engine"]
    assert {p["flavour"] for p in plans} == {"fp32", "fp16", "int8-trt"}
    for plan in plans:
        form = plan["group_norm"]
        assert form["form"] == "native" and form["native"] == 13 and form["instance_norm"] == 0
        assert form["opset"] == 21 and form["parity"]["passed"] and form["parity"]["samples"] == PROBE_IMAGES
        # the parser's network: 13 normalization layers, and none of the Reshape pairs around them
        assert sum(plan["precision_mix"]["layer_types"]["NORMALIZATION"].values()) == 13
        assert sum(plan["precision_mix"]["layer_types"]["SHUFFLE"].values()) < 13


def test_the_rewrite_must_match_tf_before_the_parser_sees_it(tiny_bundle):
    images = np.load(tiny_bundle / "parity_inputs.npz")["images"]
    wrong = np.random.default_rng(0).normal(size=(len(images), 1000)).astype(np.float32)
    with pytest.raises(BitError, match=r"^model.fp32.onnx with native GroupNormalization misses its tolerance"):
        with group_norm_form.native_graph(str(tiny_bundle / "model.fp32.onnx"), "fp32", (images, wrong)):
            pass
    assert not [p for p in tiny_bundle.iterdir() if p.name.startswith(".")]  # its temporary folder is gone


def test_a_graph_without_the_instance_norm_form_is_refused(tiny_bundle, tmp_path):
    model = onnx.load(str(tiny_bundle / "model.fp32.onnx"))
    group_norm_form.to_native(model)
    onnx.save(model, str(tmp_path / "model.fp32.onnx"))
    with pytest.raises(BitError, match="has no GroupNorm in InstanceNormalization form"):
        with group_norm_form.native_graph(str(tmp_path / "model.fp32.onnx"), "fp32", (None, None)):
            pass


def test_an_unreadable_graph_is_one_line_naming_it(tmp_path):
    (tmp_path / "model.fp16.onnx").write_bytes(b"\x00not an onnx model" * 8)
    with pytest.raises(BitError, match=r"^model.fp16.onnx is not a readable ONNX model \(") as err:
        with group_norm_form.native_graph(str(tmp_path / "model.fp16.onnx"), "fp16", (None, None)):
            pass
    assert "\n" not in str(err.value)


def test_bit_engine_builds_from_the_files_as_written_when_asked(tiny_full_bundle, copy_bundle):
    from bit_trt.export.engine_cli import main

    bundle = copy_bundle(tiny_full_bundle)
    assert (
        main(
            [str(bundle), "--precision", "fp16", "--engine", "tensorrt_rtx", "--force", "--group-norm", "instance-norm"]
        )
        == 0
    )
    plan = next(
        a
        for a in json.loads((bundle / "manifest.json").read_text())["artifacts"]
        if a["kind"] == "engine" and a["flavour"] == "fp16"
    )
    assert plan["group_norm"] == {"form": "instance-norm"}
    assert sum(plan["precision_mix"]["layer_types"]["SHUFFLE"].values()) >= 26  # the Reshapes around each norm


@pytest.mark.parametrize(
    "version, uses, refused",
    [
        ("10.7.0", ["GroupNormalization-21"], "needs 10.9 or later); build with --group-norm instance-norm"),
        ("10.9.0", ["GroupNormalization-21"], None),
        ("9.3.0", ["float16 Q/DQ scales (opset 19)"], "needs 10.0 or later"),
        ("11.0.0", ["GroupNormalization-21", "float16 Q/DQ scales (opset 19)"], None),
    ],
)
def test_an_opset_the_installed_parser_cannot_read_is_one_line(version, uses, refused):
    library = types.SimpleNamespace(__name__="tensorrt", __version__=version)  # only its name and version are read
    if refused is None:
        trt_engine.check_parser_reads(library, "model.int8-trt.onnx", uses)
        return
    with pytest.raises(
        BitError, match=r"^model.int8-trt.onnx uses .*" + refused.replace("(", r"\(").replace(")", r"\)")
    ):
        trt_engine.check_parser_reads(library, "model.int8-trt.onnx", uses)
