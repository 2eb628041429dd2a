"""Which TensorRT module to use, `tensorrt` or `tensorrt_rtx`, and its logger.

Both share the builder/runtime/parser API; the manifest records which one built a plan, and the same
module must load it. Export (building) and the engine (running) both import from here.
"""
from __future__ import annotations

from .errors import BitError

LIBRARIES = ("tensorrt", "tensorrt_rtx")
EXTRAS = {"tensorrt": "gpu", "tensorrt_rtx": "rtx"}


def try_import(name: str):
    """The module, or None when it is absent or installed without its shared libraries."""
    try:
        return __import__(name)
    except (ImportError, OSError):
        return None


def import_library(name: str):
    """`tensorrt` or `tensorrt_rtx`, with the install command when it is missing."""
    if name not in LIBRARIES:
        raise BitError(f"unknown engine library {name!r}; choose one of: auto, none, {', '.join(LIBRARIES)}")
    trt = try_import(name)
    if trt is None:
        raise BitError(f"{name} is not installed; install it with: pip install 'bit-trt[{EXTRAS[name]}]'")
    return trt


class ErrorLog:
    """A TensorRT logger that keeps errors, so a failed build or load can say why in one line."""

    def __init__(self, trt):
        self.errors = []
        outer = self

        class Logger(trt.ILogger):
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                    outer.errors.append(msg)

        self.logger = Logger()

    def last(self, n: int = 2) -> str:
        return "; ".join(self.errors[-n:]) or "no error message"
