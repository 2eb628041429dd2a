"""The TF reference logits, computed in a child process.

A child, because TF keeps most of what it allocated (R50x3 at 480: over 3 GB) until the process exits;
run in the exporting process it would sit under every later step's peak.
"""
from __future__ import annotations

import numpy as np

from ..engine.errors import BitError
from .ort_logits import batched


def _reference_worker(model: str, handle, variant, num_classes: int, seed: int, images_u8: np.ndarray, batch: int):
    from . import sources

    loaded = sources.load(model, variant, num_classes=num_classes, seed=seed, handle=handle)
    return batched(loaded.reference, images_u8, batch)


def tf_reference_logits(model: str, handle, variant, num_classes: int, seed: int, images_u8: np.ndarray,
                        batch: int = 2) -> tuple[np.ndarray, int]:
    """TF logits computed in a child process; returns them and the child's peak RSS in bytes.

    A child, because TF keeps most of what it allocated (R50x3 at 480: over 3 GB) until the process exits;
    run in the exporting process it would sit under every later step's peak.
    """
    import multiprocessing
    import resource
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        try:
            logits = pool.submit(_reference_worker, model, handle, variant, num_classes, seed,
                                       images_u8, batch).result()
        except BrokenProcessPool:
            raise BitError("the TF reference process died (out of memory?); nothing was written") from None
    return logits, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
