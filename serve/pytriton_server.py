"""A Classifier behind a real Triton Inference Server (tritonserver, bundled by PyTriton), on this host: binding the
models (serve/classifier_models.py) to Triton, starting it locked down (serve/pytriton_patches.py), and the
process's life until it stops.

Imports PyTriton: it lives in bit-serve's own environment (numpy < 2), see serve_cli.py.
"""

from __future__ import annotations

import atexit
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
from pytriton.triton import Triton, TritonConfig, TritonLifecyclePolicy, TritonSecurityConfig

from ..engine.classifier import Classifier
from ..engine.errors import BitError
from . import pytriton_patches
from .classifier_models import ClassifierModels
from .triton_models import IMAGE_INPUT, IMAGE_SUFFIX

LOG = logging.getLogger("bit-serve")
DEFAULT_MAX_BATCH = 8
# Triton's own time to stop (--exit-timeout-secs), shared by its steps: waiting for open HTTP connections to close
# (an idle keep-alive client holds it that long; requests still running on them finish meanwhile), then for
# in-flight requests and finalizing the models (about 2.5 s here). When the connections took it all, Triton exits
# without finalizing, and `_stop` ends the stubs and removes what they left.
EXIT_TIMEOUT_S = 8
# From the first signal to a stopped Triton, whatever its clients do; then its processes are killed.
STOP_DEADLINE_S = 15
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes, the last one a NUL
MODEL_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # what Triton (and PyTriton) accept as a model name


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    http: bool = True  # False: gRPC and metrics only
    grpc_port: int = 8001
    metrics_port: int = 8002
    name: str = "bit_model"  # serve_cli: --name, or default_model_name
    max_batch: int = DEFAULT_MAX_BATCH
    max_queue_delay_us: int = 1000
    image_workers: int = 2
    log_verbose: int = 0
    workspace: str = ""  # PyTriton's workspace (model store, sockets): a directory that does not exist yet
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


def create_triton(clf: Classifier, options: ServeOptions, output: pytriton_patches.TritonOutput) -> tuple[Triton, list]:
    """A Triton (not started) with both models bound, its model store written and patched, its command line locked
    down (serve/pytriton_patches.py); returns it and the model names."""
    name = check_model_name(options.name)
    models = ClassifierModels(clf)
    spec = clf.spec
    config = TritonConfig(
        allow_http=options.http,
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
        # the model store is written at bind time and loaded when Triton starts: no model-control API needed
        triton_lifecycle_policy=TritonLifecyclePolicy(launch_triton_on_startup=True, local_model_store=True),
        security_config=TritonSecurityConfig(access_token=None, restricted_endpoints=[]),  # lock_down's instead
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
        # Several instances instead of a batcher: see serve/classifier_models.py.
        infer_func=[_Instance(models.infer_images) for _ in range(options.image_workers)],
        inputs=[Tensor(name=IMAGE_INPUT, dtype=np.bytes_, shape=(1,))],
        outputs=[logits, Tensor(name="classes", dtype=np.bytes_, shape=(models.top_k,))],
        config=ModelConfig(max_batch_size=options.max_batch, batcher=None),
    )
    store = pytriton_patches.model_store(options.workspace)
    for model, reshape in ((name, pytriton_patches.float_input_reshape(spec.resolution)), (name + IMAGE_SUFFIX, None)):
        pytriton_patches.patch_proxy_files(store / model)
        pytriton_patches.edit_model_config(store / model, reshape)
    pytriton_patches.lock_down(triton._triton_server_config)
    pytriton_patches.prepare_server(triton, output, options.log_verbose)
    return triton, [name, name + IMAGE_SUFFIX]


def serve(clf: Classifier, options: ServeOptions, ready_line: Callable[[list[str]], str]) -> int:
    """Run Triton until SIGINT or SIGTERM, then stop it (see `_stop`); returns the exit code. Prints ready_line(the
    model names) on a line of its own once Triton answers.

    Files Triton and its Python-backend stubs create are private to this user (umask 077); their shared memory,
    which Boost.Interprocess makes 0644 whatever the umask, is private through serve_cli's private /dev/shm. A
    second signal kills Triton's processes at once and exits 128 + signal.
    """
    stop, ready = threading.Event(), threading.Event()
    signals = []

    def on_signal(signum, _frame):
        signals.append(signum)
        stop.set()
        if not ready.is_set():  # still starting (which may take minutes): nothing to drain, end it now
            _kill_triton(options.workspace)
        if len(signals) > 1:
            _kill_triton(options.workspace)
            _remove_leftovers()
            if options.remove_at_exit:
                shutil.rmtree(options.remove_at_exit, ignore_errors=True)
            os._exit(128 + signum)

    _python_backend_environment()
    output = pytriton_patches.TritonOutput()
    previous_umask = os.umask(0o077)
    triton, names = create_triton(clf, options, output)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    code, abandoned = 0, False
    try:
        _start(triton, stop)
        if stop.is_set():  # a signal while it started: on_signal killed Triton; there is nothing to drain
            abandoned = True
            return 0
        ready.set()
        output.line(ready_line(names))
        while not stop.wait(0.5):
            if not triton.is_alive():
                LOG.error("bit-serve: Triton stopped on its own (its log is above)")
                code = 1
                break
    finally:
        if abandoned:
            _abandon(triton, options)
        else:
            _stop(triton, options)
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.umask(previous_umask)
    return code


def _start(triton: Triton, stop: threading.Event) -> None:
    """Triton.run() in two halves: the process started from this thread, which lives as long as the server
    (PyTriton asks the kernel to SIGTERM Triton when the thread that started it ends), then the wait for it and
    its models on a thread of its own, waited for until it returns or a signal comes: PyTriton waits up to 120 s
    for a Triton it started, even one that died, and a signal must not wait that long."""
    failure: list[Exception] = []

    def connect():
        try:
            triton.connect()
        except Exception as exc:  # PyTriton raises its own types and tritonclient's; all say Triton did not start
            failure.append(exc)

    try:
        triton._run_server()
    except Exception as exc:
        failure.append(exc)
    starting = threading.Thread(target=connect, name="bit-serve-start", daemon=True)
    if not failure:
        starting.start()
    while starting.is_alive() and not stop.wait(0.2):
        pass
    if failure and not stop.is_set():
        reason = (str(failure[0]).splitlines() or [type(failure[0]).__name__])[0]
        raise BitError(f"Triton did not start: {reason} (its log is above)") from failure[0]


def _abandon(triton: Triton, options: ServeOptions) -> None:
    """After a signal during the start: PyTriton's own stop would wait for its start to give up (120 s), so it is
    skipped, here and at exit; Triton's processes are gone (on_signal), and what they left is removed."""
    atexit.unregister(triton.stop)
    _kill_triton(options.workspace)
    _remove_leftovers()


def _stop(triton: Triton, options: ServeOptions) -> None:
    """SIGINT to Triton (PyTriton's stop): it takes no new connections, waits up to EXIT_TIMEOUT_S for the open ones
    to close (requests on them are still answered meanwhile), then finishes in-flight requests and finalizes the
    models in what is left of it; no client-reachable API is involved. Bounded: STOP_DEADLINE_S, then Triton's
    processes are killed and what they left is removed."""
    deadline = time.monotonic() + STOP_DEADLINE_S
    stopper = threading.Thread(target=triton.stop, name="bit-serve-stop", daemon=True)
    stopper.start()
    stopper.join(max(0.0, deadline - time.monotonic()))
    # Triton may also be stopping on a thread of PyTriton's (a terminal's Ctrl-C reaches it too): wait for it
    while _triton_processes(options.workspace) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _triton_processes(options.workspace):
        LOG.warning("bit-serve: Triton did not stop within %ss; killing it", STOP_DEADLINE_S)
    _kill_triton(options.workspace)  # and any stub its exit left behind
    _remove_leftovers()


def _triton_processes(workspace: str) -> dict[int, str]:
    """pid -> program of tritonserver and its Python-backend stubs: PyTriton runs them from copies in our
    workspace, so they are found by their path even when orphaned (a stub whose Triton died does not always
    exit); only our user's processes count (anyone may name a program after our workspace). From /proc: Triton
    runs on Linux only."""
    programs = os.path.join(os.path.realpath(workspace), "tritonserver") + os.sep  # PyTriton resolves it too
    found = {}
    for entry in _listdir("/proc"):
        if entry.isdigit():
            try:
                if os.stat(f"/proc/{entry}").st_uid != os.getuid():
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    program = os.fsdecode(f.read().split(b"\0", 1)[0])
            except OSError:
                continue
            if program.startswith(programs):  # a zombie has an empty cmdline: it has ended already
                found[int(entry)] = os.path.basename(program)
    return found


def _kill_triton(workspace: str) -> None:
    """SIGKILL: a stub stuck without its Triton ignores SIGTERM (seen here)."""
    for pid in _triton_processes(workspace):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _remove_leftovers() -> None:
    """What a Triton that did not finalize its models leaves: the Python backend's shared memory, named after our
    pid (PyTriton's Triton._shm_prefix)."""
    for name in _listdir("/dev/shm"):
        if name.startswith(f"pytrtion{os.getpid()}-"):
            _remove(os.path.join("/dev/shm", name))


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
