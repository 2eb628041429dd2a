"""Which backend runs a bundle: the names, which runner each one starts, and what `auto` picks. Which artifact a
backend loads for a precision is engine/precision.py's answer.

    trt       TensorRT plan (or TensorRT-RTX engine) through pycuda, with CUDA preprocessing
    ort-trt   ONNX Runtime's TensorRT provider (engine cache under the bundle, else in the user cache)
    ort-cuda  ONNX Runtime's CUDA provider
    openvino  OpenVINO on the CPU
    ort-cpu   ONNX Runtime on the CPU
    tf        the TensorFlow reference (needs TF and the export source; for checking, not serving)

`auto` tries, in order, what is fastest on this host by our measurements (bench/results): on a GPU host
trt, then ort-trt, then ort-cuda; on a CPU host openvino (equal to ORT at FP32, 1.7x faster at INT8 on
R50x1), then ort-cpu.
A backend that cannot start here (not installed, no plan for this GPU, provider did not load) is skipped,
and the reason is kept, so `auto` can say what it chose and why it passed over the others.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import os
import re

from . import compute_gate, gpu_host
from .bundle import Bundle
from .compare import INT8_KERNEL_PARITY, Tolerance
from .errors import BitError
from .precision import flavour_for, flavour_of, precision_of
from .tensorrt_library import try_import
from .user_cache import cache_dir

BACKENDS = ("trt", "ort-trt", "ort-cuda", "openvino", "ort-cpu", "tf")
# What a Classifier (and --backend of bit-classify and bit-check) accepts: a backend, or `auto`.
BACKEND_CHOICES = ("auto",) + BACKENDS
# Where each backend's runner lives, imported only when that backend is asked for (importing the engine
# loads no backend library). `tf` is the exporter's reference, so it lives in export/: this table is the
# engine's one, explicit, by-name way back to the export side (tests/test_layers.py holds the rule).
RUNNERS = {
    "trt": "bit_trt.engine.trt_runner:TrtRunner",
    "ort-trt": "bit_trt.engine.ort_runner:OrtRunner",
    "ort-cuda": "bit_trt.engine.ort_runner:OrtRunner",
    "openvino": "bit_trt.engine.openvino_runner:OpenVinoRunner",
    "ort-cpu": "bit_trt.engine.ort_runner:OrtRunner",
    "tf": "bit_trt.export.tf_runner:TfRunner",
}
# Backends that run concurrent requests better with settings of their own (throughput_options), or overlap them on
# the GPU by themselves; the TF reference and a Triton server (bit-bench's `triton`) have none of ours.
THROUGHPUT_BACKENDS = ("trt", "ort-trt", "ort-cuda", "openvino", "ort-cpu")
AUTO_GPU = ("trt", "ort-trt", "ort-cuda", "openvino", "ort-cpu")
AUTO_CPU = ("openvino", "ort-cpu")
# Backends that need an NVIDIA GPU: a cluster scheduler (scale/) asks for one for each of their replicas.
GPU_BACKENDS = ("trt", "ort-trt", "ort-cuda")


def gpus_for(backend: str, asked: float | None = None) -> float:
    """GPUs a replica or worker of `backend` asks a scheduler for: `asked`, else 1 for a GPU backend, else 0."""
    if asked is not None:
        return asked
    return 1.0 if backend in GPU_BACKENDS else 0.0


def _ort_trt_cache_places(bundle: Bundle, flavour: str, device: int) -> tuple[tuple[str, str], ...]:
    """Where ORT's TensorRT provider may keep the engines it builds from `flavour` (code the GPU runs), as (root,
    folder), first fit first: under the bundle, else in the user cache (a read-only deployment copy, or a bundle
    folder others may write to). The runner vets them when it starts the session (OrtRunner.engine_folder).

    The key holds the artifact's sha256 and its weight files': the provider names its engines by the model's file
    name and its node names, not its weights, so a bundle exported again in place would otherwise run the old
    weights' engines."""
    trt_version = getattr(try_import("tensorrt"), "__version__", "trt-unknown")
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", gpu_host.gpu_name(device) or "gpu").strip("-")
    art = bundle.artifacts("onnx")[flavour]
    files = [art["sha256"]] + [data["sha256"] for data in art.get("data_files", [])]
    weights = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]
    key = f"{trt_version}-{gpu_host.compute_capability(device) or 'sm?'}-{gpu}-{flavour}-{weights}"
    return (
        (bundle.path, os.path.join(bundle.path, "cache", "ort-trt", key)),
        (cache_dir(), cache_dir("ort-trt", os.path.basename(os.path.abspath(bundle.path)), key)),
    )


def plans_for(bundle: Bundle, flavour: str) -> list[dict]:
    """The bundle's engine records (TensorRT plans and TensorRT-RTX engines) built from `flavour`."""
    return [a for a in bundle.manifest.get("artifacts", []) if a.get("kind") == "engine" and flavour_of(a) == flavour]


def _plan(bundle: Bundle, flavour: str, device: int) -> dict:
    """The bundle's engine for `flavour` that suits this GPU: a TensorRT plan before a TensorRT-RTX engine."""
    engines = plans_for(bundle, flavour)
    if not engines:
        raise BitError(
            f"bundle {bundle.path!r} has no {flavour} TensorRT plan; export one with bit-export --engine tensorrt "
            f"(plans: {', '.join(a['file'] for a in bundle.artifacts('engine').values()) or 'none'})"
        )
    cc = gpu_host.compute_capability(device)
    for art in sorted(engines, key=lambda a: a.get("library") != "tensorrt"):
        target = art.get("target", {})
        if target.get("kind") == "gpu" and target.get("compute_capability") == cc:
            return art
    return engines[0]  # plan_check explains why it does not fit


def runner_class(backend: str):
    """The runner class of `backend`, imported now (see RUNNERS)."""
    if backend not in RUNNERS:
        raise BitError(f"unknown backend {backend!r}; choose one of: auto, {', '.join(BACKENDS)}")
    module, _, name = RUNNERS[backend].partition(":")
    return getattr(importlib.import_module(module), name)


def create(
    bundle: Bundle,
    backend: str,
    precision: str = "fp32",
    threads: int | None = None,
    device: int = 0,
    concurrency: int = 1,
    **options,
):
    """A runner (not yet active) for `backend` at `precision`.

    concurrency: requests in flight at once; above 1, CPU backends are set up for throughput (throughput_options).
    options go to the runner: workers, cuda_graph (trt), hint, inference_precision (openvino)."""
    options = throughput_options(backend, check_concurrency(concurrency)) | options
    runner = runner_class(backend)
    _check_options(backend, options)
    if backend == "tf":
        return runner(bundle.manifest)
    flavour = flavour_for(backend, precision)
    if flavour is None:
        raise BitError(f"backend {backend} has no {precision} precision")
    if backend == "trt":
        art = _plan(bundle, flavour, device)
        return runner(bundle.file_path(art), art, bundle.input_spec, device=device, bundle_path=bundle.path, **options)
    path = bundle.artifact_path(flavour)
    if backend == "openvino":  # fp16 and INT8 compute their float layers in bf16 where it pays, gated on this host
        # by the bound the artifact's record holds (compare.tolerance_for at export), as the C++ library reads it
        recorded = bundle.artifacts("onnx")[flavour].get("bf16_tolerance")
        gate = (
            functools.partial(compute_gate.check, bundle, flavour, tolerance=Tolerance(**recorded))
            if recorded
            else None
        )
        verify = functools.partial(bundle.artifact_path, flavour)  # before a static-shape model reads it again
        tier = precision_of(flavour)
        return runner(path, threads=threads, tier=tier, gate=gate, verify=verify, **options)
    places = _ort_trt_cache_places(bundle, flavour, device) if backend == "ort-trt" else ()
    if backend == "ort-cpu" and precision_of(flavour) == "int8":  # bit-trt's GroupNorm kernel, gated on this host
        instead = "group_norm_kernel=False (ORT's own ops), as exported"
        gate = functools.partial(compute_gate.check, bundle, flavour, tolerance=INT8_KERNEL_PARITY, instead=instead)
        options = {"gate": gate} | options
    return runner(path, threads=threads, backend=backend, device=device, engine_cache=places, **options)


def settings_taken(backend: str) -> set[str]:
    """The settings a caller may give `backend`'s runner (those `create` gives itself left out)."""
    import inspect

    given_here = {"threads", "backend", "device", "bundle_path", "engine_cache", "tier", "gate", "verify"}
    params = inspect.signature(runner_class(backend)).parameters.values()
    return {p.name for p in params if p.default is not inspect.Parameter.empty} - given_here


def given_settings(backend: str | None = None, **settings) -> dict:
    """The runner settings a caller set, without those left at None (the runner keeps its own default for them).
    With `backend`, only those its runner takes: a bench row or a CLI that sets one for all backends."""
    given = {name: value for name, value in settings.items() if value is not None}
    if backend is None:
        return given
    taken = settings_taken(backend)
    return {name: value for name, value in given.items() if name in taken}


def _check_options(backend: str, options: dict) -> None:
    """Options the backend's runner does not take are one line, not a TypeError from deep inside."""
    taken = settings_taken(backend)
    unknown = sorted(set(options) - taken)
    if unknown:
        raise BitError(
            f"backend {backend} has no setting {', '.join(unknown)} (it takes: {', '.join(sorted(taken)) or 'none'})"
        )


def check_concurrency(concurrency) -> int:
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise BitError(f"concurrency must be a whole number of requests, at least 1, got {concurrency!r}")
    return concurrency


def throughput_options(backend: str, concurrency: int) -> dict:
    """What a CPU backend is given when `concurrency` requests are in flight at once (none at 1: latency).

    openvino: the THROUGHPUT hint, told how many requests to expect, so that it splits the cores into that many
    streams at most (OpenVINO's own choice below that). ort-cpu: `streams` concurrent requests, each on its share
    of the intra-op threads, where one session's pool shared by every request would have them contend.
    GPU backends overlap concurrent requests on their own (trt: one CUDA stream per worker)."""
    if concurrency == 1:
        return {}
    if backend == "openvino":
        return {"hint": "THROUGHPUT", "requests": concurrency}
    if backend == "ort-cpu":
        return {"streams": concurrency}
    return {}


def create_auto(
    bundle: Bundle,
    precision: str = "fp32",
    threads: int | None = None,
    device: int = 0,
    concurrency: int = 1,
    **options,
):
    """The first backend in AUTO_GPU/AUTO_CPU order that activates here.

    options: settings for the backends that take them (static_shapes: openvino), each given only to those; one that
    no backend in the order takes is one line.
    Returns (the active runner, why each backend before it was skipped)."""
    order = AUTO_GPU if gpu_host.has_gpu() else AUTO_CPU
    taken = {backend: settings_taken(backend) for backend in order}
    unknown = sorted(set(options) - set().union(*taken.values()))
    if unknown:
        tried = ", ".join(order)
        raise BitError(f"no backend auto picks from has the setting {', '.join(unknown)} (auto tries: {tried})")
    skipped = []
    for backend in order:
        mine = {k: v for k, v in options.items() if k in taken[backend]}
        try:
            runner = create(bundle, backend, precision, threads=threads, device=device, concurrency=concurrency, **mine)
            runner.activate()
        except BitError as exc:
            skipped.append(f"{backend}: {exc}")
            continue
        return runner, skipped
    raise BitError("no backend can run this bundle here:\n  " + "\n  ".join(skipped))
