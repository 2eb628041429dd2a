"""The TensorFlow reference as a backend: the bundle's model rebuilt in TF from the source its manifest names.

This is the ground truth every other backend is compared with, not a deployment backend: it needs
TensorFlow and the export extras, and the source (the SavedModel or .npz path recorded at export, or the
synthetic seed) on this host. The weights' checksum must equal the manifest's, so the reference is
provably the model that was exported.

It lives in export/ because it *is* the exporter's reference (export/sources.py builds it). The engine
never imports it: engine/backends.py names it in its runner table and loads it only when `tf` is asked for.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ..engine.errors import BitError
from ..engine.runner import Runner


class TfRunner(Runner):
    name = "tf"

    def __init__(self, manifest: dict):
        super().__init__()
        self.manifest = manifest
        self._call_lock = threading.Lock()

    def _activate(self):
        from . import sources  # TF itself is imported on load, through tensorflow_import (install hint included)

        model = self.manifest["model"]
        source = model["source"]
        if source["kind"] == "synthetic":
            where = "synthetic"
        else:
            where = source.get("path")
            if not where or not os.path.exists(where):
                raise BitError(
                    f"tf backend: the bundle was exported from {source['kind']} {where!r}, which is not on "
                    "this host; the TF reference needs it (or use bit-check, which falls back to the "
                    "reference logits stored in the bundle)"
                )
        loaded = sources.load(
            where, model["variant"], num_classes=int(model["num_classes"]), seed=int(source.get("seed", 0))
        )
        if loaded.weights_sha256() != model["weights_sha256"]:
            raise BitError(
                f"tf backend: the weights at {where!r} are not the ones this bundle was exported from "
                "(checksum differs)"
            )
        self._reference = loaded.reference

    def describe(self) -> str:
        import tensorflow as tf

        return f"tf: tensorflow {tf.__version__} reference (CPU)"

    def _deactivate(self):
        self._reference = None

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        with self._call_lock:  # the TF module builds itself on first call; serialize rather than race
            return np.asarray(self._reference(batch), np.float32)
