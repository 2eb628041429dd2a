"""tools/openvino_requantized_sum.py on the tiny bundle's INT8 file: the sums as read against rewritten, timed in
alternating rounds, the ratios those rounds', both forms held against TF. No timing asserts."""

import json
import statistics

from tools.openvino_requantized_sum import main


def test_the_sums_as_read_against_rewritten_in_alternating_rounds(tiny_full_bundle, tmp_path):
    out = tmp_path / "sums.json"
    argv = [str(tiny_full_bundle), "--batches", "2", "--rounds", "2", "--threads", "1", "--json", str(out)]
    main(argv)
    result = json.loads(out.read_text())
    command = " ".join([*argv, "--flavours", "int8-ort"])  # the INT8 file unless told
    assert result["command"] == f"python -m tools.openvino_requantized_sum {command}"
    (row,) = result["rows"]
    assert row["flavour"] == "int8-ort"
    before, after = row["sums_as_read"], row["sums_rewritten"]
    assert before["sums_rewritten"] == 0 and after["sums_rewritten"] >= 1
    for form in (before, after):  # INT8 against TF, either way (compare.INT8_CHECK's cosine)
        assert form["vs_tf"]["cosine_min"] > 0.95, form["vs_tf"]
    ratios = [round(a / b, 3) for a, b in zip(before["ms_per_image"], after["ms_per_image"], strict=True)]
    assert row["sums_as_read_over_sums_rewritten"] == ratios and row["median_ratio"] == statistics.median(ratios)
