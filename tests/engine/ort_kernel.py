"""The kernel library for the tests that run bit-trt's ONNX Runtime kernel: built once per session where this host has a
C compiler and ONNX Runtime's C API header (.ci/run fetches it, tools/onnxruntime_header.sh), else those tests skip
and say why."""

import functools

import pytest

from bit_trt.engine import ort_kernel_library
from bit_trt.engine.errors import BitError


@functools.lru_cache(maxsize=1)
def _built() -> tuple[str | None, str]:
    try:
        return ort_kernel_library.library(), ""
    except BitError as exc:
        return None, str(exc)


def kernel_library() -> str:
    """The built library's path; skips the calling test where it can't be built here."""
    path, why = _built()
    if path is None:
        pytest.skip(f"bit-trt's ONNX Runtime kernel can't be built here: {why}")
    return path
