"""The runner base every backend shares: cheap to construct, `activate` loads, `infer` runs, `deactivate`
frees. Usable as a context manager. Heavy libraries are imported in `activate`, never at module import.
"""
from __future__ import annotations

import threading

import numpy as np

from .errors import BitError


class Runner:
    name = "runner"

    def __init__(self):
        self._active = False
        self._lock = threading.Lock()

    def activate(self) -> "Runner":
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

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """float32 NHWC batch in [0,1] -> logits [N, classes]."""
        if not self._active:
            raise BitError(f"{self.name} runner is not active; call activate() or use it as a context manager")
        if not isinstance(batch, np.ndarray) or batch.ndim != 4 or batch.shape[-1] != 3:
            raise BitError(f"expected a float32 NHWC batch with 3 channels, got {getattr(batch, 'shape', type(batch))}")
        if batch.shape[0] == 0:
            raise BitError("empty batch: pass at least one image")
        return self._infer(np.ascontiguousarray(batch, dtype=np.float32))

    def _activate(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _deactivate(self):  # pragma: no cover - abstract
        raise NotImplementedError

    def _infer(self, batch):  # pragma: no cover - abstract
        raise NotImplementedError
