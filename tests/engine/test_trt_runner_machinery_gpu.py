"""The TensorRT runner's own machinery on a real GPU, with TensorRT's engine replaced by tools/trt_engine_double.py.

Covered for real: the primary context pushed and popped from many threads, the worker pool, pinned
buffers, the copy and compute streams and the events between them, the double-buffered uint8 path with
the CUDA preprocessing kernel, and CUDA graph capture and replay. Not covered: TensorRT itself (its
parser, plans and kernels), which the `tensorrt`-marked tests in test_trt_gpu.py run where it is installed.
Needs a GPU and pycuda, not TensorRT.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bit_trt.engine.errors import BitError
from bit_trt.engine.preprocess import InputSpec, preprocess
from bit_trt.engine.trt_runner import _Worker
from tools.trt_engine_double import EngineDoubleRunner

pytestmark = pytest.mark.gpu

RES = 64
CLASSES = 10


@pytest.fixture(scope="module")
def cuda():
    drv = pytest.importorskip("pycuda.driver", reason="needs pycuda (pip install 'bit-trt[gpu]')")
    drv.init()
    return drv


def _close(actual, expected):
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))


def _images(seed: int, sizes) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in sizes]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_outputs_equal_numpy(cuda, layout):
    batch = np.random.default_rng(1).random((7, RES, RES, 3), dtype=np.float32)
    with EngineDoubleRunner(RES, CLASSES, max_batch=3, layout=layout, workers=2) as runner:
        logits = runner.infer(batch)  # 7 > max batch 3: three calls of 3, 3 and 1
        assert runner.double.contexts and sum(c.launches for c in runner.double.contexts) == 3
    assert logits.shape == (7, CLASSES)
    _close(logits, runner.expected(batch))


@pytest.mark.parametrize("resize", ["nearest", "bilinear"])
def test_uint8_double_buffered_path_equals_cpu_preprocessing(cuda, resize):
    images = _images(2, [(480, 640), (37, 100), (64, 64), (1000, 300), (123, 457), (64, 65), (300, 300)])
    with EngineDoubleRunner(RES, CLASSES, max_batch=2, resize=resize, workers=1) as runner:
        assert runner.preprocesses_on_device, runner.preprocess_fallback
        logits = runner.infer_uint8(images)  # 7 images, max batch 2: 4 chunks through both slots
    expected = runner.expected(preprocess(images, InputSpec(resolution=RES, resize=resize)))
    if resize == "nearest":  # the kernel's nearest resize is exact: only the double's float sums differ
        _close(logits, expected)
    else:  # bilinear is within one uint8 step (1/255) of OpenCV on a few values
        np.testing.assert_allclose(logits, expected, rtol=2e-2, atol=0.05 * float(np.abs(expected).max()))


def _run_staging_check(runner, rounds: int = 3) -> list[bool]:
    """For each round, whether the double-buffered path equals NumPy on large, different images per chunk."""
    spec = InputSpec(resolution=RES, resize="nearest")
    verdicts = []
    for r in range(rounds):
        images = _images(10 + r, [(2000, 3000)] * 8)  # 18 MB per image: the copies take long enough to race
        logits = runner.infer_uint8(images)
        expected = runner.expected(preprocess(images, spec))
        verdicts.append(bool(np.allclose(logits, expected, rtol=1e-4, atol=1e-4 * float(np.abs(expected).max()))))
    return verdicts


def test_staging_check_holds_with_the_events(cuda):
    with EngineDoubleRunner(RES, CLASSES, max_batch=2, resize="nearest", workers=1) as runner:
        assert all(_run_staging_check(runner))


def test_staging_check_fails_when_the_wait_between_staging_and_execution_is_removed(cuda, monkeypatch):
    """The check above is not vacuous: without the compute stream's wait on the staging event, it fails."""
    monkeypatch.setattr(_Worker, "_wait_for_staging", lambda self, slot: None)
    with EngineDoubleRunner(RES, CLASSES, max_batch=2, resize="nearest", workers=1) as runner:
        assert not all(_run_staging_check(runner))


def test_twelve_threads_on_three_workers_equal_serial(cuda):
    batches = [np.random.default_rng(100 + i).random((1 + i % 4, RES, RES, 3), dtype=np.float32) for i in range(12)]
    raw = [_images(200 + i, [(90 + i, 120), (50, 70 + i)]) for i in range(12)]
    with EngineDoubleRunner(RES, CLASSES, max_batch=2, workers=3) as runner:
        serial = [(runner.infer(b), runner.infer_uint8(r)) for b, r in zip(batches, raw)]
        leaked = []

        def call(i):
            out = (runner.infer(batches[i]), runner.infer_uint8(raw[i]))
            if cuda.Context.get_current() is not None:  # the runner pops what it pushed
                leaked.append(threading.current_thread().name)
            return out

        for _ in range(3):
            with ThreadPoolExecutor(12) as pool:
                threaded = list(pool.map(call, range(12)))
            for (f, u), (sf, su) in zip(threaded, serial):
                np.testing.assert_array_equal(f, sf)
                np.testing.assert_array_equal(u, su)
        assert len(runner._all_workers) == 3 and runner._pool.qsize() == 3  # every worker returned to the pool
    assert not leaked


def test_cuda_graph_replay_equals_plain_launch(cuda):
    batch = np.random.default_rng(3).random((5, RES, RES, 3), dtype=np.float32)
    images = _images(4, [(480, 640), (100, 100), (64, 64)])
    with EngineDoubleRunner(RES, CLASSES, max_batch=2, workers=1) as plain:
        want = plain.infer(batch), plain.infer_uint8(images)
    with EngineDoubleRunner(RES, CLASSES, max_batch=2, workers=1, cuda_graph=True) as graphed:
        for _ in range(3):  # the first call captures, the next ones replay
            got = graphed.infer(batch), graphed.infer_uint8(images)
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
        worker = graphed._all_workers[0]
        # (batch size, slot) pairs: float path batches 2 and 1 on slot 0; uint8 chunks of 2 and 1 on slots 0, 1
        assert {n for n, _ in worker.graphs} == {1, 2} and len(worker.graphs) >= 3
        context = graphed.double.contexts[0]
        launches = context.launches
        graphed.infer(batch)
        assert context.launches == launches  # replayed graphs: the double's Python was not called again


def test_buffers_are_pinned_and_streams_distinct(cuda):
    with EngineDoubleRunner(RES, CLASSES, max_batch=2, workers=2) as runner:
        runner.infer_uint8(_images(5, [(100, 100)]))
        streams = set()
        for worker in runner._all_workers:
            pinned = (
                [worker.h_in] + [s.h_out for s in worker.slots] + [s.h_raw for s in worker.slots if s.h_raw is not None]
            )
            assert pinned and all("HostAllocation" in type(a.base).__name__ for a in pinned)
            streams |= {worker.stream.handle, worker.copy_stream.handle}
        assert len(streams) == 4  # no two workers, and no two roles, share a stream


def test_bad_input_keeps_the_runner_usable(cuda):
    batch = np.random.default_rng(6).random((2, RES, RES, 3), dtype=np.float32)
    with EngineDoubleRunner(RES, CLASSES, max_batch=2, workers=1) as runner:
        want = runner.infer(batch)
        for bad in ([np.zeros((10, 10), np.uint8)], [np.zeros((0, 5, 3), np.uint8)], [np.zeros((5, 5, 3), np.float32)]):
            with pytest.raises(BitError):
                runner.infer_uint8(bad)
        with pytest.raises(BitError):
            runner.infer(batch[:, :, :, :2])
        np.testing.assert_array_equal(runner.infer(batch), want)


def test_timed_inference_equals_plain_and_reports_every_phase(cuda):
    batch = np.random.default_rng(8).random((5, RES, RES, 3), dtype=np.float32)
    with EngineDoubleRunner(RES, CLASSES, max_batch=2, workers=1) as runner:
        plain = runner.infer(batch)
        timed, phases = runner.infer_timed(batch)  # 3 calls: the phases are their sums
    np.testing.assert_array_equal(timed, plain)
    assert set(phases) == {"enqueue_ms", "h2d_ms", "compute_ms", "d2h_ms"}
    assert all(v >= 0 for v in phases.values()) and phases["compute_ms"] > 0
