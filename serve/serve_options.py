"""What bit-serve is asked for: ServeOptions, each default written here once (serve_cli.py's flags and --help read
them), and what of it is settled only against the classifier (the model name, the max batch).

No PyTriton here: bit-serve reads its options before it knows whether PyTriton is importable (serve_cli.py).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from dataclasses import dataclass

from ..engine.classifier import Classifier
from ..engine.errors import BitError
from .batching import SERVE_MAX_QUEUE_DELAY_US, serving_max_batch
from .triton_models import ImageLimits, default_model_name

MODEL_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # what Triton (and PyTriton) accept as a model name
# --backend, --precision, --threads are bit-classify's flags (engine/classify_cli.py): their defaults are Classifier's
_CLASSIFIER = inspect.signature(Classifier).parameters


@dataclass(frozen=True)
class ServeOptions:
    bundle: str
    backend: str = _CLASSIFIER["backend"].default
    precision: str = _CLASSIFIER["precision"].default
    threads: int | None = _CLASSIFIER["threads"].default
    static_shapes: int | None = None  # openvino's models compiled for one batch shape; None: the runner's default
    host: str = "127.0.0.1"
    http_port: int = 8000
    http: bool = True  # False: gRPC and metrics only
    grpc_port: int = 8001
    metrics_port: int = 8002
    name: str = ""  # the float model's; empty: bit_<variant> (`settled`)
    max_batch: int | None = None  # None: DEFAULT_MAX_BATCH within a TensorRT plan's profile max (`settled`)
    max_queue_delay_us: int = SERVE_MAX_QUEUE_DELAY_US
    image_workers: int = 2
    # The backend set up for throughput (OpenVINO's THROUGHPUT streams, ORT's threads split), for image_workers + 1
    # requests at once; off: for one request's latency, which suits the float model's batched calls.
    throughput: bool = False
    max_image_pixels: int = ImageLimits.max_image_pixels
    max_decode_mb: int = ImageLimits.max_decode_mb
    allow_shared_dev_shm: bool = False  # serve even where no private /dev/shm can be made (serve/private_shm.py)
    workspace: str | None = None  # where the temporary workspace is made; None: the system's temporary directory
    log_verbose: int = 0


def check_model_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise BitError(f"model name {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


def settled(options: ServeOptions, clf: Classifier) -> ServeOptions:
    """`options` with the model name and max batch settled for `clf` (active): bit_<variant> unless named, and the
    largest batch Triton may hand it, never above what one native call takes (serve/batching.py)."""
    name = check_model_name(options.name or default_model_name(clf.bundle.manifest))
    return dataclasses.replace(options, name=name, max_batch=serving_max_batch(options.max_batch, clf.max_batch))
