"""Which TensorRT module to use, `tensorrt` or `tensorrt_rtx`, and its logger.

Both share the builder/runtime/parser API; the manifest records which one built a plan, and the same
module must load it. Export (building) and the engine (running) both import from here.
"""

from __future__ import annotations

from .errors import BitError, require

LIBRARIES = ("tensorrt", "tensorrt_rtx")


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
    try:
        return require(name)
    except OSError as exc:  # the Python module is there, its shared libraries are not
        raise BitError(f"{name} is installed but cannot load its libraries ({exc})") from exc


class ErrorLog:
    """A TensorRT logger that keeps errors, so a failed build or load can say why in one line."""

    def __init__(self, trt):
        self.errors: list[str] = []
        outer = self

        # A base class from the module passed in: mypy cannot type it; tests/tensorrt_api checks these names.
        class Logger(trt.ILogger):  # type: ignore[name-defined]
            def __init__(self):
                trt.ILogger.__init__(self)

            def log(self, severity, msg):
                if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                    outer.errors.append(msg)

        self.logger = Logger()

    def last(self, n: int = 2) -> str:
        return "; ".join(self.errors[-n:]) or "no error message"
