"""A Triton model repository from a bundle: which models, their files, and an atomic write to disk.

    OUT/<name>_<backend>_<precision>/config.pbtxt, labels.txt, 1/model.onnx | 1/model.xml | 1/model_sm90.plan ...
    OUT/<name>_<backend>_<precision>_image/config.pbtxt, labels.txt, 1/      (ensemble: bytes -> logits)
    OUT/<name>_preprocess/config.pbtxt, 1/model.py, warmup/image.bin       (Python backend)
    OUT/README.md                                                           (what is here, how to serve it)

Only verified bundle files are used (their checksums are checked on the way). The repository is built in
a sibling folder and renamed into place, so an interrupted run leaves no half-written repository.
"""

from __future__ import annotations

import os
import shutil
import struct
import tempfile
from dataclasses import dataclass, field

import numpy as np

from ..engine import backends
from ..engine.bundle import Bundle, give_mkdir_mode
from ..engine.errors import BitError
from ..engine.openvino_graph import read as read_rewritten
from ..engine.openvino_runner import import_openvino
from ..engine.precision import PRECISIONS, check_precision, flavour_for, precision_of
from . import pbtxt, triton_lockdown, triton_models
from .batching import DEFAULT_MAX_BATCH, TRITON_MAX_QUEUE_DELAY_US, check_max_batch
from .triton_models import ENGINE_BACKEND, LABELS_FILE, TRITON_BACKENDS, WARMUP_IMAGE, Batching, ImageLimits

MODEL_PY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "triton_python", "model.py")


@dataclass(frozen=True)
class RepositoryOptions:
    backends: tuple[str, ...] = ("auto",)  # auto: tensorrt where the bundle has TensorRT plans, else onnxruntime
    precisions: tuple[str, ...] = ()  # empty: every precision the bundle has for each backend
    name: str | None = None  # model name prefix; default bit_<variant>
    max_batch: int | None = None  # None: a TensorRT plan's profile max, DEFAULT_MAX_BATCH for ONNX (serve/batching.py)
    preferred_batch: tuple[int, ...] = ()  # empty: the profile's opt and max
    max_queue_delay_us: int = TRITON_MAX_QUEUE_DELAY_US
    instances: int = 1
    preprocess_instances: int = 2
    onnxruntime_device: str = "cpu"
    openvino_hint: str = "LATENCY"
    ensembles: bool = True
    max_image_pixels: int = ImageLimits.max_image_pixels  # the preprocessing model's limits
    max_decode_mb: int = ImageLimits.max_decode_mb

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(self.max_image_pixels, self.max_decode_mb)


@dataclass
class ModelPlan:
    """One classifier to write: its Triton backend, precision, the artifact flavour that implements it, and the
    bundle records of its files."""

    backend: str
    precision: str
    flavour: str
    records: list[dict]
    batching: Batching
    notes: list[str] = field(default_factory=list)


def triton_plans(bundle: Bundle, flavour: str) -> list[dict]:
    """The bundle's TensorRT plans of `flavour` that Triton's tensorrt_plan backend can load: plans built by
    TensorRT for a known GPU. TensorRT-RTX engines need the TensorRT-RTX runtime, which Triton does not have."""
    return [
        a
        for a in backends.plans_for(bundle, flavour)
        if a.get("library") == "tensorrt" and a.get("target", {}).get("kind") == "gpu"
    ]


def _triton_cc(cc: str) -> str:
    """'sm90' -> '9.0', '120' style numbers included ('sm120' -> '12.0'): Triton's cc_model_filenames keys."""
    digits = cc.lower().removeprefix("sm")
    return f"{digits[:-1]}.{digits[-1]}"


def _backends(bundle: Bundle, requested: tuple[str, ...]) -> list[str]:
    if "all" in requested:
        return list(TRITON_BACKENDS)
    if "auto" in requested:
        has_plans = any(triton_plans(bundle, v) for v in bundle.artifacts("onnx"))
        return ["tensorrt" if has_plans else "onnxruntime"]
    unknown = [b for b in requested if b not in TRITON_BACKENDS]
    if unknown:
        raise BitError(f"unknown Triton backend {unknown[0]!r}; choose from: auto, all, {', '.join(TRITON_BACKENDS)}")
    return list(dict.fromkeys(requested))


def _batching(options: RepositoryOptions, max_batch: int, opt: int | None, instances: int) -> Batching:
    preferred = options.preferred_batch or tuple(sorted({b for b in (opt, max_batch) if b and b > 1}))
    bad = [b for b in preferred if not 1 <= b <= max_batch]
    if bad:
        raise BitError(f"--preferred-batch {bad[0]} is outside 1..{max_batch} (the model's max batch)")
    return Batching(max_batch, preferred, options.max_queue_delay_us, instances)


def _plan_model(bundle: Bundle, precision: str, flavour: str, options: RepositoryOptions) -> ModelPlan | str:
    """The TensorRT model for `flavour`, or why there is none."""
    plans = triton_plans(bundle, flavour)
    if not plans:
        rtx = [a["file"] for a in backends.plans_for(bundle, flavour)]
        why = f"TensorRT-RTX engines ({', '.join(rtx)}) do not run on Triton's tensorrt_plan backend; " if rtx else ""
        return (
            f"bundle {bundle.path!r} has no {precision} TensorRT plan for Triton: {why}build one on the GPU host "
            f"with bit-engine {bundle.path} --engine tensorrt --precision {precision}"
        )
    by_cc: dict[str, dict] = {}
    for art in plans:
        by_cc.setdefault(art["target"]["compute_capability"], art)
    profiles = [art.get("profile", {}) for art in by_cc.values()]
    if any(p.get("min", 1) > 1 for p in profiles):
        raise BitError(
            f"the {precision} TensorRT plans' profile starts at batch {max(p['min'] for p in profiles)}; "
            "Triton sends batches from 1: rebuild with bit-engine --min-batch 1"
        )
    plan_max = min(p.get("max", 1) for p in profiles)
    max_batch = check_max_batch(options.max_batch, plan_max, f"the {precision} TensorRT plans'") or plan_max
    opt = min(p.get("opt", plan_max) for p in profiles)
    batching = _batching(options, max_batch, opt, options.instances)
    versions = sorted({f"TensorRT {a.get('library_version', '?')}" for a in by_cc.values()})
    note = f"built by {', '.join(versions)}: serve with a Triton release that carries exactly that TensorRT"
    return ModelPlan("tensorrt", precision, flavour, list(by_cc.values()), batching, [note])


def plan_models(bundle: Bundle, options: RepositoryOptions) -> tuple[list[ModelPlan], list[str]]:
    """The classifiers to write, and why a default backend/precision pair was left out."""
    skipped: list[str] = []
    explicit = bool(options.precisions)
    precisions = [check_precision(p) for p in options.precisions or PRECISIONS]
    models = []
    for backend in _backends(bundle, options.backends):
        for precision in precisions:
            flavour = flavour_for(ENGINE_BACKEND[backend], precision)
            if backend == "tensorrt":
                found = _plan_model(bundle, precision, flavour, options)
            elif flavour in bundle.artifacts("onnx"):
                max_batch = check_max_batch(options.max_batch, None) or DEFAULT_MAX_BATCH
                found = ModelPlan(
                    backend,
                    precision,
                    flavour,
                    [bundle.artifacts("onnx")[flavour]],
                    _batching(options, max_batch, None, options.instances),
                )
            else:
                found = (
                    f"bundle {bundle.path!r} has no {flavour} ONNX model for {backend}; it has: "
                    f"{', '.join(bundle.artifacts('onnx')) or 'none'} (bit-export --precision {precision})"
                )
            if isinstance(found, str):
                if explicit:
                    raise BitError(found)
                skipped.append(f"{backend} {precision}: {found}")
            else:
                models.append(found)
    if not models:
        raise BitError("nothing to serve: " + "; ".join(skipped))
    return models, skipped


def _place(src: str, dst: str) -> None:
    """A hard link where the repository shares the bundle's file system (a 900 MB model is not copied
    twice), a copy otherwise. Neither Triton nor bit-trt writes model files in place."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def _model_files(bundle: Bundle, model: ModelPlan, version_dir: str) -> dict[str, str]:
    """Copy (or link) the model's verified files into its version folder; returns Triton's file names."""
    if model.backend == "tensorrt":
        names = {}
        for art in model.records:
            cc = art["target"]["compute_capability"]
            names[_triton_cc(cc)] = f"model_{cc}.plan"
            _place(bundle.file_path(art), os.path.join(version_dir, names[_triton_cc(cc)]))
        return names
    art = model.records[0]
    if model.backend == "openvino":
        return _openvino_model(bundle.file_path(art), version_dir, model)
    _place(bundle.file_path(art), os.path.join(version_dir, "model.onnx"))
    for data in art.get("data_files", []):  # external weights keep the name the ONNX refers to them by
        _place(os.path.join(bundle.path, data["file"]), os.path.join(version_dir, os.path.basename(data["file"])))
    return {"": "model.onnx"}


# What Triton's OpenVINO backend computes in: it passes OpenVINO no inference precision but bf16 (HINT_BF16), so
# OpenVINO's default decides, and that is bf16 on a CPU with native bf16 (AMX-BF16, AVX512-BF16), f32 elsewhere.
# bit-serve's openvino runner takes bf16 only where it computes faster than f32 (engine/cpu_peak.bf16_pays), which
# differs on AVX-512 BF16 without AMX on Sapphire Rapids and later (docs/cpu.md, "bf16 without AMX").
OPENVINO_ARITHMETIC = {
    "fp16": "bf16 where the CPU has native bf16, else f32 (OpenVINO's default; bit-serve's openvino runner takes "
    "bf16 only where it computes faster than f32)",
    "int8": "float layers in bf16 where the CPU has native bf16, else f32 (OpenVINO's default; bit-serve's openvino "
    "runner takes bf16 only where it computes faster than f32, gated against TF); the IR adds its quantized "
    "convolutions from their float outputs, as that runner does in bf16 (1.25-1.37x there; 0.97-1.02x in f32)",
    "fp32": "float parts in bf16 where the CPU has native bf16, as OpenVINO defaults to there (Triton's OpenVINO "
    "backend cannot ask for f32: serve onnxruntime, or bit-serve's openvino, where f32 must hold)",
}


def _openvino_model(onnx_path: str, version_dir: str, model: ModelPlan) -> dict[str, str]:
    """OpenVINO's IR of the bundle's ONNX rewritten as bit-serve's openvino runner runs it in bf16
    (engine/openvino_graph.py: the GroupNorms on channel statistics, the stem's Pad in its MaxPool, INT8's residual
    sums from the convolutions' float outputs), the faster form (docs/cpu.md); Triton's backend compiles what it
    reads. Weights stay f32, the bundle's own (compress_to_fp16=False). Without OpenVINO here, the ONNX as exported,
    and the note says so."""
    try:
        ov = import_openvino()
    except BitError:
        _place(onnx_path, os.path.join(version_dir, "model.onnx"))
        name = "model.onnx"
        what = (
            f"{os.path.basename(onnx_path)} as exported: OpenVINO is not installed where bit-triton ran "
            "(pip install 'bit-trt[openvino]' writes OpenVINO's IR with the GroupNorms on channel statistics and the "
            "stem's Pad in its MaxPool, the faster form)"
        )
    else:
        try:
            # Triton's OpenVINO picks the arithmetic on the host it runs on: bf16 wherever the CPU has native bf16,
            # where the sums rewrite pays 1.25-1.37x; in f32 it measured 0.97-1.02x (docs/cpu.md)
            ir, rewrites = read_rewritten(ov.Core(), onnx_path, bf16=True)
            ov.save_model(ir, os.path.join(version_dir, "model.xml"), compress_to_fp16=False)
        except RuntimeError as exc:  # OpenVINO's own errors: a file it can't read, a disk that fills
            # its message is a stack of "Exception from <source>:<line>:" lines, then what went wrong
            said = [x.strip() for x in str(exc).splitlines() if x.strip() and not x.startswith("Exception from ")]
            raise BitError(f"OpenVINO could not write its IR of {onnx_path}: {(said or ['?'])[0]}") from exc
        name = "model.xml"
        what = f"OpenVINO IR of {os.path.basename(onnx_path)}, {rewrites.describe() or 'as exported'}"
    model.notes += [what, OPENVINO_ARITHMETIC[precision_of(model.precision)]]
    return {"": name}


def _warmup_image(resolution: int) -> bytes:
    """Triton's TYPE_STRING warm-up file: a 4-byte little-endian length, then the element (a PNG)."""
    import cv2

    gradient = np.linspace(0, 255, resolution * resolution * 3, dtype=np.float32).astype(np.uint8)
    ok, png = cv2.imencode(".png", gradient.reshape(resolution, resolution, 3))
    if not ok:
        raise BitError("OpenCV could not encode the warm-up PNG")
    data = png.tobytes()
    return struct.pack("<I", len(data)) + data


def _write(path: str, text: str | bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(text.encode("utf-8") if isinstance(text, str) else text)


def model_name(prefix: str, model: ModelPlan) -> str:
    return f"{prefix}_{model.backend}_{model.precision}"


def write_repository(bundle: Bundle, out: str, options: RepositoryOptions, force: bool = False, progress=print) -> dict:
    """Write the repository to `out` (replacing it only with force). Returns {model name: description}."""
    models, skipped = plan_models(bundle, options)
    out = os.path.abspath(out)
    if os.path.exists(out) and not force:
        raise BitError(f"{out} already exists; pass --force to replace it")
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    if not os.access(parent, os.W_OK):
        raise BitError(f"cannot write into {parent}: permission denied")
    prefix = options.name or triton_models.default_model_name(bundle.manifest)
    spec = bundle.input_spec
    labels = "".join(f"{entry['name']}\n" for entry in bundle.labels())
    output = bundle.manifest["output"]["name"]
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    written: dict[str, str] = {}
    try:
        preprocess_name = f"{prefix}_preprocess"
        for model in models:
            name = model_name(prefix, model)
            version_dir = os.path.join(staging, name, "1")
            os.makedirs(version_dir)
            files = _model_files(bundle, model, version_dir)
            config = triton_models.classifier(
                name,
                model.backend,
                spec.name,
                output,
                spec.resolution,
                bundle.num_classes,
                model.batching,
                files,
                device=options.onnxruntime_device,
                openvino_hint=options.openvino_hint,
            )
            _write(os.path.join(staging, name, "config.pbtxt"), pbtxt.dumps(config))
            _write(os.path.join(staging, name, LABELS_FILE), labels)
            written[name] = f"{model.backend} {model.precision} ({model.flavour}), max batch {model.batching.max_batch}"
            if model.notes:
                written[name] += "; " + "; ".join(model.notes)
            if options.ensembles:
                image_name = name + triton_models.IMAGE_SUFFIX
                config = triton_models.ensemble(
                    image_name, preprocess_name, name, spec.name, output, bundle.num_classes, model.batching.max_batch
                )
                _write(os.path.join(staging, image_name, "config.pbtxt"), pbtxt.dumps(config))
                _write(os.path.join(staging, image_name, LABELS_FILE), labels)
                os.makedirs(os.path.join(staging, image_name, "1"))  # Triton wants a version folder, even empty
                written[image_name] = f"ensemble: image bytes -> {preprocess_name} -> {name}"
        if options.ensembles:
            max_batch = max(m.batching.max_batch for m in models)
            batching = _batching(options, max_batch, None, options.preprocess_instances)
            config = triton_models.preprocess(
                preprocess_name, spec.name, spec.to_manifest(), batching, options.image_limits
            )
            _write(os.path.join(staging, preprocess_name, "config.pbtxt"), pbtxt.dumps(config))
            os.makedirs(os.path.join(staging, preprocess_name, "1"))
            shutil.copyfile(MODEL_PY, os.path.join(staging, preprocess_name, "1", "model.py"))
            _write(os.path.join(staging, preprocess_name, "warmup", WARMUP_IMAGE), _warmup_image(spec.resolution))
            written[preprocess_name] = "python backend: encoded image bytes -> float32 NHWC (bit-trt's preprocessing)"
        _write(os.path.join(staging, "README.md"), _readme(bundle, out, written, skipped))
        give_mkdir_mode(staging)
        _swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    for line in skipped:
        progress(f"skipped {line}")
    return written


def _swap_into_place(staging: str, out: str) -> None:
    old = None
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old-", dir=os.path.dirname(out))
        os.rename(out, os.path.join(old, "repository"))
    os.rename(staging, out)
    if old:
        shutil.rmtree(old, ignore_errors=True)


def serve_command(out: str) -> str:
    """A docker command that serves the repository at `out` (written as given: "$PWD/OUT" expands) on this host's
    loopback only, the models fixed and Triton's admin APIs closed (triton_lockdown.py)."""
    ports = " ".join(f"-p 127.0.0.1:{port}:{port}" for port in (8000, 8001, 8002))
    lockdown = " ".join(triton_lockdown.shell_word(arg) for arg in triton_lockdown.arguments())
    return f"docker run --rm {ports} -v {out}:/models IMAGE tritonserver --model-repository=/models {lockdown}"


def _readme(bundle: Bundle, out: str, written: dict[str, str], skipped: list[str]) -> str:
    lines = [
        "# Triton model repository written by bit-triton",
        "",
        f"From bundle `{bundle.path}` ({bundle.manifest['model'].get('variant')}, "
        f"{bundle.manifest['model']['source'].get('description', bundle.manifest['model']['source'].get('kind'))}).",
        "",
        "## Models",
        "",
        *[f"- `{name}`: {what}" for name, what in written.items()],
        "",
        "## Serve it",
        "",
        "```",
        serve_command(out),
        "```",
        "",
        "IMAGE: a Triton release image (nvcr.io/nvidia/tritonserver:<yy.mm>-py3) with `pip install bit-trt` added",
        "for the preprocessing model; TensorRT models need the release whose TensorRT built their plans.",
        "",
    ]
    if skipped:
        lines += ["## Not included", "", *[f"- {line}" for line in skipped], ""]
    return "\n".join(lines)
