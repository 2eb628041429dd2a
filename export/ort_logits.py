"""What ONNX Runtime answers for a set of uint8 images: the export's own verification runs (parity, FP16
island search, INT8 gate and sensitivity), in batches, with a runner that is made and dropped per call.

An in-memory model (a ModelProto: a rewrite being checked) is not serialized whole for ORT, which would hold
the weights three times over (the model, its serialized bytes, ORT's parsed copy). ORT gets the graph with each
large initializer turned into a graph input (`graph_cleanup.light_copy`, kilobytes), and the weights are fed
with every batch as numpy arrays, which ORT reads in place: one copy of the weights beside the model.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ..engine.errors import BitError
from ..engine.ort_runner import OrtRunner
from ..engine.preprocess import scale_uint8

FED_ABOVE_BYTES = 1 << 20  # initializers fed with each batch rather than serialized: the weights, not shapes


def batched(fn, images_u8: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([fn(scale_uint8(images_u8[i : i + batch])) for i in range(0, len(images_u8), batch)])


class _FedWeightsRunner(OrtRunner):
    """ORT on a graph whose weights are graph inputs, fed with every batch from `weights` (zero-copy on the CPU)."""

    def __init__(self, model: bytes, weights: dict[str, np.ndarray], **kw):
        super().__init__(model, **kw)
        self.weights = weights

    def _feeds(self, batch: np.ndarray) -> dict:
        return {self.input_name: batch, **self.weights}


@dataclasses.dataclass
class FedModel:
    """A model split for ORT as the module docstring says: the serialized graph without its large initializers,
    and those as numpy arrays. Independent of the ModelProto it came from, which its holder may then drop, so that
    the weights are held once (as arrays) while ORT runs instead of twice (the model's and the arrays)."""

    graph: bytes
    weights: dict[str, np.ndarray]


def detach_weights(model) -> FedModel:
    from onnx import numpy_helper

    from .graph_cleanup import light_copy

    light = light_copy(model, max_bytes=FED_ABOVE_BYTES)
    fed = {i.name for i in light.graph.input}
    weights = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer if init.name in fed}
    first = light.graph.input[0].name
    if first in weights:  # light_copy keeps the model's own inputs first; the image is the one input not fed
        raise BitError(f"internal: the model's first input {first!r} is a weight")
    return FedModel(light.SerializeToString(), weights)


def ort_logits(
    model, images_u8: np.ndarray, batch: int = 4, threads: int | None = None, low_memory: bool = False
) -> np.ndarray:
    """`model`: an onnx.ModelProto (its weights fed as inputs, see the module docstring), a FedModel (the same,
    already split from its ModelProto), serialized bytes, or a path."""
    if hasattr(model, "SerializeToString"):
        model = detach_weights(model)
    if isinstance(model, FedModel):
        runner = _FedWeightsRunner(model.graph, model.weights, threads=threads, low_memory=low_memory)
    else:
        runner = OrtRunner(model, threads=threads, low_memory=low_memory)
    with runner:
        runner.model = None  # ORT holds its own copy now: let the serialized bytes go
        return batched(runner.infer, images_u8, batch)
