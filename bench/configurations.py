"""Which configurations `bit-bench` measures: every backend x precision x batch x concurrency the bundle and host allow.

A configuration that can't run here is kept with the reason, as trtexec users expect a GPU backend on a CPU host
to be reported, not silently dropped: its artifact is not in the bundle, its library is not installed, or
it needs a GPU. Names the bundle can never satisfy (an unknown backend, a precision no backend finds in
the bundle) are refused before anything is measured.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..engine import backends, gpu_host
from ..engine.bundle import Bundle
from ..engine.errors import BitError
from ..engine.precision import flavour_for

MODES = ("model", "end-to-end")
GPU_BACKENDS = ("trt", "ort-trt", "ort-cuda")
# What --backend means when not given: every backend but the TF reference, which is a baseline to ask for.
DEFAULT_BACKENDS = tuple(b for b in backends.BACKENDS if b != "tf")
# Servers, reached over the network; each runs what it was started with (bench/server_client.py): a Triton server
# (bench/triton_client.py, --triton-url) and the Ray Serve application (bench/ray_client.py, --ray-url).
TRITON = "triton"
RAY = "ray"
SERVERS = (TRITON, RAY)
BENCH_BACKENDS = backends.BACKENDS + SERVERS


@dataclass(frozen=True)
class Configuration:
    backend: str
    precision: str
    batch: int
    concurrency: int
    mode: str
    # The artifact flavour the backend loads for `precision` (engine/precision.py), resolved once when planned;
    # None where a server decides (SERVERS) or the backend has no such precision.
    flavour: str | None = None
    # Which bundle, where a run measures several (bit-bench R50X1 R50X3): its short name (model_names), the first
    # part of the id. Empty for a run of one bundle, whose ids stay backend/precision/batch/concurrency.
    model: str = ""

    @property
    def id(self) -> str:
        prefix = f"{self.model}/" if self.model else ""
        return f"{prefix}{self.backend}/{self.precision}/b{self.batch}/c{self.concurrency}"

    @property
    def throughput(self) -> bool:
        """Several requests in flight: the backend is set up for throughput (engine/backends.throughput_options)."""
        return self.concurrency > 1

    @property
    def engine_key(self) -> tuple[str, str, bool, str]:
        """Configurations that share one Classifier (one loaded model), as a server would: one set up for latency,
        one for throughput (sized for the plan's highest concurrency), per bundle."""
        return self.backend, self.precision, self.throughput, self.model


def model_names(bundles: list[Bundle]) -> list[str]:
    """The short name of each bundle of a run: "" for a run of one; else its variant, with its resolution where two
    share a variant (r50x1@480), and its place in the command where they share both (r50x1@480#2)."""
    if len(bundles) < 2:
        return [""]
    names = [b.manifest["model"]["variant"] for b in bundles]
    if len(set(names)) < len(names):
        names = [f"{n}@{b.input_spec.resolution}" for n, b in zip(names, bundles)]
    if len(set(names)) < len(names):
        names = [f"{n}#{i + 1}" for i, n in enumerate(names)]
    return names


def throughput_levels(concurrencies: tuple[int, ...], cores: int) -> tuple[int, ...]:
    """--throughput's concurrency levels: those asked for, plus one request per core and twice that (OpenVINO's
    THROUGHPUT hint makes up to one stream per core; more requests than streams keep every stream fed)."""
    return tuple(sorted(set(concurrencies) | {max(2, cores), 2 * max(2, cores)}))


def parse_list(text: str, what: str, allowed=None, cast=str) -> tuple:
    items = [item.strip() for item in str(text).split(",") if item.strip()]
    if not items:
        raise BitError(f"--{what} needs at least one value")
    try:
        values = tuple(dict.fromkeys(cast(item) for item in items))  # keeps order, drops repeats
    except ValueError as exc:
        raise BitError(f"--{what} takes a comma-separated list, got {text!r}") from exc
    if allowed is not None:
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise BitError(f"unknown {what} {', '.join(map(str, unknown))}; choose from: {', '.join(allowed)}")
    if cast is int and any(v < 1 for v in values):
        raise BitError(f"--{what} values must be at least 1, got {text!r}")
    return values


def flavour(backend: str, precision: str) -> str | None:
    """The flavour a configuration loads; None for a server (it runs what it was started with)."""
    return None if backend in SERVERS else flavour_for(backend, precision)


def artifact_missing(bundle: Bundle, backend: str, precision: str) -> str | None:
    """Why `backend` can't run `precision` from this bundle, or None when the bundle has what it needs."""
    if backend in SERVERS:  # the server loaded its own model; --precision labels it
        return None
    wanted = flavour(backend, precision)
    if wanted is None:
        return "the TF reference runs in float32 only" if backend == "tf" else f"{backend} has no {precision}"
    if backend == "tf":
        return None
    if backend == "trt":
        if not backends.plans_for(bundle, wanted):
            hint = f"bit-engine {bundle.path} --precision {precision}"
            return f"no {wanted} TensorRT plan in the bundle (add one with {hint})"
        return None
    if wanted not in bundle.artifacts("onnx"):
        return f"the bundle has no {wanted} model (export it with bit-export --precision {precision})"
    return None


def host_reason(backend: str) -> str | None:
    """Why `backend` can't run on this host at all, before loading anything; None when it may."""
    if backend in GPU_BACKENDS and not gpu_host.has_gpu():
        return "needs an NVIDIA GPU (none on this host)"
    return None


def plan(
    bundle: Bundle,
    backend_names: tuple[str, ...],
    precisions: tuple[str, ...],
    batches: tuple[int, ...],
    concurrencies: tuple[int, ...],
    mode: str,
    model: str = "",
) -> tuple[list[Configuration], dict[str, str]]:
    """(the configurations to try, {configuration id: why it is skipped}) in a stable, readable order; `model`:
    the bundle's short name in a run of several (model_names)."""
    for precision in precisions:
        if all(artifact_missing(bundle, b, precision) for b in backends.BACKENDS if b != "tf"):
            have = ", ".join(bundle.artifacts("onnx")) or "none"
            raise BitError(
                f"bundle {bundle.path!r} has no {precision} model for any backend (it has: {have}); "
                f"export it with bit-export --precision {precision}"
            )
    configs, skipped = [], {}
    for backend in backend_names:
        for precision in precisions:
            reason = host_reason(backend) or artifact_missing(bundle, backend, precision)
            resolved = None if reason else flavour(backend, precision)
            for batch in batches:
                for concurrency in concurrencies:
                    config = Configuration(backend, precision, batch, concurrency, mode, resolved, model)
                    configs.append(config)
                    if reason:
                        skipped[config.id] = reason
    return configs, skipped
