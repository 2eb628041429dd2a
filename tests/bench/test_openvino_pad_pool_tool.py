"""tools/openvino_pad_pool.py on the tiny bundle: both forms (GroupNorms rewritten in both) timed in alternating
rounds, the ratios those rounds', the Pad gone from the folded form's profile, the same agreement with TF. No
timing asserts."""

import json
import statistics

from tools.openvino_pad_pool import main


def test_the_pad_as_read_against_folded_in_alternating_rounds(tiny_bundle, tmp_path):
    out = tmp_path / "pad_pool.json"
    argv = [str(tiny_bundle), "--flavours", "fp32", "--batches", "2", "--rounds", "2", "--threads", "1"]
    main([*argv, "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["command"] == "python -m tools.openvino_pad_pool " + " ".join([*argv, "--json", str(out)])
    (row,) = result["rows"]
    before, after = row["pad_as_read"], row["pad_folded"]
    assert (before["pads_folded"], after["pads_folded"]) == (0, 1)
    assert not any(k.startswith("Pad ") for k in after["share_by_layer_type"])
    assert before["vs_tf"] == after["vs_tf"] and before["vs_tf"]["rel_l2"] < 1e-4  # exact: the same logits
    ratios = [round(a / b, 3) for a, b in zip(before["ms_per_image"], after["ms_per_image"], strict=True)]
    assert row["pad_as_read_over_pad_folded"] == ratios and row["median_ratio"] == statistics.median(ratios)
