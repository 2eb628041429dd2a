"""bit-serve's process around Triton: its workspace, the start, the signals, the bounded stop, and what a Triton
that did not finish leaves behind (its processes, its shared memory).

Imports PyTriton: it lives in bit-serve's own environment (numpy < 2), see serve_cli.py.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable

from pytriton.triton import Triton

from ..engine.classifier import Classifier
from ..engine.errors import BitError
from . import pytriton_patches
from .pytriton_binding import check_socket_paths, create_triton
from .serve_options import ServeOptions, settled

LOG = logging.getLogger("bit-serve")
# From the first signal to a stopped Triton, whatever its clients do; then its processes are killed.
STOP_DEADLINE_S = 15


def serve(clf: Classifier, options: ServeOptions, ready_line: Callable[[list[str]], str]) -> int:
    """Run Triton until SIGINT or SIGTERM, then stop it (see `_stop`); returns the exit code. Prints ready_line(the
    model names) on a line of its own once Triton answers.

    The model name and max batch are settled first (serve_options.settled: a bad one is a BitError before anything
    starts). The workspace (Triton's model store and sockets) is a new private temporary directory under
    options.workspace, removed at exit. Files Triton and its Python-backend stubs create are private to this user
    (umask 077); their shared memory, which Boost.Interprocess makes 0644 whatever the umask, is private through
    serve_cli's private /dev/shm. A second signal kills Triton's processes at once and exits 128 + signal.
    """
    options = settled(options, clf)
    root = tempfile.mkdtemp(prefix="bit-serve-", dir=options.workspace)
    try:
        workspace = os.path.join(root, "pytriton")
        check_socket_paths(workspace, options)
        return _run(clf, options, workspace, root, ready_line)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _run(clf: Classifier, options: ServeOptions, workspace: str, root: str, ready_line) -> int:
    stop, ready = threading.Event(), threading.Event()
    signals = []

    def on_signal(signum, _frame):
        signals.append(signum)
        stop.set()
        if not ready.is_set():  # still starting (which may take minutes): nothing to drain, end it now
            _kill_triton(workspace)
        if len(signals) > 1:
            _kill_triton(workspace)
            _remove_leftovers()
            shutil.rmtree(root, ignore_errors=True)
            os._exit(128 + signum)

    _python_backend_environment()
    output = pytriton_patches.TritonOutput()
    previous_umask = os.umask(0o077)
    triton, names = create_triton(clf, options, workspace, output)
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
            _abandon(triton, workspace)
        else:
            _stop(triton, workspace)
        for s, handler in previous.items():
            signal.signal(s, handler)
        os.umask(previous_umask)
    return code


def _python_backend_environment() -> None:
    """The Python-backend stub links libpython: it must find the library of the Python running us (a pyenv or
    conda build), not another libpython3.x the system may have, or the stub fails to start."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if libdir:
        paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != libdir]
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *paths])


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


def _abandon(triton: Triton, workspace: str) -> None:
    """After a signal during the start: PyTriton's own stop would wait for its start to give up (120 s), so it is
    skipped, here and at exit; Triton's processes are gone (on_signal), and what they left is removed."""
    atexit.unregister(triton.stop)
    _kill_triton(workspace)
    _remove_leftovers()


def _stop(triton: Triton, workspace: str) -> None:
    """SIGINT to Triton (PyTriton's stop): it takes no new connections, waits up to EXIT_TIMEOUT_S
    (pytriton_binding.py) for the open ones to close (requests on them are still answered meanwhile), then finishes
    in-flight requests and finalizes the models in what is left of it; no client-reachable API is involved.
    Bounded: STOP_DEADLINE_S, then Triton's processes are killed and what they left is removed."""
    deadline = time.monotonic() + STOP_DEADLINE_S
    stopper = threading.Thread(target=triton.stop, name="bit-serve-stop", daemon=True)
    stopper.start()
    stopper.join(max(0.0, deadline - time.monotonic()))
    # Triton may also be stopping on a thread of PyTriton's (a terminal's Ctrl-C reaches it too): wait for it
    while _triton_processes(workspace) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _triton_processes(workspace):
        LOG.warning("bit-serve: Triton did not stop within %ss; killing it", STOP_DEADLINE_S)
    _kill_triton(workspace)  # and any stub its exit left behind
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
