"""Where bit-trt keeps per-user caches: TF Hub downloads, calibration ranges, compiled kernels, ORT-TRT engines.

One root for all of them, `$BIT_TRT_CACHE` or `~/.cache/bit-trt`, so one variable moves (or isolates) them all.
"""

from __future__ import annotations

import os


def cache_dir(*parts: str) -> str:
    root = os.environ.get("BIT_TRT_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "bit-trt"))
    return os.path.join(root, *parts)
