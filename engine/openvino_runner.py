"""OpenVINO on the CPU: the bundle's ONNX compiled by OpenVINO's CPU plugin.

Measured (bench/results/runtime_cpu_r50x1_480.json, 2 cores, AVX512-VNNI, no AMX): on INT8 graphs OpenVINO
is 1.7x faster than ONNX Runtime's INT8 (2.0-2.35x over ORT FP32), where ORT runs the GroupNorm arithmetic
and Q/DQ as separate passes; at FP32 the two are equal. So `auto` prefers it on CPU hosts.

Arithmetic (`inference_precision`): fp32 graphs run in f32, so that their parity holds as exported. The fp16 and
INT8 tiers (`tier`, the precision backends.create gives for the flavour it loads) run their float arithmetic in bf16
where the CPU's native bf16 path computes faster than its f32 one (`fp16_arithmetic`: AMX-BF16, and AVX-512 BF16 on
AMD Zen 4 and later and Cooper Lake; engine/cpu_peak.bf16_pays): for fp16, 1.8x the f32 speed on R50x1 at 480 on an
AVX-512 BF16 EPYC (issue 20's benchmark_app figures), 3.5-5.1x with AMX; for INT8, whose convolutions run in INT8
either way, its GroupNorm statistics, residual sums and quantize steps, 1.07-1.22x (R50x1) and 1.15-1.21x (R50x3)
faster with AMX (docs/cpu.md, "INT8's float layers in bf16"). Not where bf16 would be emulated (AVX-512 without a
bf16 flag: 3.9x slower), nor on AVX-512 BF16 without AMX on Sapphire Rapids and later, where vdpbf16ps computes half
f32's FLOPs (0.72-0.84x f32's speed on R50x1 and R50x3 under an AVX512_CORE_BF16 cap; docs/cpu.md, "bf16 without
AMX"). bf16 is chosen on the host that runs it, not at export, so it is gated there: `gate` (engine/compute_gate.py)
runs the bundle's parity set in bf16 against TF before the runner serves. Where a tier runs in f32, `describe()`
says so and why. What OpenVINO compiled is read back from the compiled model, never assumed from what was asked.

The graph: the file is rewritten in memory after it is read (engine/openvino_graph.py): each GroupNorm on
per-channel statistics without reshaping the activations (the grouped reshape cost a layout Reorder each way), and
the stem's zero Pad folded into its MaxPool (OpenVINO ran the Pad with its reference kernel), and, with INT8's float
layers in bf16, each residual sum of quantized convolutions taken before their quantize.

Throughput (`hint`): LATENCY runs one request at a time on all cores; THROUGHPUT lets OpenVINO split the cores
into streams, each running its own request, for callers that send several requests at once.

Static shapes (`static_shapes`): the bundle's ONNX has a dynamic batch dimension, and OpenVINO's CPU plugin runs a
model compiled for one fixed shape faster (R50x1 at 480 on Zen 4, interleaved: INT8 THROUGHPUT 11.7-12.7 img/s
static against 10.6-11.2 dynamic; bf16 and f32 LATENCY 4-7% per image at batch 1 and 8). That was the gap between
bit-bench and benchmark_app, which compiles for the one shape it is given. So the first `static_shapes` batch
shapes a runner is called with twice get a model of their own, read from the file again (after the bundle's
checksum check, as at activation: the file must still be the one verified) and compiled for that shape on the
second call (a shape seen once, such as an accuracy check's, takes no slot). Each holds its own
weights and buffers (R50x1 fp32 at 480: +0.28 GB for batch 1 and 8; R50x3 about 1 GB apiece), hence the bound.
Any other shape, and any call while its model compiles, runs on the dynamic model compiled at activation; a shape
OpenVINO can't compile statically stays there.

Thread safety: the compiled models are shared; each calling thread gets its own infer request on each (they are
not thread-safe, the compiled models are), so many threads can call at once.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .compute_gate import GateFailed
from .cpu_host import onednn_host
from .cpu_peak import bf16_pays
from .errors import BitError, require
from .openvino_graph import Rewrites
from .openvino_graph import read as read_rewritten
from .runner import Runner

HINTS = ("LATENCY", "THROUGHPUT")
INFERENCE_PRECISIONS = ("f32", "bf16")
SEEN_SHAPES = 64  # shapes remembered as seen once: a caller varying its batch size without end can't grow memory


def import_openvino():
    return require("openvino")


def fp16_arithmetic(core) -> tuple[str, str]:
    """(what the fp16 tier computes in on this CPU, why): bf16 where OpenVINO offers it and it computes faster than
    f32 here (engine/cpu_peak.bf16_pays, on the CPU as oneDNN dispatches on it), else f32.

    OpenVINO's own capability list is not enough: it says BF16 on any AVX-512 CPU, with or without a native bf16
    path, and compiles bf16 there by emulating it (3.9x slower than f32 on R50x1 under an AVX512_CORE_VNNI cap)."""
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    pays, why = bf16_pays(onednn_host())
    if pays and "BF16" not in capabilities:
        pays, why = False, f"OpenVINO offers no bf16 here ({why})"
    if not pays:
        why += f"; OpenVINO's CPU capabilities: {', '.join(capabilities)}"
    return ("bf16" if pays else "f32"), why


# The precision tiers whose float arithmetic may run in bf16 (fp32 keeps its exported f32 parity).
BF16_TIERS = ("fp16", "int8")


def arithmetic_for(core, tier: str) -> str:
    """The inference precision the runner asks for unless told: for the fp16 and INT8 tiers fp16_arithmetic's,
    else (fp32) f32."""
    return fp16_arithmetic(core)[0] if tier in BF16_TIERS else "f32"


class OpenVinoRunner(Runner):
    name = "openvino"

    def __init__(
        self,
        model_path: str,
        threads: int | None = None,
        hint: str = "LATENCY",
        inference_precision: str | None = None,
        cache_dir: str | None = None,
        tier: str = "fp32",
        gate=None,
        requests: int | None = None,
        static_shapes: int = 2,
        verify=None,
    ):
        """hint: LATENCY (one request at a time, all cores) or THROUGHPUT (parallel streams for many threads).
        inference_precision: f32 or bf16; None: what `tier` (the file's precision: fp32, fp16 or int8) computes in
        here (arithmetic_for: for fp16 and int8, bf16 where it computes faster than f32).
        gate: called as gate(infer, described) once compiled in bf16; raises a BitError to refuse (a
        compute_gate.GateFailed for INT8, unless bf16 was asked for, runs its float layers in f32 instead, as the
        export gated it). None for a bf16 tier: the file's record holds no bf16_tolerance, so the tier runs f32,
        and a bf16 asked for is refused.
        requests: how many requests callers keep in flight (THROUGHPUT makes at most that many streams).
        static_shapes: how many batch shapes (each on its second call) get a model compiled for that shape alone
        (0: only the dynamic one).
        verify: called before the file is read again for a static model, to check it still matches what was
        verified at activation (backends.create passes the bundle's checksum check); raises a BitError if not."""
        super().__init__()
        if hint not in HINTS:
            raise BitError(f"OpenVINO performance hint must be LATENCY or THROUGHPUT, got {hint!r}")
        if inference_precision not in (None,) + INFERENCE_PRECISIONS:
            raise BitError(f"OpenVINO inference precision must be f32 or bf16, got {inference_precision!r}")
        if not isinstance(static_shapes, int) or static_shapes < 0:
            raise BitError(f"OpenVINO static_shapes must be a whole number 0 or more, got {static_shapes!r}")
        self.model_path = model_path
        self.threads = threads
        self.hint = hint
        self.inference_precision = inference_precision
        self.tier = tier
        self.gate = gate
        self.requests = requests
        self.cache_dir = cache_dir
        self.static_shapes = static_shapes
        self.verify = verify
        self.static: dict[tuple, object] = {}  # batch shape -> the model compiled for it alone
        self._static_tried: set[tuple] = set()  # shapes compiling, compiled or refused: each is tried once
        self._seen: set[tuple] = set()  # shapes called with once (at most SEEN_SHAPES of them are remembered)
        self._static_lock = threading.Lock()
        self.compute = None  # what OpenVINO compiled: f32 or bf16 (read back once active)
        self.why_f32 = ""  # for the fp16 tier, or INT8's float layers, run in f32: why
        self.rewrites = Rewrites()  # what runs differently from the file (engine/openvino_graph.py)
        self._local = threading.local()

    def _activate(self):
        ov = import_openvino()
        self.version = ov.__version__.split("-")[0]
        core = ov.Core()
        if self.cache_dir:
            core.set_property({"CACHE_DIR": self.cache_dir})
        asked, why = self.inference_precision, ""
        if asked == "bf16" and self.tier not in BF16_TIERS:  # the C++ library's words (bit::Classifier)
            raise BitError(
                "inference precision bf16 applies to the fp16 and int8 variants, whose records hold their gate "
                f"(bf16_tolerance); {os.path.basename(self.model_path)} is {self.tier}"
            )
        no_gate = f"{os.path.basename(self.model_path)} records no bf16_tolerance" if self.gate is None else ""
        if asked == "bf16" and no_gate:
            raise BitError(
                f"{no_gate}, the gate a bf16 run is held to; add it with bit-engine BUNDLE --upgrade-manifest, "
                "re-export the bundle, or use inference precision f32"
            )
        if asked is None and self.tier in BF16_TIERS and no_gate:
            upgrade = "add it with bit-engine BUNDLE --upgrade-manifest, or re-export"
            asked, why = "f32", f"{no_gate} (exported before bf16 runs were gated; {upgrade})"
        elif asked is None:
            asked, why = fp16_arithmetic(core) if self.tier in BF16_TIERS else ("f32", "")
        config = {
            "PERFORMANCE_HINT": self.hint,
            "INFERENCE_PRECISION_HINT": asked,
            "INFERENCE_NUM_THREADS": self.threads or (os.cpu_count() or 1),
        }
        if self.requests:
            config["PERFORMANCE_HINT_NUM_REQUESTS"] = self.requests
        self._core, self._config = core, config
        try:
            self.compiled = core.compile_model(self._read(), "CPU", config)
        except RuntimeError as exc:
            raise BitError(
                f"OpenVINO cannot load {self.model_path}: {str(exc).strip().splitlines()[-1][:300]}"
            ) from exc
        # An ov.Type, whose str() is "<Type: 'bfloat16'>": its short name is the one to compare
        compiled_type = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        self.compute = "bf16" if getattr(compiled_type, "to_string", compiled_type.__str__)() == "bf16" else "f32"
        self.streams = int(self.compiled.get_property("NUM_STREAMS"))
        if self.compute == "f32" and asked == "bf16":
            capabilities = ", ".join(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
            self.why_f32 = f"bf16 runs as f32: OpenVINO compiled f32 (its CPU capabilities: {capabilities})"
        elif self.compute == "f32" and self.tier in BF16_TIERS:
            self.why_f32 = f"{self._runs()} as f32: {why or 'f32 was asked for'}"
        self._generation = object()  # requests made before a deactivate are never reused after it
        if self.compute == "bf16" and self.gate is not None:
            try:
                self.gate(lambda batch: self._run(self.compiled, batch), self.describe())
            except GateFailed as exc:
                if self.tier != "int8" or self.inference_precision == "bf16":
                    self.compiled = None
                    raise
                # INT8's bf16 float layers are a saving, not the precision asked for: f32, as the export gated it
                config["INFERENCE_PRECISION_HINT"] = "f32"
                self.compiled = core.compile_model(self._read(), "CPU", config)
                self.compute = "f32"
                failures = "; ".join(exc.failures)
                self.why_f32 = f"{self._runs()} as f32: in bf16 it fails the accuracy gate against TF ({failures})"

    def _runs(self) -> str:
        return "int8's float layers run" if self.tier == "int8" else "fp16 runs"

    def _read(self):
        """The model as OpenVINO runs it: the file, rewritten for the arithmetic asked for (engine/openvino_graph.py:
        some rewrites pay only with bf16 float layers)."""
        bf16 = self._config["INFERENCE_PRECISION_HINT"] == "bf16"
        model, self.rewrites = read_rewritten(self._core, self.model_path, bf16)
        return model

    def describe(self) -> str:
        streams = f", {self.streams} streams" if self.hint == "THROUGHPUT" else ""
        why = f"; {self.why_f32}" if self.why_f32 else ""
        rewritten = f", {self.rewrites.describe()}" if self.rewrites.describe() else ""
        compute = f"int8, float layers {self.compute}" if self.tier == "int8" else self.compute
        return f"openvino {self.version} CPU ({self.hint.lower()}{streams}{rewritten}, {compute}{why})"

    def _deactivate(self):
        self.compiled = None
        with self._static_lock:
            self.static, self._static_tried, self._seen = {}, set(), set()
        # Each thread that ran a request holds its infer requests, and through them the compiled models: a fresh
        # local lets them go for every thread at once. Kept, a closed runner of R50x3 held its GBs for as long as
        # the caller's thread lived (bit-bench's main thread warms every model up: its R50x1 + R50x3 --throughput
        # run reached 21.5 GB with every model closed, and the kernel killed it beside benchmark_app).
        self._local = threading.local()

    def _compiled_for(self, shape: tuple):
        """The model compiled for `shape` alone, compiled here on the second call with that shape while fewer than
        `static_shapes` shapes have one; else the dynamic model (also while another thread compiles it)."""
        compiled = self.static.get(shape)
        if compiled is not None:
            return compiled
        with self._static_lock:
            if shape in self._static_tried or len(self._static_tried) >= self.static_shapes:
                return self.compiled
            if shape not in self._seen:  # the first call: a one-off (a check) must not take a slot
                if len(self._seen) < SEEN_SHAPES:
                    self._seen.add(shape)
                return self.compiled
            self._static_tried.add(shape)
            generation = self._generation
        ov = import_openvino()
        if self.verify is not None:  # read again minutes after activation: the file must still be the one verified
            self.verify()
        try:
            model = self._read()
            model.reshape({model.inputs[0]: ov.PartialShape(list(shape))})
            compiled = self._core.compile_model(model, "CPU", self._config)
        except RuntimeError:  # OpenVINO can't fix this shape: the dynamic model serves it, as before
            return self.compiled
        with self._static_lock:
            if generation is self._generation:  # not deactivated meanwhile
                self.static[shape] = compiled
        return compiled

    def _request(self, compiled):
        """This thread's infer request on `compiled` (requests are per thread; compiled models are shared)."""
        local = self._local
        if getattr(local, "generation", None) is not self._generation:
            local.requests, local.generation = {}, self._generation
        request = local.requests.get(id(compiled))
        if request is None or request[0] is not compiled:
            request = local.requests[id(compiled)] = (compiled, compiled.create_infer_request())
        return request[1]

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._run(self._compiled_for(batch.shape), batch)

    def _run(self, compiled, batch: np.ndarray) -> np.ndarray:
        request = self._request(compiled)
        try:
            request.infer({0: batch})
        except RuntimeError as exc:
            raise BitError(
                f"openvino: inference failed for a batch of shape {batch.shape}: "
                f"{str(exc).strip().splitlines()[-1][:300]}"
            ) from exc
        return request.get_output_tensor(0).data.copy()
