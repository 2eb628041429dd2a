"""OpenVINO on the CPU: the bundle's ONNX compiled by OpenVINO's CPU plugin.

Measured (bench/results/runtime_cpu_r50x1_480.json, 2 cores, AVX512-VNNI, no AMX): on INT8 graphs OpenVINO
is 1.7x faster than ONNX Runtime's INT8 (2.0-2.35x over ORT FP32), where ORT runs the GroupNorm arithmetic
and Q/DQ as separate passes; at FP32 the two are equal. So `auto` prefers it on CPU hosts.

Precision: OpenVINO's CPU plugin runs FP32 models in bf16 by default where the CPU supports bf16 (this one
does). That cost 2.5e-2 relative L2 on R50x1's logits and, without AMX, ran slower (278 vs 185 ms). The
runner pins `f32` so that a variant's parity holds as exported; `inference_precision="bf16"` opts in
and is reported by `describe()`.

Thread safety: one compiled model; each calling thread gets its own infer request (they are not
thread-safe, the compiled model is), so many threads can call at once.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from .errors import BitError, require
from .runner import Runner


def import_openvino():
    return require("openvino")


class OpenVinoRunner(Runner):
    name = "openvino"

    def __init__(
        self,
        model_path: str,
        threads: int | None = None,
        hint: str = "LATENCY",
        inference_precision: str = "f32",
        cache_dir: str | None = None,
    ):
        """hint: LATENCY (one request at a time, all cores) or THROUGHPUT (parallel streams for many threads)."""
        super().__init__()
        if hint not in ("LATENCY", "THROUGHPUT"):
            raise BitError(f"OpenVINO performance hint must be LATENCY or THROUGHPUT, got {hint!r}")
        if inference_precision not in ("f32", "bf16"):
            raise BitError(f"OpenVINO inference precision must be f32 or bf16, got {inference_precision!r}")
        self.model_path = model_path
        self.threads = threads
        self.hint = hint
        self.inference_precision = inference_precision
        self.cache_dir = cache_dir
        self._local = threading.local()

    def _activate(self):
        ov = import_openvino()
        self.version = ov.__version__.split("-")[0]
        core = ov.Core()
        if self.cache_dir:
            core.set_property({"CACHE_DIR": self.cache_dir})
        config = {
            "PERFORMANCE_HINT": self.hint,
            "INFERENCE_PRECISION_HINT": self.inference_precision,
            "INFERENCE_NUM_THREADS": self.threads or (os.cpu_count() or 1),
        }
        try:
            self.compiled = core.compile_model(self.model_path, "CPU", config)
        except RuntimeError as exc:
            raise BitError(
                f"OpenVINO cannot load {self.model_path}: {str(exc).strip().splitlines()[-1][:300]}"
            ) from exc
        self._generation = object()  # requests made before a deactivate are never reused after it

    def describe(self) -> str:
        return f"openvino {self.version} CPU ({self.hint.lower()}, {self.inference_precision})"

    def _deactivate(self):
        self.compiled = None

    def _request(self):
        local = self._local
        if getattr(local, "generation", None) is not self._generation:
            local.request = self.compiled.create_infer_request()
            local.generation = self._generation
        return local.request

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        request = self._request()
        try:
            request.infer({0: batch})
        except RuntimeError as exc:
            raise BitError(
                f"openvino: inference failed for a batch of shape {batch.shape}: "
                f"{str(exc).strip().splitlines()[-1][:300]}"
            ) from exc
        return request.get_output_tensor(0).data.copy()
