"""What bit-bench's server backends share (`triton`: bench/triton_client.py, `ray`: bench/ray_client.py): a
Classifier whose runner is a remote server, and one client connection per thread.

The server runs what it was started with: a row's precision is the label the user gives it (`--precision`), and its
accuracy columns are measured through the server, on the same parity set as the in-process rows.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from ..engine.bundle import Bundle
from ..engine.classifier import Classifier
from ..engine.runner import Runner


class PerThreadClients:
    """One client per calling thread (bit-bench's concurrency mode calls from many threads, and neither an
    http.client connection nor a tritonclient client may be shared), all closed at once."""

    def __init__(self, make: Callable[[], object]):
        self._make = make
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()

    def get(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = self._make()
            with self._lock:
                self._clients.append(client)
        return client

    def drop(self) -> None:
        """Forget this thread's client (closed), so the next `get` makes a fresh one."""
        client = getattr(self._local, "client", None)
        if client is not None:
            self._local.client = None
            with self._lock:
                self._clients.remove(client)
            client.close()

    def close(self) -> None:
        with self._lock:
            for client in self._clients:
                client.close()
            self._clients.clear()
        self._local = threading.local()


class ServerClassifier(Classifier):
    """A Classifier over a server's runner: bit-bench times it like any other (infer, infer_timed, infer_uint8,
    backend, compute, close are the Classifier's own). Nothing loads here; the runner reaches the server when
    activated. `compute` is the runner's `compute` where the server states it, else None."""

    def __init__(self, bundle: Bundle, runner: Runner):  # not Classifier's: no model loads here
        self.bundle = bundle
        self.spec = bundle.input_spec
        self.skipped = []
        self.precision = None  # the server's, not ours to know
        self.runner = runner
