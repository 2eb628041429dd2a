"""Each plan's manifest record says what it runs in, read from the network NVIDIA's parser built (TensorRT-RTX here,
strongly typed like TensorRT 11): layer types by output type, and the convolutions fed by a DequantizeLinear."""

import json

import pytest

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is part of the CI install (.[rtx])")


def _plans(bundle) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return {a["flavour"]: a["precision_mix"] for a in manifest["artifacts"] if a["kind"] == "engine"}


def test_every_plan_records_its_precision_mix(tiny_full_bundle):
    plans = _plans(tiny_full_bundle)
    assert set(plans) == {"fp32", "fp16", "int8-trt"}
    for flavour, mix in plans.items():
        print(f"\n{flavour}: {mix['summary']}")
        for kind, row in mix["layer_types"].items():
            print(f"  {kind:<16} " + "  ".join(f"{dtype} {n}" for dtype, n in row.items()))
        assert mix["convolutions"] == 17  # the tiny variant: a stem, 4 blocks of 1 unit with projections, ...
        layers = sum(n for row in mix["layer_types"].values() for n in row.values())
        assert layers >= sum(mix["activation_layers"].values()) > 100
    assert plans["fp32"]["activation_layers"] == {"FLOAT": 135} and plans["fp32"]["int8_convolutions"] == 0
    # fp16: every activation layer in HALF (the tiny model needs no FP32 island: its record lists none)
    assert plans["fp16"]["activation_layers"] == {"HALF": 135} and plans["fp16"]["int8_convolutions"] == 0
    # int8-trt: every convolution reads a DequantizeLinear, so TensorRT runs it in INT8
    int8 = plans["int8-trt"]
    assert int8["int8_convolutions"] == int8["convolutions"] and int8["layer_types"]["QUANTIZE"] == {"INT8": 32}
