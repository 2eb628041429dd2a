"""The engine's front door: a bundle, a backend, preprocessing and labels behind one `predict` call.

    from bit_trt.engine import Classifier
    with Classifier("out/r50x3", backend="auto", precision="fp32") as clf:
        print(clf.backend)  # what auto picked: "openvino 2026.4.1 CPU (latency, 49 GroupNorms on ..., f32)"
        result = clf.predict(["cat.jpg", jpeg_bytes, uint8_array])
        result.top(5)[0]                         # [(label, probability), ...] for the first image

`predict` takes one image or a list: file paths, encoded bytes (JPEG/PNG/...), uint8 HWC arrays of any
size (RGB, RGBA or grayscale), or float HWC arrays in [0,1]; or a 4-D array (a batch). Every image is
preprocessed exactly per the manifest: on the GPU by a CUDA kernel for the `trt` backend, on the CPU
(OpenCV) otherwise. Batches larger than a TensorRT profile's max are split automatically.

One Classifier may be shared by many threads (see each runner's module for how it keeps calls apart).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import backends
from .bundle import Bundle, load_bundle
from .compare import softmax
from .cpu_host import dispatch_host
from .errors import BitError
from .precision import precision_of
from .preprocess import DEFAULT_MAX_IMAGE_PIXELS, check_max_pixels, full_size, preprocess, scale_uint8


@dataclass
class Prediction:
    logits: np.ndarray
    probabilities: np.ndarray
    labels: list

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        order = np.argsort(-self.probabilities, axis=1)[:, :k]
        return [[(self.labels[j]["name"], float(p[j])) for j in row] for row, p in zip(order, self.probabilities)]


class Classifier:
    def __init__(
        self,
        bundle: str | Bundle,
        backend: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
        device: int = 0,
        max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS,
        concurrency: int = 1,
        **backend_options,
    ):
        """backend: one of backends.BACKEND_CHOICES (auto, or a backend name). precision: fp32, fp16, int8 (the
        backend's INT8 graph), or an exact artifact flavour (int8-ort, int8-trt). max_image_pixels: encoded images
        declaring more pixels than this are refused from their header, before decoding (engine/preprocess.py).
        concurrency: how many requests callers keep in flight at once. Above 1 the backend is set up for throughput
        instead of one request's latency: OpenVINO's THROUGHPUT hint (streams, one per request it expects), ONNX
        Runtime's threads split between the concurrent requests (engine/backends.py says what each gets).
        backend_options go to the runner: workers and cuda_graph (trt), hint, inference_precision and static_shapes
        (openvino); with auto, each to the backends that take it.

        With backend="auto" the runner is started here, to find one that works; otherwise on first use.
        """
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        if backend not in backends.BACKEND_CHOICES:
            raise BitError(f"backend {backend!r} is not known; choose one of: {', '.join(backends.BACKEND_CHOICES)}")
        self.spec = self.bundle.input_spec
        self.max_image_pixels = check_max_pixels(max_image_pixels)
        self.labels = self.bundle.labels()
        self.skipped = []
        self.precision = precision
        if backend == "auto":  # each option goes to the backends that take it (static_shapes: openvino)
            self.runner, self.skipped = backends.create_auto(
                self.bundle, precision, threads, device, concurrency, **backend_options
            )
        else:
            self.runner = backends.create(
                self.bundle,
                backend,
                precision,
                threads=threads,
                device=device,
                concurrency=concurrency,
                **backend_options,
            )

    @property
    def backend(self) -> str:
        """Which library and device run the model, in one line (activates the runner); for INT8 on a CPU backend,
        whether the CPU its kernels dispatch on lacks an INT8 dot product (cpu_host.CpuHost.int8_note)."""
        self.runner.activate()
        described = self.runner.describe()
        cpu_backend = self.runner.name in ("openvino", "ort-cpu")
        int8 = bool(self.precision) and precision_of(self.precision) == "int8"
        note = dispatch_host(self.runner.name).int8_note() if cpu_backend and int8 else ""
        return f"{described}; {note}" if note else described

    @property
    def compute(self) -> str | None:
        """The arithmetic the model runs in here (activates the runner): the precision asked for, except where the
        backend chose on this host (OpenVINO's fp16 tier: bf16 where it pays, else f32; its INT8 tier: "int8+bf16"
        where its float layers run in bf16)."""
        self.runner.activate()
        precision = self.precision and precision_of(self.precision)  # None: a server runs what it was started with
        chosen = getattr(self.runner, "compute", None)
        if precision == "int8":
            return "int8+bf16" if chosen == "bf16" else "int8"
        return chosen or precision

    @property
    def max_batch(self) -> int | None:
        """The most images one native call takes (a TensorRT profile's max; activates the runner); None: no limit.
        `predict` and `infer` split larger batches; a server that batches requests should not form them."""
        self.runner.activate()
        return self.runner.max_batch

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """A preprocessed float32 NHWC batch [N, R, R, 3] in [0, 1] -> logits [N, classes]: the model alone, for
        callers that preprocess once and infer many times (benchmarks, a server's float endpoint)."""
        self.runner.activate()
        return self.runner.infer(batch)

    def infer_timed(self, batch: np.ndarray) -> tuple[np.ndarray, dict | None]:
        """`infer`, plus the device's own phase times where the backend measures them (trt: CUDA events per
        request, in ms); None elsewhere."""
        self.runner.activate()
        if hasattr(self.runner, "infer_timed"):
            return self.runner.infer_timed(batch)
        return self.runner.infer(batch), None

    def infer_uint8(self, images: np.ndarray) -> np.ndarray:
        """uint8 RGB images already at the model's R x R -> logits, preprocessed the way `predict` would (on the
        device for trt): the bundle's stored parity images are these."""
        self.runner.activate()
        if getattr(self.runner, "preprocesses_on_device", False):
            return self.runner.infer_uint8(list(images))
        return self.runner.infer(scale_uint8(np.asarray(images)))

    def __enter__(self):
        self.runner.activate()
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def close(self) -> None:
        self.runner.deactivate()

    def predict(self, images, sources: list[str] | None = None) -> Prediction:
        """sources: what errors call each image (default: its path, or "image")."""
        self.runner.activate()
        if getattr(self.runner, "preprocesses_on_device", False):
            with full_size(images, self.max_image_pixels, sources) as arrays:
                if all(a.dtype == np.uint8 for a in arrays):  # else a float image: the CPU path for all
                    return self._prediction(self.runner.infer_uint8([np.ascontiguousarray(a) for a in arrays]))
                batch = preprocess(arrays, self.spec)
            return self._prediction(self.runner.infer(batch))
        return self._prediction(self.runner.infer(preprocess(images, self.spec, self.max_image_pixels, sources)))

    def _prediction(self, logits: np.ndarray) -> Prediction:
        return Prediction(logits, softmax(logits), self.labels)
