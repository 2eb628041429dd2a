"""bit-serve under attack: a hostile client on loopback, and a second local user on the same host.

A real bit-serve (Triton 2.51 through PyTriton) on the tiny bundle; real tritonclient HTTP and gRPC clients, raw
sockets where a client library would refuse to send what an attacker sends. The second local user is `nobody`,
a process this test starts with dropped privileges (skipped, with the reason, where the test cannot drop them).
docs/serving.md, "Security", says what each test holds the server to.
"""

import concurrent.futures
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.conftest import TINY_RES
from tests.serve.conftest import ROOT, SERVE_MAX_IMAGE_PIXELS, free_port, leftovers, start_bit_serve
from tools.serve_attack_bench import process_tree, tree_peak_excess, zero_png

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL, IMAGE_MODEL = "bit_tiny", "bit_tiny_image"
TIMEOUT_S = 60
NOBODY = 65534
STOP_DEADLINE_S = 15  # serve/pytriton_lifecycle.py: from the signal to a stopped Triton, whatever clients do

# A Python-backend model an attacker would load: its initialize() writes a file, proof that it ran.
EVIL_MODEL = """
import pathlib
class TritonPythonModel:
    def initialize(self, args):
        pathlib.Path({marker!r}).write_text("ran")
    def execute(self, requests):
        return []
"""
EVIL_CONFIG = '{"backend": "python", "max_batch_size": 0, "input": [], "output": []}'


def _drop_to_nobody_reason() -> str | None:
    if os.geteuid() != 0:
        return "dropping to another user needs root"
    if not shutil.which("python3", path="/usr/bin:/bin"):
        return "no system python3 for the unprivileged user to run"
    return None


needs_nobody = pytest.mark.skipif(_drop_to_nobody_reason() is not None, reason=str(_drop_to_nobody_reason()))


def as_nobody(code: str, *args) -> dict:
    """Run `code` (stdlib only) as the unprivileged user `nobody`; it prints one JSON object, returned here."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    done = subprocess.run(
        [python, "-c", code, *map(str, args)],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


# What a local user learns from every process's command line: the restrictions Triton was started with (header
# and value), and anything that looks like a token.
HARVEST = r"""
import json, os, re
found = set()
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode(errors="replace").split("\0")
    except OSError:
        continue
    for arg in args:
        match = re.match(r"--(http-restricted-api|grpc-restricted-protocol)=[^:]*:([^=]*)=(.*)", arg, re.S)
        if match:
            found.add((match[2], match[3]))
        for token in re.findall(r"access-token[=:]([^\s,]+)", arg):
            found.add(("triton-access-token", token))
credentials = [list(c) for c in sorted(found)] + [[None, None]]
"""

ATTACK_ADMIN = (
    HARVEST
    + r"""
import base64, http.client, sys
port, marker, model, config = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
load = json.dumps({"parameters": {"config": config, "file:1/model.py": base64.b64encode(model.encode()).decode()}})
calls = [
    ("POST", "/v2/repository/models/evil/load", load),
    ("POST", "/v2/repository/models/bit_tiny/unload", ""),
    ("POST", "/v2/repository/index", ""),
    ("GET", "/v2/systemsharedmemory/status", None),
    ("POST", "/v2/systemsharedmemory/region/r/register", json.dumps({"key": "/x", "offset": 0, "byte_size": 8})),
    ("GET", "/v2/trace/setting", None),
    ("POST", "/v2/trace/setting", json.dumps({"trace_level": ["TIMESTAMPS"]})),
    ("GET", "/v2/logging", None),
    ("POST", "/v2/logging", json.dumps({"log_verbose_level": 1})),
]
answers = []
for key, value in credentials:
    for method, path, body in calls:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {key.strip(): value.strip()} if key and "\n" not in key else {}
        try:
            conn.request(method, path, body=body, headers=headers)
            answer = conn.getresponse()
            answers.append([path, bool(headers), answer.status, answer.read().decode(errors="replace")[:200]])
        except OSError as exc:
            answers.append([path, bool(headers), 0, str(exc)])
        finally:
            conn.close()
print(json.dumps({"credentials": credentials, "answers": answers}))
"""
)


@needs_nobody
def test_another_local_user_can_neither_find_a_credential_nor_load_a_model(bit_serve, tmp_path):
    os.chmod(tmp_path, 0o777)  # where the attacker's model would write its proof
    marker = tmp_path / "evil-model-ran"
    result = as_nobody(ATTACK_ADMIN, bit_serve.http_port, marker, EVIL_MODEL.format(marker=str(marker)), EVIL_CONFIG)
    refused = [a for a in result["answers"] if a[2] == 403 and "This API is restricted" in a[3]]
    assert refused == result["answers"], [a for a in result["answers"] if a not in refused]
    assert not marker.exists()
    # what a local user can read gives nothing to send: the only restriction found names a header no client can send
    assert all(key is None or "\n" in key for key, _ in result["credentials"]), result["credentials"]
    with HttpClient(bit_serve.http_url) as client:
        assert client.is_model_ready(MODEL) and not client.is_model_ready("evil")


def test_grpc_admin_calls_are_refused_whatever_the_header(bit_serve, tmp_path):
    marker = tmp_path / "evil-model-ran"
    files = {"file:1/model.py": EVIL_MODEL.format(marker=str(marker)).encode()}
    headers = {"triton-access-token": "guess", "triton-grpc-protocol-triton-access-token": "guess"}
    with grpcclient.InferenceServerClient(bit_serve.grpc_url) as client:
        calls = {
            "load": lambda: client.load_model("evil", headers=headers, config=EVIL_CONFIG, files=files),
            "unload": lambda: client.unload_model(MODEL, headers=headers),
            "repository index": lambda: client.get_model_repository_index(headers=headers),
            "log settings": lambda: client.get_log_settings(headers=headers),
            "update log settings": lambda: client.update_log_settings({"log_verbose_level": 1}, headers=headers),
            "trace settings": lambda: client.get_trace_settings(headers=headers),
            "shared memory": lambda: client.register_system_shared_memory("r", "/x", 8, headers=headers),
        }
        for what, call in calls.items():
            with pytest.raises(InferenceServerException, match="This protocol is restricted") as error:
                call()
            assert "triton-grpc-protocol-bit-serve has no admin API" in error.value.message(), what
        # statistics stay open, read-only, as on a stock Triton (perf_analyzer reads them)
        assert client.get_inference_statistics(MODEL).model_stats[0].name == MODEL
        assert client.is_model_ready(MODEL) and not client.is_model_ready("evil")
    assert not marker.exists()


def test_the_command_lines_hold_no_credential(bit_serve):
    """The token used to be on tritonserver's command line; now nothing is, and what restricts the admin APIs is
    a header no client can send (HTTP ends a header line at LF; HTTP/2 refuses such a name)."""
    restrictions = []
    for pid in bit_serve.tree():
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().decode().split("\0")
        assert not [a for a in args if "access-token" in a or "token=" in a], args
        restrictions += [a for a in args if a.startswith(("--http-restricted-api=", "--grpc-restricted-protocol="))]
    header = "bit-serve has no admin API\n"
    assert sorted(restrictions) == sorted(
        f"--{flag}=model-repository,shared-memory,trace,logging:{header}={header}"
        for flag in ("http-restricted-api", "grpc-restricted-protocol")
    )
    with socket.create_connection(("127.0.0.1", bit_serve.http_port), timeout=TIMEOUT_S) as s:
        s.sendall(
            b"POST /v2/repository/index HTTP/1.1\r\nHost: x\r\n"
            b"bit-serve has no admin API\n: bit-serve has no admin API\n\r\nContent-Length: 0\r\n\r\n"
        )
        assert not s.recv(4096).startswith(b"HTTP/1.1 200")


SHM_LOOK = r"""
import json, os, sys
pid = sys.argv[1]
visible = [n for n in os.listdir("/dev/shm") if n.startswith((f"pytrtion{pid}-", "psm_"))]
readable = []
for name in visible:
    try:
        with open(f"/dev/shm/{name}", "rb") as f:
            readable.append([name, len(f.read(64))])
    except OSError:
        pass
try:
    os.listdir(f"/proc/{pid}/root/dev/shm")
    private_view = "readable"
except OSError as exc:
    private_view = exc.strerror
print(json.dumps({"visible": visible, "readable": readable, "private_view": private_view}))
"""


@needs_nobody
def test_another_local_user_cannot_see_the_tensors_in_transit(bit_serve):
    image = np.random.default_rng(3).random((8, TINY_RES, TINY_RES, 3), dtype=np.float32)
    with HttpClient(bit_serve.http_url, concurrency=4) as client:
        tensor = httpclient.InferInput("images", list(image.shape), "FP32")
        tensor.set_data_from_numpy(image)
        pending = [client.async_infer(MODEL, [tensor]) for _ in range(8)]
        seen = as_nobody(SHM_LOOK, bit_serve.proc.pid)  # while requests are in flight
        for request in pending:
            request.get_result(timeout=TIMEOUT_S)
    # the Python backend's regions exist, in the server's own /dev/shm (root may look into its namespace)...
    own = os.listdir(f"/proc/{bit_serve.proc.pid}/root/dev/shm")
    assert [n for n in own if n.startswith(f"pytrtion{bit_serve.proc.pid}-")], own
    # ...and nobody sees none of them, nor may it look into that namespace
    assert seen == {"visible": [], "readable": [], "private_view": "Permission denied"}, seen


def _raw_http(server, model, name, array, shape, datatype="FP32") -> tuple[int, bytes]:
    """An HTTP request with the binary tensor `array` declared with `shape`: what a client library refuses to send."""
    raw = array.tobytes()
    tensor = {"name": name, "shape": shape, "datatype": datatype, "parameters": {"binary_data_size": len(raw)}}
    head = json.dumps({"inputs": [tensor]}).encode()
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT_S)
    try:
        headers = {"Inference-Header-Content-Length": str(len(head))}
        conn.request("POST", f"/v2/models/{model}/infer", body=head + raw, headers=headers)
        answer = conn.getresponse()
        return answer.status, answer.read()
    finally:
        conn.close()


def _grpc_declaring(server, array, shape):
    """A gRPC request with the tensor `array` and a declared `shape`."""
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        tensor = grpcclient.InferInput("images", list(array.shape), "FP32")
        tensor.set_data_from_numpy(array)
        tensor._input.shape[:] = shape  # what tritonclient would refuse to send
        return client.infer(MODEL, [tensor], client_timeout=TIMEOUT_S).as_numpy("logits")


def test_a_batch_of_2_to_the_32_fails_no_neighbour(bit_serve):
    """Triton 2.51 truncates the batch size to 32 bits: such a request passes as batch 0 and used to make the
    Python backend fail every request batched with it ("batch size 1445 ... max allowed is 8")."""
    one = np.random.default_rng(5).random((1, TINY_RES, TINY_RES, 3), dtype=np.float32)
    huge = [2**32, TINY_RES, TINY_RES, 3]

    def job(i):
        kind = ("bad-http", "bad-grpc")[i % 8 // 4] if i % 4 == 3 else ("http", "grpc")[i % 2]
        try:
            if kind == "bad-http":
                status, body = _raw_http(bit_serve, MODEL, "images", one, huge)
                return kind, status, np.array(json.loads(body)["outputs"][0]["data"], np.float32)
            if kind == "bad-grpc":
                return kind, 200, _grpc_declaring(bit_serve, one, huge)
            if kind == "http":
                status, body = _raw_http(bit_serve, MODEL, "images", one, list(one.shape))
                return kind, status, np.array(json.loads(body)["outputs"][0]["data"], np.float32)
            return kind, 200, _grpc_declaring(bit_serve, one, list(one.shape))
        except (InferenceServerException, OSError, KeyError, ValueError) as exc:
            return kind, 0, str(exc)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(job, range(96)))
    good = [r for r in results if not r[0].startswith("bad")]
    failed = [r for r in good if r[1] != 200 or not isinstance(r[2], np.ndarray) or np.isnan(r[2]).any()]
    assert not failed, f"{len(failed)} of {len(good)} good requests failed: {failed[:3]}"
    assert len({r[2].tobytes() for r in good}) <= 2  # the same image: the same logits (within batching's rounding)
    bad = [r for r in results if r[0].startswith("bad")]
    assert all(r[1] == 200 and np.isnan(np.asarray(r[2], np.float32)).all() for r in bad), bad[:3]


CORRUPT = b"GIF89a" + b"\xff" * 100


def test_a_corrupt_image_gets_one_line_and_no_server_detail(bit_serve):
    expected = "image 0 of the request: not a decodable image (a truncated or malformed GIF header)"
    array = np.array([[CORRUPT]], dtype=np.object_)
    with HttpClient(bit_serve.http_url) as client:
        tensor = httpclient.InferInput("image", [1, 1], "BYTES")
        tensor.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as http_error:
            client.infer(IMAGE_MODEL, [tensor])
    with grpcclient.InferenceServerClient(bit_serve.grpc_url) as client:
        tensor = grpcclient.InferInput("image", [1, 1], "BYTES")
        tensor.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as grpc_error:
            client.infer(IMAGE_MODEL, [tensor], client_timeout=TIMEOUT_S)
    assert http_error.value.message() == expected
    assert grpc_error.value.message() == expected


class HttpClient(httpclient.InferenceServerClient):
    """Closed by its `with` block only: tritonclient's __del__ closes it again, and gevent refuses that from
    another thread (see test_serve.py)."""

    def __del__(self):
        pass


def _send_images(server, *images):
    with HttpClient(server.http_url, network_timeout=TIMEOUT_S) as client:
        tensor = httpclient.InferInput("image", [len(images), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[image] for image in images], dtype=np.object_))
        try:
            return client.infer(IMAGE_MODEL, [tensor]).as_numpy("logits")
        except InferenceServerException as exc:
            return exc.message()


BOMB_SIDE = 8000  # 64 megapixels, 192 MB decoded: over the shared server's limit (16 MP)


@pytest.mark.parametrize("count", [1, 4])
def test_image_bombs_are_refused_from_their_header(bit_serve, count):
    bomb = zero_png(BOMB_SIDE)
    assert len(bomb) < 16_000
    excess, answer = tree_peak_excess(bit_serve.proc.pid, lambda: _send_images(bit_serve, *[bomb] * count))
    print(f"{count} x {BOMB_SIDE}^2 PNG bomb ({len(bomb)} bytes): peak RSS excess {excess / 2**20:.1f} MiB")
    assert isinstance(answer, str), "the bomb was decoded and classified"
    assert answer == (
        f"image 0 of the request: a {BOMB_SIDE}x{BOMB_SIDE} PNG image (64.0 megapixels) is over the limit of "
        f"{SERVE_MAX_IMAGE_PIXELS / 1e6:.1f} megapixels (max_image_pixels, --max-image-pixels)"
    )
    assert excess < 48 * 2**20  # nothing decoded: well under one bomb (192 MB)


def test_large_images_within_the_limit_take_turns_in_the_decode_budget(bit_serve):
    """Four 3500^2 images in one request, 86 MB each to decode (7 bytes a pixel), under a 120 MB decode budget:
    they decode one at a time, each resized before the next, where the old way held all four and their RGB copies
    (over 300 MB) whatever the budget."""
    side = 3500
    excess, answer = tree_peak_excess(bit_serve.proc.pid, lambda: _send_images(bit_serve, *[zero_png(side)] * 4))
    print(f"4 x {side}^2 PNG in one request: peak RSS excess {excess / 2**20:.1f} MiB")
    assert isinstance(answer, np.ndarray) and answer.shape == (4, 1000), answer
    assert excess < 2 * side * side * 6  # less than two decodes at once (6.0 bytes a pixel measured)


def test_model_configs_do_not_show_the_workspace(bit_serve):
    with HttpClient(bit_serve.http_url) as client:
        for model in (MODEL, IMAGE_MODEL):
            config = json.dumps(client.get_model_config(model))
            assert bit_serve.workspace not in config and "workspace" not in config, config


def test_listening_beyond_loopback_warns_what_becomes_reachable(serve_python, tiny_bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [serve_python, "-m", "bit_trt.serve.serve_cli", str(tiny_bundle), "--host", "0.0.0.0"]
            + ["--http-port", str(port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
    assert done.returncode == 1
    warning, error = done.stderr.splitlines()
    assert warning == (
        "bit-serve: warning: --host 0.0.0.0 listens beyond this machine: anyone who can reach its ports can use "
        "inference, health, server and model metadata, model configs, statistics and metrics, without "
        "credentials (admin APIs stay refused); put a firewall or an authenticating proxy in front"
    )
    assert error == f"bit-serve: error: --http-port {port}: port already in use on 0.0.0.0; choose another"


def test_after_an_error_storm_sigterm_stops_within_the_deadline(serve_python, tiny_bundle, tmp_path_factory):
    """32 corrupt images from 8 threads over HTTP and gRPC, idle keep-alive clients left open, verbose logs; then
    SIGTERM. The ready line stands on a line of its own among Triton's verbose output."""
    workspace = tmp_path_factory.mktemp("storm") / "ws"
    server = start_bit_serve(serve_python, tiny_bundle, workspace, "--log-verbose", 1)
    try:
        assert re.search(r"^bit-serve: ready: models bit_tiny \(float\)", server.log(), re.M)

        def corrupt(i):
            if i % 2:
                with grpcclient.InferenceServerClient(server.grpc_url) as client:
                    tensor = grpcclient.InferInput("image", [1, 1], "BYTES")
                    tensor.set_data_from_numpy(np.array([[CORRUPT]], dtype=np.object_))
                    with pytest.raises(InferenceServerException, match="not a decodable image"):
                        client.infer(IMAGE_MODEL, [tensor], client_timeout=TIMEOUT_S)
            else:
                assert "not a decodable image" in _send_images(server, CORRUPT)

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(corrupt, range(32)))
        keep_alive = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT_S)
        keep_alive.request("GET", "/v2/health/ready")
        assert keep_alive.getresponse().status == 200
        grpc_client = grpcclient.InferenceServerClient(server.grpc_url)
        assert grpc_client.is_server_ready()
        took = server.stop(signal.SIGTERM)
        print(f"SIGTERM after the storm, keep-alive clients open: stopped in {took:.1f} s")
        assert took < STOP_DEADLINE_S + 5  # the deadline, and the interpreter's own exit
        assert leftovers(server) == []
        keep_alive.close()
        grpc_client.close()
    finally:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)


def test_the_ready_line_is_never_inside_a_triton_line():
    """TritonOutput writes Triton's output whole lines at a time, so a line of ours lands between two of them
    whatever the chunks look like (the pieces of Triton's output arrive as the pipe gives them)."""
    import io

    from bit_trt.serve.pytriton_patches import TritonOutput

    stream = io.StringIO()
    output = TritonOutput(stream)
    output.write_chunk(b'I1203 12:00:00 model_lifecycle.cc] "loading')
    ours = threading.Thread(target=output.line, args=("bit-serve: ready: ...",))
    ours.start()
    ours.join()
    output.write_chunk(b' the model"\nI1203 next line\n')
    assert stream.getvalue().splitlines() == [
        "bit-serve: ready: ...",
        'I1203 12:00:00 model_lifecycle.cc] "loading the model"',
        "I1203 next line",
    ]


def test_no_http_serves_grpc_alone(serve_python, tiny_bundle, tmp_path_factory):
    """--no-http, for servers untrusted clients reach: Triton 2.51's HTTP JSON path allocates what a request's shape
    declares (a [2**32, R, R, 3] JSON request ends it with std::bad_alloc), and with HTTP off nothing listens there."""
    server = start_bit_serve(serve_python, tiny_bundle, tmp_path_factory.mktemp("no-http") / "ws", "--no-http")
    try:
        assert re.search(r"^bit-serve: ready: .*; http off grpc 127\.0\.0\.1:\d+ metrics ", server.log(), re.M)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", server.http_port), timeout=TIMEOUT_S).close()
        image = np.random.default_rng(9).random((2, TINY_RES, TINY_RES, 3), dtype=np.float32)
        assert _grpc_declaring(server, image, list(image.shape)).shape == (2, 1000)
        server.stop(signal.SIGINT)
        assert leftovers(server) == []
    finally:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)


# bit-serve started from a process that already runs a thread: unshare(2) then refuses a mount namespace, as the
# kernel does for an unprivileged user without user namespaces, or in a container.
WITH_A_THREAD = (
    "import sys, threading, time; threading.Thread(target=time.sleep, args=(60,), daemon=True).start(); "
    "from bit_trt.serve.serve_cli import main; sys.exit(main(sys.argv[1:]))"
)


def test_without_a_private_dev_shm_it_refuses_to_serve_unless_told(tiny_bundle):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = [str(tiny_bundle), "--http-port", str(port), "--grpc-port", str(free_port())]
        args += ["--metrics-port", str(free_port())]
        refused = run_cli_python(WITH_A_THREAD, *args)
        allowed = run_cli_python(WITH_A_THREAD, *args, "--allow-shared-dev-shm")
        by_env = run_cli_python(WITH_A_THREAD, *args, env={"BIT_SERVE_ALLOW_SHARED_DEV_SHM": "1"})
    assert refused.returncode == 1
    [line] = refused.stderr.splitlines()
    assert line.startswith("bit-serve: error: Triton's Python backend keeps requests in /dev/shm with mode 0644")
    assert line.endswith("refusing to serve (--allow-shared-dev-shm serves anyway)")
    for done in (allowed, by_env):  # it goes on, warns, and stops at the next check (the port taken here)
        warning, error = done.stderr.splitlines()
        assert warning.startswith("bit-serve: warning: Triton's Python backend keeps requests in /dev/shm")
        assert error == f"bit-serve: error: --http-port {port}: port already in use on 127.0.0.1; choose another"


def run_cli_python(code: str, *args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_a_signal_while_triton_starts_ends_it_at_once(serve_python, tiny_bundle, tmp_path_factory):
    """PyTriton waits up to 120 s for a Triton it started, even a killed one; a signal while Triton loads its models
    must not (found by review: 120 s)."""
    workspace = tmp_path_factory.mktemp("starting") / "ws"
    os.makedirs(workspace)
    command = [serve_python, "-m", "bit_trt.serve.serve_cli", str(tiny_bundle), "--backend", "ort-cpu"]
    command += ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    command += ["--workspace", str(workspace), "--image-workers", "4"]
    log = tmp_path_factory.mktemp("starting-log") / "log"
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while not any("tritonserver" in _program(pid) for pid in process_tree(proc.pid)[1:]):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        assert "bit-serve: ready" not in log.read_text()  # Triton runs, and its models are loading
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_DEADLINE_S + 10) == 0, log.read_text()[-3000:]
        print(f"SIGTERM while Triton started: stopped in {time.monotonic() - start:.1f} s")
        assert os.listdir(workspace) == []
        running = [p for p in map(int, filter(str.isdigit, os.listdir("/proc"))) if str(workspace) in _program(p)]
        assert running == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _program(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return os.fsdecode(f.read().split(b"\0", 1)[0])
    except OSError:
        return ""
