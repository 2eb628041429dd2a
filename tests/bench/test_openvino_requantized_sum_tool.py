"""tools/openvino_requantized_sum.py and tools/openvino_sum_writes.py on the tiny bundle's INT8 file: the sums as read
against rewritten, and each rewritten sum written per reader against once, timed in alternating rounds, the ratios
those rounds', both forms held against TF. No timing asserts."""

import json
import statistics

from tools import openvino_requantized_sum, openvino_sum_writes


def paired_row(tool, bundle, tmp_path, first: str, second: str) -> dict:
    """Run `tool` (a module) on the bundle's INT8 file unless told otherwise, check its record's command and its
    rounds' ratios (`first` over `second`), and return its row."""
    out = tmp_path / "paired.json"
    argv = [str(bundle), "--batches", "2", "--rounds", "2", "--threads", "1", "--json", str(out)]
    tool.main(argv)
    result = json.loads(out.read_text())
    command = " ".join([*argv, "--flavours", "int8-ort"])  # the INT8 file unless told
    assert result["command"] == f"python -m {tool.__name__} {command}"
    (row,) = result["rows"]
    assert row["flavour"] == "int8-ort"
    ratios = [round(a / b, 3) for a, b in zip(row[first]["ms_per_image"], row[second]["ms_per_image"], strict=True)]
    assert row[f"{first}_over_{second}"] == ratios and row["median_ratio"] == statistics.median(ratios)
    return row


def test_the_sums_as_read_against_rewritten_in_alternating_rounds(tiny_full_bundle, tmp_path):
    row = paired_row(openvino_requantized_sum, tiny_full_bundle, tmp_path, "sums_as_read", "sums_rewritten")
    before, after = row["sums_as_read"], row["sums_rewritten"]
    assert before["sums_rewritten"] == 0 and after["sums_rewritten"] >= 1
    for form in (before, after):  # INT8 against TF, either way (compare.INT8_CHECK's cosine)
        assert form["vs_tf"]["cosine_min"] > 0.95, form["vs_tf"]


def test_each_sum_per_reader_against_once_in_alternating_rounds(tiny_full_bundle, tmp_path):
    row = paired_row(openvino_sum_writes, tiny_full_bundle, tmp_path, "sums_per_reader", "sums_once")
    per_reader, once = row["sums_per_reader"], row["sums_once"]
    # every sum fed from its convolutions in both; in the second each is read through one Maximum
    assert per_reader["sums"] >= 1 and once["sums"] == per_reader["sums"]
    assert per_reader["vs_tf"] == once["vs_tf"]  # max(x, -inf) is x
