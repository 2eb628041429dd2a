"""Precision: the names users ask for, the artifact flavours a bundle holds, and which flavour each backend loads.

A user asks for a *precision*: fp32, fp16 or int8. A bundle holds artifacts of a *flavour*: fp32, fp16, and one
INT8 graph per runtime family, because an INT8 request means a different Q/DQ graph per runtime:

    int8-trt   S8S8, symmetric activations: what TensorRT (and ORT's CUDA/TensorRT providers) need
    int8-ort   U8S8: fuses all Convs in ONNX Runtime's x86 kernels. OpenVINO takes either; U8S8 measured
               faster there too (R50x1 at 480, batch 1: 87 ms against 94 ms for S8S8)

Every manifest artifact record carries both (`precision`, `flavour`), and the manifest carries FLAVOUR_TABLE, so
readers in other languages (engine/cpp) resolve a precision from the bundle itself, with no names of their own.
"""

from __future__ import annotations

from .errors import BitError

PRECISIONS = ("fp32", "fp16", "int8")
FLAVOURS = ("fp32", "fp16", "int8-trt", "int8-ort")
# What a Classifier's `precision` takes: a precision, or an exact flavour to load that graph whatever the backend.
ACCEPTED = tuple(dict.fromkeys(PRECISIONS + FLAVOURS))

# The INT8 flavour each backend loads (None: the backend has no INT8). fp32 and fp16 are their own flavour.
INT8_FLAVOUR = {
    "trt": "int8-trt",
    "ort-trt": "int8-trt",
    "ort-cuda": "int8-trt",
    "openvino": "int8-ort",
    "ort-cpu": "int8-ort",
    "tf": None,
}


def check_precision(name: str, allowed: tuple[str, ...] = PRECISIONS, what: str = "precision") -> str:
    """`name`, or a one-line BitError listing the allowed names."""
    if name not in allowed:
        raise BitError(f"unknown {what} {name!r}; choose from: {', '.join(allowed)}")
    return name


def flavour_for(backend: str, precision: str) -> str | None:
    """The artifact flavour `backend` loads for `precision`; an exact flavour name (int8-ort) passes through.

    None: the backend has no such precision (the TF reference runs float32 only)."""
    check_precision(precision, ACCEPTED)
    if backend == "tf":
        return "fp32" if precision == "fp32" else None
    if precision == "int8":
        return INT8_FLAVOUR[backend]
    return precision


def precision_of(flavour: str) -> str:
    """The precision a flavour implements (the inverse of flavour_for): int8-trt -> int8."""
    check_precision(flavour, ACCEPTED, "flavour")
    return flavour.split("-", 1)[0]


def flavour_of(record: dict) -> str:
    """An artifact record's flavour. Format-1 manifests called it `variant` and left it out for fp32/fp16;
    engine/bundle.py upgrades those records when it reads them, so every record seen here has `flavour`."""
    return record["flavour"]


def flavour_table() -> dict[str, dict[str, str]]:
    """{backend: {precision: flavour}} for every backend that loads bundle artifacts: written into each manifest."""
    return {b: {p: f for p in PRECISIONS if (f := flavour_for(b, p))} for b in INT8_FLAVOUR if b != "tf"}
