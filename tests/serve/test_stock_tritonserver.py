"""bit-triton's preprocessing model on a stock tritonserver: NVIDIA's 2.51 binary (the one PyTriton ships,
with its Python backend), started on the repository bit-triton wrote, exactly as `tritonserver
--model-repository` would be in a Triton image. Its classifiers need the onnxruntime/openvino/tensorrt
backends, which that build lacks, so only the preprocessing model is loaded here; their configs are checked
against Triton's schema in test_triton_repository.py."""

import concurrent.futures
import json
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

from bit_trt.engine.preprocess import InputSpec, preprocess
from bit_trt.serve.triton_lockdown import RESTRICTION
from tests.conftest import TINY_RES, run_cli
from tests.serve.conftest import free_port
from tools.serve_attack_bench import zero_png

http = pytest.importorskip("tritonclient.http", reason="tritonclient[http] not installed")

PREPROCESS = "bit_tiny_preprocess"
BIT_TRITON_MAX_IMAGE_PIXELS = 16_000_000


def _png(height: int, width: int, seed: int) -> bytes:
    import cv2

    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    return cv2.imencode(".png", pixels)[1].tobytes()


@pytest.fixture(scope="module")
def stock_tritonserver(serve_python, tiny_bundle, tmp_path_factory):
    """tritonserver serving bit-triton's repository, the preprocessing model loaded; yields its HTTP URL."""
    root = tmp_path_factory.mktemp("stock-triton")
    repository = root / "models"
    limits = ("--max-image-pixels", BIT_TRITON_MAX_IMAGE_PIXELS, "--max-decode-mb", 120)
    result = run_cli(
        "bit_trt.serve.triton_cli", tiny_bundle, repository, "--backend", "onnxruntime", "--precision", "fp32", *limits
    )
    assert result.returncode == 0, result.stderr
    where = json.loads(
        subprocess.run(
            [
                serve_python,
                "-c",
                "import json, pathlib, sys, sysconfig, pytriton; root = pathlib.Path(pytriton.__file__).parent; "
                "print(json.dumps({'dist': str(root / 'tritonserver'), "
                "'libs': str(root.parent / 'nvidia_pytriton.libs'), 'libdir': sysconfig.get_config_var('LIBDIR'), "
                "'version': '%d.%d' % sys.version_info[:2]}))",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    # The server's layout as in a Triton image: the Python backend with the stub for the serving Python.
    server = root / "tritonserver"
    shutil.copytree(where["dist"], server, ignore=shutil.ignore_patterns("python_backend_stubs"))
    stub = f"{where['dist']}/python_backend_stubs/{where['version']}/triton_python_backend_stub"
    shutil.copy(stub, server / "backends" / "python" / "triton_python_backend_stub")
    port = free_port()
    env = {
        "PATH": f"{serve_python.rsplit('/', 1)[0]}:/usr/bin:/bin",  # the stub runs the serving env's Python
        "LD_LIBRARY_PATH": f"{where['libdir']}:{where['libs']}",  # that Python's libpython, not the system's
        "HOME": str(root),
    }
    log = open(root / "tritonserver.log", "w")
    proc = subprocess.Popen(
        [
            str(server / "bin" / "tritonserver"),
            f"--model-repository={repository}",
            f"--backend-directory={server / 'backends'}",
            "--model-control-mode=explicit",
            f"--load-model={PREPROCESS}",
            # explicit mode's load API would run any local user's model.py as this user (root in CI): closed as
            # bit-serve closes it, by a header no client can send
            f"--http-restricted-api={RESTRICTION}",
            "--http-address=127.0.0.1",
            f"--http-port={port}",
            "--allow-grpc=false",
            "--allow-metrics=false",
            "--exit-on-error=true",
            "--exit-timeout-secs=10",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    url = f"127.0.0.1:{port}"
    client = _client(url)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (root / "tritonserver.log").read_text()[-3000:]
            try:
                if client.is_model_ready(PREPROCESS):
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "tritonserver did not get ready in 120 s"
            time.sleep(0.5)
        yield url
    finally:
        client.close()
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        finally:
            proc.kill()
            log.close()


def _client(url: str):
    return http.InferenceServerClient(url, connection_timeout=30, network_timeout=30)


def _infer(url: str, images: list[bytes]) -> np.ndarray:
    """One request on its own connection (a tritonclient HTTP client is not shared between threads)."""
    client = _client(url)
    item = http.InferInput("image", [len(images), 1], "BYTES")
    item.set_data_from_numpy(np.array(images, dtype=object).reshape(-1, 1))
    try:
        return client.infer(PREPROCESS, [item]).as_numpy("images")
    finally:
        client.close()


def test_no_client_can_load_models_into_it(stock_tritonserver):
    """Its explicit model control is for its own --load-model: the repository API, through which another local user
    could have it load their model.py and run it as this user, is refused to every client."""
    client = _client(stock_tritonserver)
    with pytest.raises(http.InferenceServerException, match=r"^\[403\] This API is restricted"):
        client.load_model(PREPROCESS)
    assert client.is_model_ready(PREPROCESS)


def test_the_preprocessing_model_loads_warms_up_and_matches_the_engines_preprocessing(stock_tritonserver):
    images = [_png(300, 200, 0), _png(40, 90, 1)]
    served = _infer(stock_tritonserver, images)
    expected = preprocess(images, InputSpec(resolution=TINY_RES))
    assert served.shape == (2, TINY_RES, TINY_RES, 3) and served.dtype == np.float32
    np.testing.assert_array_equal(served, expected)  # PNG decode and OpenCV's bilinear resize are exact


def test_a_bad_image_fails_only_its_own_request_while_the_batcher_mixes_them(stock_tritonserver):
    good = _png(120, 160, 2)
    expected = preprocess([good], InputSpec(resolution=TINY_RES))

    def send(i):
        try:
            return _infer(stock_tritonserver, [b"not an image" if i % 4 == 0 else good])
        except Exception as exc:
            return exc

    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        results = list(pool.map(send, range(24)))
    for i, result in enumerate(results):
        if i % 4 == 0:
            assert "not a decodable image" in str(result)
        else:
            assert isinstance(result, np.ndarray), result
            np.testing.assert_array_equal(result, expected)
    with pytest.raises(Exception, match="empty file, not an image"):
        _infer(stock_tritonserver, [b""])
    client = _client(stock_tritonserver)
    assert client.is_server_live() and client.is_model_ready(PREPROCESS)
    client.close()


def test_the_preprocessing_model_refuses_an_image_bomb_from_its_header(stock_tritonserver):
    """A 64-megapixel PNG of 8 KB, over the limit bit-triton wrote into the config: refused before decoding, as in
    bit-serve (engine/preprocess.py), and the server answers the next request."""
    with pytest.raises(Exception) as error:
        _infer(stock_tritonserver, [zero_png(8000)])
    assert "a 8000x8000 PNG image (64.0 megapixels) is over the limit of 16.0 megapixels" in str(error.value)
    assert _infer(stock_tritonserver, [_png(40, 90, 1)]).shape == (1, TINY_RES, TINY_RES, 3)
