"""What a parsed TensorRT network will run in: each layer type counted by the type of its outputs.

TensorRT 11 and TensorRT-RTX type every network strongly: each layer runs in the type the ONNX gives it, so the
parser's network is the precision the plan gets (fusions change which kernels run, not these types). The table is
taken from the network bit-trt builds each plan from and kept in the plan's manifest record, so a bundle says
what a GPU user will get. An INT8 convolution shows as a convolution whose input comes from a DequantizeLinear
(TensorRT folds the pair into one INT8 kernel); its own output type is what follows it.
"""

from __future__ import annotations

import math

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


def _producer_types(network) -> dict[str, str]:
    """{tensor name: type of the layer that writes it}."""
    producers = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        for j in range(layer.num_outputs):
            producers[layer.get_output(j).name] = _name(layer.type)
    return producers


def _convolutions(network) -> list:
    return [
        network.get_layer(i) for i in range(network.num_layers) if _name(network.get_layer(i).type) == "CONVOLUTION"
    ]


def int8_convolutions(network) -> tuple[int, int]:
    """(convolutions whose data input comes from a DequantizeLinear, all convolutions)."""
    producers = _producer_types(network)
    convolutions = _convolutions(network)
    quantized = sum(producers.get(conv.get_input(0).name) == "DEQUANTIZE" for conv in convolutions)
    return quantized, len(convolutions)


def _as_convolution(layer, trt):
    layer.__class__ = trt.IConvolutionLayer  # the bindings hand out ILayer; this is how one reaches a subclass
    return layer


def convolution_macs(network, trt) -> tuple[int, int]:
    """(multiply-accumulates per image in convolutions fed by a DequantizeLinear, in all convolutions), from each
    convolution's kernel, groups and static output shape (the batch dimension is left out)."""
    producers = _producer_types(network)
    quantized = total = 0
    for layer in _convolutions(network):
        conv = _as_convolution(layer, trt)
        out = [int(d) for d in conv.get_output(0).shape][1:]
        in_channels = int(conv.get_input(0).shape[1])
        kernel = [int(k) for k in conv.kernel_size_nd]
        macs = max(0, math.prod(out)) * (in_channels // max(1, conv.num_groups)) * math.prod(kernel)
        total += macs
        if producers.get(conv.get_input(0).name) == "DEQUANTIZE":
            quantized += macs
    return quantized, total


def precision_mix(network, trt=None) -> dict:
    """The manifest's account of a plan's precisions: the table, INT8 convolutions, and the activation layers (all
    but SHAPE_LAYERS, Quantize and Dequantize, and shape arithmetic) per output type, with a one-line summary."""
    table = layer_types(network)
    quantized, convolutions = int8_convolutions(network)
    compute: dict[str, int] = {}
    kinds: dict[str, dict[str, int]] = {}  # {output type: {layer type: count}}, for the summary's minorities
    for kind, row in table.items():
        if kind in SHAPE_LAYERS or kind in ("QUANTIZE", "DEQUANTIZE"):
            continue
        for dtype, count in row.items():
            if dtype not in INDEX_TYPES:
                compute[dtype] = compute.get(dtype, 0) + count
                kinds.setdefault(dtype, {})[kind] = count
    # The two measures the ModelOpt comparison reads: INT8's share of the convolutions' work, and FP16's share of
    # every other activation layer (all layers the table counts but convolutions).
    non_conv = {d: n - table.get("CONVOLUTION", {}).get(d, 0) for d, n in compute.items()}
    shares = {"fp16_non_conv_share": non_conv.get("HALF", 0) / max(1, sum(non_conv.values()))}
    int8 = f"INT8 convolutions {quantized}/{convolutions}"
    if trt is not None:
        int8_macs, macs = convolution_macs(network, trt)
        shares["int8_conv_mac_share"] = int8_macs / max(1, macs)
        shares["conv_gmacs_per_image"] = round(macs / 1e9, 3)
        int8 += f" ({shares['int8_conv_mac_share']:.0%} of their MACs)"
    ranked = sorted(compute.items(), key=lambda kv: -kv[1])
    others = [f"{dtype} {count} layers" for dtype, count in ranked[:1]]
    others += [
        f"{dtype} {count} ({', '.join(f'{k} {n}' for k, n in sorted(kinds[dtype].items()))})"
        for dtype, count in ranked[1:]
    ]
    if "FLOAT" not in compute:
        others.append("no FLOAT layer")
    return {
        "layer_types": table,
        "int8_convolutions": quantized,
        "convolutions": convolutions,
        "activation_layers": dict(sorted(compute.items())),
        **shares,
        "summary": f"{int8}; {'; '.join(others)}",
    }
