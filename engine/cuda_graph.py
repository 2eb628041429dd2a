"""CUDA graph capture and replay through the driver API (pycuda has no graph wrapper).

One TensorRT enqueue is hundreds of kernel launches; replaying them as one graph removes the per-launch
CPU cost, which matters at small batch. Shapes and buffer addresses are frozen at capture, so the runner
keeps one graph per (batch size, buffer slot).
"""

from __future__ import annotations

import ctypes

from .errors import BitError

_CAPTURE_MODE_THREAD_LOCAL = 1  # other threads' CUDA calls do not invalidate this capture


def _driver():
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise BitError(f"CUDA graphs need the NVIDIA driver library libcuda.so.1 ({exc})") from exc


def _check(status: int, what: str) -> None:
    if status != 0:
        raise BitError(f"CUDA graph {what} failed with CUresult {status}")


class CudaGraph:
    """Record what `enqueue()` puts on the stream `stream_handle`, then `launch()` replays it on that stream."""

    def __init__(self, stream_handle: int, enqueue):
        self._cu = _driver()
        self.stream = ctypes.c_void_p(stream_handle)
        graph = ctypes.c_void_p()
        _check(self._cu.cuStreamBeginCapture_v2(self.stream, _CAPTURE_MODE_THREAD_LOCAL), "begin capture")
        try:
            enqueue()
        finally:
            status = self._cu.cuStreamEndCapture(self.stream, ctypes.byref(graph))
        _check(status, "end capture")
        self._graph = graph
        self._exec = ctypes.c_void_p()
        _check(
            self._cu.cuGraphInstantiateWithFlags(ctypes.byref(self._exec), graph, ctypes.c_ulonglong(0)), "instantiate"
        )

    def launch(self) -> None:
        _check(self._cu.cuGraphLaunch(self._exec, self.stream), "launch")

    def close(self) -> None:
        if self._exec:
            self._cu.cuGraphExecDestroy(self._exec)
            self._exec = ctypes.c_void_p()
        if self._graph:
            self._cu.cuGraphDestroy(self._graph)
            self._graph = ctypes.c_void_p()
