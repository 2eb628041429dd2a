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
parser then reads it from a temporary file (a serialized copy in memory would sit beside the parser's own).
`ort-trt` and bit-triton read the bundle's files as written (InstanceNormalization form).
"""

from __future__ import annotations

import os

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


def to_native(model) -> dict:
    """Rewrite `model` in place: every InstanceNormalization-form GroupNorm becomes one GroupNormalization-21
    (opset raised to 21). Returns how many became native and how many InstanceNormalizations are left."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    regions = _instance_norm_regions(graph)
    native, doomed = {}, set()
    for reshape, norm, back, mul, add in regions:
        scope = norm.name.rsplit("/", 1)[0]
        params = []
        for node, what in ((mul, "scale"), (add, "bias")):
            per_channel = numpy_helper.to_array(inits[node.input[1]]).reshape(-1)
            graph.initializer.append(numpy_helper.from_array(per_channel, f"{scope}/native_{what}"))
            params.append(f"{scope}/native_{what}")
        native[id(add)] = helper.make_node(
            "GroupNormalization",
            [reshape.input[0], *params],
            [add.output[0]],
            name=f"{scope}/GroupNormalization",
            epsilon=next((a.f for a in norm.attribute if a.name == "epsilon"), 1e-5),
            num_groups=int(numpy_helper.to_array(inits[reshape.input[1]])[1]),
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


def plan_graph(
    onnx_path: str, precision: str, parity, threads=None, progress=lambda msg: None, out_path: str | None = None
) -> tuple[bytes | str, dict]:
    """The native-form graph of the variant at `onnx_path`, serialized for the parser (or, with `out_path`, written
    there and its path), and its record, after ONNX Runtime ran it on the first PROBE_IMAGES of the parity set
    (`parity`: uint8 images, TF's logits) within the variant's tolerance against TF (the one bit-check holds it
    to). Raises BitError, naming the file, when it does not."""
    import onnx

    from ..engine.memory import release_memory
    from .ort_logits import detach_weights, ort_logits

    name = os.path.basename(onnx_path)
    try:
        model = onnx.load(onnx_path)
    except Exception as exc:  # protobuf's DecodeError and friends: one line naming the file
        raise BitError(f"{name} is not a readable ONNX model ({str(exc).splitlines()[0][:200]})") from exc
    counts = to_native(model)
    if not counts["native"]:
        raise BitError(f"{name} has no GroupNorm in InstanceNormalization form to rewrite")
    # ORT checks the graph with its weights fed as inputs (no serialized copy); once they are numpy arrays and the
    # parser's file is written, the ModelProto goes: the weights are held once while ORT runs, not twice. The
    # parser reads the file only after the check passes (the caller builds after this returns).
    fed = detach_weights(model)  # before _save: above 2 GB it moves the weights out of the model into a file
    if out_path is not None:  # a file for the parser: no serialized copy of the weights beside the model
        _save(model, out_path)
        model = None
        release_memory()
    images, tf_logits = (part[:PROBE_IMAGES] for part in parity)  # a rewrite's check, as for the export's others
    try:
        logits = ort_logits(fed, images, threads=threads)
    except BitError as exc:
        raise BitError(f"{name} with native GroupNormalization: {exc}") from exc
    del fed
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
    record = {
        "form": "native",
        **counts,
        "opset": NATIVE_OPSET,
        "parity": {k: verdict[k] for k in ("samples", "rel_l2", "cosine_min", "top1_agreement", "passed")},
    }
    # for the parser, serialized once ORT's session and the fed weights are gone; or the file written above
    return (model.SerializeToString() if out_path is None else out_path), record


def _save(model, path: str) -> None:
    from .bundle_writer import EXTERNAL_DATA_THRESHOLD
    from .graph_cleanup import model_bytes, save_streamed

    if model_bytes(model) <= EXTERNAL_DATA_THRESHOLD:
        save_streamed(model, path)
        return
    import onnx

    onnx.save_model(  # above protobuf's 2 GB: the weights beside it, as in the bundle
        model,
        path,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=f"{os.path.basename(path)}.data",
        size_threshold=1024,
    )
