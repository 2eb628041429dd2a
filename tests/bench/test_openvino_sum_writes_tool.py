"""tools/openvino_sum_writes.py on the tiny bundle's INT8 file: each sum written per reader against once, timed in
alternating rounds, the ratios those rounds', both forms the same numbers. No timing asserts."""

import json
import statistics

from tools.openvino_sum_writes import main


def test_each_sum_per_reader_against_once_in_alternating_rounds(tiny_full_bundle, tmp_path):
    out = tmp_path / "writes.json"
    argv = [str(tiny_full_bundle), "--batches", "2", "--rounds", "2", "--threads", "1", "--json", str(out)]
    main(argv)
    result = json.loads(out.read_text())
    command = " ".join([*argv, "--flavours", "int8-ort"])  # the INT8 file unless told
    assert result["command"] == f"python -m tools.openvino_sum_writes {command}"
    (row,) = result["rows"]
    assert row["flavour"] == "int8-ort"
    per_reader, once = row["sums_per_reader"], row["sums_once"]
    # every sum fed from its convolutions in both; in the second each is read through one Maximum
    assert per_reader["sums"] >= 1 and once["sums"] == per_reader["sums"]
    assert per_reader["vs_tf"] == once["vs_tf"]  # max(x, -inf) is x
    ratios = [round(a / b, 3) for a, b in zip(per_reader["ms_per_image"], once["ms_per_image"], strict=True)]
    assert row["sums_per_reader_over_sums_once"] == ratios and row["median_ratio"] == statistics.median(ratios)
