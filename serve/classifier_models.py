"""bit-serve's two models over one Classifier: what each does with the requests Triton hands it.

    <name>        float NHWC images in [0, 1], as the manifest's input (FP32 [R, R, 3], batched) -> logits FP32 [C].
                  Dynamically batched: Triton merges concurrent requests into one call of up to `max_batch` images.
    <name>_image  encoded images (BYTES [1], JPEG/PNG/...; a request may carry a batch of them) -> logits FP32 [C]
                  and classes BYTES [k], "probability:index:label" as Triton's classification extension writes them.

PyTriton reports an error per execute call, not per request: an exception fails every request Triton put into
that call. So nothing a client sends raises in a batched call: the float model answers an image outside the
input contract (NaN, Inf, values outside [0, 1]) with NaN logits and runs the rest of its batch. The image model,
where a corrupt file is a normal client mistake, has no dynamic batcher (one request per call), so its error (the
engine's one line) reaches that client only; it runs several instances instead, so that requests decode in
parallel. No numpy < 2 or PyTriton import here: the callables are plain functions of numpy arrays.
"""

from __future__ import annotations

import logging

import numpy as np

from ..engine.classifier import Classifier
from ..engine.errors import BitError
from .triton_models import IMAGE_INPUT

LOG = logging.getLogger("bit-serve")
TOP_K = 5


class RequestError(BitError):
    """What a client did wrong: its message, and nothing else, is what the client reads (serve/pytriton_patches.py
    strips the rest on the way out). No traceback is kept: the message says all there is."""

    @property
    def __traceback__(self):
        return None

    @__traceback__.setter
    def __traceback__(self, _traceback):
        pass


class ClassifierModels:
    """The two models' inference callables over one Classifier (PyTriton: a list of requests -> a list of
    response dicts, one per request)."""

    def __init__(self, clf: Classifier, top_k: int = TOP_K):
        self.clf = clf
        self.input_name = clf.spec.name
        self.resolution = clf.spec.resolution
        self.top_k = min(top_k, len(clf.labels))
        self.label_names = [str(entry.get("name", "")) for entry in clf.labels]

    def infer_float(self, requests) -> list[dict]:
        """Triton has checked shape and dtype ([n, R, R, 3] FP32); the values are ours to check, per image: an
        image outside the contract gets NaN logits, the others of the dynamic batch run in one native call.

        Each request arrives as [n, 1, R, R, 3]: the model config reshapes the input to [1, R, R, 3]
        (pytriton_patches.float_input_reshape), so that a request Triton sizes as batch 0 arrives as [1, R, R, 3]
        and counts as one image in the Python backend's batch check, not as R. Such a request declared a batch
        of a multiple of 2**32, which Triton 2.51 truncates to 32 bits: it gets NaN logits, its neighbours
        their answers."""
        arrays, sized = [], []
        for request in requests:
            array = np.asarray(request[self.input_name], np.float32)
            sized.append(array.ndim == 5)
            arrays.append(array.reshape(-1, self.resolution, self.resolution, 3) if sized[-1] else array[:0])
        if not all(sized):
            LOG.warning("bit-serve: %d request(s) declared a batch Triton reads as 0: NaN logits", sized.count(False))
        logits = self.checked_logits(np.concatenate(arrays))
        answers = np.split(logits, np.cumsum([len(a) for a in arrays])[:-1])
        unsized = np.full((1, len(self.label_names)), np.nan, np.float32)
        return [{"logits": rows if ok else unsized} for rows, ok in zip(answers, sized)]

    def checked_logits(self, batch: np.ndarray) -> np.ndarray:
        """Logits for the images inside the input contract, NaN rows for the others."""
        logits = np.full((len(batch), len(self.label_names)), np.nan, np.float32)
        if len(batch) == 0:
            return logits
        flat = batch.reshape(len(batch), -1)
        valid = np.isfinite(flat).all(axis=1)
        valid[valid] &= (flat[valid].min(axis=1) >= 0) & (flat[valid].max(axis=1) <= 1)
        if valid.any():  # the model alone (Classifier.infer): predict would check and copy every image again
            logits[valid] = self.clf.infer(batch[valid] if not valid.all() else batch)
        if not valid.all():
            LOG.warning("bit-serve: %d image(s) not finite or outside [0, 1]: NaN logits", int((~valid).sum()))
        return logits

    def infer_images(self, requests) -> list[dict]:
        """One request per call (no dynamic batcher), so an error here fails only its own client."""
        try:
            return [self._classify_encoded(request[IMAGE_INPUT]) for request in requests]
        except BitError as exc:
            raise RequestError(str(exc)) from None

    def _classify_encoded(self, encoded: np.ndarray) -> dict:
        """Each image is checked against the size limit from its header, then decoded and resized alone (inside
        the process's decode budget): a request never holds more than one full-size image per decoding thread."""
        items = encoded.reshape(-1)
        if len(items) == 0:
            raise BitError("empty request: send at least one encoded image")
        images = [_as_bytes(item) for item in items]
        prediction = self.clf.predict(images, [f"image {i} of the request" for i in range(len(images))])
        return {"logits": prediction.logits, "classes": self.classes(prediction.probabilities)}

    def classes(self, probabilities: np.ndarray) -> np.ndarray:
        """Triton's classification extension format, "probability:index:label", the most probable first."""
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, : self.top_k]
        rows = [[f"{p[j]:f}:{j}:{self.label_names[j]}".encode() for j in row] for row, p in zip(order, probabilities)]
        return np.array(rows, dtype=np.object_).reshape(len(order), self.top_k)


def _as_bytes(item) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    raise BitError(f"expected encoded image bytes, got {type(item).__name__}")
