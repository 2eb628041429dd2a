"""Which GroupNorm form a TensorRT plan is built from: the bundle's InstanceNormalization form, or ONNX's native
GroupNormalization (opset 21), rewritten when the plan is built and checked against TF before the build.

The bundle's ONNX files keep the form ONNX Runtime and OpenVINO run as one kernel (`graph_cleanup`:
Reshape[N,G,-1] -> InstanceNormalization -> Reshape -> Mul(gamma) -> Add(beta)). TensorRT's maintainers
recommend the native operator for TensorRT 10+, where the InstanceNormalization form regressed from 8.6
(docs/tensorrt.md links the thread). Opset 18's GroupNormalization takes a scale and bias per *group*, which is
wrong for BiT's per-channel gamma and beta; opset 21 takes them per channel, so the five nodes become one.

The rewrite happens in memory when a plan is built (`bit-export`'s engine step and `bit-engine`) rather than as
more files in the bundle: R50x3's fp32 graph alone is 870 MB. Before the parser sees it, the rewritten graph runs
on ONNX Runtime over the first images of the bundle's parity set (export/parity.py's PROBE_IMAGES, as for every
graph rewrite) and must meet the variant's own tolerance against TF's logits; the
parser then reads the same file. That file holds the graph alone: its weights are the variant's own bytes on
disk, referred to as external data (export/weights_by_reference.py), so neither ORT's check nor the parser's
file copies them.
`ort-trt` and bit-triton read the bundle's files as written (InstanceNormalization form).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import numpy as np

from ..engine import compare
from ..engine.errors import BitError
from ..engine.precision import precision_of
from .graph_cleanup import graph_index, remove_dead
from .parity import PROBE_IMAGES

FORMS = ("native", "instance-norm")
NATIVE_OPSET = 21  # GroupNormalization-21: per-channel scale and bias (18's are per group)


def _instance_norm_regions(graph) -> list[tuple]:
    """Each (Reshape, InstanceNormalization, Reshape, Mul, Add) chain whose every link has one consumer and
    whose gamma and beta are initializers: the form `graph_cleanup.fuse_group_norms` writes."""
    producer, consumers = graph_index(graph)
    inits = {i.name for i in graph.initializer}
    regions = []
    for norm in graph.node:
        if norm.op_type != "InstanceNormalization":
            continue
        chain = [producer.get(norm.input[0]), norm]
        while len(chain) < 5:
            after = consumers.get(chain[-1].output[0], [])
            if len(after) != 1:
                break
            chain.append(after[0])
        if [n.op_type if n else None for n in chain] != ["Reshape", "InstanceNormalization", "Reshape", "Mul", "Add"]:
            continue
        if chain[3].input[1] in inits and chain[4].input[1] in inits and chain[0].input[1] in inits:
            regions.append(tuple(chain))
    return regions


def to_native(model, folder: str = "") -> dict:
    """Rewrite `model` in place: every InstanceNormalization-form GroupNorm becomes one GroupNormalization-21
    (opset raised to 21). Returns how many became native and how many InstanceNormalizations are left.
    folder: where the model's external data is, if its gamma, beta or shapes are there."""
    from onnx import helper, numpy_helper

    from .weights_by_reference import to_array

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    regions = _instance_norm_regions(graph)
    native, doomed = {}, set()
    for reshape, norm, back, mul, add in regions:
        scope = norm.name.rsplit("/", 1)[0]
        params = []
        for node, what in ((mul, "scale"), (add, "bias")):
            per_channel = to_array(inits[node.input[1]], folder).reshape(-1)
            graph.initializer.append(numpy_helper.from_array(per_channel, f"{scope}/native_{what}"))
            params.append(f"{scope}/native_{what}")
        native[id(add)] = helper.make_node(
            "GroupNormalization",
            [reshape.input[0], *params],
            [add.output[0]],
            name=f"{scope}/GroupNormalization",
            epsilon=next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5),
            num_groups=int(to_array(inits[reshape.input[1]], folder)[1]),
        )
        doomed |= {id(reshape), id(norm), id(back), id(mul)}
    # Each GroupNormalization stands where its chain's last node stood, so the order stays topological.
    kept = [native.get(id(n), n) for n in graph.node if id(n) not in doomed]
    del graph.node[:]
    graph.node.extend(kept)
    remove_dead(model)  # the chains' shape constants (and a Shape node, where a shape was not static)
    if regions:
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx"):
                opset.version = max(opset.version, NATIVE_OPSET)
    return {"native": len(regions), "instance_norm": sum(n.op_type == "InstanceNormalization" for n in graph.node)}


@contextlib.contextmanager
def native_graph(
    onnx_path: str, precision: str, parity, threads=None, progress=lambda msg: None
) -> Iterator[tuple[str, dict]]:
    """Yields (path, record): the native-form graph of the variant at `onnx_path`, written for the parser, and its
    record, after ONNX Runtime ran it on the first PROBE_IMAGES of the parity set (`parity`: uint8 images, TF's
    logits) within the variant's tolerance against TF (the one bit-check holds it to). Raises BitError, naming
    the file, when it does not. The graph refers to the variant's own bytes for its weights
    (`weights_by_reference`): neither the check nor the file copies them; the file goes on exit."""
    from ..engine.memory import release_memory
    from .ort_logits import ort_logits
    from .weights_by_reference import graph_by_reference

    name = os.path.basename(onnx_path)
    with graph_by_reference(onnx_path) as (model, folder):
        counts = to_native(model, folder)
        if not counts["native"]:
            raise BitError(f"{name} has no GroupNorm in InstanceNormalization form to rewrite")
        path = os.path.join(folder, name)
        with open(path, "wb") as f:
            f.write(model.SerializeToString())  # kilobytes: the weights stay where they are
        del model
        images, tf_logits = (part[:PROBE_IMAGES] for part in parity)  # a rewrite's check, as for the export's others
        try:  # low_memory: for one image, packing the weights for ORT's kernels costs more than it saves
            logits = ort_logits(path, images, threads=threads, low_memory=True)
        except BitError as exc:
            raise BitError(f"{name} with native GroupNormalization: {exc}") from exc
        release_memory()
        verdict = compare.report(logits, np.asarray(tf_logits), compare.tolerance_for(precision_of(precision)))
        progress(
            f"{name}: {counts['native']} GroupNorms native (opset {NATIVE_OPSET}), on ONNX Runtime "
            f"rel L2 {verdict['rel_l2']:.2e} against TF -> {'ok' if verdict['passed'] else 'over tolerance'}"
        )
        if not verdict["passed"]:
            raise BitError(
                f"{name} with native GroupNormalization misses its tolerance against TF "
                f"({'; '.join(verdict['failures'])}); build with --group-norm instance-norm"
            )
        yield (
            path,
            {
                "form": "native",
                **counts,
                "opset": NATIVE_OPSET,
                "parity": {k: verdict[k] for k in ("samples", "rel_l2", "cosine_min", "top1_agreement", "passed")},
            },
        )
