"""The CUDA preprocessing kernel on a real GPU through pycuda: pinned staging, async copy, kernel, against
the CPU path. Needs a GPU and pycuda, not TensorRT, so a lent GPU machine can run it."""

import cv2
import numpy as np
import pytest

from bit_trt.engine.parity_set import real_photo_paths
from bit_trt.engine.preprocess import InputSpec, preprocess, read_image

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda():
    drv = pytest.importorskip("pycuda.driver", reason="needs pycuda (pip install 'bit-trt[gpu]')")
    drv.init()
    ctx = drv.Device(0).retain_primary_context()
    ctx.push()
    yield drv
    drv.Context.pop()
    ctx.detach()


def _on_device(cuda, images, resolution, resize, layout) -> np.ndarray:
    """The runner's path: pinned staging, one async copy, one kernel launch per image into a float32 batch."""
    from bit_trt.engine.cuda_preprocess import DevicePreprocessor

    pre = DevicePreprocessor(cuda, resolution, resize, layout)
    stream = cuda.Stream()
    slot = resolution * resolution * 3
    d_out = cuda.mem_alloc(len(images) * slot * 4)
    pinned = cuda.pagelocked_empty(sum(i.nbytes for i in images), np.uint8)
    d_raw = cuda.mem_alloc(pinned.nbytes)
    offset = 0
    for img in images:
        pinned[offset : offset + img.nbytes] = img.reshape(-1)
        offset += img.nbytes
    cuda.memcpy_htod_async(d_raw, pinned, stream)
    offset = 0
    for i, img in enumerate(images):
        pre.launch(int(d_raw) + offset, img.shape[0], img.shape[1], int(d_out) + i * slot * 4, stream)
        offset += img.nbytes
    out = cuda.pagelocked_empty((len(images), slot), np.float32)
    cuda.memcpy_dtoh_async(out, d_out, stream)
    stream.synchronize()
    return out


def _photos() -> list[np.ndarray]:
    paths = real_photo_paths()
    if not paths:
        pytest.skip("the real photos come with scikit-learn, which is not installed")
    photo = read_image(paths[0])
    return [
        photo,
        np.ascontiguousarray(cv2.resize(photo, (1920, 1080))),
        np.ascontiguousarray(photo[:37, :100]),
        *[read_image(p) for p in paths[1:]],
    ]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
def test_bilinear_kernel_is_within_one_step_of_opencv(cuda, layout):
    images = _photos()
    out = _on_device(cuda, images, 480, "bilinear", layout)
    cpu = preprocess(images, InputSpec(resolution=480))
    if layout == "NCHW":
        cpu = cpu.transpose(0, 3, 1, 2)
    diff = np.abs(out.reshape(cpu.shape) - cpu)
    assert diff.max() <= 1 / 255 + 1e-6
    assert (diff > 0).mean() < 0.005


@pytest.mark.parametrize("resolution", [480, 224, 1000])
def test_nearest_kernel_equals_opencv_exactly(cuda, resolution):
    images = _photos()
    out = _on_device(cuda, images, resolution, "nearest", "NHWC")
    cpu = np.stack(
        [cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_NEAREST) for img in images]
    ).astype(np.float32) * np.float32(1 / 255)
    np.testing.assert_array_equal(out.reshape(cpu.shape), cpu)
