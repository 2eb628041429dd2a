"""The export pipeline: source -> tf2onnx -> cleanup (each rewrite verified) -> parity vs TF -> bundle.

`export()` is what `bit-export` runs. Every step reports progress through a callback and its numbers
land in the manifest, so a bundle documents how it was made and why it was admitted.
"""
from __future__ import annotations

import ctypes
import dataclasses
import gc
import hashlib
import json
import os
import platform
import resource
import time
from datetime import datetime, timezone
from importlib import metadata

import numpy as np

from ..engine import compare
from ..engine.errors import BitError
from ..engine.labels import LABELS_FILE, default_labels, labels_from_file
from ..engine.preprocess import InputSpec
from ..engine.user_cache import cache_dir
from . import calibration, fp16, graph_cleanup, int8, parity, sources, tf2onnx_route, trt_engine
from .bundle_writer import BundleWriter, check_target
from .ort_logits import ort_logits
from .parity_images import parity_inputs
from .tf_reference import tf_reference_logits
from .variants import DEFAULT_CLASSES, DEFAULT_RESOLUTION

PARITY_FILE = "parity_inputs.npz"
ONNX_FP32 = "model.fp32.onnx"
ONNX_FP16 = "model.fp16.onnx"
SENSITIVITY_PROBE = 8  # images per sensitivity measurement: a ranking needs few, and each costs a model run
TOOLS = ("bit-trt", "tensorflow-cpu", "tf2onnx", "onnx", "onnxruntime", "numpy", "protobuf", "opencv-python-headless")


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def current_rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return 0


def release_memory() -> None:
    """Collect, then hand freed heap back to the OS: TF and protobuf leave GBs in glibc's free lists,
    which would otherwise stack under the next step's peak."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to trim
        pass


def tool_versions() -> dict:
    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@dataclasses.dataclass
class Int8Options:
    calib_images: str | None = None     # a directory; None means synthetic, which must be asked for
    calib_synthetic: bool = False
    calib_count: int = 64
    calib_batch: int = 1               # R50x3, 16 images: batch 1 38 s / 4.15 GB, batch 2 41 s / 6.44 GB
    calib_seed: int = 0
    method: str = "minmax"             # measured: see int8.py and bench/results/precision_*.json
    cache: str | None = None            # default: ~/.cache/bit-trt/calibration/<key>.json
    max_top1_drop: float = 0.01
    eval_images: str | None = None      # more evaluation images for the gate (never the calibration set)
    eval_count: int = 64
    force_sensitivity: bool = False

    def validate(self):
        if not self.calib_images and not self.calib_synthetic:
            raise BitError("INT8 needs calibration images: --calib-images DIR (or --calib-synthetic, flagged in the manifest)")
        if self.calib_images and self.eval_images and os.path.abspath(self.calib_images) == os.path.abspath(self.eval_images):
            raise BitError("--eval-images must not be the calibration directory: the gate needs unseen images")
        if self.method not in int8.METHODS:
            raise BitError(f"unknown calibration method {self.method!r}; choose one of: {', '.join(int8.METHODS)}")
        if self.calib_count < 1 or self.calib_batch < 1:
            raise BitError("--calib-count and --calib-batch must be positive")
        if not 0 <= self.max_top1_drop <= 1:
            raise BitError(f"--max-top1-drop is a fraction in [0, 1], got {self.max_top1_drop}")


class _Clock:
    def __init__(self, progress):
        self.progress = progress
        self.start = time.perf_counter()
        self.steps: dict[str, float] = {}

    def step(self, name: str, message: str):
        clock = self

        class _Step:
            def __enter__(self):
                clock.progress(f"{message} ...")
                self.t0 = time.perf_counter()

            def __exit__(self, exc_type, *_):
                clock.steps[name] = round(time.perf_counter() - self.t0, 2)
                if exc_type is None:
                    clock.progress(f"{message}: done in {clock.steps[name]:.1f} s "
                                   f"(RSS {current_rss_bytes() / 1e9:.2f} GB, peak {peak_rss_bytes() / 1e9:.2f} GB)")
                return False

        return _Step()

    def total(self) -> float:
        return round(time.perf_counter() - self.start, 2)


def _probe_check(model, probe_u8, reference, what: str, threads) -> None:
    logits = ort_logits(model, probe_u8, threads=threads, low_memory=True)
    parity.judge(logits, reference, compare.FP32_PARITY, what)


def export(model: str = "synthetic", out: str = "bundle", variant: str | None = None,
           resolution: int = DEFAULT_RESOLUTION, dynamic_spatial: bool = False, opset: int = tf2onnx_route.DEFAULT_OPSET,
           num_classes: int = DEFAULT_CLASSES, seed: int = 0, parity_synthetic: int = 4, labels_file: str | None = None,
           resize: str = "bilinear", threads: int | None = None, precisions: tuple[str, ...] = ("fp32",),
           engine: str = "auto", build_options: "trt_engine.BuildOptions | None" = None, require_engine: bool = False,
           int8_options: "Int8Options | None" = None, progress=lambda msg: None) -> dict:
    """Export one model to a verified bundle at `out` (FP32 ONNX always, plus `precisions`, plus TensorRT
    plans from each ONNX variant when `engine` finds a builder); return the manifest."""
    check_target(out)
    unknown = set(precisions) - {"fp32", "fp16", "int8"}
    if unknown:
        raise BitError(f"unknown precision {sorted(unknown)[0]} (fp32, fp16, int8)")
    int8_options = int8_options or Int8Options()
    if "int8" in precisions:
        int8_options.validate()
    build_options = build_options or trt_engine.BuildOptions()
    build_options.validate()
    if resolution < 32:
        raise BitError(f"resolution {resolution} is too small; BiT downsamples by 32")
    spec = InputSpec(resolution=resolution, resize=resize)
    clock = _Clock(progress)

    local, handle = sources.resolve(model)
    images, names = parity_inputs(spec, parity_synthetic)
    calib = None
    if "int8" in precisions:  # read (and refuse) the image sets before any expensive step
        if int8_options.eval_images:
            extra, record = calibration.load(int8_options.eval_images, spec, int8_options.eval_count, seed=1, progress=progress)
            images = np.concatenate([images, extra])
            names += [f"eval:{i}" for i in range(len(extra))]
        calib = (calibration.load(int8_options.calib_images, spec, int8_options.calib_count, int8_options.calib_seed,
                                  progress=progress) if int8_options.calib_images
                 else calibration.synthetic(spec, int8_options.calib_count, int8_options.calib_seed))
    with clock.step("reference", f"TF reference logits on {len(images)} parity images "
                                 f"({len(images) - parity_synthetic} photos), in a child process"):
        rss_before_child = current_rss_bytes()
        tf_logits, child_peak = tf_reference_logits(local, handle, variant, num_classes, seed, images)

    with clock.step("load", f"loading weights ({model})"):
        loaded = sources.load(local, variant, num_classes=num_classes, seed=seed, handle=handle)
        loaded.reference = None  # the child computed it; drop any TF objects the source holds
        release_memory()
    v = loaded.variant
    if loaded.source["kind"] == "synthetic":
        progress("weights are SYNTHETIC (seeded random): the engine will run, its predictions mean nothing")
    labels = labels_from_file(labels_file, loaded.num_classes) if labels_file else default_labels(loaded.num_classes)
    model_record = {"family": "BiT ResNet-v2", "variant": v.name, "num_classes": loaded.num_classes,
                    "parameters": int(sum(a.size for a in loaded.weights.values())),
                    "weights_sha256": loaded.weights_sha256(), "source": loaded.source, "trained": loaded.trained}

    with clock.step("convert", f"converting {v.name} with tf2onnx (opset {opset}, weights as inputs)"):
        onnx_model = tf2onnx_route.convert(loaded.weights, v, None if dynamic_spatial else resolution, opset)
        loaded.weights = None  # bound into the ONNX initializers now
        release_memory()
    before = {"nodes": len(onnx_model.graph.node), "layout_transposes": graph_cleanup.layout_transposes(onnx_model),
              "ops": graph_cleanup.histogram(onnx_model)}

    # Each rewrite is checked on two images against TF, with ORT's own optimizations off so that what is
    # measured is our graph, and so that ORT does not build a second folded copy of the weights.
    probe, probe_ref = images[:2], tf_logits[:2]
    import onnx

    with clock.step("fuse", "fusing GroupNorms into InstanceNormalization, checked against TF"):
        fused = graph_cleanup.fuse_group_norms(onnx_model)
        _probe_check(onnx_model, probe, probe_ref, "GroupNorm fusion", threads)
    with clock.step("fold", "folding weight standardization into constants, checked against TF"):
        folded = graph_cleanup.fold_constants(onnx_model)
        graph_cleanup.remove_dead(onnx_model)
        graph_cleanup.canonicalize(onnx_model, initializers=False)
        release_memory()
        _probe_check(onnx_model, probe, probe_ref, "constant folding (weight standardization)", threads)
        if onnx_model.ByteSize() < 2_000_000_000:
            onnx.checker.check_model(onnx_model)
    after = {"nodes": len(onnx_model.graph.node), "layout_transposes": graph_cleanup.layout_transposes(onnx_model),
             "ops": graph_cleanup.histogram(onnx_model)}
    progress(f"graph: {before['nodes']} -> {after['nodes']} nodes, {after['layout_transposes']} layout Transpose, "
             f"{fused} GroupNorms fused, {folded} constant nodes folded")

    with BundleWriter(out) as writer:
        # The ONNX is written first and the in-memory model dropped: parity then loads the file exactly as a
        # deployment host will, and the two copies of the weights never coexist.
        with clock.step("write", f"writing {ONNX_FP32}"):
            art = writer.write_onnx(ONNX_FP32, onnx_model)
            del onnx_model
            release_memory()
        with clock.step("parity", "parity: ONNX Runtime (all optimizations, as deployed) against the TF logits"):
            ort = ort_logits(writer.path(ONNX_FP32), images, threads=threads)
            report = parity.judge(ort, tf_logits, compare.FP32_PARITY, f"{v.name} FP32 ONNX vs TF")
        report["inputs"] = names
        artifacts = [{**art, "kind": "onnx", "precision": "fp32", "opset": opset,
                      "dynamic": {"batch": True, "spatial": dynamic_spatial}, "parity": report,
                      "graph": {"before_cleanup": before, "after_cleanup": after,
                                "group_norms_fused": fused, "constants_folded": folded}}]
        if "fp16" in precisions:
            with clock.step("fp16", "FP16 variant: FP32 islands by measurement, then parity against TF and FP32"):
                artifacts.append(_fp16_variant(writer, images, tf_logits, ort, threads, progress))
        if "int8" in precisions:
            with clock.step("int8", f"INT8 variants: {int8_options.method} calibration on {len(calib[0])} images, "
                                    "Q/DQ for TensorRT and ONNX Runtime, accuracy gate"):
                artifacts += _int8_variants(writer, artifacts[0], images, tf_logits, ort, calib, int8_options,
                                            threads, progress)
        if engine != "none":
            artifacts += _engines(writer, artifacts, spec, engine, build_options, require_engine, clock, progress)
        with clock.step("bundle", f"publishing bundle {out}"):
            labels_info = writer.write_json(LABELS_FILE, labels)
            np.savez_compressed(writer.path(PARITY_FILE), images=images, names=np.array(names),
                                tf_logits=tf_logits.astype(np.float32))
            parity_info = writer.record(PARITY_FILE)
            manifest = {
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "model": model_record,
                "input": spec.to_manifest(),
                "output": {"name": tf2onnx_route.OUTPUT_NAME, "shape": ["batch", loaded.num_classes],
                           "dtype": "float32", "kind": "logits"},
                "labels": {"file": LABELS_FILE, "kind": "imagenet-1k" if loaded.num_classes == 1000 and not labels_file else "custom",
                           "sha256": labels_info["sha256"]},
                "artifacts": artifacts,
                "reference": {**parity_info, "what": "parity inputs (uint8 NHWC after preprocessing) and TF logits"},
                "tools": tool_versions(),
            }
            # The reference child ran while this process held rss_before_child: their sum bounds that moment.
            manifest["export"] = {"steps_s": clock.steps, "wall_s": clock.total(),
                                  "peak_rss_bytes": max(peak_rss_bytes(), rss_before_child + child_peak),
                                  "peak_rss_exporter_bytes": peak_rss_bytes(), "peak_rss_tf_reference_bytes": child_peak,
                                  "host": platform.node(), "machine": platform.machine()}
            writer.publish(manifest)
    manifest["export"]["wall_s"] = clock.total()
    return manifest


def _fp16_variant(writer, images, tf_logits, fp32_logits, threads, progress) -> dict:
    import onnx

    fp32_model = onnx.load(writer.path(ONNX_FP32))
    model, islands, table = fp16.search_islands(fp32_model, images[:2], fp32_logits[:2], threads=threads, progress=progress)
    del fp32_model
    art = writer.write_onnx(ONNX_FP16, model)
    del model
    release_memory()
    logits = ort_logits(writer.path(ONNX_FP16), images, threads=threads)
    report = parity.judge(logits, tf_logits, compare.FP16_PARITY, "FP16 ONNX vs TF")
    vs_fp32 = compare.measure(logits, fp32_logits)
    return {**art, "kind": "onnx", "precision": "fp16", "io_dtype": "float32", "fp32_islands": islands,
            "island_search": table, "parity": report, "parity_vs_fp32": vs_fp32, "tool": "onnxruntime.transformers.float16"}


def _engines(writer, artifacts, spec, engine, options, require_engine, clock, progress) -> list[dict]:
    """A TensorRT plan from every ONNX artifact, with whichever builder this host has."""
    trt = trt_engine.pick_library(engine)
    if trt is None:
        msg = "no TensorRT or TensorRT-RTX on this host: ONNX variants written, no engines (pip install 'bit-trt[rtx]')"
        if require_engine:
            raise BitError(msg.replace(": ONNX variants written, no engines", " and --require-engine was given"))
        progress(msg)
        return []
    target = trt_engine.gpu_compute_capability() if trt.__name__ == "tensorrt" else "rtx"
    if options.timing_cache is None and trt.__name__ == "tensorrt":  # per library version and GPU, like plans
        os.makedirs(cache_dir("timing"), exist_ok=True)
        options = dataclasses.replace(options, timing_cache=os.path.join(
            cache_dir("timing"), f"{trt.__name__}-{trt.__version__}-{target}.cache"))
    plans = []
    # The U8S8 variant is for ONNX Runtime's CPU kernels; TensorRT gets the S8S8 one.
    for art in [a for a in artifacts if a["kind"] == "onnx" and a.get("variant") != "int8-ort"]:
        with clock.step(f"engine_{art['precision']}", f"building a {trt.__name__} {trt.__version__} engine from {art['file']}"):
            plan, record = trt_engine.build(writer.path(art["file"]), spec.name, spec.resolution, options, trt)
            name = trt_engine.plan_name(art.get("variant", art["precision"]), trt.__name__, trt.__version__, target)
            with open(writer.path(name), "wb") as f:
                f.write(plan)
            plans.append({**writer.record(name), "kind": "engine", "precision": art["precision"],
                          "variant": art.get("variant", art["precision"]), "from": art["file"], **record})
    return plans


def _int8_variants(writer, fp32_art, images, tf_logits, fp32_logits, calib, opts, threads, progress) -> list[dict]:
    calib_u8, calib_record = calib
    fp32_path = writer.path(fp32_art["file"])
    key = int8.CacheKey(fp32_art["sha256"], calib_record["sha256"], opts.method)
    cache_path = opts.cache or os.path.join(cache_dir("calibration"),
                                            f"{hashlib.sha256(json.dumps(key.to_dict()).encode()).hexdigest()[:24]}.json")
    ranges = int8.load_cache(cache_path, key)
    cache_state = "reused" if ranges is not None else "computed"
    if ranges is None:
        ranges = int8.compute_ranges(fp32_path, calib_u8, opts.method, opts.calib_batch, progress)
        int8.save_cache(cache_path, key, ranges)
    progress(f"calibration ranges {cache_state} ({cache_path})")
    cache_name = f"calibration.{opts.method}.json"
    int8.save_cache(writer.path(cache_name), key, ranges)
    cache_info = writer.record(cache_name)
    artifacts = []
    for target, variant in (("tensorrt", "int8-trt"), ("onnxruntime", "int8-ort")):
        name = f"model.{variant}.onnx"

        def quantize_and_gate(exclude):
            int8.quantize(fp32_path, writer.path(name), ranges, opts.method, target, exclude)
            logits = ort_logits(writer.path(name), images, threads=threads)
            return int8.gate(logits, tf_logits, fp32_logits, opts.max_top1_drop)

        def measure_sensitivity():
            return int8.sensitivity(fp32_path, ranges, opts.method, target, images[:SENSITIVITY_PROBE],
                                    fp32_logits[:SENSITIVITY_PROBE], writer.staging, threads, progress)

        exclude = ()
        table = measure_sensitivity() if opts.force_sensitivity else None
        verdict = quantize_and_gate(exclude)
        progress(f"{variant}: top-1 agreement with TF {verdict['top1_agreement_confident']:.3f} on "
                 f"{verdict['confident_samples']} confident samples (drop {verdict['top1_drop']:+.3f}), "
                 f"cosine {verdict['cosine_min']:.4f} -> {'PASS' if verdict['passed'] else 'over the gate'}")
        if not verdict["passed"]:  # fall back: keep the most sensitive layers in float until the gate holds
            table = table or measure_sensitivity()
            keep = 1
            while not verdict["passed"] and keep <= len(table):
                exclude = tuple(n for row in table[:keep] for n in row["layers"])
                verdict = quantize_and_gate(exclude)
                progress(f"{variant}: {len(exclude)} layers kept in float -> top-1 drop {verdict['top1_drop']:+.3f}")
                keep *= 2
            if not verdict["passed"]:
                raise parity.ParityError(f"{variant} (even with every sensitive layer in float)",
                                         {**verdict, "tolerance": {"max_top1_drop": opts.max_top1_drop}})
        if os.path.exists(writer.path("sensitivity.onnx")):
            os.remove(writer.path("sensitivity.onnx"))
        artifacts.append({**writer.record(name), "kind": "onnx", "precision": "int8", "variant": variant,
                          "runtime": target, "io_dtype": "float32",
                          "activations": "int8 symmetric" if target == "tensorrt" else "uint8 asymmetric",
                          "weights": "int8 symmetric per-channel", "quantized_ops": list(int8.QUANTIZED_OPS),
                          "float_layers": list(exclude),
                          "calibration": {**calib_record, "method": opts.method, "cache": cache_state,
                                          "cache_file": cache_info["file"]},
                          "gate": verdict, "sensitivity": table})
    return artifacts
