"""The export pipeline: source -> tf2onnx -> cleanup (each rewrite verified) -> parity vs TF -> bundle.

`export()` is what `bit-export` runs. Every step reports progress through a callback and its numbers
land in the manifest, so a bundle documents how it was made and why it was admitted. The steps' own
questions live in their modules: the INT8 variants and their fallback in int8.py, the plans in
trt_engine.py; memory accounting in engine/memory.py.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from datetime import datetime, timezone

import numpy as np

from ..engine import compare
from ..engine.errors import BitError
from ..engine.labels import LABELS_FILE, default_labels, labels_from_file
from ..engine.memory import current_rss_bytes, peak_rss_bytes, release_memory
from ..engine.onnx_order import canonicalize
from ..engine.parity_raw import write_parity_raw
from ..engine.precision import check_precision, flavour_for, flavour_table
from ..engine.preprocess import DEFAULT_RESIZE, InputSpec
from ..engine.tool_versions import tool_versions
from . import calibration, fp16, graph_cleanup, int8, sources, tf2onnx_route, trt_engine
from .bundle_writer import BundleWriter, check_target
from .int8 import Int8Options
from .ort_logits import ort_logits
from .parity import PROBE_IMAGES, judge
from .parity_images import parity_inputs
from .tf_reference import tf_work
from .variants import DEFAULT_CLASSES, DEFAULT_RESOLUTION

PARITY_FILE = "parity_inputs.npz"
FOLD_CHECK = "constant folding (weight standardization)"
FUSE_CHECK = "GroupNorm fusion"
ONNX_FP32 = "model.fp32.onnx"
ONNX_FP16 = "model.fp16.onnx"


@dataclasses.dataclass
class ExportOptions:
    """Everything one export is asked to do; bit-export's flags map onto these fields and take their defaults."""

    out: str
    model: str = "synthetic"  # 'synthetic', a SavedModel directory, an .npz, or a TF Hub handle
    variant: str | None = None  # inferred from real weights; r50x3 for synthetic
    resolution: int = DEFAULT_RESOLUTION
    resize: str = DEFAULT_RESIZE
    dynamic_spatial: bool = False
    opset: int = tf2onnx_route.DEFAULT_OPSET
    num_classes: int = DEFAULT_CLASSES  # head size of synthetic weights
    seed: int = 0  # seed of synthetic weights
    parity_synthetic: int = 4  # synthetic images in the parity set, besides the photos
    labels_file: str | None = None
    threads: int | None = None  # ONNX Runtime threads for verification; None: all cores
    precisions: tuple[str, ...] = ("fp32",)  # fp32 is always exported: it is the parity anchor
    engine: str = "auto"  # one of trt_engine.ENGINE_CHOICES
    build: trt_engine.BuildOptions = dataclasses.field(default_factory=trt_engine.BuildOptions)
    require_engine: bool = False
    int8: Int8Options = dataclasses.field(default_factory=Int8Options)

    def validate(self) -> None:
        """Refuse a bad request before any work is done."""
        check_target(self.out)
        for precision in self.precisions:
            check_precision(precision)
        if "int8" in self.precisions:
            self.int8.validate()
        if self.engine not in trt_engine.ENGINE_CHOICES:
            raise BitError(f"unknown engine {self.engine!r}; choose one of: {', '.join(trt_engine.ENGINE_CHOICES)}")
        self.build.validate()
        if self.build.rtx_compute_capabilities and self.engine == "tensorrt":
            raise BitError("--rtx-cc applies to TensorRT-RTX engines only (--engine tensorrt_rtx or auto)")
        if self.opset not in tf2onnx_route.SUPPORTED_OPSETS:
            raise BitError(f"opset {self.opset} is not supported; use one of {tf2onnx_route.SUPPORTED_OPSETS}")
        if self.resolution < 32:
            raise BitError(f"resolution {self.resolution} is too small; BiT downsamples by 32")
        if self.parity_synthetic < 0:
            raise BitError(f"the number of synthetic parity images cannot be negative, got {self.parity_synthetic}")


class _Clock:
    def __init__(self, progress):
        self.progress = progress
        self.start = time.perf_counter()
        self.steps: dict[str, float] = {}
        self.moved: dict[str, float] = {}  # seconds booked to a step before it runs (move)

    def step(self, name: str, message: str):
        clock = self

        class _Step:
            def __enter__(self):
                clock.progress(f"{message} ...")
                self.t0 = time.perf_counter()

            def __exit__(self, exc_type, *_):
                took = time.perf_counter() - self.t0
                clock.steps[name] = round(took + clock.moved.pop(name, 0.0), 2)
                if exc_type is None:
                    clock.progress(
                        f"{message}: done in {took:.1f} s "
                        f"(RSS {current_rss_bytes() / 1e9:.2f} GB, peak {peak_rss_bytes() / 1e9:.2f} GB)"
                    )
                return False

        return _Step()

    def move(self, seconds: float, source: str, target: str) -> None:
        """Book `seconds` of the timed step `source` to `target`, a step still ahead: a child did part of that
        step's work during this one's wait. The steps still sum to the wall time, in the order they ran."""
        self.steps[source] = round(self.steps[source] - seconds, 2)
        self.moved[target] = self.moved.get(target, 0.0) + seconds

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 2)


def _probe_check(model, probe_u8, reference, what: str, threads) -> None:
    logits = ort_logits(model, probe_u8, threads=threads, low_memory=True)
    judge(logits, reference, compare.FP32_PARITY, what)


def export(options: ExportOptions, progress=lambda msg: None) -> dict:
    """Export one model to a verified bundle at `options.out` (FP32 ONNX always, plus `options.precisions`,
    plus TensorRT plans from each ONNX variant when `options.engine` finds a builder).

    Returns the manifest exactly as written to the bundle."""
    o = options
    o.validate()
    spec = InputSpec(resolution=o.resolution, resize=o.resize)
    clock = _Clock(progress)

    local, handle = sources.resolve(o.model)
    images, names = parity_inputs(spec, o.parity_synthetic)
    calib = None
    if "int8" in o.precisions:  # read (and refuse) the image sets before any expensive step
        if o.int8.eval_images:
            extra, _ = calibration.load(o.int8.eval_images, spec, o.int8.eval_count, seed=1, progress=progress)
            images = np.concatenate([images, extra])
            names += [f"eval:{i}" for i in range(len(extra))]
        calib = (
            calibration.load(o.int8.calib_images, spec, o.int8.calib_count, o.int8.calib_seed, progress=progress)
            if o.int8.calib_images
            else calibration.synthetic(spec, o.int8.calib_count, o.int8.calib_seed)
        )
    with clock.step(
        "reference",
        f"converting {o.variant or 'the model'} with tf2onnx (opset {o.opset}, weights as inputs), then TF "
        f"reference logits on {len(images)} parity images ({len(images) - o.parity_synthetic} photos), in a child "
        "process",
    ):
        rss_before_child = current_rss_bytes()
        resolution = None if o.dynamic_spatial else o.resolution
        tf_child = tf_work(local, handle, o.variant, o.num_classes, o.seed, images, graph=(resolution, o.opset))
    # the child's tracing and converting is the convert step's, not the reference's
    clock.move(tf_child.graph_s, "reference", "convert")
    tf_logits, child_peak = tf_child.logits, tf_child.peak_rss

    with clock.step("load", f"loading weights ({o.model})"):
        loaded = sources.load(local, o.variant, num_classes=o.num_classes, seed=o.seed, handle=handle)
        loaded.reference = None  # the child computed it; drop any TF objects the source holds
        release_memory()
    v = loaded.variant
    if loaded.source["kind"] == "synthetic":
        progress("weights are SYNTHETIC (seeded random): the engine will run, its predictions mean nothing")
    labels = (
        labels_from_file(o.labels_file, loaded.num_classes) if o.labels_file else default_labels(loaded.num_classes)
    )
    model_record = {
        "family": "BiT ResNet-v2",
        "variant": v.name,
        "num_classes": loaded.num_classes,
        "parameters": int(sum(a.size for a in loaded.weights.values())),
        "weights_sha256": loaded.weights_sha256(),
        "source": loaded.source,
        "trained": loaded.trained,
    }
    onnx_model, graph = _convert_and_clean(
        loaded, tf_child.graph, o, images[:PROBE_IMAGES], tf_logits[:PROBE_IMAGES], clock, progress
    )
    del tf_child  # the weightless graph: bound now

    with BundleWriter(o.out) as writer:
        # The ONNX is written first and the in-memory model dropped: parity then loads the file exactly as a
        # deployment host will, and the two copies of the weights never coexist.
        with clock.step("write", f"writing {ONNX_FP32}"):
            art = writer.write_onnx(ONNX_FP32, onnx_model)
            del onnx_model
            if "data_files" not in art:  # write_onnx checked a model with external data already
                import onnx

                onnx.checker.check_model(writer.path(ONNX_FP32))
            # after the checker: it parses the whole file (R50x3: 870 MB) and frees it, which the parity step's ORT
            # session would otherwise find still resident under its own peak
            release_memory()
        with clock.step(
            "parity",
            "parity: ONNX Runtime (all optimizations, as deployed) against the TF logits; the GroupNorm fusion "
            f"checked on {PROBE_IMAGES} of them (the first)",
        ):
            ort = ort_logits(writer.path(ONNX_FP32), images, threads=o.threads)
            # The fusion's own check, from the same session: the fused graph is the file as written
            judge(ort[:PROBE_IMAGES], tf_logits[:PROBE_IMAGES], compare.FP32_PARITY, FUSE_CHECK)
            report = judge(ort, tf_logits, compare.FP32_PARITY, f"{v.name} FP32 ONNX vs TF")
            release_memory()  # ORT's session is gone: hand its freed heap back before the next step
        report["inputs"] = names
        artifacts = [
            {
                **art,
                "kind": "onnx",
                "precision": "fp32",
                "flavour": "fp32",
                "opset": o.opset,
                "dynamic": {"batch": True, "spatial": o.dynamic_spatial},
                "parity": report,
                "graph": graph,
            }
        ]
        if "fp16" in o.precisions:
            with clock.step("fp16", "FP16 variant: FP32 islands by measurement, then parity against TF and FP32"):
                artifacts.append(_fp16_variant(writer, images, tf_logits, ort, o.threads, progress))
        if "int8" in o.precisions:
            with clock.step(
                "int8",
                f"INT8 variants: {o.int8.method} calibration on {len(calib[0])} images, "
                "Q/DQ for TensorRT and ONNX Runtime, accuracy gate",
            ):
                fp16_art = next((a for a in artifacts if a["flavour"] == "fp16"), None)
                if fp16_art is not None:
                    islands, searched = fp16_art["fp32_islands"], {"fp32_islands_from": ONNX_FP16}
                else:  # int8-trt's FP16 part needs the same measurement when no fp16 variant made it
                    _, islands, table = _fp16_islands(writer, images, ort, o.threads, progress)
                    searched = {"fp32_islands_from": "its own search", "island_search": table}
                variants = int8.build_variants(
                    writer, artifacts[0], images, tf_logits, ort, calib, o.int8, o.threads, progress, tuple(islands)
                )
                artifacts += [v | searched if v["flavour"] == flavour_for("trt", "int8") else v for v in variants]
                release_memory()  # the probes' and gates' models and sessions are gone: not under the plans' builds
        if o.engine != "none":
            with clock.step("engines", "TensorRT plans from the ONNX variants"):
                artifacts += trt_engine.build_engines(
                    writer,
                    artifacts,
                    spec.name,
                    spec.resolution,
                    o.engine,
                    o.build,
                    (images, tf_logits),
                    o.require_engine,
                    progress,
                )
        with clock.step("bundle", f"publishing bundle {o.out}"):
            labels_info = writer.write_json(LABELS_FILE, labels)
            np.savez_compressed(
                writer.path(PARITY_FILE), images=images, names=np.array(names), tf_logits=tf_logits.astype(np.float32)
            )
            parity_info = writer.record(PARITY_FILE)
            parity_raw = write_parity_raw(writer.staging, images, tf_logits)
            imagenet = loaded.num_classes == 1000 and not o.labels_file
            manifest = {
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "model": model_record,
                "input": spec.to_manifest(),
                "output": {
                    "name": tf2onnx_route.OUTPUT_NAME,
                    "shape": ["batch", loaded.num_classes],
                    "dtype": "float32",
                    "kind": "logits",
                },
                "labels": {
                    "file": LABELS_FILE,
                    "kind": "imagenet-1k" if imagenet else "custom",
                    "sha256": labels_info["sha256"],
                },
                "flavours": flavour_table(),  # precision -> artifact per backend, for readers in any language
                "artifacts": artifacts,
                "reference": {
                    **parity_info,
                    "what": "parity inputs (uint8 NHWC after preprocessing) and TF logits",
                    "raw": parity_raw,  # the same arrays without npz, for C++ (engine/parity_raw.py)
                },
                "tools": tool_versions(),
            }
            # Each child ran while this process held what it held then: their sums bound those moments.
            manifest["export"] = {
                "steps_s": clock.steps,
                "wall_s": clock.total(),
                "peak_rss_bytes": max(peak_rss_bytes(), rss_before_child + child_peak),
                "peak_rss_exporter_bytes": peak_rss_bytes(),
                "peak_rss_tf_reference_bytes": child_peak,  # the TF child's: tf2onnx's graph and the reference
                "host": platform.node(),
                "machine": platform.machine(),
            }
            return writer.publish(manifest)


def _convert_and_clean(loaded, weightless: bytes, o: ExportOptions, probe, probe_ref, clock, progress):
    """The weights bound into tf2onnx's weightless graph (converted in the TF child), then the graph rewrites, each
    checked on the `probe` images against TF: the constant folding here, with ORT's own optimizations off (so that
    what is measured is our graph) and the weights fed to ORT from the model rather than serialized; the GroupNorm
    fusion by the parity step, on the file as written (FUSE_CHECK). Folding first, the fold's check runs the
    standardized kernels once, as constants (R50x3: 2.7 s against 5.5 s for the fused graph that standardized them
    at run time), and gives the same graph as fusing first. Returns the cleaned ModelProto and the graph record for
    the manifest."""

    v = loaded.variant
    with clock.step("convert", f"binding {v.name}'s weights into tf2onnx's graph (converted in the child)"):
        onnx_model = tf2onnx_route.bind_graph(weightless, loaded.weights)
        loaded.weights = None  # bound into the ONNX initializers now, array by array
        release_memory()
    before = _graph_stats(onnx_model)
    with clock.step("fold", "folding weight standardization into constants, checked against TF"):
        # the GroupNorms are left to the fusion, which replaces them whole
        onnx_model, folded = graph_cleanup.folded_copy(onnx_model, skip=graph_cleanup.GROUP_NORM_SCOPE)
        release_memory()  # the unfolded model is dropped here
        graph_cleanup.remove_dead(onnx_model)
        _probe_check(onnx_model, probe, probe_ref, FOLD_CHECK, o.threads)
        release_memory()  # the check's ORT session and fed arrays are gone
    with clock.step("fuse", "fusing GroupNorms into InstanceNormalization"):
        fused = graph_cleanup.fuse_group_norms(onnx_model)
        canonicalize(onnx_model, initializers=False)
        # Checked against TF on the same images by the parity step's session, on the file as written (FUSE_CHECK);
        # onnx.checker reads that file too (in memory it would serialize the model: two more copies of it)
    after = _graph_stats(onnx_model)
    progress(
        f"graph: {before['nodes']} -> {after['nodes']} nodes, {after['layout_transposes']} layout Transpose, "
        f"{fused} GroupNorms fused, {folded} constant nodes folded"
    )
    return onnx_model, {
        "before_cleanup": before,
        "after_cleanup": after,
        "group_norms_fused": fused,
        "constants_folded": folded,
    }


def _graph_stats(model) -> dict:
    return {
        "nodes": len(model.graph.node),
        "layout_transposes": graph_cleanup.layout_transposes(model),
        "ops": graph_cleanup.histogram(model),
    }


def _fp16_islands(writer, images, fp32_logits, threads, progress):
    """(fp16 model, its FP32 islands, the search's table): fp16.search_islands on the first fp16.SEARCH_IMAGES
    parity images, each trial converting the FP32 file as written (no FP32 model held beside the trial's)."""
    return fp16.search_islands(
        writer.path(ONNX_FP32),
        images[: fp16.SEARCH_IMAGES],
        fp32_logits[: fp16.SEARCH_IMAGES],
        threads=threads,
        progress=progress,
    )


def _fp16_variant(writer, images, tf_logits, fp32_logits, threads, progress) -> dict:
    model, islands, table = _fp16_islands(writer, images, fp32_logits, threads, progress)
    art = writer.write_onnx(ONNX_FP16, model)
    del model
    release_memory()
    logits = ort_logits(writer.path(ONNX_FP16), images, threads=threads)
    report = judge(logits, tf_logits, compare.FP16_PARITY, "FP16 ONNX vs TF")
    vs_fp32 = compare.measure(logits, fp32_logits)
    return {
        **art,
        "kind": "onnx",
        "precision": "fp16",
        "flavour": "fp16",
        "io_dtype": "float32",
        "fp32_islands": islands,
        "island_search": table,
        "parity": report,
        "parity_vs_fp32": vs_fp32,
        # what a host that runs this file in bf16 holds it to (engine/compute_gate.py), for readers in any language
        "bf16_tolerance": compare.BF16_GATED_FLAVOURS["fp16"].to_dict(),
        "tool": "onnxruntime.transformers.float16",
    }
