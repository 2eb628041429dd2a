"""tools/openvino_batch_split.py on the tiny bundle: each round pairs the batch as one request with the same images
one at a time, the ratios are those rounds', and both ways compute the same logits. No timing asserts."""

import json
import statistics

from tools.openvino_batch_split import main


def test_each_round_pairs_one_request_with_one_per_image(tiny_bundle, tmp_path):
    from bit_trt.engine.openvino_runner import arithmetic_for, import_openvino

    out = tmp_path / "split.json"
    argv = [str(tiny_bundle), "--flavours", "fp32,fp16", "--batch", "3", "--rounds", "2", "--threads", "1"]
    main([*argv, "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["variant"] == "tiny" and result["command"] == "python -m tools.openvino_batch_split " + " ".join(
        [*argv, "--json", str(out)]
    )
    bf16 = arithmetic_for(import_openvino().Core(), "fp16") == "bf16"
    for row, flavour in zip(result["rows"], ("fp32", "fp16"), strict=True):
        assert row["flavour"] == flavour and row["batch"] == 3 and row["threads"] == 1
        assert row["inference_precision"] == ("bf16" if flavour == "fp16" and bf16 else "f32")
        batched, split = row["ms_per_image_batched"], row["ms_per_image_split"]
        assert len(batched) == len(split) == 2 and min(batched + split) > 0
        assert row["batched_over_split"] == [round(b / s, 3) for b, s in zip(batched, split, strict=True)]
        assert row["median_ratio"] == statistics.median(row["batched_over_split"])
        assert 0 <= row["max_difference_over_max_logit"] < (2e-2 if row["inference_precision"] == "bf16" else 1e-4)
