"""The parity set in a plain binary file, for readers without numpy's npz (engine/cpp's bit-check-cpp).

    parity_inputs.raw = images, uint8 [N, R, R, 3] (preprocessed NHWC, before the 1/255 scale), row-major
                        then TF's logits, float32 little-endian [N, C], row-major

The manifest's "reference" record describes it under "raw" (file, bytes, sha256, and each array's offset,
dtype and shape), so a reader checks the checksum and takes every number from the manifest, none from here.
The npz beside it stays the Python side's copy (names included).
"""

from __future__ import annotations

import os

import numpy as np

from .bundle import Bundle, file_record
from .errors import BitError

RAW_FILE = "parity_inputs.raw"


def write_parity_raw(directory: str, images: np.ndarray, tf_logits: np.ndarray) -> dict:
    """Write RAW_FILE into `directory`; returns its manifest record."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    logits = np.ascontiguousarray(tf_logits, dtype="<f4")
    with open(os.path.join(directory, RAW_FILE), "wb") as f:
        f.write(images.tobytes())
        f.write(logits.tobytes())
    return {
        **file_record(directory, RAW_FILE),
        "images": {"offset": 0, "dtype": "uint8", "shape": list(images.shape)},
        "logits": {"offset": images.nbytes, "dtype": "float32-le", "shape": list(logits.shape)},
    }


def read_parity_raw(bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
    """(images, logits) from the bundle's raw parity file, checksum verified."""
    record = bundle.manifest.get("reference", {}).get("raw")
    if not record:
        raise BitError(f"bundle {bundle.path!r} has no {RAW_FILE}; re-export it with this bit-trt")
    bundle.verify_file(record)
    path = os.path.join(bundle.path, record["file"])
    arrays = []
    for key, dtype in (("images", np.uint8), ("logits", np.dtype("<f4"))):
        spec = record[key]
        count = int(np.prod(spec["shape"]))
        arrays.append(np.fromfile(path, dtype=dtype, count=count, offset=spec["offset"]).reshape(spec["shape"]))
    return arrays[0], arrays[1]
