"""ONNX Runtime: the CPU execution provider, and the CUDA and TensorRT providers where they load.

onnxruntime and onnxruntime-gpu install the same module, and onnxruntime-gpu lists its CUDA/TensorRT
providers even where their libraries cannot load, then silently runs on the CPU. So the providers a
session *actually* got are read back after it is created, and asking for `ort-cuda` or `ort-trt` on a
host where they did not load is an error that says what loaded instead, never a silent CPU fallback.

On ort-cpu, an INT8 model from a bundle runs its GroupNorms on bit-trt's fused kernel where it builds here, once it
passes the accuracy gate against TF on this host (engine/ort_group_norm.py); elsewhere ORT's own ops, and describe()
says why.

Thread safety: `InferenceSession.run` may be called from many threads at once (ORT's documented contract).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from . import ort_group_norm, ort_kernel_library
from .errors import BitError, require
from .runner import Runner
from .user_cache import library_folder

PROVIDERS = {
    "ort-cpu": "CPUExecutionProvider",
    "ort-cuda": "CUDAExecutionProvider",
    "ort-trt": "TensorrtExecutionProvider",
}


def import_onnxruntime():
    return require("onnxruntime")


class OrtRunner(Runner):
    name = "ort-cpu"

    def __init__(
        self,
        model,
        threads: int | None = None,
        optimization: str = "all",
        low_memory: bool = False,
        backend: str = "ort-cpu",
        device: int = 0,
        engine_cache: tuple[tuple[str, str], ...] = (),
        streams: int = 1,
        group_norm_kernel: bool | None = None,
        gate=None,
    ):
        """`model`: a path to an .onnx file (external data beside it) or serialized ModelProto bytes.

        backend: ort-cpu, ort-cuda or ort-trt. engine_cache: (root, folder) places, first fit first, where the
        TensorRT provider may keep its engines (ort-trt; backends.create gives one under the bundle and one in the
        user cache, keyed by TensorRT version, GPU and artifact). Each is vetted when the session starts.
        low_memory: no weight pre-packing, no memory arena, no graph optimization. For one-off checks of
        large models (export verification), where a second packed or folded copy of the weights costs more
        than it saves, and where the graph itself, not ORT's rewrite of it, is under test.
        streams: requests callers keep in flight at once (throughput). Each Run then gets threads // streams
        intra-op threads, so concurrent requests share the cores instead of every request contending for all.
        group_norm_kernel: run the INT8 graph's GroupNorms on bit-trt's fused kernel (engine/ort_group_norm.py). None:
        where a `gate` was given (backends.create gives one to ort-cpu for an INT8 model), falling back to ORT's own
        ops with the reason in describe() where the kernel can't be built or fails the gate; True: the kernel or an
        error; False: ORT's own ops.
        gate: called as gate(infer, described) on the model with the kernel before it serves; raises a BitError to
        refuse it (engine/compute_gate.py).
        """
        super().__init__()
        if backend not in PROVIDERS:
            raise BitError(f"unknown ONNX Runtime backend {backend!r}; choose one of: {', '.join(PROVIDERS)}")
        self.name = backend
        self.model = model
        self.threads = threads
        self.optimization = "none" if low_memory else optimization
        self.low_memory = low_memory
        self.device = device
        self.engine_cache = tuple(engine_cache)
        self.trt_cache_dir = None  # the place the provider got, chosen when the session starts
        if isinstance(streams, bool) or not isinstance(streams, int) or streams < 1:
            raise BitError(f"ONNX Runtime streams must be a whole number, at least 1, got {streams!r}")
        self.streams = streams
        if group_norm_kernel not in (None, True, False):
            raise BitError(f"group_norm_kernel is true, false or unset, got {group_norm_kernel!r}")
        if group_norm_kernel and (backend != "ort-cpu" or low_memory):
            raise BitError("bit-trt's GroupNorm kernel runs on ort-cpu only, and not in low-memory checks")
        self.group_norm_kernel = group_norm_kernel
        self.gate = gate
        self.kernel = ""  # what runs the GroupNorms where not ORT's own ops: set when the session starts
        self.why_stock = ""  # why the kernel was wanted but ORT's own ops run
        self.session = None

    def _providers(self) -> list:
        cpu = "CPUExecutionProvider"
        if self.name == "ort-cpu":
            return [cpu]
        # use_tf32=0: FP32 parity assumes full FP32 convolutions (ORT enables TF32 on Ampere+ by default)
        cuda = (
            "CUDAExecutionProvider",
            {"device_id": self.device, "cudnn_conv_algo_search": "EXHAUSTIVE", "use_tf32": 0},
        )
        if self.name == "ort-cuda":
            return [cuda, cpu]
        trt_options = {"device_id": self.device, "trt_fp16_enable": False, "trt_int8_enable": False}
        self.trt_cache_dir = self.engine_folder()
        if self.trt_cache_dir:
            trt_options.update(
                trt_engine_cache_enable=True,
                trt_engine_cache_path=self.trt_cache_dir,
                trt_timing_cache_enable=True,
                trt_timing_cache_path=self.trt_cache_dir,
            )
        return [("TensorrtExecutionProvider", trt_options), cuda, cpu]

    def engine_folder(self) -> str | None:
        """The first place in `engine_cache` fit for the TensorRT provider's engines (code the GPU runs), vetted
        right before the session reads it (user_cache.library_folder: no one else may write to it or above it);
        None where none is, and the provider builds its engines at every start (said in a warning and describe())."""
        refused = []
        for root, folder in self.engine_cache:
            why = library_folder(folder, root)
            if why is None:
                return folder
            refused.append(why)
        if refused:
            warnings.warn(
                f"bit-trt: ort-trt keeps no engine cache, so it builds its TensorRT engines at every start: "
                f"{'; '.join(refused)}",
                RuntimeWarning,
                stacklevel=2,
            )
        return None

    def _activate(self):
        ort = import_onnxruntime()
        wanted = PROVIDERS[self.name]
        if wanted not in ort.get_available_providers():
            hint = (
                "pip uninstall onnxruntime && pip install onnxruntime-gpu"
                if self.name != "ort-cpu"
                else "reinstall onnxruntime"
            )
            raise BitError(
                f"{self.name}: this onnxruntime build ({ort.__version__}) has no {wanted} "
                f"(it has {', '.join(ort.get_available_providers())}); {hint}"
            )
        self.session = None
        self.kernel = self.why_stock = ""
        threads = self.threads or (os.cpu_count() or 1)
        self.intra_threads = max(1, threads // self.streams)
        if self._wants_kernel():
            try:
                self.session = self._kernel_session(ort)
            except BitError as exc:
                if self.group_norm_kernel:
                    raise
                self.kernel, self.why_stock = "", str(exc)
        if self.session is None:
            self.session = self._session(ort, self.model, self._options(ort))
        self.loaded_providers = self.session.get_providers()
        if wanted not in self.loaded_providers:
            self.session = None
            raise BitError(
                f"{self.name}: onnxruntime lists {wanted} but it did not load (missing CUDA, cuDNN or "
                f"TensorRT libraries for onnxruntime {ort.__version__}?); the session got only "
                f"{', '.join(self.loaded_providers)}. Use --backend ort-cpu, or fix the GPU libraries"
            )
        self.input_name = self.session.get_inputs()[0].name

    def _options(self, ort):
        opts = ort.SessionOptions()
        opts.graph_optimization_level = {
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        }[self.optimization]
        opts.intra_op_num_threads = self.intra_threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        if self.low_memory:
            opts.enable_cpu_mem_arena = False
            opts.add_session_config_entry("session.disable_prepacking", "1")
        return opts

    def _session(self, ort, model, opts):
        try:
            return ort.InferenceSession(model, opts, providers=self._providers())
        except Exception as exc:  # ORT raises its own exception types for a bad or truncated file
            where = self.model if isinstance(self.model, (str, os.PathLike)) else "in-memory model"
            raise BitError(f"ONNX Runtime cannot load {where}: {str(exc).splitlines()[0][:300]}") from exc

    def _wants_kernel(self) -> bool:
        if self.group_norm_kernel is None:
            return self.gate is not None and self.name == "ort-cpu" and not self.low_memory
        return self.group_norm_kernel

    def _kernel_session(self, ort):
        """A session of the model with its GroupNorms on bit-trt's kernel, gated; raises a BitError saying why not."""
        library = ort_kernel_library.library()
        model, count = ort_group_norm.rewritten_bytes(self.model)
        opts = self._options(ort)
        opts.register_custom_ops_library(library)
        session = self._session(ort, model, opts)
        del model
        name = session.get_inputs()[0].name
        self.kernel = (
            f"GroupNorm on bit-trt's kernel ({count} fused, build {os.path.basename(os.path.dirname(library))})"
        )
        if self.gate is not None:

            def infer(batch):
                try:
                    return session.run(None, {name: batch})[0]
                except Exception as exc:  # ORT's own exception types: a kernel error is a reason, not a crash
                    why = str(exc).splitlines()[0][:300]
                    raise BitError(f"bit-trt's kernel failed on the parity set: {why}") from exc

            self.gate(infer, f"{self.name}: onnxruntime {ort.__version__}, {self.kernel}")
        return session

    def describe(self) -> str:
        providers = ", ".join(p.replace("ExecutionProvider", "") for p in getattr(self, "loaded_providers", []))
        each = f"{self.intra_threads} thread{'s' if self.intra_threads > 1 else ''}"
        streams = f" ({self.streams} streams x {each})" if self.streams > 1 else ""
        cache = ""
        if self.name == "ort-trt":
            cache = f", engine cache {self.trt_cache_dir}" if self.trt_cache_dir else ", no engine cache"
        kernel = f", {self.kernel}" if self.kernel else ""
        stock = f"; GroupNorm on ORT's own ops: {self.why_stock}" if self.why_stock else ""
        version = import_onnxruntime().__version__
        return f"{self.name}: onnxruntime {version} [{providers}]{streams}{cache}{kernel}{stock}"

    def _deactivate(self):
        self.session = None

    def _feeds(self, batch: np.ndarray) -> dict:
        """What one run is given: the batch under the model's input name (a subclass may add inputs)."""
        return {self.input_name: batch}

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, self._feeds(batch))[0]
        except Exception as exc:  # e.g. a spatial size the graph cannot take; the session stays usable
            raise BitError(
                f"{self.name}: inference failed for a batch of shape {batch.shape}: {str(exc).splitlines()[0][:300]}"
            ) from exc
