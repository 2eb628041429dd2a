"""The TensorFlow reference as a backend: the bundle's model rebuilt in TF from the source its manifest names.

This is the ground truth every other backend is compared with, not a deployment backend: it needs
TensorFlow and the export extras (`pip install 'bit-trt[export]'`), and the source (the SavedModel or
.npz path recorded at export, or the synthetic seed) on this host. The weights' checksum must equal the
manifest's, so the reference is provably the model that was exported. The engine never imports TF except
here, on activation.
"""
from __future__ import annotations

import os
import threading

import numpy as np

from .errors import BitError, missing_dependency
from .runner import Runner


class TfRunner(Runner):
    name = "tf"

    def __init__(self, manifest: dict):
        super().__init__()
        self.manifest = manifest
        self._call_lock = threading.Lock()

    def _activate(self):
        try:
            from ..export import sources
        except ImportError:
            raise missing_dependency("tensorflow", "export") from None
        model = self.manifest["model"]
        source = model["source"]
        if source["kind"] == "synthetic":
            where = "synthetic"
        else:
            where = source.get("path")
            if not where or not os.path.exists(where):
                raise BitError(f"tf backend: the bundle was exported from {source['kind']} {where!r}, which is not on "
                               "this host; the TF reference needs it (or use bit-check, which falls back to the "
                               "reference logits stored in the bundle)")
        try:
            loaded = sources.load(where, model["variant"], num_classes=int(model["num_classes"]),
                                  seed=int(source.get("seed", 0)))
        except ImportError:
            raise missing_dependency("tensorflow", "export") from None
        if loaded.weights_sha256() != model["weights_sha256"]:
            raise BitError(f"tf backend: the weights at {where!r} are not the ones this bundle was exported from "
                           "(checksum differs)")
        self._reference = loaded.reference

    def describe(self) -> str:
        import tensorflow as tf

        return f"tf: tensorflow {tf.__version__} reference (CPU)"

    def _deactivate(self):
        self._reference = None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with self._call_lock:  # the TF module builds itself on first call; serialize rather than race
            return np.asarray(self._reference(batch), np.float32)
