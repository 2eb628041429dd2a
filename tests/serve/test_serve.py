"""bit-serve: a real Triton Inference Server (tritonserver through PyTriton) in front of a Classifier, asked by real
tritonclient HTTP and gRPC clients. The tiny bundle on ort-cpu; one server shared by the tests (conftest.py).

The direct answers come from the Classifier in the serving environment itself (same numpy, OpenCV and ONNX
Runtime as the server), on the same bundle and inputs, so a request the server runs exactly as the direct
call did (same images in one native call) must give the same bits.
"""

import concurrent.futures
import http.client
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import TINY_RES
from tests.serve.conftest import ROOT, free_port, leftovers, start_bit_serve

httpclient = pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")
grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL, IMAGE_MODEL = "bit_tiny", "bit_tiny_image"
MAX_BATCH = 8
FLOAT_BATCHES = (1, 3, MAX_BATCH)
SINGLES = 16  # images sent one per request by concurrent clients
TIMEOUT_S = 60  # every client call; a hang fails the test instead of stalling it
# Rows run in a dynamic batch with other clients' rows are not the batch the direct call ran; ONNX Runtime's CPU
# kernels gave identical bits here, but that is not their contract, so those comparisons allow float32 rounding.
BATCHED_RTOL, BATCHED_ATOL = 1e-5, 1e-5

DIRECT = r"""
import sys
import numpy as np
from bit_trt.engine import Classifier

bundle, inputs, out = sys.argv[1:4]
data = np.load(inputs)
answers = {}
with Classifier(bundle, backend="ort-cpu", precision="fp32") as clf:
    for key in data.files:
        if key.startswith("float"):
            answers[key] = clf.predict(data[key]).logits
    answers["singles"] = np.concatenate([clf.predict(image[None]).logits for image in data["singles"]])
    pngs = [data[key].tobytes() for key in sorted(k for k in data.files if k.startswith("png"))]
    together = clf.predict(pngs)
    answers["png_logits"], answers["png_probabilities"] = together.logits, together.probabilities
    answers["png_alone"] = np.concatenate([clf.predict([png]).logits for png in pngs])
np.savez(out, **answers)
"""


def _png(height, width, channels, seed) -> bytes:
    import cv2

    shape = (height, width) if channels == 1 else (height, width, channels)
    pixels = (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)
    return cv2.imencode(".png", pixels)[1].tobytes()


@pytest.fixture(scope="module")
def direct(serve_python, tiny_bundle, tmp_path_factory):
    """(inputs, the Classifier's direct answers computed by the serving environment's Python)."""
    rng = np.random.default_rng(11)
    inputs = {f"float{n}": rng.random((n, TINY_RES, TINY_RES, 3), dtype=np.float32) for n in FLOAT_BATCHES}
    inputs["singles"] = rng.random((SINGLES, TINY_RES, TINY_RES, 3), dtype=np.float32)
    pngs = [_png(50, 70, 3, 1), _png(TINY_RES, TINY_RES, 1, 2), _png(97, 31, 4, 3)]  # RGB, gray, RGBA
    inputs.update({f"png{i}": np.frombuffer(png, np.uint8) for i, png in enumerate(pngs)})
    root = tmp_path_factory.mktemp("direct")
    np.savez(root / "inputs.npz", **inputs)
    subprocess.run(
        [serve_python, "-c", DIRECT, str(tiny_bundle), str(root / "inputs.npz"), str(root / "direct.npz")],
        check=True,
        capture_output=True,
        timeout=300,
    )
    answers = dict(np.load(root / "direct.npz"))
    with open(os.path.join(tiny_bundle, "labels.json"), encoding="utf-8") as f:
        answers["label_names"] = [entry["name"] for entry in json.load(f)]
    return {**inputs, "pngs": pngs}, answers


class HttpClient(httpclient.InferenceServerClient):
    """Closed by its `with` block only. tritonclient's __del__ closes it again, and gevent refuses that in another
    thread, where the garbage collector may free a client caught in an exception's traceback."""

    def __del__(self):
        pass


def _http(server, concurrency=1):
    return HttpClient(server.http_url, concurrency=concurrency, connection_timeout=TIMEOUT_S, network_timeout=TIMEOUT_S)


def _grpc(server):
    return grpcclient.InferenceServerClient(server.grpc_url)


def _input(module, name, array, datatype):
    tensor = module.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def infer_http(server, array, model=MODEL, name="images", datatype="FP32", outputs=("logits",)):
    with _http(server) as client:
        result = client.infer(model, [_input(httpclient, name, array, datatype)])
    return [result.as_numpy(output) for output in outputs]


def infer_grpc(server, array, model=MODEL, name="images", datatype="FP32", outputs=("logits",)):
    with _grpc(server) as client:
        result = client.infer(model, [_input(grpcclient, name, array, datatype)], client_timeout=TIMEOUT_S)
    return [result.as_numpy(output) for output in outputs]


def encoded(*images: bytes) -> np.ndarray:
    return np.array([[image] for image in images], dtype=np.object_)


def expected_classes(probabilities, names, k=5) -> list[list[bytes]]:
    """Triton's classification extension: "probability:index:label", the most probable first."""
    order = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    return [[f"{p[j]:f}:{j}:{names[j]}".encode() for j in row] for row, p in zip(order, probabilities)]


def statistics(server, model=MODEL) -> dict:
    with _http(server) as client:
        return client.get_inference_statistics(model)["model_stats"][0]


def statistics_counting(server, before: dict, requests: int, timeout_s: float = 5.0) -> dict:
    """The statistics once they count `requests` more inferences than `before`, or as they are after `timeout_s`
    (at most 100 reads). Triton may count a batch after its responses are sent, so a client can hold
    every answer a moment before the last batch is counted (one such run counted 31 of 32)."""
    deadline = time.monotonic() + timeout_s
    for _ in range(100):
        after = statistics(server)
        if after["inference_count"] - before["inference_count"] >= requests or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    return after


def assert_still_answers(server, direct):
    inputs, answers = direct
    assert np.array_equal(infer_http(server, inputs["float3"])[0], answers["float3"])
    assert np.array_equal(infer_grpc(server, inputs["float1"])[0], answers["float1"])
    png = encoded(inputs["pngs"][0])
    assert np.array_equal(infer_http(server, png, IMAGE_MODEL, "image", "BYTES")[0], answers["png_alone"][:1])


def test_models_are_configured_as_documented(bit_serve):
    with _http(bit_serve) as client:
        floats, images = client.get_model_config(MODEL), client.get_model_config(IMAGE_MODEL)
    assert floats["input"][0]["name"] == "images" and floats["input"][0]["dims"] == [TINY_RES, TINY_RES, 3]
    assert floats["max_batch_size"] == MAX_BATCH and "dynamic_batching" in floats
    assert [(o["name"], o["dims"]) for o in images["output"]] == [("logits", [1000]), ("classes", [5])]
    # one request per execute call, so that an error fails only its own request; instances decode in parallel
    assert "dynamic_batching" not in images and images["instance_group"][0]["count"] == 2


@pytest.mark.parametrize("n", FLOAT_BATCHES)
def test_float_batches_answer_what_the_classifier_answers(bit_serve, direct, n):
    inputs, answers = direct
    assert np.array_equal(infer_http(bit_serve, inputs[f"float{n}"])[0], answers[f"float{n}"])
    assert np.array_equal(infer_grpc(bit_serve, inputs[f"float{n}"])[0], answers[f"float{n}"])


def test_png_bytes_answer_what_the_classifier_answers(bit_serve, direct):
    inputs, answers = direct
    pngs = inputs["pngs"]
    logits, classes = infer_http(bit_serve, encoded(*pngs), IMAGE_MODEL, "image", "BYTES", ("logits", "classes"))
    assert np.array_equal(logits, answers["png_logits"])
    assert classes.tolist() == expected_classes(answers["png_probabilities"], answers["label_names"])
    for i, png in enumerate(pngs):
        alone = infer_grpc(bit_serve, encoded(png), IMAGE_MODEL, "image", "BYTES")[0]
        assert np.array_equal(alone, answers["png_alone"][i : i + 1])


def concurrently(server, grpc_call, http_request, jobs) -> list:
    """Half the jobs from gRPC clients in threads, half at once from one HTTP client's own greenlet pool (the
    way tritonclient.http runs concurrent requests: its clients are not for threads). Results in job order."""
    grpc_jobs, http_jobs = jobs[1::2], jobs[::2]
    with concurrent.futures.ThreadPoolExecutor(len(grpc_jobs)) as pool:
        grpc_futures = [pool.submit(grpc_call, job) for job in grpc_jobs]
        with _http(server, concurrency=len(http_jobs)) as client:
            pending = [client.async_infer(*http_request(job)) for job in http_jobs]
            http_results = []
            for request in pending:
                try:
                    http_results.append(request.get_result(timeout=TIMEOUT_S))
                except InferenceServerException as exc:
                    http_results.append(exc)
        grpc_results = [future.result(timeout=TIMEOUT_S * 2) for future in grpc_futures]
    results = [None] * len(jobs)
    results[::2], results[1::2] = http_results, grpc_results
    return results


def test_concurrent_clients_are_dynamically_batched(bit_serve, direct):
    inputs, answers = direct
    before = statistics(bit_serve)
    repeats = 2
    jobs = [i for _ in range(repeats) for i in range(SINGLES)]  # 32 requests, from 16 HTTP and 16 gRPC clients

    def grpc_call(i):
        return infer_grpc(bit_serve, inputs["singles"][i : i + 1])[0]

    def http_request(i):
        return MODEL, [_input(httpclient, "images", inputs["singles"][i : i + 1], "FP32")]

    results = concurrently(bit_serve, grpc_call, http_request, jobs)
    for i, result in zip(jobs, results):
        logits = result if isinstance(result, np.ndarray) else result.as_numpy("logits")
        np.testing.assert_allclose(logits, answers["singles"][i : i + 1], rtol=BATCHED_RTOL, atol=BATCHED_ATOL)

    after = statistics_counting(bit_serve, before, len(jobs))
    requests = after["inference_count"] - before["inference_count"]
    executions = after["execution_count"] - before["execution_count"]
    assert requests == len(jobs) and executions < requests, (requests, executions)
    assert after["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"]
    counts_before = {b["batch_size"]: b["compute_infer"]["count"] for b in before["batch_stats"]}
    batched = [
        b["batch_size"]
        for b in after["batch_stats"]
        if b["batch_size"] > 1 and b["compute_infer"]["count"] > counts_before.get(b["batch_size"], 0)
    ]
    assert batched, f"no execution ran more than one request: {after['batch_stats']}"


def test_images_outside_the_contract_get_nan_logits_and_spare_the_rest(bit_serve, direct):
    inputs, answers = direct
    images = inputs["float3"].copy()
    images[1, 0, 0, 0] = np.nan
    logits = infer_http(bit_serve, images)[0]
    assert np.isnan(logits[1]).all() and not np.isnan(logits[[0, 2]]).any()
    np.testing.assert_allclose(logits[[0, 2]], answers["float3"][[0, 2]], rtol=BATCHED_RTOL, atol=BATCHED_ATOL)
    images[1] = 2.0  # outside [0, 1]
    assert np.isnan(infer_grpc(bit_serve, images)[0][1]).all()


def _post(server, path, body: bytes, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT_S)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_malformed_requests_get_a_triton_error_and_the_server_keeps_answering(bit_serve, direct):
    inputs, _ = direct
    x = inputs["float3"]
    png = inputs["pngs"][0]
    cases = {
        "wrong shape": (lambda: infer_http(bit_serve, x[:, :-1]), "unexpected shape for input 'images'"),
        "wrong shape (gRPC)": (lambda: infer_grpc(bit_serve, x[..., :2]), "unexpected shape for input 'images'"),
        "wrong dtype": (lambda: infer_http(bit_serve, x.astype(np.float64), datatype="FP64"), "expects 'FP32'"),
        "wrong dtype (gRPC)": (
            lambda: infer_grpc(bit_serve, (x * 255).astype(np.uint8), datatype="UINT8"),
            "expects 'FP32'",
        ),
        "oversized batch": (
            lambda: infer_http(bit_serve, np.zeros((MAX_BATCH + 1, TINY_RES, TINY_RES, 3), np.float32)),
            f"batch-size must be <= {MAX_BATCH}",
        ),
        "empty batch": (lambda: infer_grpc(bit_serve, x[:0]), "input byte size mismatch"),
        "bytes that are not an image": (
            lambda: infer_http(bit_serve, encoded(b"not an image"), IMAGE_MODEL, "image", "BYTES"),
            "image 0 of the request: not a decodable image",
        ),
        "a truncated PNG after a good one": (
            lambda: infer_grpc(bit_serve, encoded(png, png[: len(png) // 2]), IMAGE_MODEL, "image", "BYTES"),
            "image 1 of the request: not a decodable image",
        ),
        "an empty image": (
            lambda: infer_http(bit_serve, encoded(b""), IMAGE_MODEL, "image", "BYTES"),
            "image 0 of the request: empty file, not an image",
        ),
        "floats to the image model": (
            lambda: infer_http(bit_serve, x, IMAGE_MODEL, "image", "FP32"),
            "expects 'BYTES'",
        ),
    }
    for what, (call, message) in cases.items():
        with pytest.raises(InferenceServerException) as error:
            call()
        assert message in error.value.message(), f"{what}: {error.value.message()}"
        # our error is our one line, not the server's stack or its files
        assert ".py" not in error.value.message() and "Traceback" not in error.value.message(), f"{what}"
        assert_still_answers(bit_serve, direct)

    # an empty request: no inputs at all
    status, body = _post(bit_serve, f"/v2/models/{MODEL}/infer", b'{"inputs": []}')
    assert status == 400 and "expected 1 inputs but got 0" in body, body
    status, body = _post(bit_serve, f"/v2/models/{IMAGE_MODEL}/infer", b"")  # a raw body: one image, empty
    assert status != 200 and "image 0 of the request: empty file, not an image" in body, body
    with _grpc(bit_serve) as client, pytest.raises(InferenceServerException, match="expected 1 inputs but got 0"):
        client.infer(MODEL, [], client_timeout=TIMEOUT_S)
    assert_still_answers(bit_serve, direct)


def test_a_bad_image_fails_only_its_own_request(bit_serve, direct):
    inputs, answers = direct
    pngs = inputs["pngs"] + [b"\x89PNG corrupt"]  # every fourth request is a bad one
    jobs = list(range(24))

    def grpc_call(i):
        try:
            return infer_grpc(bit_serve, encoded(pngs[i % 4]), IMAGE_MODEL, "image", "BYTES")[0]
        except InferenceServerException as exc:
            return exc

    def http_request(i):
        return IMAGE_MODEL, [_input(httpclient, "image", encoded(pngs[i % 4]), "BYTES")]

    for i, result in zip(jobs, concurrently(bit_serve, grpc_call, http_request, jobs)):
        if i % 4 == 3:
            assert isinstance(result, InferenceServerException), i
            assert "image 0 of the request: not a decodable image" in result.message()
        else:
            logits = result if isinstance(result, np.ndarray) else result.as_numpy("logits")
            assert np.array_equal(logits, answers["png_alone"][i % 4 : i % 4 + 1]), i


def _raw_infer_request(model, name, array, datatype) -> bytes:
    tensor = _input(httpclient, name, array, datatype)
    body, json_size = httpclient.InferenceServerClient.generate_request_body([tensor])
    head = (
        f"POST /v2/models/{model}/infer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
        f"Inference-Header-Content-Length: {json_size}\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def test_clients_that_disconnect_mid_request_do_not_hurt_the_server(bit_serve, direct):
    inputs, _ = direct
    float_request = _raw_infer_request(MODEL, "images", inputs["float8"], "FP32")
    image_request = _raw_infer_request(IMAGE_MODEL, "image", encoded(*inputs["pngs"]), "BYTES")
    for _ in range(3):
        for request in (float_request, image_request):
            for cut in (0, 40, len(request) // 2, len(request)):  # nothing, part of the head, half, all of it
                with socket.create_connection(("127.0.0.1", bit_serve.http_port), timeout=TIMEOUT_S) as s:
                    s.sendall(request[:cut])
                # closed: mid-head, mid-body, or with the answer still to come
        # gRPC: the channel closes while its request runs
        client = _grpc(bit_serve)
        # tritonclient calls back with result= and error=: at once, in this thread, where the call has already ended
        client.async_infer(MODEL, [_input(grpcclient, "images", inputs["float8"], "FP32")], lambda result, error: None)
        client.close()
    assert bit_serve.proc.poll() is None
    with _http(bit_serve) as client:
        assert client.is_server_live() and client.is_server_ready()
    assert_still_answers(bit_serve, direct)


def run_bit_serve(python, *args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-m", "bit_trt.serve.serve_cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
    )


def _ports(**taken) -> list[str]:
    ports = {flag: taken.get(flag) or free_port() for flag in ("http", "grpc", "metrics")}
    return [arg for flag, port in ports.items() for arg in (f"--{flag}-port", str(port))]


@pytest.mark.parametrize("flag", ["http", "grpc", "metrics"])
def test_a_port_in_use_is_one_clear_line(serve_python, tiny_bundle, flag):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_bit_serve(serve_python, tiny_bundle, "--backend", "ort-cpu", *_ports(**{flag: port}))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"bit-serve: error: --{flag}-port {port}: port already in use on 127.0.0.1; choose another"
    ]
    assert result.stdout == ""


def test_a_bundle_without_the_variant_is_one_line_and_starts_no_triton(serve_python, tiny_bundle, tmp_path):
    result = run_bit_serve(
        serve_python, tiny_bundle, "--backend", "ort-cpu", "--precision", "int8", "--workspace", tmp_path, *_ports()
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"bit-serve: error: bundle {str(tiny_bundle)!r} has no int8-ort onnx artifact; it has: fp32, fp16"
    ]
    assert result.stdout == "" and os.listdir(tmp_path) == []


@pytest.mark.skipif(importlib.util.find_spec("pytriton") is not None, reason="PyTriton is importable here")
def test_outside_its_environment_it_says_how_to_build_one(tiny_bundle):
    result = run_bit_serve(sys.executable, tiny_bundle, *_ports())
    assert result.returncode == 1
    [line] = result.stderr.splitlines()
    assert line.startswith("bit-serve: error: PyTriton is not importable here")
    assert line.endswith(
        "python3 -m venv .venv-serve && .venv-serve/bin/pip install -c constraints-serve.txt -e '.[serve]'"
    )


def test_ctrl_c_with_open_keep_alive_clients_stops_cleanly(serve_python, tiny_bundle, tmp_path_factory, direct):
    workspace = tmp_path_factory.mktemp("ctrl-c") / "ws"  # short: Triton's socket paths live under it
    server = start_bit_serve(serve_python, tiny_bundle, workspace)
    try:
        assert statistics(server)["name"] == MODEL
        # idle keep-alive connections: raw HTTP/1.1, tritonclient's HTTP pool and a gRPC channel
        keep_alive = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=TIMEOUT_S)
        keep_alive.request("GET", "/v2/health/ready")
        assert keep_alive.getresponse().read() == b""
        http_client, grpc_client = _http(server), _grpc(server)
        inputs, answers = direct
        result = http_client.infer(MODEL, [_input(httpclient, "images", inputs["float1"], "FP32")])
        assert np.array_equal(result.as_numpy("logits"), answers["float1"])
        assert grpc_client.is_server_ready()
        server.stop(signal.SIGINT, group=True)  # a terminal's Ctrl-C reaches bit-serve and Triton alike
        assert leftovers(server) == []
        keep_alive.close()
        http_client.close()
        grpc_client.close()
    finally:
        if server.proc.poll() is None:
            os.killpg(server.proc.pid, signal.SIGKILL)
