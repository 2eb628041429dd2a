"""A Classifier behind a real Triton Inference Server (tritonserver, bundled by PyTriton), on this host.

Two models over one Classifier (any backend, any precision):

    <name>        float NHWC images in [0, 1], as the manifest's input (FP32 [R, R, 3], batched) -> logits FP32 [C].
                  Dynamically batched: Triton merges concurrent requests into one call of up to `max_batch` images.
    <name>_image  encoded images (BYTES [1], JPEG/PNG/...; a request may carry a batch of them) -> logits FP32 [C]
                  and classes BYTES [k], "probability:index:label" as Triton's classification extension writes them.

Triton itself refuses a wrong shape, dtype or batch size. PyTriton reports an error per execute call, not per
request: an exception fails every request Triton put into that call. So nothing a client sends raises in a
batched call: the float model answers an image outside the input contract (NaN, Inf, values outside [0, 1])
with NaN logits and runs the rest of its batch. The image model, where a corrupt file is a normal client
mistake, has no dynamic batcher (one request per call), so its error (our BitError text) reaches that client
only; in place of batching it runs `image_workers` instances, so that requests decode in parallel.

Imports PyTriton: it lives in bit-serve's own environment (numpy < 2), see serve_cli.py.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import shutil
import signal
import sysconfig
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import TRITON_ACCESS_HEADER, Triton, TritonConfig, TritonSecurityConfig

from ..engine.classifier import Classifier
from ..engine.errors import BitError
from ..engine.preprocess import decode
from .triton_models import IMAGE_INPUT, IMAGE_SUFFIX

LOG = logging.getLogger("bit-serve")
DEFAULT_MAX_BATCH = 8
TOP_K = 5
# Triton's own time to stop (--exit-timeout-secs), shared by its steps: waiting for open HTTP connections to close
# (an idle keep-alive client holds it that long), for in-flight requests, then finalizing the models (about 2.5 s
# for both here). We unload the models before stopping Triton (see `_stop`), so it mostly covers the first.
EXIT_TIMEOUT_S = 5
# From the first signal to a stopped Triton, whatever its clients do; then its processes are killed.
STOP_DEADLINE_S = 30
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes, the last one a NUL
MODEL_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # what Triton (and PyTriton) accept as a model name


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    name: str = "bit_model"  # serve_cli: --name, or default_model_name
    max_batch: int = DEFAULT_MAX_BATCH
    max_queue_delay_us: int = 1000
    image_workers: int = 2
    log_verbose: int = 0
    workspace: str = ""  # PyTriton's workspace (model store, sockets): a directory that does not exist yet
    access_token: str = ""  # guards Triton's admin endpoints (statistics, model repository, ...)
    remove_at_exit: str = ""  # a directory removed even when a second signal forces the exit


def check_model_name(name: str) -> str:
    if not MODEL_NAME.match(name):
        raise BitError(f"model name {name!r}: use letters, digits, '.', '_' and '-' only")
    return name


def check_socket_paths(options: ServeOptions) -> None:
    """PyTriton's Unix sockets live in the workspace, named after the models; a socket path is at most 107 bytes."""
    longest = os.path.join(options.workspace, f"{options.name}{IMAGE_SUFFIX}_0_{options.image_workers - 1}-server.sock")
    if len(os.fsencode(longest)) > SOCKET_PATH_MAX:
        raise BitError(
            f"the workspace path is too long for Triton's sockets ({longest!r} is over {SOCKET_PATH_MAX} bytes); "
            "choose a shorter --workspace or --name"
        )


def max_batch_for(clf: Classifier, requested: int | None) -> int:
    """The batch Triton may hand us: `requested` (default DEFAULT_MAX_BATCH), never above what the runner
    takes in one native call (a TensorRT plan's profile max). The classifier must be active."""
    limit = clf.runner.max_batch
    if requested is None:
        return min(DEFAULT_MAX_BATCH, limit) if limit else DEFAULT_MAX_BATCH
    if requested < 1:
        raise BitError(f"--max-batch must be at least 1, got {requested}")
    if limit and requested > limit:
        raise BitError(f"--max-batch {requested} is above the plan's profile max batch {limit}")
    return requested


class ClassifierModels:
    """The two models' inference callables over one Classifier (PyTriton: a list of requests -> a list of
    response dicts, one per request)."""

    def __init__(self, clf: Classifier, top_k: int = TOP_K):
        self.clf = clf
        self.input_name = clf.spec.name
        self.top_k = min(top_k, len(clf.labels))
        self.label_names = [str(entry.get("name", "")) for entry in clf.labels]

    def infer_float(self, requests) -> list[dict]:
        """Triton has checked shape and dtype ([n, R, R, 3] FP32); the values are ours to check, per image: an
        image outside the contract gets NaN logits, the others of the dynamic batch run in one native call."""
        arrays = [np.asarray(request[self.input_name], np.float32) for request in requests]
        sizes = [len(a) for a in arrays]
        batch = np.concatenate(arrays)
        flat = batch.reshape(len(batch), -1)
        valid = np.isfinite(flat).all(axis=1)
        valid[valid] &= (flat[valid].min(axis=1) >= 0) & (flat[valid].max(axis=1) <= 1)
        logits = np.full((len(batch), len(self.label_names)), np.nan, np.float32)
        if valid.any():  # the runner directly: Classifier.predict would check and copy every image again
            logits[valid] = self.clf.runner.infer(batch[valid] if not valid.all() else batch)
        if not valid.all():
            LOG.warning("bit-serve: %d image(s) not finite or outside [0, 1]: NaN logits", int((~valid).sum()))
        return [{"logits": rows} for rows in np.split(logits, np.cumsum(sizes)[:-1])]

    def infer_images(self, requests) -> list[dict]:
        """One request per call (no dynamic batcher), so an error here fails only its own client."""
        try:
            return [self._classify_encoded(request[IMAGE_INPUT]) for request in requests]
        except BitError as exc:
            raise RequestError(str(exc)) from None

    def _classify_encoded(self, encoded: np.ndarray) -> dict:
        items = encoded.reshape(-1)
        if len(items) == 0:
            raise BitError("empty request: send at least one encoded image")
        images = [decode(_as_bytes(item), f"image {i} of the request") for i, item in enumerate(items)]
        prediction = self.clf.predict(images)
        return {"logits": prediction.logits, "classes": self._classes(prediction.probabilities)}

    def _classes(self, probabilities: np.ndarray) -> np.ndarray:
        """Triton's classification extension format, "probability:index:label", the most probable first."""
        order = np.argsort(-probabilities, axis=1, kind="stable")[:, : self.top_k]
        rows = [[f"{p[j]:f}:{j}:{self.label_names[j]}".encode() for j in row] for row, p in zip(order, probabilities)]
        return np.array(rows, dtype=np.object_).reshape(len(order), self.top_k)


class RequestError(BitError):
    """What a client did wrong. PyTriton sends the client the exception formatted with its traceback: without
    one, that is our one line, not this server's stack (PyTriton's log keeps the full traceback)."""

    @property
    def __traceback__(self):
        return None

    @__traceback__.setter
    def __traceback__(self, _traceback):
        pass


def _as_bytes(item) -> bytes:
    if isinstance(item, (bytes, bytearray, memoryview)):
        return bytes(item)
    raise BitError(f"expected encoded image bytes, got {type(item).__name__}")


class _Instance:
    """One model instance's callable. PyTriton keys per-instance state by the callable, so each is its own object."""

    def __init__(self, infer: Callable):
        self.infer = infer

    def __call__(self, requests):
        return self.infer(requests)


def _python_backend_environment() -> None:
    """The Python-backend stub links libpython: it must find the library of the Python running us (a pyenv or
    conda build), not another libpython3.x the system may have, or the stub fails to start."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *paths])


# PyTriton 0.7's model instances after the first fetch their config from the first one's handshake server as
# soon as its socket file exists, which is before it listens (asyncio binds, then listens): they then fail with
# ECONNREFUSED, and the model does not load (about one start in two with 2 image instances on a 2-core host).
# The proxy code PyTriton sends into Triton's model store gets a retry instead.
_HANDSHAKE_CONNECT = """\
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(max(0.0, should_stop_before_s - time.time()))
        sock.connect(socket_path.as_posix())
"""
_HANDSHAKE_CONNECT_RETRIED = """\
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(max(0.0, should_stop_before_s - time.time()))
            try:
                sock.connect(socket_path.as_posix())
                break
            except ConnectionRefusedError:
                sock.close()
                if time.time() >= should_stop_before_s:
                    raise
                time.sleep(0.01)
"""


def _retry_handshake_in_proxy_files() -> None:
    from pytriton.models.model import Model

    original = Model.get_proxy_model_files
    if getattr(original, "bit_serve_patched", False):
        return

    def get_proxy_model_files(self) -> dict:
        files = original(self)
        for key, content in files.items():
            if key.endswith("/communication.py"):
                text = content.decode()
                if _HANDSHAKE_CONNECT not in text:
                    LOG.warning("PyTriton's handshake code changed; model instances may fail to start (see serve/)")
                    continue
                text = text.replace(_HANDSHAKE_CONNECT, _HANDSHAKE_CONNECT_RETRIED)
                # and 10 s in place of 1 to get there: instances start side by side on a busy host
                text = text.replace("timeout_s: float = 1.0) -> dict:", "timeout_s: float = 10.0) -> dict:")
                files[key] = text.encode()
        return files

    get_proxy_model_files.bit_serve_patched = True
    Model.get_proxy_model_files = get_proxy_model_files


def create_triton(clf: Classifier, options: ServeOptions) -> tuple[Triton, list[str]]:
    """A Triton (not started) with both models bound; returns it and the model names."""
    _retry_handshake_in_proxy_files()
    name = check_model_name(options.name)
    models = ClassifierModels(clf)
    spec = clf.spec
    config = TritonConfig(
        http_address=options.host,
        grpc_address=options.host,
        metrics_address=options.host,
        http_port=options.http_port,
        grpc_port=options.grpc_port,
        metrics_port=options.metrics_port,
        log_verbose=options.log_verbose,
        exit_timeout_secs=EXIT_TIMEOUT_S,
    )
    triton = Triton(
        config=config,
        workspace=options.workspace or None,
        security_config=TritonSecurityConfig(access_token=options.access_token or None),
    )
    logits = Tensor(name="logits", dtype=np.float32, shape=(len(models.label_names),))
    triton.bind(
        model_name=name,
        infer_func=_Instance(models.infer_float),
        inputs=[Tensor(name=spec.name, dtype=np.float32, shape=(spec.resolution, spec.resolution, 3))],
        outputs=[logits],
        config=ModelConfig(
            max_batch_size=options.max_batch,
            batcher=DynamicBatcher(
                max_queue_delay_microseconds=options.max_queue_delay_us,
                preferred_batch_size=[options.max_batch],
            ),
        ),
    )
    triton.bind(
        model_name=name + IMAGE_SUFFIX,
        # Several instances instead of a batcher: see the module docstring.
        infer_func=[_Instance(models.infer_images) for _ in range(options.image_workers)],
        inputs=[Tensor(name=IMAGE_INPUT, dtype=np.bytes_, shape=(1,))],
        outputs=[logits, Tensor(name="classes", dtype=np.bytes_, shape=(models.top_k,))],
        config=ModelConfig(max_batch_size=options.max_batch, batcher=None),
    )
    return triton, [name, name + IMAGE_SUFFIX]


def serve(clf: Classifier, options: ServeOptions, on_ready: Callable[[list[str]], None]) -> int:
    """Run Triton until SIGINT or SIGTERM, then stop it (see `_stop`); returns the exit code.

    A second signal kills Triton's processes at once and exits 128 + signal.
    """
    stop = threading.Event()
    signals = []

    def on_signal(signum, _frame):
        signals.append(signum)
        stop.set()
        if len(signals) > 1:
            _kill_triton(options.workspace)
            _remove_leftovers(options.workspace)
            if options.remove_at_exit:
                shutil.rmtree(options.remove_at_exit, ignore_errors=True)
            os._exit(128 + signum)

    _python_backend_environment()
    triton, names = create_triton(clf, options)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code = 0
    try:
        try:
            triton.run()
        except Exception as exc:  # PyTriton raises its own types and tritonclient's; all say Triton did not start
            if stop.is_set():
                return 0
            reason = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise BitError(f"Triton did not start: {reason} (its log is above)") from exc
        if not stop.is_set():
            on_ready(names)
        while not stop.wait(0.5):
            if not triton.is_alive():
                LOG.error("bit-serve: Triton stopped on its own (its log is above)")
                code = 1
                break
    finally:
        _stop(triton, names, options)
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code


def _stop(triton: Triton, names: list[str], options: ServeOptions) -> None:
    """Models unloaded first, through Triton's API: Triton then waits for their in-flight requests and finalizes
    them, whatever clients are still connected. Stopping Triton (SIGINT) first would spend its exit timeout
    waiting for idle keep-alive connections to close, then abandon the models (leaving their temporary files).
    Bounded: STOP_DEADLINE_S, then Triton's processes are killed and what they left is removed."""
    deadline = time.monotonic() + STOP_DEADLINE_S
    _unload_models(names, options, deadline - EXIT_TIMEOUT_S - 5)
    stopper = threading.Thread(target=triton.stop, name="bit-serve-stop", daemon=True)
    stopper.start()
    stopper.join(max(0.0, deadline - time.monotonic()))
    # Triton may also be stopping on a thread of PyTriton's (a terminal's Ctrl-C reaches it too): wait for it
    while _triton_processes(options.workspace) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _triton_processes(options.workspace):
        LOG.warning("bit-serve: Triton did not stop within %ss; killing it", STOP_DEADLINE_S)
        _kill_triton(options.workspace)
    _remove_leftovers(options.workspace)


def _unload_models(names: list[str], options: ServeOptions, deadline: float) -> None:
    """Best effort: Triton may be shutting down already (a terminal's Ctrl-C reaches it too). Triton unloads in
    the background, after the model's in-flight requests; a model is finalized when its stubs have exited."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(options.host, options.host)
    headers = {TRITON_ACCESS_HEADER: options.access_token} if options.access_token else {}
    for name in names:
        conn = http.client.HTTPConnection(host, options.http_port, timeout=5)
        try:
            conn.request("POST", f"/v2/repository/models/{name}/unload", headers=headers)
            if conn.getresponse().status != 200:
                return
        except OSError:
            return
        finally:
            conn.close()
    while _stubs(options.workspace) and time.monotonic() < deadline:
        time.sleep(0.1)


def _triton_processes(workspace: str) -> dict[int, str]:
    """pid -> program of tritonserver and its Python-backend stubs: PyTriton runs them from copies in our
    workspace, so they are found by their path even when orphaned (a stub whose Triton died does not always
    exit), and no one else's process is. From /proc: Triton runs on Linux only."""
    programs = os.path.join(os.path.realpath(workspace), "tritonserver") + os.sep  # PyTriton resolves it too
    found = {}
    for entry in _listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    program = os.fsdecode(f.read().split(b"\0", 1)[0])
            except OSError:
                continue
            if program.startswith(programs):  # a zombie has an empty cmdline: it has ended already
                found[int(entry)] = os.path.basename(program)
    return found


def _stubs(workspace: str) -> list[int]:
    return [pid for pid, program in _triton_processes(workspace).items() if program != "tritonserver"]


def _kill_triton(workspace: str) -> None:
    """SIGKILL: a stub stuck without its Triton ignores SIGTERM (seen here)."""
    for pid in _triton_processes(workspace):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _remove_leftovers(workspace: str) -> None:
    """What a Triton that did not finalize its models leaves: the Python backend's shared memory (named after our
    pid, see PyTriton's Triton._shm_prefix) and Triton's temporary copies of our models' configs in /tmp (they
    name our workspace)."""
    for name in _listdir("/dev/shm"):
        if name.startswith(f"pytrtion{os.getpid()}-"):
            _remove(os.path.join("/dev/shm", name))
    if not workspace:
        return
    for name in _listdir("/tmp"):
        folder = os.path.join("/tmp", name)
        if re.fullmatch(r"folder[A-Za-z0-9]{6}", name) and _names_workspace(folder, workspace):
            shutil.rmtree(folder, ignore_errors=True)


def _names_workspace(folder: str, workspace: str) -> bool:
    try:
        with open(os.path.join(folder, "config.pbtxt"), encoding="utf-8", errors="replace") as f:
            return f'string_value: "{os.path.realpath(workspace)}"' in f.read()
    except OSError:
        return False


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
