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
        _print_table(f"tiny {flavour}", mix)
        assert mix["convolutions"] == 17  # the tiny variant: a stem, 4 blocks of 1 unit with projections, ...
        layers = sum(n for row in mix["layer_types"].values() for n in row.values())
        assert layers >= sum(mix["activation_layers"].values()) == 57
    # 57 activation layers: 17 convolutions, 13 native GroupNorms, 13 ReLUs, the residual Adds and the head
    assert plans["fp32"]["activation_layers"] == {"FLOAT": 57} and plans["fp32"]["int8_convolutions"] == 0
    # fp16: every activation layer in HALF (the tiny model needs no FP32 island: its record lists none)
    assert plans["fp16"]["activation_layers"] == {"HALF": 57} and plans["fp16"]["int8_convolutions"] == 0
    assert plans["fp16"]["fp16_non_conv_share"] == 1.0 and plans["fp32"]["fp16_non_conv_share"] == 0.0
    # int8-trt: every convolution but a stem measured to stay in float reads a DequantizeLinear, so TensorRT runs
    # it in INT8; everything else in FP16 (TensorRT 11 has no --fp16 fallback: the graph says it), Dequantize
    # included (float16 scales, opset 19). No FLOAT layer but the cast of the network's float32 output.
    int8 = plans["int8-trt"]
    stem_float = _int8_record(tiny_full_bundle)["edge_layers"][0]["in_float"]
    assert int8["int8_convolutions"] == int8["convolutions"] - stem_float
    assert int8["activation_layers"] == {"HALF": 57} and set(int8["layer_types"]["DEQUANTIZE"]) == {"HALF"}
    assert int8["layer_types"]["CAST"] == {"FLOAT": 1, "HALF": 1, "INT64": 1}
    assert 0.8 < int8["int8_conv_mac_share"] <= 1.0 and int8["fp16_non_conv_share"] == 1.0
    assert (
        "no FLOAT layer" in int8["summary"] and f"INT8 convolutions {int8['int8_convolutions']}/17" in int8["summary"]
    )


def _print_table(name: str, mix: dict) -> None:
    """The parser's table as the test log shows it: layer type x output type, under the plan's summary."""
    print(f"\n{name}: {mix['summary']}")
    for kind, row in mix["layer_types"].items():
        print(f"  {kind:<16} " + "  ".join(f"{dtype} {n}" for dtype, n in row.items()))


def _int8_record(bundle) -> dict:
    manifest = json.loads((bundle / "manifest.json").read_text())
    return next(a for a in manifest["artifacts"] if a["kind"] == "onnx" and a["flavour"] == "int8-trt")


def test_int8_trt_is_int8_and_fp16_and_names_its_islands(tiny_full_bundle):
    manifest = json.loads((tiny_full_bundle / "manifest.json").read_text())
    records = {a["flavour"]: a for a in manifest["artifacts"] if a["kind"] == "onnx"}
    trt, ort = records["int8-trt"], records["int8-ort"]
    assert (trt["float"], ort["float"]) == ("float16", "float32")
    assert trt["fp32_islands"] == records["fp16"]["fp32_islands"] == []  # the tiny model needs none
    assert trt["opset"] == 19 and trt["gate"]["passed"]


def test_an_island_stays_float32_in_the_int8_graph(tiny_full_bundle, tmp_path):
    """TensorRT's INT8 graph keeps the fp16 variant's islands in float32, and the record names their nodes."""
    import tensorrt_rtx as trt

    from bit_trt.engine.tensorrt_library import ErrorLog
    from bit_trt.export import int8
    from bit_trt.export.trt_engine import network_creation_flags
    from bit_trt.export.trt_layer_types import layer_types, precision_mix

    ranges = json.loads((tiny_full_bundle / "calibration.minmax.json").read_text())["ranges"]
    out = str(tmp_path / "island.onnx")
    int8.quantize(str(tiny_full_bundle / "model.fp32.onnx"), out, ranges, "minmax", "tensorrt", (), ("Relu",))
    assert len(int8.graph_record(out, ("Relu",))["fp32_island_nodes"]) == 13
    log = ErrorLog(trt)
    network = trt.Builder(log.logger).create_network(network_creation_flags(trt))
    assert trt.OnnxParser(network, log.logger).parse_from_file(out)
    table = layer_types(network)
    assert table["ACTIVATION"] == {"FLOAT": 13} and table["NORMALIZATION"] == {"HALF": 13}
    summary = precision_mix(network, trt)["summary"]  # what runs in FP32 is named by layer type
    print(f"\nwith a Relu island: {summary}")
    assert "; FLOAT 13 (ACTIVATION 13)" in summary and "no FLOAT layer" not in summary


@pytest.mark.slow
def test_r50x1_int8_trt_is_int8_convolutions_and_fp16_elsewhere(tmp_path):
    """R50x1 (53 convolutions), every TensorRT-bound model through the parser: the INT8 plan's convolutions all read
    a DequantizeLinear (but the stem, where measured to stay in float) and no activation layer is FLOAT (the fp16
    variant needs no island here). 224 px: the parser's table does not depend on the resolution, the calibration's
    cost does."""
    from bit_trt.export.int8 import Int8Options
    from tests.conftest import export_tiny

    out = tmp_path / "r50x1"
    export_tiny(
        out,
        variant="r50x1",
        resolution=224,
        precisions=("fp32", "fp16", "int8"),
        engine="tensorrt_rtx",
        int8=Int8Options(calib_synthetic=True, calib_count=16, eval_count=8),
    )
    plans = _plans(out)
    for flavour, mix in plans.items():
        _print_table(f"R50x1 {flavour}", mix)
    assert plans["fp32"]["int8_convolutions"] == 0 and set(plans["fp32"]["activation_layers"]) == {"FLOAT"}
    assert plans["fp16"]["int8_convolutions"] == 0 and set(plans["fp16"]["activation_layers"]) == {"HALF"}
    int8 = plans["int8-trt"]
    stem_float = _int8_record(out)["edge_layers"][0]["in_float"]
    assert int8["convolutions"] == 53 and int8["int8_convolutions"] == 53 - stem_float
    assert set(int8["activation_layers"]) == {"HALF"} and int8["int8_conv_mac_share"] > 0.9


def test_int8_without_fp16_measures_its_own_islands(tmp_path):
    """With no fp16 variant to take them from, int8-trt's FP16 part gets the same island search, recorded."""
    from bit_trt.export.int8 import Int8Options
    from tests.conftest import export_tiny

    out = tmp_path / "int8-only"
    export_tiny(
        out,
        precisions=("fp32", "int8"),
        engine="none",
        int8=Int8Options(calib_synthetic=True, calib_count=8, eval_count=4),
    )
    record = _int8_record(out)
    assert record["fp32_islands_from"] == "its own search" and record["fp32_islands"] == []
    assert record["island_search"][0]["keep_fp32"] == [] and record["island_search"][0]["passed"]
    assert not (out / "model.fp16.onnx").exists()


def test_int8_with_fp16_takes_the_fp16_variants_islands(tiny_full_bundle):
    record = _int8_record(tiny_full_bundle)
    assert record["fp32_islands_from"] == "model.fp16.onnx" and "island_search" not in record
