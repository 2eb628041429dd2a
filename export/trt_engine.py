"""TensorRT plans from the verified ONNX variants: TensorRT (10/11) where it and a GPU exist, TensorRT-RTX anywhere.

Both libraries share the builder / ONNX parser / optimization-profile API, so one code path builds both:
on a CPU-only host (our CI) `tensorrt_rtx` builds real engines for RTX-class GPUs, which proves every
variant passes NVIDIA's parser and builder; on a GPU host `tensorrt` builds plans for that GPU.

Precision lives in the ONNX: networks are strongly typed (TensorRT 11 removed the FP16/INT8 builder flags
and implicit calibrators, and ignores the STRONGLY_TYPED flag it keeps; on TensorRT 10 we set that flag).
No precision flag is set.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from ..engine.errors import BitError, install_hint
from ..engine.gpu_host import compute_capability as gpu_compute_capability
from ..engine.memory import trimmed_meanwhile
from ..engine.precision import PRECISIONS, flavour_for, flavour_of
from ..engine.tensorrt_library import LIBRARIES, ErrorLog, import_library, try_import
from ..engine.user_cache import cache_dir, read_kept, write_kept
from .group_norm_form import FORMS as GROUP_NORM_FORMS
from .group_norm_form import native_graph
from .trt_layer_types import precision_mix

if TYPE_CHECKING:  # annotations only: tests/tensorrt_api type-checks our calls against NVIDIA's bindings
    import tensorrt
    import tensorrt_rtx

ENGINE_CHOICES = ("auto", "none", *LIBRARIES)
HARDWARE_COMPATIBILITY = {
    "none": None,
    "ampere_plus": "AMPERE_PLUS",
    "same_compute_capability": "SAME_COMPUTE_CAPABILITY",
}
# The oldest TensorRT whose ONNX parser reads what a plan's graph uses (onnx-tensorrt's changelog and operator
# table; docs/tensorrt.md links them): float16 Q/DQ scales (int8-trt, opset 19) from 10.0, GroupNormalization-21
# with per-channel scale and bias from 10.9 (10.7 and older implement opset 18's per-group form only).
PARSER_FLOOR = {"float16 Q/DQ scales (opset 19)": (10, 0), "GroupNormalization-21": (10, 9)}
# What TensorRT builds from: fp32, fp16 and the S8S8 INT8 graph (int8-trt); int8-ort is for ORT's CPU kernels.
TENSORRT_FLAVOURS = tuple(flavour_for("trt", p) for p in PRECISIONS)


@dataclass
class BuildOptions:
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    optimization_level: int = 3  # 0-5: higher searches more tactics and builds longer
    workspace_mb: int | None = None  # None: the library's default (all device memory)
    version_compatible: bool = False  # TensorRT only: the plan runs on later TensorRT versions (lean runtime)
    hardware_compatibility: str = "none"  # a HARDWARE_COMPATIBILITY key
    timing_cache: str | None = None  # read if it exists, written after the build
    rtx_compute_capabilities: tuple[str, ...] = field(default_factory=tuple)  # e.g. ("SM89",); empty: library default
    tf32: bool = False  # TensorRT enables TF32 for FP32 layers by default; FP32 parity needs it off
    group_norm: str = "native"  # the GroupNorm form plans are built from (export/group_norm_form.py)

    def validate(self):
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise BitError(
                "batch profile must satisfy 1 <= min <= opt <= max, "
                f"got {self.min_batch}/{self.opt_batch}/{self.max_batch}"
            )
        if not 0 <= self.optimization_level <= 5:
            raise BitError(f"builder optimization level must be 0..5, got {self.optimization_level}")
        if self.hardware_compatibility not in HARDWARE_COMPATIBILITY:
            raise BitError(
                f"unknown hardware compatibility {self.hardware_compatibility!r}; choose one of: "
                f"{', '.join(HARDWARE_COMPATIBILITY)}"
            )
        if self.group_norm not in GROUP_NORM_FORMS:
            raise BitError(f"unknown GroupNorm form {self.group_norm!r}; choose one of: {', '.join(GROUP_NORM_FORMS)}")
        if self.workspace_mb is not None and self.workspace_mb < 1:
            raise BitError(f"workspace must be at least 1 MB, got {self.workspace_mb}")


def pick_library(engine: str = "auto"):
    """The module to build with: TensorRT when it can make a builder here (a GPU host), else TensorRT-RTX.

    engine: 'auto', 'tensorrt' or 'tensorrt_rtx'. None when 'auto' finds neither.
    """
    if engine != "auto":
        return import_library(engine)
    trt = try_import("tensorrt")
    if trt is not None:
        try:
            if trt.Builder(ErrorLog(trt).logger) is not None:
                return trt
        except (RuntimeError, TypeError):  # installed, but no GPU or driver here
            pass
    return try_import("tensorrt_rtx")


def _weak_typing_possible(trt) -> bool:
    """TensorRT 10 builds weakly typed networks unless asked. TensorRT 11 keeps the STRONGLY_TYPED flag only for
    API compatibility (11.4's bindings: "[DEPRECATED] ... ignored"): every network is strongly typed there."""
    return trt.__name__ == "tensorrt" and int(str(trt.__version__).split(".")[0]) < 11


def network_creation_flags(trt) -> int:
    """The `create_network` flags: STRONGLY_TYPED on TensorRT 10, none where it is the only kind of network."""
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if _weak_typing_possible(trt) and creation is not None and hasattr(creation, "STRONGLY_TYPED"):
        return 1 << int(creation.STRONGLY_TYPED)
    return 0


def strongly_typed(trt, network: tensorrt.INetworkDefinition) -> bool:
    """Whether `network` runs every tensor in the type the ONNX gives it, as the network itself reports."""
    creation = getattr(trt, "NetworkDefinitionCreationFlag", None)
    if trt.__name__ == "tensorrt" and not _weak_typing_possible(trt):
        return True  # TensorRT 11: the flag is ignored, so asking the network for it tells nothing
    if creation is not None and hasattr(creation, "STRONGLY_TYPED"):
        return bool(network.get_flag(creation.STRONGLY_TYPED))
    return True


def _timing_cache_state(library: str, used: bool, hit: bool) -> str:
    if used:
        return "reused" if hit else "created"
    if library == "tensorrt_rtx":
        return "not supported (TensorRT-RTX compiles tactics at run time)"
    return "not used"


def plan_name(flavour: str, library: str, version: str, target: str) -> str:
    """Plans are not portable across TensorRT versions or GPU architectures: both are in the name."""
    lib = "trt" if library == "tensorrt" else "rtx"
    return f"model.{flavour}.{lib}{version}.{target}.plan"


def build(onnx_path: str, input_name: str, resolution: int, options: BuildOptions, trt) -> tuple[memoryview, dict]:
    """Parse and build one plan; return its bytes (a view of the builder's own buffer: a copy would be the plan's
    size again, R50x3's 870 MB, beside the parser's weights) and the manifest record (without file/sha)."""
    options.validate()
    library = trt.__name__
    log = ErrorLog(trt)
    builder: tensorrt.Builder = trt.Builder(log.logger)
    if builder is None:
        raise BitError(f"{library} could not create a builder: {'; '.join(log.errors) or 'no GPU or driver?'}")
    network = builder.create_network(network_creation_flags(trt))
    if not strongly_typed(trt, network):
        # A weakly typed network would let the builder pick precisions itself: the ONNX variant's verified
        # types would no longer be what runs.
        raise BitError(f"{library} {trt.__version__} made a weakly typed network; bit-trt needs strongly typed ones")
    parser: tensorrt.OnnxParser = trt.OnnxParser(network, log.logger)
    if not parser.parse_from_file(onnx_path):
        errors = []
        for i in range(parser.num_errors):
            err = parser.get_error(i)
            where = f"node {err.node_name() or err.node()} ({err.node_operator()})" if err.node() >= 0 else "graph"
            errors.append(f"{where}: {err.desc()}")
        raise BitError(
            f"{library} cannot parse {os.path.basename(onnx_path)}: {errors[0] if errors else 'unknown error'}"
            + (f" (+{len(errors) - 1} more)" if len(errors) > 1 else "")
        )
    config = builder.create_builder_config()
    config.builder_optimization_level = options.optimization_level
    if options.workspace_mb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_mb << 20)
    if not options.tf32 and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)
    if options.version_compatible:
        if not hasattr(trt.BuilderFlag, "VERSION_COMPATIBLE"):
            raise BitError(f"{library} has no version-compatible plans")
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    level = HARDWARE_COMPATIBILITY[options.hardware_compatibility]
    if level is not None:
        if not hasattr(trt.HardwareCompatibilityLevel, level):
            raise BitError(
                f"{library} does not support hardware compatibility level {options.hardware_compatibility!r}"
            )
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    if options.rtx_compute_capabilities:
        if library != "tensorrt_rtx":
            raise BitError("--rtx-cc applies to TensorRT-RTX engines only")
        rtx_config = cast("tensorrt_rtx.IBuilderConfig", config)  # compute capabilities are TensorRT-RTX's alone
        rtx_config.num_compute_capabilities = len(options.rtx_compute_capabilities)
        for i, cc in enumerate(options.rtx_compute_capabilities):
            if not hasattr(trt.ComputeCapability, cc.upper()):
                raise BitError(
                    f"unknown compute capability {cc!r}; TensorRT-RTX knows "
                    f"{', '.join(m for m in trt.ComputeCapability.__members__ if m.startswith('SM'))}"
                )
            rtx_config.set_compute_capability(getattr(trt.ComputeCapability, cc.upper()), i)
    cache_hit = False
    # TensorRT-RTX compiles tactics on the device at run time; its timing-cache calls are no-ops (deprecated).
    use_cache = bool(options.timing_cache) and library == "tensorrt"
    if use_cache:  # its tactics choose the kernels the plan runs: in the user cache, only this user's own is read
        try:
            blob = read_kept(options.timing_cache) or b""
        except OSError as exc:
            raise BitError(f"timing cache {options.timing_cache!r} is unreadable ({exc.strerror or exc})") from exc
        cache_hit = bool(blob)
        config.set_timing_cache(config.create_timing_cache(blob), False)
    profile = builder.create_optimization_profile()
    shape = lambda b: (b, resolution, resolution, 3)  # noqa: E731
    profile.set_shape(input_name, shape(options.min_batch), shape(options.opt_batch), shape(options.max_batch))
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        detail = log.last()
        hint = " (out of GPU memory? lower --max-batch or --workspace-mb)" if "memory" in detail.lower() else ""
        raise BitError(f"{library} failed to build an engine from {os.path.basename(onnx_path)}: {detail}{hint}")
    if use_cache:
        write_kept(options.timing_cache, bytes(config.get_timing_cache().serialize()), "timing cache")
    record = {
        "library": library,
        "library_version": trt.__version__,
        "profile": {"min": options.min_batch, "opt": options.opt_batch, "max": options.max_batch},
        "optimization_level": options.optimization_level,
        "version_compatible": options.version_compatible,
        "hardware_compatibility": options.hardware_compatibility,
        "strongly_typed": strongly_typed(trt, network),
        "precision_mix": precision_mix(network, trt),  # the parser's types: what this plan runs in
        "tf32": options.tf32,
        "timing_cache": _timing_cache_state(library, use_cache, cache_hit),
    }
    if library == "tensorrt_rtx":
        rtx_config = cast("tensorrt_rtx.IBuilderConfig", config)
        ccs = [
            str(rtx_config.get_compute_capability(i)).split(".")[-1] for i in range(rtx_config.num_compute_capabilities)
        ]
        record["target"] = {"kind": "rtx", "compute_capabilities": ccs or ["library default"]}
    else:
        record["target"] = {"kind": "gpu", "compute_capability": gpu_compute_capability()}
    return memoryview(plan), record  # the view keeps the plan's buffer alive


def builder_for(engine: str, require_engine: bool = False, progress=lambda msg: None):
    """(library module, plan target) for `engine`; None when `engine` is none, or auto finds no builder."""
    if engine not in ENGINE_CHOICES:
        raise BitError(f"unknown engine {engine!r}; choose one of: {', '.join(ENGINE_CHOICES)}")
    if engine == "none":
        return None
    trt = pick_library(engine)
    if trt is None:
        if require_engine:
            raise BitError(
                f"no TensorRT or TensorRT-RTX on this host and --require-engine was given "
                f"({install_hint('tensorrt_rtx')})"
            )
        progress(
            f"no TensorRT or TensorRT-RTX on this host: ONNX variants written, no engines "
            f"({install_hint('tensorrt_rtx')})"
        )
        return None
    return trt, gpu_compute_capability() if trt.__name__ == "tensorrt" else "rtx"


def tensorrt_sources(artifacts: list[dict]) -> list[dict]:
    """The ONNX artifacts TensorRT builds plans from (every one but the ORT-only INT8 graph)."""
    return [a for a in artifacts if a["kind"] == "onnx" and flavour_of(a) in TENSORRT_FLAVOURS]


def check_parser_reads(trt, onnx_file: str, uses: list[str]) -> None:
    """Refuse, in one line naming the file, a graph that uses something this TensorRT's parser cannot read
    (PARSER_FLOOR). TensorRT-RTX's parser reads all of it."""
    if trt.__name__ != "tensorrt":
        return
    version = tuple(int(v) for v in str(trt.__version__).split(".")[:2])
    for use in uses:
        floor = PARSER_FLOOR[use]
        if version < floor:
            hint = "build with --group-norm instance-norm" if use == "GroupNormalization-21" else "use TensorRT >= 10"
            raise BitError(
                f"{onnx_file} uses {use}, which TensorRT {trt.__version__}'s parser cannot read (it needs "
                f"{'.'.join(map(str, floor))} or later); {hint}"
            )


def build_plans(
    trt,
    target: str,
    sources: list[dict],
    onnx_path,
    writer,
    input_name: str,
    resolution: int,
    options: BuildOptions,
    parity,
    progress=lambda msg: None,
) -> list[dict]:
    """One plan per ONNX record in `sources` (read from `onnx_path(record)`), written through `writer`
    (`path(name)` -> file path, `record(name)` -> {file, bytes, sha256}); returns the plans' manifest records.
    parity: (uint8 images, TF's logits), which a rewritten graph must match before it is built."""
    library = trt.__name__
    if options.timing_cache is None and library == "tensorrt":  # per library version and GPU, like plans
        options = dataclasses.replace(
            options, timing_cache=os.path.join(cache_dir("timing"), f"{library}-{trt.__version__}-{target}.cache")
        )
    plans = []
    for art in sources:
        flavour = flavour_of(art)
        progress(f"building a {library} {trt.__version__} engine from {art['file']} ...")
        start = time.perf_counter()
        uses = ["float16 Q/DQ scales (opset 19)"] if art.get("opset", 0) >= 19 and art["precision"] == "int8" else []
        check_parser_reads(
            trt, art["file"], uses + (["GroupNormalization-21"] if options.group_norm == "native" else [])
        )
        graph: contextlib.AbstractContextManager[tuple[str, dict]]
        if options.group_norm == "native":  # a rewrite, checked against TF, in a file that goes after the build
            graph = native_graph(onnx_path(art), art["precision"], parity, progress=progress)
        else:
            graph = contextlib.nullcontext((onnx_path(art), {"form": "instance-norm"}))
        with graph as (graph_path, form), trimmed_meanwhile():  # the builder's freed GBs go back as it runs
            plan, record = build(graph_path, input_name, resolution, options, trt)
        record["group_norm"] = form
        name = plan_name(flavour, library, trt.__version__, target)
        with open(writer.path(name), "wb") as f:
            f.write(plan)
        del plan
        record["build_s"] = round(time.perf_counter() - start, 2)
        progress(f"{name}: built in {record['build_s']:.1f} s")
        plans.append(
            {
                **writer.record(name),
                "kind": "engine",
                "precision": art["precision"],
                "flavour": flavour,
                "from": art["file"],
                **record,
            }
        )
    return plans


def build_engines(
    writer,
    artifacts: list[dict],
    input_name: str,
    resolution: int,
    engine: str,
    options: BuildOptions,
    parity,
    require_engine: bool = False,
    progress=lambda msg: None,
) -> list[dict]:
    """The export's engine step: a plan from every ONNX artifact TensorRT runs, with the library `engine`
    picks, written beside them through `writer`; [] when there is no builder and none is required.
    parity: (uint8 images, TF's logits), as for build_plans."""
    picked = builder_for(engine, require_engine, progress)
    if picked is None:
        return []
    trt, target = picked
    return build_plans(
        trt,
        target,
        tensorrt_sources(artifacts),
        lambda art: writer.path(art["file"]),
        writer,
        input_name,
        resolution,
        options,
        parity,
        progress,
    )
