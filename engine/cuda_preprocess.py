"""Preprocessing on the GPU for the TensorRT backend: the kernel in cuda/preprocess.cu, compiled and launched.

Raw uint8 RGB images (decoded by OpenCV on the host, never converted to float there) are copied from
pinned memory and resized, scaled to [0,1] and laid out by one kernel straight into the engine's input
binding. The kernel runs OpenCV's uint8 arithmetic, so it equals the CPU path to within one uint8 step
(1/255) per value, and is bit-identical on most values (measured in tests/engine/test_cuda_preprocess.py).

The kernel ships as PTX for compute_75 (cuda/preprocess.ptx), which the driver JIT-compiles for whatever
newer GPU it meets: a deployment host needs the driver, not the CUDA toolkit. The PTX records the sha256 of the
source it was built from; when the source has changed since (a developer's edit), nvcc compiles it instead,
once per source version, into the per-user cache. Rebuild the shipped file with
`python -m bit_trt.engine.cuda_preprocess`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

from .atomic_write import write_atomic
from .errors import BitError
from .user_cache import cache_dir, read_own, write_own

KERNEL_SOURCE = os.path.join(os.path.dirname(__file__), "cuda", "preprocess.cu")
SHIPPED_PTX = os.path.join(os.path.dirname(__file__), "cuda", "preprocess.ptx")
KERNEL_NAME = "bit_preprocess_u8"
MODES = {"bilinear": 0, "nearest": 1}  # resize methods the kernel implements; others preprocess on the CPU
PTX_ARCH = "compute_75"  # the oldest GPU TensorRT 10/11 supports; newer GPUs JIT from it
BLOCK = (16, 16, 1)


def find_nvcc() -> str | None:
    for candidate in (
        shutil.which("nvcc"),
        os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc"),
    ):
        if candidate and os.path.isfile(candidate):
            return candidate
    return None


def source_digest(arch: str = PTX_ARCH) -> str:
    """What a PTX build depends on: the kernel source and the target architecture."""
    with open(KERNEL_SOURCE, "rb") as f:
        return hashlib.sha256(f.read() + arch.encode()).hexdigest()


def _ptx_header(arch: str = PTX_ARCH) -> bytes:
    return f"// bit-trt: built from preprocess.cu, sha256 {source_digest(arch)} ({arch})\n".encode()


def load_ptx() -> bytes:
    """The kernel's PTX: the shipped file when it was built from the shipped source, else compile_ptx()."""
    try:
        with open(SHIPPED_PTX, "rb") as f:
            shipped = f.read()
    except OSError:
        shipped = b""
    if shipped.startswith(_ptx_header()):
        return shipped
    return compile_ptx()


def compile_ptx(arch: str = PTX_ARCH) -> bytes:
    """PTX for the kernel from nvcc, cached per user by source version."""
    cached = cache_dir("kernels", f"preprocess-{source_digest(arch)[:20]}.ptx")
    kept = read_own(cached)  # code the GPU will run: only if this user alone may have written it
    if kept is not None:
        return kept
    ptx = _nvcc_ptx(arch, f"the shipped PTX does not match {KERNEL_SOURCE} (edited?)")
    write_own(cached, ptx, "cached PTX")
    return ptx


def _nvcc_ptx(arch: str, why: str) -> bytes:
    nvcc = find_nvcc()
    if nvcc is None:
        raise BitError(f"{why}, and compiling it needs nvcc: install the CUDA toolkit or set CUDA_HOME")
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "k.ptx")
        proc = subprocess.run(
            [nvcc, "-ptx", f"-arch={arch}", "-O3", KERNEL_SOURCE, "-o", out], capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise BitError(f"nvcc could not compile {KERNEL_SOURCE}: {proc.stderr.strip()[:500]}")
        with open(out, "rb") as f:
            return _ptx_header(arch) + f.read()


def write_shipped_ptx(path: str = SHIPPED_PTX) -> str:
    """Rebuild cuda/preprocess.ptx from cuda/preprocess.cu (a developer's step after editing the kernel)."""
    ptx = _nvcc_ptx(PTX_ARCH, "rebuilding the shipped PTX")
    return write_atomic(path, ptx, "shipped PTX")


class DevicePreprocessor:
    """Launches the kernel for one image into one slot of an input binding. Create with a context current."""

    def __init__(self, cuda, resolution: int, resize: str, layout: str):
        if resize not in MODES:
            raise BitError(f"the CUDA preprocessing kernel implements {', '.join(MODES)} resize, not {resize!r}")
        self.resolution = resolution
        self.mode = np.int32(MODES[resize])
        self.nchw = np.int32(layout == "NCHW")
        self.module = cuda.module_from_buffer(load_ptx())
        self.function = self.module.get_function(KERNEL_NAME)
        grid = (resolution + BLOCK[0] - 1) // BLOCK[0]
        self.grid = (grid, grid, 1)

    def launch(self, src_ptr: int, height: int, width: int, dst_ptr: int, stream) -> None:
        """src: device uint8 RGB HWC (rows contiguous); dst: float32 slot of resolution^2 * 3 values."""
        self.function(
            np.uintp(src_ptr),
            np.int32(height),
            np.int32(width),
            np.int64(width * 3),
            np.uintp(dst_ptr),
            np.int32(self.resolution),
            self.nchw,
            self.mode,
            np.float32(1 / 255),
            block=BLOCK,
            grid=self.grid,
            stream=stream,
        )


if __name__ == "__main__":
    print(f"wrote {write_shipped_ptx()}")
