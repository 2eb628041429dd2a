"""tools/openvino_group_norm.py on the tiny bundle: both forms timed in alternating rounds, the ratios those rounds',
the rewrite done on every GroupNorm and gone from the Reorders it caused, both forms close to TF. No timing asserts."""

import json
import statistics

import onnx

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
