"""An engine double: TensorRT's engine and execution context replaced by a real CUDA kernel with a known answer.

What it is for: running the TensorRT runner's own machinery (engine/trt_runner.py: the primary context
pushed and popped from many threads, the worker pool, pinned buffers, copy and compute streams, events,
the double-buffered uint8 path, CUDA graph capture) on a real GPU and driver where TensorRT is not
installed. What it is not: TensorRT. It proves nothing about plans, parsing or TensorRT's kernels.

The double offers exactly the calls the runner makes on a TensorRT execution context:
`set_input_shape`, `get_tensor_shape`, `set_tensor_address` and `execute_async_v3(stream_handle)`, the
last of which launches `engine_double_logits` on the stream it is given, through the driver API, so that
stream ordering, events and graph capture are exercised for real. Its answer is known:

    logits[b, c] = sum_i input[b, i] * weight(i, c),   weight(i, c) = (((7 i + 13 c) mod 17) - 8) / 8

over the input binding's values in memory order (NHWC or NCHW), which `expected_logits` computes with NumPy.
The kernel reads its input first thing, so a binding that is not ready yet (a missing stream wait) is read
as stale memory and the answer is wrong.
"""

from __future__ import annotations

import ctypes
import functools
import os
import subprocess
import tempfile
import types

import numpy as np

from bit_trt.engine.cuda_preprocess import find_nvcc
from bit_trt.engine.errors import BitError
from bit_trt.engine.preprocess import InputSpec
from bit_trt.engine.trt_runner import TrtRunner

THREADS = 256
KERNEL = (
    f"#define BLOCK_THREADS {THREADS}\n"
    + r"""
__device__ __forceinline__ float weight(long long i, int c) {
    return (float)((int)((7 * i + 13 * (long long)c) % 17) - 8) * 0.125f;
}

// One block per (class, image): a fixed-order tree reduction, so the answer is the same on every run.
extern "C" __global__ void engine_double_logits(const float* input, float* logits, long long values, int classes) {
    __shared__ float part[BLOCK_THREADS];
    const int c = blockIdx.x, b = blockIdx.y;
    const float* x = input + (long long)b * values;
    float acc = 0.f;
    for (long long i = threadIdx.x; i < values; i += blockDim.x) acc += x[i] * weight(i, c);
    part[threadIdx.x] = acc;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if (threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
        __syncthreads();
    }
    if (threadIdx.x == 0) logits[(long long)b * classes + c] = part[0];
}
"""
)


def expected_logits(binding: np.ndarray, classes: int) -> np.ndarray:
    """The double's answer in float64 for a batch laid out as the input binding is ([N, ...] in memory order)."""
    flat = binding.reshape(len(binding), -1).astype(np.float64)
    i = np.arange(flat.shape[1], dtype=np.int64)[:, None]
    c = np.arange(classes, dtype=np.int64)[None, :]
    weights = (((7 * i + 13 * c) % 17) - 8) / 8
    return flat @ weights


@functools.cache
def _ptx() -> bytes:
    nvcc = find_nvcc()
    if nvcc is None:
        raise BitError("the engine double's kernel needs nvcc")
    with tempfile.TemporaryDirectory() as tmp:
        src, out = os.path.join(tmp, "double.cu"), os.path.join(tmp, "double.ptx")
        with open(src, "w") as f:
            f.write(KERNEL)
        proc = subprocess.run([nvcc, "-ptx", "-arch=compute_75", "-O3", src, "-o", out], capture_output=True, text=True)
        if proc.returncode != 0:
            raise BitError(f"nvcc could not compile the engine double: {proc.stderr[-800:]}")
        with open(out, "rb") as f:
            return f.read()


def _driver():
    cu = ctypes.CDLL("libcuda.so.1")
    cu.cuLaunchKernel.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
    return cu


def _check(status: int, what: str) -> None:
    if status != 0:
        raise BitError(f"engine double: {what} failed with CUresult {status}")


class ExecutionContextDouble:
    """Stands in for tensorrt.IExecutionContext: shapes, addresses, and a real kernel launch per enqueue."""

    def __init__(self, engine: EngineDouble):
        self.engine = engine
        self.shapes = {"images": (-1, *engine.image_shape), "logits": (-1, engine.classes)}
        self.addresses: dict[str, int] = {}
        self.launches = 0  # execute_async_v3 calls, captured or not

    def set_input_shape(self, name: str, shape) -> bool:
        shape = tuple(int(d) for d in shape)
        if name != "images" or shape[1:] != self.engine.image_shape or not 1 <= shape[0] <= self.engine.max_batch:
            return False  # as TensorRT: False for a shape outside the profile
        self.shapes = {"images": shape, "logits": (shape[0], self.engine.classes)}
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        return self.shapes[name]

    def set_tensor_address(self, name: str, address: int) -> bool:
        self.addresses[name] = int(address)
        return True

    def execute_async_v3(self, stream_handle: int) -> bool:
        batch = self.shapes["images"][0]
        if batch < 1 or set(self.addresses) != {"images", "logits"}:
            return False
        self.launches += 1
        self.engine.launch(self.addresses["images"], self.addresses["logits"], batch, stream_handle)
        return True


class EngineDouble:
    """Stands in for tensorrt.ICudaEngine: one float32 input `images`, one float32 output `logits`."""

    def __init__(self, resolution: int, classes: int, max_batch: int, layout: str = "NHWC"):
        self.resolution, self.classes, self.max_batch, self.layout = resolution, classes, max_batch, layout
        self.image_shape = (resolution, resolution, 3) if layout == "NHWC" else (3, resolution, resolution)
        self.values = resolution * resolution * 3
        self.contexts: list[ExecutionContextDouble] = []
        self._cu = None

    def create_execution_context(self) -> ExecutionContextDouble:
        if self._cu is None:  # the runner calls this with its primary context current: load the kernel there
            self._cu = _driver()
            self._module = ctypes.c_void_p()
            _check(self._cu.cuModuleLoadData(ctypes.byref(self._module), ctypes.c_char_p(_ptx() + b"\0")), "load")
            self._function = ctypes.c_void_p()
            _check(
                self._cu.cuModuleGetFunction(ctypes.byref(self._function), self._module, b"engine_double_logits"),
                "get function",
            )
        context = ExecutionContextDouble(self)
        self.contexts.append(context)
        return context

    def launch(self, d_in: int, d_out: int, batch: int, stream_handle: int) -> None:
        args = [
            ctypes.c_void_p(d_in),
            ctypes.c_void_p(d_out),
            ctypes.c_longlong(self.values),
            ctypes.c_int(self.classes),
        ]
        params = (ctypes.c_void_p * len(args))(*[ctypes.cast(ctypes.byref(a), ctypes.c_void_p) for a in args])
        status = self._cu.cuLaunchKernel(
            self._function,
            self.classes,
            batch,
            1,
            THREADS,
            1,
            1,
            0,
            ctypes.c_void_p(stream_handle),
            ctypes.cast(params, ctypes.c_void_p),
            None,
        )
        _check(status, "launch")


class EngineDoubleRunner(TrtRunner):
    """The TensorRT runner with TensorRT (library check, plan deserialization) replaced by an EngineDouble.

    Everything after `_open_engine` is the runner's own code, unchanged: `_start`, the workers, `infer`,
    `infer_uint8`, CUDA graphs, activation and release.
    """

    def __init__(
        self,
        resolution: int,
        classes: int,
        max_batch: int,
        layout: str = "NHWC",
        resize: str = "bilinear",
        **runner_options,
    ):
        spec = InputSpec(resolution=resolution, resize=resize, layout=layout)
        super().__init__("(engine double, no plan)", {"library": "engine-double"}, spec, **runner_options)
        self.double = EngineDouble(resolution, classes, max_batch, layout)

    def _check_library(self) -> None:
        self.trt = types.SimpleNamespace(__version__="(an engine double, not TensorRT)")

    def _open_engine(self):
        return self.double, {"input": "images", "output": "logits"}, self.double.max_batch, self.double.classes

    def expected(self, batch_nhwc: np.ndarray) -> np.ndarray:
        """What the runner must return for a float NHWC batch: the double's answer on the binding's layout."""
        binding = batch_nhwc if self.double.layout == "NHWC" else batch_nhwc.transpose(0, 3, 1, 2)
        return expected_logits(binding, self.double.classes)
