"""TF's work for an export, done in one child process: tf2onnx's traced graph, then the reference logits.

A child, because TF keeps most of what it allocated until the process exits: the reference for R50x3 at 480 over
3 GB; tracing and converting R50x3's graph, weights as inputs and no weight values at all, about 1 GB (measured: the
converting process's RSS 1.64 -> 2.70 GB, none of it returned after the model and the weights were dropped). Run
in the exporting process, either would sit under every later step's peak.
One child for both: they need the same TF import and the same weights (the graph needs their shapes), and the
reference's allocations reuse what tracing freed. R50x3's bit-export, measured twice each way, alternating: the
convert step 15.5-18.8 s in its own child, 7.8-9.1 s here (the child's tracing plus the binding); the export's peak
3.45-3.56 GB, and 3.51-3.62 GB here.
Each child ends when its parent dies, however it dies (SIGKILL included), so that it never holds that memory idle.

The parent runs `python -m bit_trt.export.tf_reference DIR PARENT_PID`; DIR holds the request (request.json;
images.npy), and the child writes result.npz there: the logits, the serialized weightless graph when asked for and
the seconds it took, and its own peak RSS, or a BitError's message.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING

from ..engine.atomic_write import atomic_path
from ..engine.errors import BitError
from ..engine.private_temp import job_folder

if TYPE_CHECKING:  # numpy is imported where it is used: the child's first act must come before any heavy import
    import numpy as np

REQUEST, IMAGES, RESULT, LOG = "request.json", "images.npy", "result.npz", "child.log"
LOG_TAIL_LINES = 5
JOB_PREFIX = "bit-trt-tf-child-"  # one folder per job; a killed exporter's is removed by the next job
ORPHANED_EXIT = 125  # the child's exit status when it finds its parent gone; nobody is left to read it


@dataclasses.dataclass
class TFWork:
    """What the TF child computed."""

    logits: np.ndarray
    peak_rss: int  # the child's own peak RSS, in bytes
    graph: bytes | None = None  # tf2onnx's weightless graph (tf2onnx_route.convert, bind=False), when asked for
    graph_s: float = 0.0  # of the child's time, the seconds spent tracing and converting that graph


def tf_work(
    model: str,
    handle,
    variant,
    num_classes: int,
    seed: int,
    images_u8: np.ndarray,
    graph: tuple[int | None, int] | None = None,
    batch: int = 2,
) -> TFWork:
    """TF logits of `images_u8` computed in a child process; with `graph` ((resolution or None, opset)), first
    tf2onnx's graph of the loaded weights' variant with every weight a graph input named by its key, traced and
    converted from their shapes, for tf2onnx_route.bind_graph."""
    request = {"model": model, "handle": handle, "variant": variant, "num_classes": num_classes, "seed": seed}
    if graph is not None:
        request["graph"] = {"resolution": graph[0], "opset": graph[1]}
    result = _run_child({**request, "batch": batch}, images_u8)
    return TFWork(
        result["logits"],
        int(result["peak_rss"]),
        result["graph"].tobytes() if "graph" in result else None,
        float(result["graph_s"]) if "graph_s" in result else 0.0,
    )


def tf_reference_logits(
    model: str, handle, variant, num_classes: int, seed: int, images_u8: np.ndarray, batch: int = 2
) -> tuple[np.ndarray, int]:
    """TF logits computed in a child process; returns them and the child's peak RSS in bytes."""
    work = tf_work(model, handle, variant, num_classes, seed, images_u8, batch=batch)
    return work.logits, work.peak_rss


def _run_child(request: dict, images_u8: np.ndarray) -> dict:
    """Run one job in a child process; return its result arrays (read before the job's folder goes)."""
    import numpy as np

    with job_folder(JOB_PREFIX) as tmp:
        with open(os.path.join(tmp, REQUEST), "w") as f:
            json.dump(request, f)
        np.save(os.path.join(tmp, IMAGES), np.ascontiguousarray(images_u8, np.uint8))
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        with open(os.path.join(tmp, LOG), "wb") as log:
            # stdin is a pipe this process never writes to: when this process dies, however it dies, the
            # child reads EOF. Its output goes to the log, so that TF's chatter stays off the CLI's progress.
            proc = subprocess.Popen(
                [sys.executable, "-m", "bit_trt.export.tf_reference", tmp, str(os.getpid())],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                env=env,
            )
            try:
                returncode = proc.wait()
            finally:  # interrupted (Ctrl-C, any exception): the child must not outlive this call
                if proc.returncode is None:
                    proc.kill()
                    proc.wait()
                proc.stdin.close()
        return _read_result(tmp, returncode, "the TF reference")


def _read_result(tmp: str, returncode: int, who: str) -> dict:
    import numpy as np

    path = os.path.join(tmp, RESULT)
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as result:
            if "error" in result:
                raise BitError(str(result["error"]))
            if returncode == 0:
                return {name: result[name] for name in result.files}
    if returncode < 0:
        name = signal.Signals(-returncode).name
        how = f"killed by {name}" + (": out of memory?" if -returncode == signal.SIGKILL else "")
    else:
        how = f"exit code {returncode}"
    tail = _log_tail(os.path.join(tmp, LOG))
    raise BitError(f"{who} process died ({how}); nothing was written" + (f". Its last output: {tail}" if tail else ""))


def _log_tail(path: str) -> str:
    """The last lines of the child's output, on one line: the CLI prints an error on one line."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 16384))
            lines = f.read().decode(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join([line.strip() for line in lines if line.strip()][-LOG_TAIL_LINES:])


# ---- the child -------------------------------------------------------------------------------------------------


def _exit_with_parent(parent_pid: int) -> None:
    """End this process when the parent dies: EOF on stdin (any OS), and PR_SET_PDEATHSIG (Linux)."""
    fd = sys.stdin.fileno()

    def watch_stdin():
        # The parent never writes: read returns b"" when its end of the pipe closes. A raw os.read, not
        # sys.stdin.buffer.read(): a daemon thread blocked holding the buffered reader's lock aborts the
        # interpreter's shutdown (Fatal Python error: _enter_buffered_busy).
        try:
            while os.read(fd, 4096):
                pass
        finally:
            os._exit(ORPHANED_EXIT)

    threading.Thread(target=watch_stdin, name="parent-watch", daemon=True).start()
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            # Fires when the thread that started us exits; tf_reference_logits waits on that thread throughout.
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # no libc or no prctl: the stdin watch still ends the child
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(ORPHANED_EXIT)


def _write_atomically(tmp: str, **arrays) -> None:
    import numpy as np

    with atomic_path(os.path.join(tmp, RESULT), "the TF reference's result") as part, open(part, "wb") as f:
        np.savez(f, **arrays)


def _child_main(argv: list[str]) -> int:
    tmp, parent_pid = argv[0], int(argv[1])
    _exit_with_parent(parent_pid)  # first, before anything heavy: a parent killed during TF's import counts too
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import numpy as np

    from ..engine.memory import peak_rss_bytes

    with open(os.path.join(tmp, REQUEST)) as f:
        req = json.load(f)
    try:
        result = _job(req, tmp)
    except BitError as exc:
        _write_atomically(tmp, error=np.array(str(exc)))
        return 1
    # this process's own peak: RUSAGE_CHILDREN in the parent would be the largest of every child ever reaped
    _write_atomically(tmp, **result, peak_rss=np.array(peak_rss_bytes(), np.int64))
    return 0


def _job(req: dict, tmp: str) -> dict:
    import numpy as np

    from . import sources
    from .ort_logits import batched
    from .tensorflow_import import import_tensorflow

    import_tensorflow()  # the reference's in any case: not on the graph's clock (a synthetic load imports none)
    images_u8 = np.load(os.path.join(tmp, IMAGES), mmap_mode="r")  # read in batches, never a second whole copy
    loaded = sources.load(
        req["model"], req["variant"], num_classes=req["num_classes"], seed=req["seed"], handle=req["handle"]
    )
    result = {}
    if req.get("graph"):  # first: the reference's allocations then reuse what tracing freed
        start = time.perf_counter()
        result["graph"] = _weightless_graph(loaded, **req["graph"])
        result["graph_s"] = np.array(time.perf_counter() - start)
    # TF's variables are made now, each numpy array let go as its variable is made: one copy of the weights
    result["logits"] = batched(loaded.take_reference(), images_u8, req["batch"])
    return result


class _Shape:
    """What tf2onnx_route.convert reads of a weight it does not bind: its shape."""

    def __init__(self, shape):
        self.shape = tuple(shape)


def _weightless_graph(loaded, resolution: int | None, opset: int):
    import numpy as np

    from .tf2onnx_route import convert

    shapes = {key: _Shape(array.shape) for key, array in loaded.weights.items()}
    model = convert(shapes, loaded.variant, resolution, opset, bind=False)
    return np.frombuffer(model.SerializeToString(), np.uint8)


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
