"""TensorRT plans (and TensorRT-RTX engines) run through pycuda: pinned memory, streams, CUDA preprocessing.

Concurrency model (the part TensorRT servers most often get wrong with pycuda):
- No `pycuda.autoinit`. The runner retains the device's *primary* context, the one the CUDA runtime (and so
  TensorRT) uses, and pushes it onto the calling thread for every call, popping it after. Any thread may
  call; none needs its own context.
- One engine, shared. `workers` execution contexts, each with its own stream, device buffers sized for the
  profile's max batch and pinned host buffers. A call checks a worker out of a queue and returns it after,
  so up to `workers` calls run on the GPU at once and the rest wait; no two threads ever share a stream
  or an execution context.
- Batches above the profile's max are split (Runner.infer), never refused.

`infer` takes float32 NHWC [0,1] batches like every runner. `infer_uint8` takes raw uint8 RGB images of
any size: they are staged in pinned memory, copied asynchronously, and resized/normalized by the CUDA
kernel (cuda_preprocess) directly into the input binding. Its chunks are double-buffered: chunk k+1 is
staged and preprocessed on a copy stream while chunk k runs on the compute stream.
"""

from __future__ import annotations

import os
import queue
import time
import warnings
from typing import TYPE_CHECKING

import numpy as np

from . import gpu_host
from .cuda_preprocess import MODES as DEVICE_RESIZE_MODES
from .errors import BitError, require
from .plan_check import check_plan
from .runner import Runner
from .tensorrt_library import ErrorLog, try_import

if TYPE_CHECKING:  # annotations only: tests/tensorrt_api type-checks our calls against NVIDIA's bindings
    import tensorrt

    from .cuda_graph import CudaGraph


def import_pycuda():
    try:
        return require("pycuda.driver")
    except OSError as exc:  # installed, but no libcuda (no driver) on this host
        raise BitError(f"pycuda cannot load the CUDA driver ({exc}); this host has no usable NVIDIA GPU") from exc


class _Slot:
    """One half of a double buffer: an input binding, an output buffer, raw-image staging, and its events."""

    def __init__(self, cuda, max_batch: int, image_values: int, classes: int):
        self.cuda = cuda
        self.d_in = cuda.mem_alloc(max_batch * image_values * 4)
        self.d_out = cuda.mem_alloc(max_batch * classes * 4)
        self.h_out = cuda.pagelocked_empty((max_batch, classes), np.float32)
        self.h_raw: np.ndarray | None = None  # pinned uint8 staging, grown to the largest chunk seen
        self.d_raw = None
        self.raw_bytes = 0
        self.staged = cuda.Event()  # raw bytes copied and preprocessed: the binding is ready
        self.consumed = cuda.Event()  # the engine has read the binding: it may be overwritten
        self.done = cuda.Event()  # logits copied back to h_out
        self.consumed.record()
        self.done.record()

    def ensure_raw(self, nbytes: int) -> None:
        if nbytes > self.raw_bytes:
            self.staged.synchronize()  # the old staging buffer may still be in flight
            self.raw_bytes = max(nbytes, 2 * self.raw_bytes)
            self.h_raw = self.cuda.pagelocked_empty(self.raw_bytes, np.uint8)
            self.d_raw = self.cuda.mem_alloc(self.raw_bytes)


class _Worker:
    """An execution context with its own streams and buffers. Used by one thread at a time."""

    def __init__(
        self, cuda, engine: tensorrt.ICudaEngine, io, max_batch, resolution, classes, layout, cuda_graph, preprocessor
    ):
        self.cuda = cuda
        self.io = io
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BitError("TensorRT could not create an execution context (out of GPU memory?)")
        self.stream = cuda.Stream()
        self.copy_stream = cuda.Stream()
        self.resolution = resolution
        self.layout = layout
        self.image_values = resolution * resolution * 3
        self.slots = [_Slot(cuda, max_batch, self.image_values, classes) for _ in range(2)]
        self.h_in = cuda.pagelocked_empty((max_batch, self.image_values), np.float32)
        self.cuda_graph = cuda_graph
        self.graphs: dict[tuple[int, int], CudaGraph] = {}  # (batch, slot id) -> captured graph
        self.preprocessor = preprocessor

    def _input_shape(self, n):
        r = self.resolution
        return (n, r, r, 3) if self.layout == "NHWC" else (n, 3, r, r)

    def _enqueue(self, slot: _Slot, n: int, after_compute=None) -> None:
        """Bind `slot`, run the engine on the compute stream, copy the logits back; all asynchronous."""
        ctx = self.context
        if tuple(ctx.get_tensor_shape(self.io["input"])) != self._input_shape(n):
            if not ctx.set_input_shape(self.io["input"], self._input_shape(n)):
                raise BitError(f"the engine's profile does not accept batch {n}")
        ctx.set_tensor_address(self.io["input"], int(slot.d_in))
        ctx.set_tensor_address(self.io["output"], int(slot.d_out))
        if self.cuda_graph:
            key = (n, id(slot))
            graph = self.graphs.get(key)
            if graph is None:
                from .cuda_graph import CudaGraph

                self._execute()  # TensorRT allocates lazily on the first enqueue of a shape: never inside a capture
                self.stream.synchronize()
                graph = self.graphs[key] = CudaGraph(self.stream.handle, self._execute)
            graph.launch()
        else:
            self._execute()
        slot.consumed.record(self.stream)
        if after_compute is not None:
            after_compute.record(self.stream)
        self.cuda.memcpy_dtoh_async(slot.h_out[:n], slot.d_out, self.stream)
        slot.done.record(self.stream)

    def _execute(self) -> None:
        if not self.context.execute_async_v3(self.stream.handle):
            raise BitError("TensorRT execute_async_v3 failed (see the TensorRT log)")

    def run_float(self, batch: np.ndarray) -> np.ndarray:
        return self._run_float(batch, timed=False)[0]

    def run_float_timed(self, batch: np.ndarray) -> tuple[np.ndarray, dict]:
        """Logits and the phases trtexec reports: host enqueue time, and H2D, GPU compute and D2H from CUDA
        events recorded on the compute stream around each phase."""
        return self._run_float(batch, timed=True)

    def _run_float(self, batch: np.ndarray, timed: bool) -> tuple[np.ndarray, dict | None]:
        n = len(batch)
        slot = self.slots[0]
        slot.consumed.synchronize()
        self.h_in[:n] = batch.reshape(n, -1) if self.layout == "NHWC" else batch.transpose(0, 3, 1, 2).reshape(n, -1)
        events = [self.cuda.Event() for _ in range(3)] if timed else None
        if events:
            events[0].record(self.stream)
        self.cuda.memcpy_htod_async(slot.d_in, self.h_in[:n], self.stream)
        if events:
            events[1].record(self.stream)
        start = time.perf_counter()
        self._enqueue(slot, n, after_compute=events[2] if events else None)
        enqueue_ms = 1000 * (time.perf_counter() - start)
        slot.done.synchronize()
        phases = None
        if events:
            phases = {
                "enqueue_ms": enqueue_ms,
                "h2d_ms": events[1].time_since(events[0]),
                "compute_ms": slot.consumed.time_since(events[1]),
                "d2h_ms": slot.done.time_since(events[2]),
            }
        return slot.h_out[:n].copy(), phases

    def _stage(self, slot: _Slot, images: list[np.ndarray]) -> None:
        """Raw images -> pinned staging -> device (copy stream) -> kernel into slot.d_in (copy stream)."""
        sizes = [img.nbytes for img in images]
        slot.ensure_raw(sum(sizes))
        slot.staged.synchronize()  # the previous copy out of this staging buffer has finished
        slot.consumed.synchronize()  # and the engine has read the binding we are about to overwrite
        offset = 0
        for img in images:
            slot.h_raw[offset : offset + img.nbytes] = img.reshape(-1)
            offset += img.nbytes
        self.cuda.memcpy_htod_async(slot.d_raw, slot.h_raw[:offset], self.copy_stream)
        offset = 0
        for i, img in enumerate(images):
            self.preprocessor.launch(
                int(slot.d_raw) + offset,
                img.shape[0],
                img.shape[1],
                int(slot.d_in) + i * self.image_values * 4,
                self.copy_stream,
            )
            offset += img.nbytes
        slot.staged.record(self.copy_stream)

    def _wait_for_staging(self, slot: _Slot) -> None:
        """The compute stream waits for the copy stream's staging of `slot`: the one edge between the streams."""
        self.stream.wait_for_event(slot.staged)

    def run_uint8(self, chunks: list[list[np.ndarray]]) -> np.ndarray:
        """Double-buffered: stage chunk k+1 on the copy stream while chunk k runs on the compute stream."""
        out = []

        def collect(slot, n):
            slot.done.synchronize()
            out.append(slot.h_out[:n].copy())

        pending = None
        for k, chunk in enumerate(chunks):
            slot = self.slots[k % 2]
            self._stage(slot, chunk)
            self._wait_for_staging(slot)
            self._enqueue(slot, len(chunk))
            if pending is not None:
                collect(*pending)  # chunk k-1 finishes while chunk k runs
            pending = (slot, len(chunk))
        collect(*pending)
        return np.concatenate(out)

    def close(self) -> None:
        for graph in self.graphs.values():
            graph.close()
        self.graphs.clear()


class TrtRunner(Runner):
    name = "trt"
    # Set while active (None after deactivate). Declared so that tests/tensorrt_api's mypy check types the
    # TensorRT calls on them against NVIDIA's bindings; annotations only, nothing is assigned here.
    _runtime: tensorrt.Runtime
    engine: tensorrt.ICudaEngine
    _pool: queue.Queue[_Worker]

    def __init__(
        self,
        plan_path: str,
        artifact: dict,
        spec,
        workers: int | None = None,
        device: int = 0,
        cuda_graph: bool = False,
        gpu_preprocess: bool = True,
        bundle_path: str = "BUNDLE",
    ):
        super().__init__()
        workers = workers or int(os.environ.get("BIT_TRT_WORKERS", "2"))
        if workers < 1:
            raise BitError("workers must be at least 1")
        self.plan_path = plan_path
        self.artifact = artifact
        self.spec = spec
        self.workers = workers
        self.device = device
        self.cuda_graph = cuda_graph
        self.gpu_preprocess = gpu_preprocess
        self.bundle_path = bundle_path
        self.library = artifact.get("library", "tensorrt")
        self.preprocess_fallback: str | None = None  # why the CUDA kernel could not load, when it could not

    def describe(self) -> str:
        pre = "CUDA kernel" if self.preprocessor is not None else "CPU (OpenCV)"
        if self.preprocess_fallback:
            pre += f", device kernel unavailable: {self.preprocess_fallback}"
        return (
            f"trt: {self.library} {self.trt.__version__} on {gpu_host.gpu_name(self.device)} "
            f"({gpu_host.compute_capability(self.device)}), {self.workers} workers, preprocessing: {pre}"
            + (", CUDA graphs" if self.cuda_graph else "")
        )

    def _activate(self):
        self._check_library()
        cuda = self.cuda = import_pycuda()
        cuda.init()
        self._ctx = cuda.Device(self.device).retain_primary_context()
        self._ctx.push()
        try:
            self._start(cuda, *self._open_engine())
        except BaseException:
            self._release()
            cuda.Context.pop()
            self._ctx.detach()
            raise
        cuda.Context.pop()

    def _check_library(self) -> None:
        """The plan's library, installed in the plan's version, for this GPU; raises with the fix otherwise."""
        self.trt = try_import(self.library)
        check_plan(
            self.artifact,
            getattr(self.trt, "__version__", None),
            gpu_host.compute_capability(self.device),
            self.bundle_path,
        )

    def _open_engine(self):
        """Deserialize the plan (the context is current): (engine, io names, max batch, classes).

        Everything TensorRT-specific about loading is here; what follows (`_start`) is this runner's own
        machinery, which tools/trt_engine_double.py runs on a real GPU without TensorRT.
        """
        trt = self.trt
        with open(self.plan_path, "rb") as f:
            blob = f.read()
        log = ErrorLog(trt)
        self._runtime = trt.Runtime(log.logger)
        # A header check before the full load. TensorRT-RTX 1.7 has it; TensorRT 10.16 and 11.4 do not (their
        # bindings, tests/tensorrt_api), so there the manifest's version and GPU check (check_plan) is all we have.
        if hasattr(self._runtime, "get_engine_validity"):
            header = blob[: getattr(self._runtime, "engine_header_size", len(blob))]
            validity, diagnostics = self._runtime.get_engine_validity(header)
            if int(diagnostics):
                names = [n for n, v in trt.EngineInvalidityDiagnostics.__members__.items() if int(diagnostics) & int(v)]
                raise BitError(
                    f"{self.plan_path} cannot run here ({', '.join(names).lower()}); "
                    f"rebuild the plan on this host or with this {self.library}"
                )
        engine = self._runtime.deserialize_cuda_engine(blob)
        del blob
        if engine is None:
            raise BitError(f"{self.library} cannot deserialize {self.plan_path}: {log.last()}")
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BitError(f"{self.plan_path}: expected one input and one output, found {inputs} and {outputs}")
        io = {"input": inputs[0], "output": outputs[0]}
        for role in io.values():
            if engine.get_tensor_dtype(role) != trt.DataType.FLOAT:
                raise BitError(f"{self.plan_path}: tensor {role} is {engine.get_tensor_dtype(role)}, expected float32")
        _, _, max_shape = engine.get_tensor_profile_shape(io["input"], 0)
        classes = int(engine.get_tensor_shape(io["output"])[-1])
        return engine, io, int(max_shape[0]), classes

    def _start(self, cuda, engine, io: dict, max_batch: int, classes: int) -> None:
        """The preprocessing kernel and the worker pool, on the current context, for a loaded engine."""
        self.engine = engine
        self.max_batch = max_batch
        layout = self.spec.layout
        self.preprocessor = None
        if self.gpu_preprocess and self.spec.resize in DEVICE_RESIZE_MODES:
            from .cuda_preprocess import DevicePreprocessor

            try:
                self.preprocessor = DevicePreprocessor(cuda, self.spec.resolution, self.spec.resize, layout)
            except (BitError, cuda.Error) as exc:
                # e.g. a driver too old for the shipped PTX, or an edited kernel and no nvcc: serving goes on,
                # with the CPU path, and says so once (here and in describe()).
                self.preprocess_fallback = str(exc).splitlines()[0]
                warnings.warn(
                    f"bit-trt: CUDA preprocessing kernel unavailable ({self.preprocess_fallback}); "
                    "preprocessing on the CPU",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self._pool = queue.Queue()
        self._all_workers = []
        for _ in range(self.workers):
            worker = _Worker(
                cuda,
                self.engine,
                io,
                self.max_batch,
                self.spec.resolution,
                classes,
                layout,
                self.cuda_graph,
                self.preprocessor,
            )
            self._all_workers.append(worker)
            self._pool.put(worker)

    def _release(self):
        for worker in getattr(self, "_all_workers", []):
            worker.close()
        self._all_workers = []
        self._pool = None
        self.preprocessor = None
        self.engine = None
        self._runtime = None

    def _deactivate(self):
        self._ctx.push()
        try:
            self._release()
            import gc

            gc.collect()  # pycuda frees device memory in __del__: do it while the context is current
        finally:
            self.cuda.Context.pop()
        self._ctx.detach()

    def _call(self, fn, *args):
        worker = self._pool.get()
        self._ctx.push()
        try:
            return fn(worker, *args)
        except self.cuda.Error as exc:
            raise BitError(f"CUDA error in the TensorRT runner: {exc}") from exc
        finally:
            self.cuda.Context.pop()
            self._pool.put(worker)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        return self._call(_Worker.run_float, batch)

    def infer_timed(self, batch: np.ndarray) -> tuple[np.ndarray, dict]:
        """`infer` plus the phases of each call, summed over the calls a batch above the profile's max needs:
        enqueue_ms (host), h2d_ms, compute_ms and d2h_ms (CUDA events), as bit-bench reports them."""
        outputs: list[np.ndarray] = []
        total: dict[str, float] = {}
        for chunk in self.chunks(batch):
            logits, phases = self._call(_Worker.run_float_timed, chunk)
            outputs.append(logits)
            for key, value in phases.items():
                total[key] = total.get(key, 0.0) + value
        return np.concatenate(outputs), total

    @property
    def preprocesses_on_device(self) -> bool:
        return self._active and self.preprocessor is not None

    def infer_uint8(self, images: list[np.ndarray]) -> np.ndarray:
        """Raw uint8 RGB HWC images of any sizes -> logits; resized and normalized on the GPU."""
        if not self.preprocesses_on_device:
            raise BitError("this runner has no device preprocessing (inactive, or resize method not in the kernel)")
        if not images:
            raise BitError("empty batch: pass at least one image")
        images = [np.ascontiguousarray(img) for img in images]
        for img in images:
            if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
                raise BitError(f"infer_uint8 takes uint8 RGB HWC images, got {img.dtype} {img.shape}")
        chunks = [images[i : i + self.max_batch] for i in range(0, len(images), self.max_batch)]
        return self._call(_Worker.run_uint8, chunks)
