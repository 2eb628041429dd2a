"""The versions of the installed tools that shape a result: recorded in every manifest and every measurement."""

from __future__ import annotations

import platform
from importlib import metadata

TOOLS = (
    "bit-trt",
    "tensorflow-cpu",
    "tf2onnx",
    "onnx",
    "onnxruntime",
    "openvino",
    "tensorrt",
    "tensorrt-rtx",
    "numpy",
    "protobuf",
    "opencv-python-headless",
)


def tool_versions() -> dict:
    """Versions of the installed tools that shape a result (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in TOOLS:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions
