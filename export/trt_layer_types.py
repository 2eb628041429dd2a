"""What a parsed TensorRT network will run in: each layer type counted by the type of its outputs.

TensorRT 11 and TensorRT-RTX type every network strongly: each layer runs in the type the ONNX gives it, so the
parser's network is the precision the plan gets (fusions change which kernels run, not these types). The table is
taken from the network bit-trt builds each plan from and kept in the plan's manifest record, so a bundle says
what a GPU user will get. An INT8 convolution shows as a convolution whose input comes from a DequantizeLinear
(TensorRT folds the pair into one INT8 kernel); its own output type is what follows it.
"""

from __future__ import annotations

# Layers that hold shapes, indices or weights rather than run on activations, and the integer types of shape
# arithmetic: left out of the precision mix.
SHAPE_LAYERS = ("CONSTANT", "SHAPE", "GATHER", "CAST", "SLICE", "SQUEEZE", "UNSQUEEZE", "IDENTITY")
INDEX_TYPES = ("INT32", "INT64", "BOOL")


def _name(enum_value) -> str:
    return str(enum_value).rsplit(".", 1)[-1]


def layer_types(network) -> dict[str, dict[str, int]]:
    """{layer type: {output type: count}} of a parsed network, e.g. {"CONVOLUTION": {"HALF": 53}}, sorted."""
    table: dict[str, dict[str, int]] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        row = table.setdefault(_name(layer.type), {})
        for j in range(layer.num_outputs):
            dtype = _name(layer.get_output(j).dtype)
            row[dtype] = row.get(dtype, 0) + 1
    return {kind: dict(sorted(row.items())) for kind, row in sorted(table.items())}


def int8_convolutions(network) -> tuple[int, int]:
    """(convolutions whose data input comes from a DequantizeLinear, all convolutions)."""
    producers = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            producers[layer.get_output(j).name] = _name(layer.type)
    convolutions = [
        network.get_layer(i) for i in range(network.num_layers) if _name(network.get_layer(i).type) == "CONVOLUTION"
    ]
    quantized = sum(producers.get(conv.get_input(0).name) == "DEQUANTIZE" for conv in convolutions)
    return quantized, len(convolutions)


def precision_mix(network) -> dict:
    """The manifest's account of a plan's precisions: the table, INT8 convolutions, and the activation layers (all
    but SHAPE_LAYERS, Quantize and Dequantize, and shape arithmetic) per output type, with a one-line summary."""
    table = layer_types(network)
    quantized, convolutions = int8_convolutions(network)
    compute: dict[str, int] = {}
    for kind, row in table.items():
        if kind in SHAPE_LAYERS or kind in ("QUANTIZE", "DEQUANTIZE"):
            continue
        for dtype, count in row.items():
            if dtype not in INDEX_TYPES:
                compute[dtype] = compute.get(dtype, 0) + count
    others = ", ".join(f"{count} {dtype}" for dtype, count in sorted(compute.items(), key=lambda kv: -kv[1]))
    return {
        "layer_types": table,
        "int8_convolutions": quantized,
        "convolutions": convolutions,
        "activation_layers": dict(sorted(compute.items())),
        "summary": f"INT8 convolutions {quantized}/{convolutions}; activation layers by output type: {others}",
    }
