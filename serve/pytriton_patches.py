"""What bit-serve changes in PyTriton 0.7, in the model store it gives Triton and in Triton's command line; why.

PyTriton runs tritonserver 2.51 with a Python-backend proxy model per bound model; the proxy forwards requests to
our process over Unix sockets in the workspace. Each change below checks that the code it changes is the code it
expects and refuses to start otherwise (constraints-serve.txt pins nvidia-pytriton==0.7.0):

1. No client can change what is served (docs/serving.md, "Security"). PyTriton loads models through Triton's
   model-control API, so it needs that API open to whoever holds its token, and Triton 2.51 takes the token only
   on its command line, which every local user can read (/proc/PID/cmdline): with it, a Python-backend model
   sent by a client ran as the server's user. Here the model store is written before Triton starts (PyTriton's
   local model store), Triton loads it at start with --model-control-mode=none, which refuses every load and
   unload; and Triton's admin APIs (model repository, shared memory, trace, logging) are restricted with a
   header that no HTTP or gRPC client can send (triton_lockdown.py): there is no credential to steal.
2. The proxy's files (patch_proxy_files): instances connect to the first one's handshake server with a retry;
   the proxy finds the workspace from its model's own directory, so model configs do not show it to clients;
   an execute error is answered as an error response per request, with the error's last line: raised, the
   Python backend's stub would append its traceback ("At: .../model.py(500): execute") for the client to read.
3. The float model's config reshapes its input (float_input_reshape), see classifier_models.infer_float.
4. Triton's output goes through one line writer (TritonOutput), so bit-serve's own lines never land mid-line,
   and no copy of it grows in memory (PyTriton keeps every line Triton ever printed in a string).
"""

from __future__ import annotations

import collections
import os
import pathlib
import sys
import threading

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from ..engine.errors import BitError
from . import triton_lockdown

MODEL_STORE = "model-store"  # PyTriton's Workspace.model_store_path, under the workspace
TAIL_LINES = 200  # Triton's last lines kept for an error report


class PatchError(BitError):
    pass


def lock_down(server_config) -> None:
    """Triton's command line (PyTriton's TritonServerConfig, before start): models fixed, admin APIs closed."""
    args = server_config.server_args()
    args.pop("load-model", None)  # Triton refuses --load-model outside explicit mode
    args.update(triton_lockdown.SERVER_ARGS)
    server_config.to_args_list = lambda: command_line(args)


def command_line(server_args: dict) -> list[str]:
    """Triton's arguments, one "--option=value" each. PyTriton's own to_args_list splits its command line at
    whitespace, and the restriction holds a space and a newline."""
    listed = []
    for key, value in server_args.items():
        for item in value if isinstance(value, (tuple, list)) else [value]:
            if item is not None:
                listed.append(f"--{key}={item}")
    return listed


def _replace(text: str, old: str, new: str, where: str) -> str:
    if text.count(old) != 1:
        raise PatchError(
            f"PyTriton's {where} is not the code bit-serve patches; install nvidia-pytriton==0.7.0 "
            "(pip install -c constraints-serve.txt -e '.[serve]')"
        )
    return text.replace(old, new)


# Instances after the first fetch their config from the first one's handshake server as soon as its socket file
# exists, which is before it listens (asyncio binds, then listens): they then fail with ECONNREFUSED, and the model
# does not load (about one start in two with 2 image instances on a 2-core host). A retry, and 10 s in place of 1.
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
_HANDSHAKE_TIMEOUT = ("timeout_s: float = 1.0) -> dict:", "timeout_s: float = 10.0) -> dict:")

_WORKSPACE_FROM_CONFIG = 'workspace_path = pathlib.Path(model_config["parameters"]["workspace-path"]["string_value"])'
# args["model_repository"] is <workspace>/model-store/<model>
_WORKSPACE_FROM_REPOSITORY = 'workspace_path = pathlib.Path(args["model_repository"]).parent.parent'

_EXECUTE_ERROR = """\
        except Exception:
            msg = traceback.format_exc()
            raise pb_utils.TritonModelException(f"Model execute error: {msg}") from None  # pytype: disable=module-attr
"""
_EXECUTE_ERROR_ONE_LINE = """\
        except Exception as exc:
            message = _client_message(exc)
            return [
                pb_utils.InferenceResponse(error=pb_utils.TritonError(message))  # pytype: disable=module-attr
                for _ in triton_requests
            ]
"""
_CLIENT_MESSAGE = '''

def _client_message(exc) -> str:
    """bit-serve: what a client reads of an error is its last line without the exception's type ("RequestError: "),
    never a traceback or a path of this server; Triton's log keeps the whole error."""
    import re

    lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
    return re.sub(r"^[A-Za-z_][\\w.]*: ", "", lines[-1])
'''


def patch_proxy_files(model_dir: pathlib.Path) -> None:
    """The proxy's files in <model store>/<model>/<version>/ (see the module docstring, 2)."""
    for version in [p for p in model_dir.iterdir() if p.is_dir()]:
        communication = version / "communication.py"
        text = communication.read_text()
        text = _replace(text, _HANDSHAKE_CONNECT, _HANDSHAKE_CONNECT_RETRIED, "handshake client")
        text = _replace(text, *_HANDSHAKE_TIMEOUT, "handshake timeout")
        communication.write_text(text)
        model = version / "model.py"
        text = model.read_text()
        text = _replace(text, _WORKSPACE_FROM_CONFIG, _WORKSPACE_FROM_REPOSITORY, "proxy's workspace lookup")
        text = _replace(text, _EXECUTE_ERROR, _EXECUTE_ERROR_ONE_LINE, "proxy's execute error")
        model.write_text(text + _CLIENT_MESSAGE)


def edit_model_config(model_dir: pathlib.Path, reshape_input: tuple[int, ...] | None = None) -> None:
    """config.pbtxt without the workspace path (the proxy finds it, see patch_proxy_files); with reshape_input,
    the input reshaped to it (the float model: float_input_reshape)."""
    path = model_dir / "config.pbtxt"
    config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
    if "workspace-path" not in config.parameters:
        raise PatchError(f"PyTriton's config for {model_dir.name} has no workspace-path parameter to move")
    del config.parameters["workspace-path"]
    if reshape_input is not None:
        [model_input] = config.input
        model_input.reshape.shape[:] = list(reshape_input)
    path.write_text(text_format.MessageToString(config))


def float_input_reshape(resolution: int) -> tuple[int, ...]:
    """[1, R, R, 3] for dims [R, R, 3]: a request Triton sizes as batch 0 (a batch dimension that is a multiple of
    2**32, truncated to 32 bits) reaches the backend without a batch dimension; reshaped, its first dimension is 1,
    so the Python backend counts it as one image, not R, and does not fail the whole dynamic batch over it."""
    return (1, resolution, resolution, 3)


class TritonOutput:
    """Triton's stdout and stderr, written whole lines at a time, and bit-serve's own lines between them."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.tail = collections.deque(maxlen=TAIL_LINES)
        self._partial = ""
        self._lock = threading.Lock()

    def write_chunk(self, chunk) -> None:
        if isinstance(chunk, bytes):
            chunk = chunk.decode("utf-8", errors="replace")
        with self._lock:
            lines = (self._partial + chunk).split("\n")
            self._partial = lines.pop()
            for line in lines:
                self.tail.append(line)
                self.stream.write(line + "\n")
            self.stream.flush()

    def line(self, text: str) -> None:
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def logs(self) -> str:
        with self._lock:
            return "\n".join(self.tail)


def prepare_server(triton, output: TritonOutput, log_verbose: int) -> None:
    """PyTriton's TritonServer, created now (its command line is final): writing through `output`, and not asking
    Triton for its log settings, a closed admin API (PyTriton only warns when verbose logs are on; we set them)."""
    triton._initialize_server()
    server, checker = triton._triton_server, getattr(triton, "_log_level_checker", None)
    expected = [(server, "_record_logs"), (server, "logs"), (checker, "_log_settings")]
    expected += [(triton, "_run_server"), (triton, "connect")]  # Triton.run()'s halves (pytriton_lifecycle._start)
    if not all(hasattr(owner, name) for owner, name in expected):
        raise PatchError("PyTriton's TritonServer does not record its output as bit-serve expects")
    server._record_logs = output.write_chunk
    server.logs = output.logs
    checker._log_settings = {"log_verbose_level": log_verbose}


def model_store(workspace: str) -> pathlib.Path:
    return pathlib.Path(os.path.realpath(workspace)) / MODEL_STORE
