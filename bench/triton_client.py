"""bit-bench's `triton` backend: the same requests, sent to a Triton server (bit-serve, or a stock tritonserver
serving a bit-triton repository) instead of an in-process Classifier.

Measured beside the in-process rows of one run, the difference is the server's overhead: serialization,
the network stack, the dynamic batcher's queue. The server states what it runs; a row's precision is the
label the user gives it (`--precision`), and its accuracy columns are measured through the server.

    bit-serve out/r50x1 --backend ort-cpu &
    bit-bench out/r50x1 --backend ort-cpu,triton --triton-url grpc://127.0.0.1:8001 --concurrency 1,4,16
"""

from __future__ import annotations

from urllib.parse import urlparse

import numpy as np

from ..engine.bundle import Bundle
from ..engine.compare import softmax
from ..engine.errors import BitError, require
from ..engine.runner import Runner
from ..serve.triton_models import IMAGE_INPUT, IMAGE_SUFFIX, default_model_name
from .server_client import PerThreadClients, ServerClassifier

DEFAULT_URL = "grpc://127.0.0.1:8001"


def _protocol(url: str) -> tuple[str, str]:
    """('grpc' | 'http', 'host:port') from grpc://host:port, http://host:port or a bare host:port (gRPC)."""
    parsed = urlparse(url if "://" in url else f"grpc://{url}")
    if parsed.scheme not in ("grpc", "http") or not parsed.hostname or not parsed.port:
        raise BitError(f"--triton-url {url!r}: expected grpc://HOST:PORT or http://HOST:PORT")
    return parsed.scheme, f"{parsed.hostname}:{parsed.port}"


class TritonRunner(Runner):
    """A runner over a Triton server's float model: the engine's input checks and max-batch split (Runner), one
    client per thread (PerThreadClients), and max_batch read from the server's model config."""

    name = "triton"

    def __init__(self, url: str, model: str, input_name: str, output_name: str, timeout_s: float = 120.0):
        super().__init__()
        self.protocol, self.address = _protocol(url)
        self.model, self.input_name, self.output_name = model, input_name, output_name
        self.timeout_s = timeout_s
        self.clients = PerThreadClients(self._new_client)
        self._server = None

    def _module(self):
        return require(f"tritonclient.{self.protocol}")

    def _new_client(self):
        module = self._module()
        if self.protocol == "http":
            return module.InferenceServerClient(
                self.address, connection_timeout=self.timeout_s, network_timeout=self.timeout_s
            )
        return module.InferenceServerClient(self.address)

    def client(self):
        return self.clients.get()

    def _activate(self) -> None:
        module = self._module()
        try:
            client = self.client()
            if not client.is_model_ready(self.model):
                raise BitError(f"Triton at {self.address} has no ready model {self.model!r} (--triton-model)")
            config = client.get_model_config(self.model)
            metadata = client.get_server_metadata()
        except module.InferenceServerException as exc:
            raise BitError(f"Triton at {self.address}: {exc}") from exc
        except OSError as exc:  # connection refused, unreachable
            raise BitError(f"cannot reach Triton at {self.address} ({exc})") from exc
        if isinstance(config, dict):  # the HTTP client returns JSON, the gRPC one a ModelConfigResponse
            max_batch = config.get("max_batch_size", 0)
            version = metadata.get("version", "?")
        else:
            max_batch = config.config.max_batch_size
            version = metadata.version
        self.max_batch = int(max_batch) or None
        self._server = f"Triton {version} at {self.protocol}://{self.address}, model {self.model}"

    def _deactivate(self) -> None:
        self.clients.close()
        self._server = None

    def describe(self) -> str:
        return self._server or f"Triton at {self.protocol}://{self.address}"

    def _send(self, model: str, name: str, data: np.ndarray, datatype: str) -> np.ndarray:
        module = self._module()
        item = module.InferInput(name, list(data.shape), datatype)
        item.set_data_from_numpy(data)
        try:
            if self.protocol == "grpc":
                result = self.client().infer(model, [item], client_timeout=self.timeout_s)
            else:
                result = self.client().infer(model, [item])
        except module.InferenceServerException as exc:
            raise BitError(f"Triton {model}: {exc}") from exc
        return result.as_numpy(self.output_name)

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """One chunk (checked and split at the server's max batch by Runner.infer) -> logits."""
        return self._send(self.model, self.input_name, batch, "FP32")

    def infer_bytes(self, images: list[bytes]) -> np.ndarray:
        """Encoded images -> logits through the server's image model (`<model>_image`)."""
        data = np.array(images, dtype=object).reshape(-1, 1)
        return self._send(self.model + IMAGE_SUFFIX, IMAGE_INPUT, data, "BYTES")


class TritonClassifier(ServerClassifier):
    """A Classifier whose runner is a Triton server (compute: None, the server does not say); `predict` sends
    encoded images to the image model."""

    def __init__(self, bundle: Bundle, url: str, model: str | None = None):
        model = model or default_model_name(bundle.manifest)
        super().__init__(bundle, TritonRunner(url, model, bundle.input_spec.name, bundle.manifest["output"]["name"]))

    def predict(self, images: list[bytes]):
        logits = self.runner.infer_bytes(images)
        return logits, softmax(logits)
