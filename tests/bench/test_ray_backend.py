"""bit-bench's `ray` backend refuses what it cannot measure in one line, before anything loads: a malformed
--ray-url, a server that is not there, one serving another bundle. Measured against a real Ray Serve application in
tests/scale/cluster/test_bench_cluster.py."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bit_trt.bench.cli import main


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bench(capsys, *args) -> tuple[int, list[str]]:
    code = main([*map(str, args), "--iterations", "100", "--warmup", "0", "--no-roofline", "--quiet"])
    return code, capsys.readouterr().err.strip().splitlines()


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "grpc://127.0.0.1:8000", "http://127.0.0.1", "http://h:port"])
def test_a_malformed_url_is_one_line(capsys, url):
    code, err = _bench(capsys, "no-such-bundle", "--backend", "ray", "--ray-url", url)
    assert code == 2
    assert err == [f"bit-bench: error: --ray-url {url!r}: expected http://HOST:PORT (Ray Serve's HTTP proxy)"]


def test_a_server_that_is_not_there_is_one_line(capsys, tiny_bundle):
    port = _closed_port()
    code, err = _bench(capsys, tiny_bundle, "--backend", "ort-cpu,ray", "--ray-url", f"http://127.0.0.1:{port}")
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"bit-bench: error: cannot reach Ray Serve at http://127.0.0.1:{port} (")


class _Ready(BaseHTTPRequestHandler):
    answer = {"ready": True, "bundle_sha256": "0" * 64, "backend": "ort-cpu", "compute": "fp32"}

    def do_GET(self):  # noqa: N802 - http.server's name
        body = json.dumps(self.answer).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_server_of_another_bundle_is_refused_in_one_line(capsys, tiny_bundle):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code, err = _bench(capsys, tiny_bundle, "--backend", "ray", "--ray-url", url)
    finally:
        server.shutdown()
        server.server_close()
    assert code == 2 and len(err) == 1
    assert err[0].startswith(f"bit-bench: error: Ray Serve at {url} serves another bundle (manifest sha256 000000")
