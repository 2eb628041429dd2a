"""FP16 variant: the FP32 graph cast to float16, float32 inputs and outputs kept, FP32 islands where measured.

Tool: ONNX Runtime's own float16 converter (`onnxruntime.transformers.float16`). It is the maintained
successor of onnxconverter-common's converter, ships inside the onnxruntime wheel we already pin (no new
dependency, versioned with the runtime that verifies its output), and supports op- and node-level block
lists, which is what FP32 islands need. ModelOpt AutoCast does the same search but pulls in a large
NVIDIA stack that cannot be verified on our CPU-only CI.

Islands are chosen by measurement: each candidate op type is kept in FP32 in turn, its effect on the
logits measured against the FP32 graph, and types are added greedily, most helpful first, until the
FP16 tolerance holds. Measured on R50x1 synthetic: all-FP16 rel L2 3.0e-3; keeping InstanceNormalization
in FP32 made it *worse* (4.0e-3, the extra casts round at every boundary), so no island is the default
outcome unless the model's activations need one.
"""

from __future__ import annotations

import numpy as np

from ..engine import compare
from ..engine.errors import BitError
from .ort_logits import ort_logits

# Reductions and normalization are the usual FP16 suspects; the head's MatMul accumulates 2048-6144 terms.
CANDIDATE_ISLANDS = ("InstanceNormalization", "GlobalAveragePool", "MatMul", "Add", "Mul")
# The parity images the island search measures each trial on (the first ones): a search weighs errors, which one
# image would tell less well than it tells a broken rewrite (export/parity.py's PROBE_IMAGES).
SEARCH_IMAGES = 2


def to_fp16(fp32_model, keep_fp32: tuple[str, ...] = (), copy: bool = True):
    """A float16 version of `fp32_model`, with ops of `keep_fp32` types in FP32: a copy (`fp32_model` left
    untouched), or with copy=False `fp32_model` itself converted (a caller that drops it saves a copy)."""
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    from ..engine.onnx_order import canonicalize

    model = fp32_model
    if copy:
        model = onnx.ModelProto()
        model.CopyFrom(fp32_model)
    _add_inferred_types(model)
    model = convert_float_to_float16(
        model,
        keep_io_types=True,
        op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(keep_fp32),
        disable_shape_infer=True,  # done above, without the weights
    )
    # The converter appends its input Cast after the nodes that read it: onnx.checker rejects that order and
    # shape inference silently stops at it. Restore a topological order.
    canonicalize(model, initializers=False)
    return model


def _add_inferred_types(model) -> None:
    """The value_info the converter's own shape inference would add, inferred on the model without its weights:
    onnx.shape_inference on the whole model serializes it and parses it back (R50x3: 870 MB, several times over)."""
    import onnx

    from .graph_cleanup import light_copy

    inferred = onnx.shape_inference.infer_shapes(light_copy(model))
    graph = model.graph
    known = {v.name for v in (*graph.value_info, *graph.input, *graph.output)}
    graph.value_info.extend(v for v in inferred.graph.value_info if v.name not in known)


def search_islands(
    fp32_model,
    probe_u8: np.ndarray,
    fp32_logits: np.ndarray,
    tolerance: compare.Tolerance = compare.FP16_PARITY,
    threads: int | None = None,
    progress=print,
):
    """(fp16 model, islands kept in FP32, measurement table). Raises if no island set meets the tolerance.
    `fp32_model`: a ModelProto, or the path of one, read afresh for each trial (no FP32 copy held between them)."""
    import onnx

    if isinstance(fp32_model, str):
        path = fp32_model
        present = {n.op_type for n in onnx.load(path, load_external_data=False).graph.node}
        fresh = lambda keep: to_fp16(onnx.load(path), keep, copy=False)  # noqa: E731
    else:
        present = {n.op_type for n in fp32_model.graph.node}
        fresh = lambda keep: to_fp16(fp32_model, keep)  # noqa: E731
    candidates = [op for op in CANDIDATE_ISLANDS if op in present]
    table = []

    def trial(keep):
        model = fresh(tuple(keep))
        metrics = compare.measure(ort_logits(model, probe_u8, threads=threads), fp32_logits)
        failures = tolerance.check(metrics)
        table.append(
            {
                "keep_fp32": list(keep),
                "rel_l2": metrics["rel_l2"],
                "cosine_min": metrics["cosine_min"],
                "passed": not failures,
            }
        )
        progress(
            f"fp16 with {list(keep) or 'no'} FP32 islands: rel L2 {metrics['rel_l2']:.2e} vs FP32 "
            f"({'ok' if not failures else 'over tolerance'})"
        )
        return model, metrics, failures

    model, metrics, failures = trial([])
    if not failures:
        return model, [], table
    del model
    single = sorted((trial([op])[1]["rel_l2"], op) for op in candidates)
    keep = []
    for _, op in single:  # most helpful first, until the tolerance holds
        keep.append(op)
        model, metrics, failures = trial(keep)
        if not failures:
            return model, keep, table
    raise BitError(f"FP16 misses its tolerance even with {keep} in FP32: {'; '.join(failures)}")
