"""INT8 variants as explicit Q/DQ, from calibrated activation ranges, behind an accuracy gate.

Two targets from one set of ranges (the manifest names each):
- `tensorrt`: signed symmetric INT8 activations and per-channel symmetric weights (S8S8): what TensorRT's
  strongly typed networks execute.
- `onnxruntime`: unsigned activations, signed per-channel weights (U8S8). On x86 ONNX Runtime signed
  activations keep 36 of R50x1's 53 Convs from fusing into QLinearConv; U8S8 fuses all of them.

Ranges come from ONNX Runtime's calibrators (minmax, entropy, percentile) and are cached, keyed by the FP32
model's checksum, the calibration set's digest and the method; a cache made for anything else is refused.
Default method, by measurement (bench/results/precision_tiny_digits.json, precision_r50x1_480.json): on the
digits-trained BiT, percentile gave the best INT8 top-1 (int8-trt 99.1% vs minmax 98.4%; FP32 98.9%), but on
R50x1 at 480 its histograms took 76 s and 13.3 GB for 32 images against minmax's 16 s and 1.9 GB: R50x3 would
not fit a 24 GB host. minmax is the default; entropy and percentile are there for models that need them.

Only Conv and MatMul are quantized: GroupNorm (InstanceNormalization) and the elementwise ops stay in float.
TensorRT's graph then has its Q/DQ pairs moved where TensorRT fuses them (export/qdq_placement.py), which needs
the ranges of the residual Adds' inputs too: Add is calibrated beside Conv and MatMul. Its stem and head are
quantized or not by measurement (`edge_decisions`); which other layers stay in float is decided by measurement
too (`sensitivity`), when the gate asks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from ..engine import compare
from ..engine.atomic_write import write_atomic
from ..engine.errors import BitError
from ..engine.memory import release_memory
from ..engine.precision import flavour_for
from ..engine.preprocess import scale_uint8
from ..engine.user_cache import cache_dir, read_kept, write_kept
from .ort_logits import ort_logits
from .parity import ParityError
from .qdq_placement import (
    WEIGHTED_OPS,
    drop_weighted_outputs,
    edge_layers,
    error_share,
    keep_in_float,
    quantize_residual_inputs,
    weighted_macs,
)

METHODS = ("minmax", "entropy", "percentile")
TARGETS = ("tensorrt", "onnxruntime")
QUANTIZED_OPS = WEIGHTED_OPS
CALIBRATED_OPS = (*QUANTIZED_OPS, "Add")  # the residual Adds' inputs: qdq_placement.quantize_residual_inputs
CACHE_FORMAT = "bit-trt-calibration-cache/1"
# Each target's flavour in the bundle (engine/precision.py names them), and how its activations are quantized.
FLAVOURS = {"tensorrt": flavour_for("trt", "int8"), "onnxruntime": flavour_for("ort-cpu", "int8")}
ACTIVATIONS = {"tensorrt": "int8 symmetric", "onnxruntime": "uint8 asymmetric"}
# TensorRT 11 builds what the ONNX says (strongly typed), so TensorRT's graph is INT8 where quantized and FP16
# everywhere else: DequantizeLinear gives float16 (float16 scales), which needs opset 19. ORT's CPU graph stays
# float32 around its U8S8 kernels (the CPU-speed question).
FLOAT_TYPE = {"tensorrt": "float16", "onnxruntime": "float32"}
TENSORRT_OPSET = 19
SENSITIVITY_PROBE = 8  # images per sensitivity measurement: a ranking needs few, and each costs a model run


@dataclass
class Int8Options:
    """How INT8 variants are calibrated and gated (bit-export's INT8 flags; their defaults live here)."""

    calib_images: str | None = None  # a directory; None means synthetic, which must be asked for
    calib_synthetic: bool = False
    calib_count: int = 64
    # R50x3, 16 images: batch 1 38 s / 4.15 GB, batch 2 41 s / 6.44 GB (measured in ORT's default node order, which
    # kept every calibrated tensor to the end of a run; see _low_memory_session)
    calib_batch: int = 1
    calib_seed: int = 0
    method: str = "minmax"  # measured: see the module docstring
    cache: str | None = None  # default: ~/.cache/bit-trt/calibration/<key>.json
    max_top1_drop: float = 0.01
    eval_images: str | None = None  # more evaluation images for the gate (never the calibration set)
    eval_count: int = 64
    force_sensitivity: bool = False

    def validate(self):
        if not self.calib_images and not self.calib_synthetic:
            raise BitError(
                "INT8 needs calibration images: --calib-images DIR (or --calib-synthetic, flagged in the manifest)"
            )
        if (
            self.calib_images
            and self.eval_images
            and os.path.abspath(self.calib_images) == os.path.abspath(self.eval_images)
        ):
            raise BitError("--eval-images must not be the calibration directory: the gate needs unseen images")
        if self.method not in METHODS:
            raise BitError(f"unknown calibration method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.calib_count < 1 or self.calib_batch < 1:
            raise BitError("--calib-count and --calib-batch must be positive")
        if not 0 <= self.max_top1_drop <= 1:
            raise BitError(f"--max-top1-drop is a fraction in [0, 1], got {self.max_top1_drop}")


@dataclass(frozen=True)
class CacheKey:
    model_sha256: str
    calibration_sha256: str
    method: str
    calibrated_ops: tuple[str, ...] = CALIBRATED_OPS  # a cache of fewer ops lacks ranges the placement needs

    def to_dict(self) -> dict:
        return {
            "model_sha256": self.model_sha256,
            "calibration_sha256": self.calibration_sha256,
            "method": self.method,
            "calibrated_ops": list(self.calibrated_ops),
        }


def _ort_method(method: str):
    from onnxruntime.quantization import CalibrationMethod

    if method not in METHODS:
        raise BitError(f"unknown calibration method {method!r}; choose one of: {', '.join(METHODS)}")
    return {
        "minmax": CalibrationMethod.MinMax,
        "entropy": CalibrationMethod.Entropy,
        "percentile": CalibrationMethod.Percentile,
    }[method]


class _Reader:
    """ORT's CalibrationDataReader protocol over uint8 images, with progress."""

    def __init__(self, images_u8, input_name: str, batch: int, progress):
        self.images, self.input_name, self.batch, self.progress = images_u8, input_name, batch, progress
        self.pos = 0

    def get_next(self):
        if self.pos >= len(self.images):
            return None
        chunk = self.images[self.pos : self.pos + self.batch]
        self.pos += len(chunk)
        self.progress(f"calibrating: {self.pos}/{len(self.images)} images")
        return {self.input_name: scale_uint8(chunk)}


def compute_ranges(fp32_path: str, calib_u8: np.ndarray, method: str, batch: int, progress) -> dict:
    """Activation ranges of every Conv/MatMul/Add input and output, as ORT's TensorsData dict."""
    from onnxruntime.quantization.calibrate import CalibrationCacheEncoder, create_calibrator

    with tempfile.TemporaryDirectory(prefix="bit-trt-calib-") as tmp:
        calibrator = create_calibrator(
            fp32_path,
            list(CALIBRATED_OPS),
            os.path.join(tmp, "augmented.onnx"),
            calibrate_method=_ort_method(method),
            use_external_data_format=True,
            extra_options={"CalibPercentile": 99.999} if method == "percentile" else {},
        )
        # ORT's calibrator keeps the model it augmented (its weights' memory with it) and runs a session with the
        # memory arena and weight pre-packing on. From here only the session is needed, and one run at a time is
        # all it does: drop the model, and run the augmented file in a low-memory session (same graph, optimizations
        # off as ORT's own session has them).
        calibrator.model = None
        calibrator.infer_session = None
        release_memory()
        calibrator.infer_session = _low_memory_session(os.path.join(tmp, "augmented.onnx"))
        # Histogram methods hold every intermediate tensor of a batch: keep their batches small.
        calibrator.collect_data(_Reader(calib_u8, "images", batch if method == "minmax" else 1, progress))
        # Plain JSON from here on: the same dict is cached, embedded in the bundle and fed back to ORT.
        ranges = json.loads(json.dumps(calibrator.compute_data().to_dict(), cls=CalibrationCacheEncoder))
        del calibrator
    return ranges


def _low_memory_session(path: str):
    """An ORT CPU session as ORT's calibrator makes one (no graph optimization), without the memory arena and the
    weight pre-packing, which would keep a second copy of the weights and the largest batch's activations.

    Nodes run in priority order: ORT's default order runs the whole activation path before the ReduceMin/ReduceMax
    pairs the calibrator hangs on it, so every calibrated tensor of an image lived until the end of its run (R50x3
    at 480: +2.4 GB per image; R50x1: 1.65 -> 0.36 GB peak). Same kernels on the same inputs: the same ranges."""
    import onnxruntime

    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.enable_cpu_mem_arena = False
    opts.add_session_config_entry("session.disable_prepacking", "1")
    opts.execution_order = onnxruntime.ExecutionOrder.PRIORITY_BASED
    opts.log_severity_level = 3
    return onnxruntime.InferenceSession(path, sess_options=opts, providers=["CPUExecutionProvider"])


def load_cache(path: str, key: CacheKey) -> dict | None:
    """The cached ranges when `path` holds a cache for exactly `key`; None when there is none, or (in the user cache)
    none this user alone may have written: the ranges decide every scale of the INT8 graph."""
    try:
        data = read_kept(path, limit=1 << 28)
        if data is None:
            return None
        cache = json.loads(data)
    except (OSError, ValueError) as exc:
        raise BitError(f"calibration cache {path!r} is unreadable ({exc}); delete it to recalibrate") from exc
    if cache.get("format") != CACHE_FORMAT:
        raise BitError(f"{path!r} is not a bit-trt calibration cache")
    if cache.get("key") != key.to_dict():
        diff = [k for k, v in key.to_dict().items() if cache.get("key", {}).get(k) != v]
        raise BitError(
            f"calibration cache {path!r} was made for a different {' and '.join(diff)} "
            f"(stale or foreign cache); delete it or pass another --calib-cache"
        )
    return cache["ranges"]


def cache_text(key: CacheKey, ranges: dict) -> str:
    """A calibration cache file's text: what load_cache reads back (the bundle keeps a copy)."""
    return json.dumps({"format": CACHE_FORMAT, "key": key.to_dict(), "ranges": ranges}) + "\n"


def save_cache(path: str, key: CacheKey, ranges: dict) -> None:
    write_kept(path, cache_text(key, ranges).encode(), "calibration cache")


def quantize(
    fp32_path: str,
    out_path: str,
    ranges: dict,
    method: str,
    target: str,
    exclude: tuple[str, ...] = (),
    keep_fp32: tuple[str, ...] = (),
) -> dict:
    """Write a QDQ model for `target` from cached `ranges`, leaving the `exclude` nodes in float (FLOAT_TYPE);
    for TensorRT, the Q/DQ pairs placed by TensorRT's rules, and the op types in `keep_fp32` (the FP16 variant's
    measured islands) float32. Returns what the placement rules changed (empty for ORT)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    if target not in TARGETS:
        raise BitError(f"unknown INT8 target {target!r}; choose one of: {', '.join(TARGETS)}")
    tensorrt = target == "tensorrt"
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # quantize_static logs a pre-processing hint on the root logger every call
    try:
        with tempfile.TemporaryDirectory(prefix="bit-trt-quant-") as tmp:
            ort_cache = os.path.join(tmp, "ranges.json")
            with open(ort_cache, "w", encoding="utf-8") as f:
                json.dump(ranges, f)
            quantize_static(
                fp32_path,
                out_path,
                None,
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(QUANTIZED_OPS),
                per_channel=True,
                activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                nodes_to_exclude=list(exclude),
                calibrate_method=_ort_method(method),
                calibration_cache_path=ort_cache,
                extra_options={
                    "ActivationSymmetric": tensorrt,
                    "WeightSymmetric": True,
                    # TensorRT wants Q/DQ on every Conv input, including the first layer's.
                    "ForceQuantizeNoInputCheck": tensorrt,
                },
            )
    finally:  # a failed quantization must not leave the whole process's logging silenced
        root.setLevel(level)
    if not tensorrt:
        return {}
    return _for_tensorrt(out_path, ranges, keep_fp32)


def _for_tensorrt(path: str, ranges: dict, keep_fp32: tuple[str, ...]) -> dict:
    """The Q/DQ model at `path`, rewritten in place for TensorRT: Q/DQ pairs where TensorRT fuses them
    (qdq_placement), then every float tensor float16 (Q/DQ scales included, so opset 19), but the `keep_fp32` op
    types; float32 inputs and outputs kept, as in the fp16 variant. Returns what the placement changed."""
    import onnx

    from .fp16 import to_fp16

    model = onnx.load(path)
    placement = {
        "weighted_outputs_float": len(drop_weighted_outputs(model)),
        "residual_inputs_quantized": len(quantize_residual_inputs(model, ranges)),
    }
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, TENSORRT_OPSET)
    onnx.save(to_fp16(model, keep_fp32, copy=False), path)
    return placement


def graph_record(path: str, keep_fp32: tuple[str, ...]) -> dict:
    """What the record says of the written model at `path` (read once, without its weights' data): its ONNX
    opset, and the nodes that run in float32 because their op type is an island."""
    import onnx

    model = onnx.load(path, load_external_data=False)
    return {
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "fp32_island_nodes": [n.name for n in model.graph.node if n.op_type in keep_fp32],
    }


def quantizable_layers(model) -> list[str]:
    return [n.name for n in model.graph.node if n.op_type in QUANTIZED_OPS]


def layer_groups(names: list[str], max_groups: int = 24) -> dict[str, list[str]]:
    """Per layer for small models; per stage (root, block1..4, head) when there are more layers than that:
    each measurement re-quantizes and re-runs the whole model, so R50x3 gets 6 of them, not 54."""
    if len(names) <= max_groups:
        return {n: [n] for n in names}
    groups: dict[str, list[str]] = {}
    for n in names:
        scope = n.split("/")[0] if "/" in n else n
        groups.setdefault(scope.split("_unit")[0], []).append(n)
    return groups


@dataclass
class Probe:
    """Re-quantize with some layers left in float and measure the logits against FP32's on a few images: what the
    sensitivity ranking and the stem/head decisions are made of. Each trial writes one scratch model into a
    temporary directory, gone whatever happens. (INT8 weights are a quarter of FP32's, so these runs use ORT's
    full optimizations.)"""

    fp32_path: str
    ranges: dict
    method: str
    target: str
    images_u8: np.ndarray
    fp32_logits: np.ndarray
    threads: int | None = None
    keep_fp32: tuple[str, ...] = ()

    def measure(self, exclude: tuple[str, ...]) -> dict:
        with tempfile.TemporaryDirectory(prefix="bit-trt-probe-") as scratch:
            path = os.path.join(scratch, "probe.onnx")
            quantize(self.fp32_path, path, self.ranges, self.method, self.target, exclude, self.keep_fp32)
            return compare.measure(ort_logits(path, self.images_u8, threads=self.threads), self.fp32_logits)


def sensitivity(probe: Probe, progress=lambda msg: None) -> list[dict]:
    """For each layer group: the logits error on the probe when only that group is quantized. Most sensitive
    first."""
    import onnx

    names = quantizable_layers(onnx.load(probe.fp32_path, load_external_data=False))
    rows = []
    for group, members in layer_groups(names).items():
        m = probe.measure(tuple(n for n in names if n not in members))
        rows.append({"group": group, "layers": members, "rel_l2": m["rel_l2"], "cosine_min": m["cosine_min"]})
        progress(f"sensitivity: {group} alone in INT8 -> rel L2 {m['rel_l2']:.2e}")
    return sorted(rows, key=lambda r: -r["rel_l2"])


def edge_decisions(probe: Probe, progress=lambda msg: None) -> list[dict]:
    """TensorRT's stem and head, each measured: the INT8 graph's logits error on the probe with every layer
    quantized and with all but that one, against its share of the model's multiply-accumulates; it stays in
    float when it causes far more of the error than its share of the work (qdq_placement.keep_in_float)."""
    import onnx

    fp32 = onnx.load(probe.fp32_path, load_external_data=False)
    macs, edges = weighted_macs(fp32), edge_layers(fp32)
    del fp32
    total = max(1, sum(macs.values()))
    error_all = probe.measure(())["rel_l2"]
    rows = []
    for role, layer in edges.items():
        without = probe.measure((layer,))["rel_l2"]
        share = macs.get(layer, 0) / total
        rows.append(
            {
                "role": role,
                "layer": layer,
                "mac_share": share,
                "rel_l2_all_int8": error_all,
                "rel_l2_without_it": without,
                "error_share": error_share(error_all, without),
                "in_float": keep_in_float(error_all, without, share),
            }
        )
        progress(
            f"int8 {role} {layer}: {share:.1%} of the MACs, {rows[-1]['error_share']:.1%} of the INT8 error "
            f"-> {'kept in float' if rows[-1]['in_float'] else 'INT8'}"
        )
    return rows


def float_fallback(table: list[dict], try_exclude) -> tuple[tuple[str, ...], dict]:
    """Keep the most sensitive layer groups in float until the gate holds: the top 1, 2, 4, ... groups, and
    last of all every group. `try_exclude(layers)` quantizes without `layers` and returns the gate verdict.
    Returns the layers kept in float and the last verdict (failed only when even every group in float fails).
    """
    exclude, verdict = (), None
    for keep in _doubling_up_to(len(table)):
        exclude = tuple(n for row in table[:keep] for n in row["layers"])
        verdict = try_exclude(exclude)
        if verdict["passed"]:
            break
    return exclude, verdict


def _doubling_up_to(n: int):
    """1, 2, 4, ... below n, then n itself: doubling alone would stop at 4 of R50's 6 groups."""
    k = 1
    while k < n:
        yield k
        k *= 2
    if n:
        yield n


# A sample is "confident" when TF gives its top-1 class at least this probability. Top-1 flips are counted on
# confident samples only: on near-ties (and on untrained weights, where every sample is one) a flip says
# nothing about the quantization. A cosine floor over *all* samples still catches a broken variant.
CONFIDENT_PROBABILITY = 0.5
COSINE_FLOOR = compare.INT8_CHECK.cosine_min  # one floor for the export gate and bit-check


def gate(int8_logits, tf_logits, fp32_logits, max_top1_drop: float) -> dict:
    """Accuracy gate: on confident samples, top-1 agreement with TF may drop at most `max_top1_drop`
    below FP32's; on every sample the logits' cosine to TF stays above COSINE_FLOOR."""
    confident = compare.softmax(tf_logits).max(axis=1) >= CONFIDENT_PROBABILITY
    vs_tf = compare.measure(int8_logits, tf_logits)
    top = tf_logits.argmax(axis=1)
    n = int(confident.sum())
    agree_int8 = float((int8_logits.argmax(1) == top)[confident].mean()) if n else 1.0
    agree_fp32 = float((fp32_logits.argmax(1) == top)[confident].mean()) if n else 1.0
    drop = agree_fp32 - agree_int8
    failures = []
    if not np.isfinite(int8_logits).all():
        failures.append("non-finite logits")
    if drop > max_top1_drop + 1e-12:
        failures.append(f"top-1 agreement with TF on {n} confident samples dropped by {drop:.3f} > {max_top1_drop}")
    if not vs_tf["cosine_min"] >= COSINE_FLOOR:
        failures.append(f"min cosine to TF {vs_tf['cosine_min']:.4f} < {COSINE_FLOOR}")
    return {
        **vs_tf,
        "vs_fp32": compare.measure(int8_logits, fp32_logits),
        "confident_samples": n,
        "confident_probability": CONFIDENT_PROBABILITY,
        "top1_agreement_confident": agree_int8,
        "top1_drop": drop,
        "max_top1_drop": max_top1_drop,
        "cosine_floor": COSINE_FLOOR,
        "passed": not failures,
        "failures": failures,
    }


def build_variants(
    writer,
    fp32_art: dict,
    images,
    tf_logits,
    fp32_logits,
    calib,
    opts: Int8Options,
    threads,
    progress,
    fp32_islands: tuple[str, ...] = (),
) -> list[dict]:
    """Calibrate (or reuse cached ranges), then one gated Q/DQ variant per target, written through `writer`
    (a BundleWriter); returns their manifest records. A variant that fails the gate even with every
    sensitive layer group in float raises ParityError. fp32_islands: the op types the fp16 variant measured it
    must keep in float32; TensorRT's INT8 graph keeps them too."""
    calib_u8, calib_record = calib
    fp32_path = writer.path(fp32_art["file"])
    key = CacheKey(fp32_art["sha256"], calib_record["sha256"], opts.method)
    cache_path = opts.cache or os.path.join(
        cache_dir("calibration"), f"{hashlib.sha256(json.dumps(key.to_dict()).encode()).hexdigest()[:24]}.json"
    )
    ranges = load_cache(cache_path, key)
    cache_state = "reused" if ranges is not None else "computed"
    if ranges is None:
        ranges = compute_ranges(fp32_path, calib_u8, opts.method, opts.calib_batch, progress)
        save_cache(cache_path, key, ranges)
    progress(f"calibration ranges {cache_state} ({cache_path})")
    cache_name = f"calibration.{opts.method}.json"
    write_atomic(writer.path(cache_name), cache_text(key, ranges), "calibration cache")
    cache_info = writer.record(cache_name)
    calibration_record = {**calib_record, "method": opts.method, "cache": cache_state, "cache_file": cache_info["file"]}
    return [
        _gated_variant(
            writer, target, fp32_path, ranges, images, tf_logits, fp32_logits, opts, threads, progress, fp32_islands
        )
        | {"calibration": calibration_record}
        for target in FLAVOURS
    ]


def _gated_variant(
    writer,
    target: str,
    fp32_path: str,
    ranges: dict,
    images,
    tf_logits,
    fp32_logits,
    opts: Int8Options,
    threads,
    progress,
    fp32_islands: tuple[str, ...] = (),
) -> dict:
    """One target's Q/DQ model behind the gate, with the float fallback when the gate fails; its record."""
    flavour = FLAVOURS[target]
    name = f"model.{flavour}.onnx"
    keep_fp32 = tuple(fp32_islands) if FLOAT_TYPE[target] == "float16" else ()
    probe = Probe(
        fp32_path,
        ranges,
        opts.method,
        target,
        images[:SENSITIVITY_PROBE],
        fp32_logits[:SENSITIVITY_PROBE],
        threads,
        keep_fp32,
    )
    edges = edge_decisions(probe, progress) if target == "tensorrt" else []
    edge_float = tuple(row["layer"] for row in edges if row["in_float"])
    placement: dict = {}

    def in_float(exclude: tuple[str, ...]) -> tuple[str, ...]:
        """The layers left in float: the measured edge layers, then those the fallback adds."""
        return edge_float + tuple(n for n in exclude if n not in edge_float)

    def quantize_and_gate(exclude):
        exclude = in_float(exclude)
        placement.update(quantize(fp32_path, writer.path(name), ranges, opts.method, target, exclude, keep_fp32))
        verdict = gate(
            ort_logits(writer.path(name), images, threads=threads), tf_logits, fp32_logits, opts.max_top1_drop
        )
        if exclude:
            progress(f"{flavour}: {len(exclude)} layers kept in float -> top-1 drop {verdict['top1_drop']:+.3f}")
        return verdict

    exclude = ()
    table = sensitivity(probe, progress) if opts.force_sensitivity else None
    verdict = quantize_and_gate(exclude)
    progress(
        f"{flavour}: top-1 agreement with TF {verdict['top1_agreement_confident']:.3f} on "
        f"{verdict['confident_samples']} confident samples (drop {verdict['top1_drop']:+.3f}), "
        f"cosine {verdict['cosine_min']:.4f} -> {'PASS' if verdict['passed'] else 'over the gate'}"
    )
    if not verdict["passed"]:
        table = table or sensitivity(probe, progress)
        exclude, verdict = float_fallback(table, quantize_and_gate)
        if not verdict["passed"]:
            raise ParityError(
                f"{flavour} (even with every sensitive layer in float)",
                {**verdict, "tolerance": {"max_top1_drop": opts.max_top1_drop}},
            )
    return {
        **writer.record(name),
        "kind": "onnx",
        "precision": "int8",
        "flavour": flavour,
        "runtime": target,
        "io_dtype": "float32",
        "activations": ACTIVATIONS[target],
        # what is not INT8 runs in this type, but the FP32 islands (op types, as measured for the fp16 variant)
        "float": FLOAT_TYPE[target],
        "fp32_islands": list(keep_fp32),
        **graph_record(writer.path(name), keep_fp32),
        "weights": "int8 symmetric per-channel",
        "quantized_ops": list(QUANTIZED_OPS),
        # TensorRT's placement rules (qdq_placement) and the measured stem/head decisions; empty for ORT's graph
        "placement": placement,
        "edge_layers": edges,
        "float_layers": list(in_float(exclude)),
        "gate": verdict,
        # what bit-check (and bit-check-cpp, from this record) holds the variant to against TF's logits
        "check_tolerance": dataclasses.asdict(compare.INT8_CHECK),
        # what a host that runs its float layers in bf16 holds it to (engine/compute_gate.py; OpenVINO loads int8-ort)
        **({"bf16_tolerance": compare.BF16_GATED_FLAVOURS["int8-ort"].to_dict()} if target == "onnxruntime" else {}),
        "sensitivity": table,
    }
