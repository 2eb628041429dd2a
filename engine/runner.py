"""The runner base every backend shares: cheap to construct, `activate` loads, `infer` runs, `deactivate`
frees. Usable as a context manager. Heavy libraries are imported in `activate`, never at module import.

Input checks live here, once for every backend, so that a bad batch is refused before it reaches a
native library (where it would become a crash or a cryptic message) and the runner stays usable.
A batch larger than the backend's `max_batch` (a TensorRT profile's max) is split and run in chunks.
"""

from __future__ import annotations

import threading

import numpy as np

from .errors import BitError


def check_batch(batch, channels: int = 3) -> np.ndarray:
    """A float NHWC batch in [0,1] -> contiguous float32, or a BitError saying what is wrong with it."""
    if not isinstance(batch, np.ndarray):
        raise BitError(f"expected a float32 NHWC numpy batch, got {type(batch).__name__}")
    if batch.ndim != 4:
        raise BitError(f"expected a rank-4 NHWC batch [N, H, W, {channels}], got rank {batch.ndim} {batch.shape}")
    if batch.shape[-1] != channels:
        raise BitError(f"expected {channels} channels last (NHWC, RGB), got shape {batch.shape}")
    if batch.shape[0] == 0:
        raise BitError("empty batch: pass at least one image")
    if batch.shape[1] == 0 or batch.shape[2] == 0:
        raise BitError(f"images must have a non-zero size, got shape {batch.shape}")
    if not np.issubdtype(batch.dtype, np.floating):
        raise BitError(
            f"runners take float images in [0, 1], got dtype {batch.dtype}; "
            "Classifier.predict accepts uint8 images and preprocesses them"
        )
    batch = np.ascontiguousarray(batch, dtype=np.float32)
    if not np.isfinite(batch).all():
        raise BitError("batch contains NaN or Inf")
    return batch


class Runner:
    name = "runner"
    #: the most images one native call takes; None: no limit. Larger batches are split (see `infer`).
    max_batch: int | None = None

    def __init__(self):
        self._active = False
        self._lock = threading.Lock()

    def activate(self) -> Runner:
        with self._lock:
            if not self._active:
                self._activate()
                self._active = True
        return self

    def deactivate(self) -> None:
        with self._lock:
            if self._active:
                self._deactivate()
                self._active = False

    def __enter__(self):
        return self.activate()

    def __exit__(self, *exc):
        self.deactivate()
        return False

    def describe(self) -> str:
        """One line: which library and device actually run the model (what a user should see in logs)."""
        return self.name

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 NHWC batch in [0,1] -> float32 logits [N, classes]. Safe to call from many threads."""
        chunks = self.chunks(batch)
        if len(chunks) == 1:
            return self._infer(chunks[0])
        return np.concatenate([self._infer(chunk) for chunk in chunks])

    def chunks(self, batch) -> list[np.ndarray]:
        """The batch checked (check_batch) and split at `max_batch`: what each native call takes."""
        if not self._active:
            raise BitError(f"{self.name} runner is not active; call activate() or use it as a context manager")
        batch = check_batch(batch)
        step = self.max_batch or len(batch)
        return [batch[i : i + step] for i in range(0, len(batch), step)]

    def _activate(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _deactivate(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _infer(self, batch):  # pragma: no cover - abstract
        raise NotImplementedError
