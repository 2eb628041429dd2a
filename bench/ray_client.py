"""bit-bench's `ray` backend: the same requests, sent to the Ray Serve application (scale/serve_app.py, deployed by
`bit-serve BUNDLE --ray ADDRESS`) over its HTTP endpoint instead of an in-process Classifier.

Measured beside the in-process rows of one run, the difference is what Ray Serve adds: the HTTP proxy, the hop to
a replica (on another node or not), the replica's batching queue, the .npy bodies both ways. `model` requests
POST a .npy float32 batch to /v1/infer; `end-to-end` requests POST each encoded image to /v1/classify?logits=1.
What the replicas run (backend, arithmetic, bundle) is read from /v1/ready; a server serving another bundle than
the one given to bit-bench is refused, as its rows would compare different models.

    bit-serve out/r50x1 --ray 127.0.0.1:6379 --detach --backend ort-cpu --min-replicas 2 --max-replicas 2
    bit-bench out/r50x1 --backend ort-cpu,ray --ray-url http://127.0.0.1:8000 --concurrency 1,2,4,8
"""

from __future__ import annotations

import http.client
import io
import json
from urllib.parse import urlparse

import numpy as np

from ..engine.bundle import Bundle, manifest_sha256
from ..engine.compare import softmax
from ..engine.errors import BitError
from ..engine.runner import Runner
from .server_client import PerThreadClients, ServerClassifier

DEFAULT_URL = "http://127.0.0.1:8000"
NPY = "application/x-npy"
READY_TIMEOUT_S = 10.0


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) from http://HOST:PORT, or a one-line BitError."""
    parsed = urlparse(url)
    try:
        port = parsed.port
    except ValueError:  # a port that is not a number, or out of range
        port = None
    if parsed.scheme != "http" or not parsed.hostname or not port or parsed.path not in ("", "/"):
        raise BitError(f"--ray-url {url!r}: expected http://HOST:PORT (Ray Serve's HTTP proxy)")
    return parsed.hostname, port


def _request(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None):
    headers = {"Content-Type": NPY} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def _error(status: int, body: bytes) -> str:
    try:
        return json.loads(body)["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {body[:200].decode(errors='replace')}"


def server_ready(url: str, bundle_path: str, timeout_s: float = READY_TIMEOUT_S) -> dict:
    """The application's /v1/ready, checked: reachable, ready, and serving the bundle bit-bench was given (the
    manifest's sha256, the identity every replica checks). Anything else is a one-line BitError."""
    host, port = parse_url(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        status, body = _request(conn, "GET", "/v1/ready")
    except (OSError, http.client.HTTPException) as exc:
        raise BitError(f"cannot reach Ray Serve at {url} ({exc or type(exc).__name__})") from None
    finally:
        conn.close()
    try:
        ready = json.loads(body)
    except ValueError:
        ready = None
    if status != 200 or not isinstance(ready, dict) or not ready.get("ready"):
        raise BitError(f"Ray Serve at {url} is not ready: GET /v1/ready answered {_error(status, body)}")
    ours = manifest_sha256(bundle_path)
    if ready.get("bundle_sha256") != ours:
        raise BitError(
            f"Ray Serve at {url} serves another bundle (manifest sha256 {str(ready.get('bundle_sha256'))[:12]}…) "
            f"than {bundle_path} ({ours[:12]}…): deploy this bundle or bench the one it serves"
        )
    return ready


class RayRunner(Runner):
    """A runner over the application's /v1/infer: the engine's input checks (Runner), one keep-alive HTTP
    connection per thread, and what runs read from /v1/ready (`compute` is the replicas' arithmetic)."""

    name = "ray"

    def __init__(self, url: str, bundle_path: str, timeout_s: float = 120.0):
        super().__init__()
        self.host, self.port = parse_url(url)
        self.url, self.bundle_path, self.timeout_s = url, bundle_path, timeout_s
        self.clients = PerThreadClients(lambda: http.client.HTTPConnection(self.host, self.port, timeout=timeout_s))
        self.compute: str | None = None
        self._server: str | None = None

    def _activate(self) -> None:
        ready = server_ready(self.url, self.bundle_path)
        self.compute = ready.get("compute")
        self._server = f"Ray Serve at {self.url}: {ready.get('backend')}"

    def _deactivate(self) -> None:
        self.clients.close()
        self._server = None

    def describe(self) -> str:
        return self._server or f"Ray Serve at {self.url}"

    def _post(self, path: str, body: bytes) -> bytes:
        """One request on this thread's connection. A keep-alive connection the server closed while idle is
        reopened once; any other failure is a BitError naming the endpoint."""
        for attempt in (0, 1):
            try:
                status, answer = _request(self.clients.get(), "POST", path, body)
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self.clients.drop()
                if attempt:
                    raise BitError(f"Ray Serve at {self.url}{path}: {exc or type(exc).__name__}") from None
            except (OSError, http.client.HTTPException) as exc:
                self.clients.drop()
                raise BitError(f"Ray Serve at {self.url}{path}: {exc or type(exc).__name__}") from None
        if status != 200:
            raise BitError(f"Ray Serve at {self.url}{path}: {_error(status, answer)}")
        return answer

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        """One checked batch -> logits through /v1/infer (.npy both ways)."""
        body = io.BytesIO()
        np.save(body, batch, allow_pickle=False)
        return np.load(io.BytesIO(self._post("/v1/infer", body.getvalue())), allow_pickle=False)

    def infer_bytes(self, images: list[bytes]) -> np.ndarray:
        """Encoded images -> logits through /v1/classify (one image a request, as the endpoint takes)."""
        return np.stack(
            [
                np.asarray(json.loads(self._post("/v1/classify?logits=1", image))["logits"], np.float32)
                for image in images
            ]
        )


class RayClassifier(ServerClassifier):
    """A Classifier whose runner is the Ray Serve application; `predict` sends encoded images to /v1/classify."""

    def __init__(self, bundle: Bundle, url: str):
        super().__init__(bundle, RayRunner(url, bundle.path))

    def predict(self, images: list[bytes]):
        self.runner.activate()
        logits = self.runner.infer_bytes(images)
        return logits, softmax(logits)
