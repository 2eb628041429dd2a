"""tools/openvino_group_norm.py on the tiny bundle: both forms timed in alternating rounds, the ratios those rounds',
the rewrite done on every GroupNorm and gone from the Reorders it caused, both forms close to TF; and
tools/openvino_group_norm_affine.py: every GroupNorm's gamma and beta after it against folded, both forms close to TF.
No timing asserts."""

import json
import statistics

import onnx

from tools import openvino_group_norm_affine
from tools.openvino_group_norm import main


def test_both_forms_in_alternating_rounds_with_their_reorders_and_accuracy(tiny_bundle, tmp_path):
    out = tmp_path / "group_norm.json"
    argv = [str(tiny_bundle), "--flavours", "fp32", "--batches", "2", "--rounds", "2", "--threads", "1"]
    main([*argv, "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["command"] == "python -m tools.openvino_group_norm " + " ".join([*argv, "--json", str(out)])
    norms = sum(n.op_type == "InstanceNormalization" for n in onnx.load(f"{tiny_bundle}/model.fp32.onnx").graph.node)
    (row,) = result["rows"]
    assert (row["flavour"], row["batch"], row["inference_precision"]) == ("fp32", 2, "f32")
    before, after = row["as_read"], row["rewritten"]
    assert (before["group_norms_rewritten"], after["group_norms_rewritten"]) == (0, norms) and norms > 0
    assert after["reorders"] < before["reorders"]
    for form in (before, after):
        assert len(form["ms_per_image"]) == 2 and min(form["ms_per_image"]) > 0
        assert form["vs_tf"]["rel_l2"] < 1e-4 and form["vs_tf"]["top1_agreement"] == 1.0
    ratios = [round(a / b, 3) for a, b in zip(before["ms_per_image"], after["ms_per_image"], strict=True)]
    assert row["as_read_over_rewritten"] == ratios and row["median_ratio"] == statistics.median(ratios)
    for form in (before, after):  # where the time went, by layer type and precision, from the same profiled run
        shares = form["share_by_layer_type"]
        assert any(k.startswith("Convolution ") for k in shares) and 0.5 < sum(shares.values()) <= 1.01
        reorders = sum(v for k, v in shares.items() if k.startswith("Reorder "))
        assert reorders <= form["reorder_share_of_time"] + 0.01


def test_a_run_under_onednns_isa_cap_says_so(tiny_bundle, tmp_path, monkeypatch):
    """ONEDNN_MAX_CPU_ISA makes OpenVINO's kernels those of a CPU without AMX (or bf16) while the host's flags still
    show them: the record carries the cap and the command repeats it."""
    from bit_trt.engine.bundle import load_bundle
    from tools.openvino_study import write_result

    bundle = load_bundle(str(tiny_bundle))
    plain = write_result("openvino_group_norm", [str(tiny_bundle)], str(tiny_bundle), bundle, [], None)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI")
    out = tmp_path / "capped.json"
    capped = write_result("openvino_group_norm", [str(tiny_bundle)], str(tiny_bundle), bundle, [], str(out))
    assert "isa_cap" not in plain and plain["command"].startswith("python -m tools.openvino_group_norm ")
    assert capped["isa_cap"] == {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}
    assert capped["command"] == f"ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI python -m tools.openvino_group_norm {tiny_bundle}"
    assert json.loads(out.read_text())["isa_cap"] == capped["isa_cap"]


def test_fp16_in_sets_the_fp16_files_arithmetic_and_leaves_the_others(tiny_bundle, tmp_path):
    """--fp16-in f32 / bf16: what a study compiles the fp16 file in, whatever the runner would choose here (bf16
    without AMX is measured by forcing it where the runner runs f32: docs/cpu.md, "bf16 without AMX")."""
    for forced in ("f32", "bf16"):
        out = tmp_path / f"{forced}.json"
        argv = [str(tiny_bundle), "--flavours", "fp32,fp16", "--batches", "1", "--rounds", "1", "--threads", "1"]
        main([*argv, "--fp16-in", forced, "--json", str(out)])
        rows = json.loads(out.read_text())["rows"]
        assert [(r["flavour"], r["inference_precision"]) for r in rows] == [("fp32", "f32"), ("fp16", forced)]


def test_gamma_and_beta_after_against_folded_in_alternating_rounds(tiny_full_bundle, tmp_path):
    out = tmp_path / "affine.json"
    argv = [str(tiny_full_bundle), "--flavours", "fp32,int8-ort", "--batches", "2", "--rounds", "2", "--threads", "1"]
    openvino_group_norm_affine.main([*argv, "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["command"] == "python -m tools.openvino_group_norm_affine " + " ".join([*argv, "--json", str(out)])
    graph = onnx.load(f"{tiny_full_bundle}/model.fp32.onnx").graph
    norms = sum(n.op_type == "InstanceNormalization" for n in graph.node)
    rows = result["rows"]
    assert [row["flavour"] for row in rows] == ["fp32", "int8-ort"]
    for row in rows:
        after, folded = row["gamma_beta_after"], row["folded"]
        assert after["group_norms"] == folded["group_norms"] == norms > 0  # every GroupNorm rewritten, every one folded
        ratios = [round(a / b, 3) for a, b in zip(after["ms_per_image"], folded["ms_per_image"], strict=True)]
        assert row["gamma_beta_after_over_folded"] == ratios and row["median_ratio"] == statistics.median(ratios)
    fp32, int8 = rows
    for form in ("gamma_beta_after", "folded"):
        assert fp32[form]["vs_tf"]["rel_l2"] < 1e-4, fp32[form]["vs_tf"]  # f32: the fold moves nothing that matters
        assert int8[form]["vs_tf"]["cosine_min"] > 0.95, int8[form]["vs_tf"]
