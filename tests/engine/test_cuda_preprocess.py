"""The CUDA preprocessing kernel: nvcc compiles it, and its arithmetic equals the CPU (OpenCV) path.

The kernel's per-pixel code is __host__ __device__; nvcc builds the same source into a host library here,
so its arithmetic is checked against OpenCV on CPU-only machines. On a GPU the kernel itself is compared
(tests/engine/test_cuda_preprocess_gpu.py). Stated tolerance: at most one uint8 step (1/255) per value, and on photos
at 480 fewer than 0.5% of values differ at all (OpenCV's vectorized and scalar loops round differently
at a few positions).
"""

import ctypes
import subprocess

import cv2
import numpy as np
import pytest

from bit_trt.engine import cuda_preprocess
from bit_trt.engine.parity_set import real_photo_paths
from bit_trt.engine.preprocess import read_image

pytestmark = pytest.mark.skipif(cuda_preprocess.find_nvcc() is None, reason="needs nvcc (CUDA toolkit)")
STEP = 1 / 255 + 1e-6


@pytest.fixture(scope="module")
def host_kernel(tmp_path_factory):
    lib = tmp_path_factory.mktemp("kernel") / "libpreprocess.so"
    subprocess.run(
        [
            cuda_preprocess.find_nvcc(),
            "-shared",
            "-Xcompiler",
            "-fPIC",
            "-O2",
            cuda_preprocess.KERNEL_SOURCE,
            "-o",
            str(lib),
        ],
        check=True,
        capture_output=True,
    )
    fn = ctypes.CDLL(str(lib)).bit_preprocess_u8_host
    fn.argtypes = [
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_long,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_int,
        ctypes.c_float,
    ]

    def run(src, size, mode="bilinear", layout="NHWC"):
        src = np.ascontiguousarray(src)
        out = np.empty((size, size, 3) if layout == "NHWC" else (3, size, size), np.float32)
        fn(
            src.ctypes.data,
            src.shape[0],
            src.shape[1],
            src.strides[0],
            out.ctypes.data,
            size,
            int(layout == "NCHW"),
            cuda_preprocess.MODES[mode],
            np.float32(1 / 255),
        )
        return out

    return run


def test_nvcc_compiles_the_kernel_to_ptx(tmp_path, monkeypatch):
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path))
    ptx = cuda_preprocess.compile_ptx()
    assert b".entry bit_preprocess_u8" in ptx and b".target sm_75" in ptx
    assert cuda_preprocess.compile_ptx() == ptx  # second call: from the cache
    assert len(list((tmp_path / "kernels").glob("*.ptx"))) == 1


def _cpu(src, size, interp):
    return cv2.resize(src, (size, size), interpolation=interp).astype(np.float32) * np.float32(1 / 255)


@pytest.mark.parametrize("shape", [(427, 640), (1000, 1500), (480, 480), (960, 960), (100, 37), (5, 5), (1, 1)])
def test_bilinear_equals_opencv(host_kernel, shape):
    photo = read_image(real_photo_paths()[0])
    src = photo if photo.shape[:2] == shape else cv2.resize(photo, shape[::-1], interpolation=cv2.INTER_CUBIC)
    for size in (480, 224):
        diff = np.abs(host_kernel(src, size) - _cpu(src, size, cv2.INTER_LINEAR))
        assert diff.max() <= STEP
        if min(shape) >= 100:
            assert (diff > 0).mean() < 0.005


def test_nearest_is_exact_and_nchw_is_a_transpose(host_kernel):
    src = read_image(real_photo_paths()[1])
    np.testing.assert_array_equal(host_kernel(src, 480, "nearest"), _cpu(src, 480, cv2.INTER_NEAREST))
    np.testing.assert_array_equal(host_kernel(src, 96, layout="NCHW"), host_kernel(src, 96).transpose(2, 0, 1))


def test_unsupported_resize_is_refused():
    from bit_trt.engine.errors import BitError

    with pytest.raises(BitError, match="implements bilinear, nearest resize, not 'area'"):
        cuda_preprocess.DevicePreprocessor(None, 480, "area", "NHWC")


def test_rebuilding_gives_the_shipped_ptx(tmp_path):
    rebuilt = cuda_preprocess.write_shipped_ptx(str(tmp_path / "preprocess.ptx"))
    with open(rebuilt, "rb") as a, open(cuda_preprocess.SHIPPED_PTX, "rb") as b:
        new, shipped = a.read(), b.read()
    if b"release 13.0, V13.0.88" not in new:
        pytest.skip("another nvcc than the one that built the shipped PTX: its output may differ in comments")
    assert new == shipped
