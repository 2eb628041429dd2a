"""GPU measurements for a lent machine (no TensorRT needed), run by `python -m tools.gpu_proof`.

- The CUDA preprocessing kernel (the PTX the runner loads, engine/cuda/preprocess.ptx) on photos resized
  to 640x427 and 1920x1080, into a 480x480 float32 batch of 8: its output against
  the CPU path (OpenCV), and its throughput in images/s and in GB/s of bytes moved, against the device's
  own device-to-device copy bandwidth measured in the same run.
- Host-to-device copy throughput from pinned (page-locked) and from pageable memory, 64 MB transfers.
- End-to-end images/s from uint8 arrays through the trt runner's double-buffered path (pycuda), with
  TensorRT's engine replaced by the engine double of tools/trt_engine_double.py.
"""

from __future__ import annotations

import functools
import os
import tempfile
import time

import numpy as np

from bit_trt.engine.cuda_preprocess import BLOCK, KERNEL_NAME, load_ptx


def _time_gpu(cp, fn, repeat: int) -> float:
    """Seconds per call, measured with CUDA events after a warm-up."""
    fn()
    cp.cuda.Device().synchronize()
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) / 1000 / repeat


def _preprocess_batch(fn, grid, d_src, h: int, w: int, d_dst, resolution: int) -> None:
    """One kernel launch per image of d_dst's batch, each reading the same source image d_src."""
    slot = resolution * resolution * 3 * 4
    for i in range(d_dst.shape[0]):
        fn(
            grid,
            BLOCK[:2],
            (
                d_src,
                np.int32(h),
                np.int32(w),
                np.int64(w * 3),
                np.uintp(d_dst.data.ptr + i * slot),
                np.int32(resolution),
                np.int32(0),
                np.int32(0),
                np.float32(1 / 255),
            ),
        )


def kernel(cp, resolution: int = 480, batch: int = 8) -> dict:
    import cv2

    from bit_trt.engine.parity_set import real_photo_paths
    from bit_trt.engine.preprocess import InputSpec, preprocess, read_image

    ptx = load_ptx()
    # a folder of this run's own (0700): a fixed name in /tmp could be another local user's file or symlink
    with tempfile.TemporaryDirectory(prefix="bit-ptx-") as folder:
        path = os.path.join(folder, "bit_preprocess.ptx")
        with open(path, "wb") as f:
            f.write(ptx)
        fn = cp.RawModule(path=path).get_function(KERNEL_NAME)
    photo = read_image(real_photo_paths()[0])
    spec = InputSpec(resolution=resolution)
    grid = ((resolution + BLOCK[0] - 1) // BLOCK[0],) * 2
    out = {}
    for w, h in ((640, 427), (1920, 1080)):
        src = np.ascontiguousarray(cv2.resize(photo, (w, h), interpolation=cv2.INTER_CUBIC))
        d_src = cp.asarray(src)
        d_dst = cp.empty((batch, resolution, resolution, 3), cp.float32)
        slot = resolution * resolution * 3 * 4  # bytes of one float32 image in the batch

        run = functools.partial(_preprocess_batch, fn, grid, d_src, h, w, d_dst, resolution)
        seconds = _time_gpu(cp, run, 50)
        cpu = preprocess([src] * batch, spec)
        diff = np.abs(cp.asnumpy(d_dst) - cpu)
        moved = batch * (src.nbytes + slot)  # each image read once (cached taps) and written once
        out[f"{w}x{h}"] = {
            "images_per_s": round(batch / seconds, 1),
            "us_per_image": round(1e6 * seconds / batch, 2),
            "effective_gb_per_s": round(moved / seconds / 1e9, 1),
            "max_abs_vs_cpu": float(diff.max()),
            "fraction_differing": float((diff > 0).mean()),
        }
    a = cp.empty(256 << 20, cp.uint8)
    b = cp.empty_like(a)
    d2d = _time_gpu(cp, lambda: b.__setitem__(Ellipsis, a), 20)
    out["device_copy_gb_per_s"] = round(2 * a.nbytes / d2d / 1e9, 1)  # read + write
    return out


def transfers(cp, nbytes: int = 64 << 20) -> dict:
    pageable = np.ones(nbytes, np.uint8)
    pinned_mem = cp.cuda.alloc_pinned_memory(nbytes)
    pinned = np.frombuffer(pinned_mem, np.uint8, nbytes)
    pinned[:] = 1
    dev = cp.empty(nbytes, cp.uint8)
    stream = cp.cuda.Stream(non_blocking=True)
    result = {}

    def copy(host):
        dev.set(host, stream=stream)
        stream.synchronize()

    for name, host in (("pinned", pinned), ("pageable", pageable)):
        copy(host)
        t = time.perf_counter()
        for _ in range(20):
            copy(host)
        result[f"h2d_{name}_gb_per_s"] = round(20 * nbytes / (time.perf_counter() - t) / 1e9, 2)
    result["pinned_over_pageable"] = round(result["h2d_pinned_gb_per_s"] / result["h2d_pageable_gb_per_s"], 2)
    return result


def _images_per_s(call, per_call: int, threads: int, seconds: float) -> float:
    """Images per second from `threads` threads calling `call`, timed by bit-bench's own loop (a warm-up
    request per thread, then one window of `seconds`)."""
    from bit_trt.bench.configurations import Configuration
    from bit_trt.bench.measurement import Workload, run_window, warm_up

    work = Workload(Configuration("trt-double", "fp32", per_call, threads, "model"), call)
    warm_up(work, 0)  # buffers grown, graphs captured
    return run_window(work, time.perf_counter(), seconds=seconds)["throughput_ips"]


def runner_pipeline(resolution: int = 480, classes: int = 16, batch: int = 32, seconds: float = 2.0) -> dict:
    """End-to-end images/s from uint8 arrays through the trt runner's double-buffered path.

    TrtRunner.infer_uint8 as deployed: pinned staging, the copy stream, the preprocessing kernel, events,
    chunks of the profile's max batch alternating between two slots, on 2 workers; TensorRT's engine is
    replaced by tools/trt_engine_double.py (a 16-class linear kernel, so the pipeline dominates, not the model).
    The float path (a ready float32 batch, 4 bytes per value over PCIe) is measured beside it.
    """
    import cv2

    from bit_trt.engine.parity_set import real_photo_paths
    from bit_trt.engine.preprocess import InputSpec, preprocess, read_image
    from tools.trt_engine_double import EngineDoubleRunner

    photo = read_image(real_photo_paths()[0])
    rows = []
    for w, h in ((640, 427), (1920, 1080)):
        images = [np.ascontiguousarray(cv2.resize(photo, (w, h), interpolation=cv2.INTER_CUBIC))] * batch
        floats = preprocess(images, InputSpec(resolution=resolution))
        for cuda_graph in (False, True):
            with EngineDoubleRunner(resolution, classes, max_batch=8, workers=2, cuda_graph=cuda_graph) as runner:
                for threads in (1, 2):
                    for path, call in (
                        ("uint8", functools.partial(runner.infer_uint8, images)),
                        ("float", functools.partial(runner.infer, floats)),
                    ):
                        rate = _images_per_s(call, batch, threads, seconds)
                        rows.append(
                            {
                                "image": f"{w}x{h}",
                                "path": path,
                                "batch": batch,
                                "threads": threads,
                                "cuda_graph": cuda_graph,
                                "images_per_s": round(rate, 1),
                            }
                        )
    return {
        "resolution": resolution,
        "max_batch": 8,
        "workers": 2,
        "engine": "tools/trt_engine_double.py",
        "rows": rows,
    }
