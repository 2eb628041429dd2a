"""SavedModel directories and TF Hub handles, including a real download from a local HTTP server."""

import http.server
import io
import os
import tarfile
import threading

import numpy as np
import pytest

from bit_trt.engine.errors import BitError
from bit_trt.export import sources
from bit_trt.export.bit_tf import BiTModule
from bit_trt.export.tensorflow_import import import_tensorflow


@pytest.fixture(scope="module")
def savedmodel_dir(tmp_path_factory, tiny, tiny_weights):
    """A SavedModel with the TF Hub module contract and variable names, as TF Hub's BiT modules have."""
    tf = import_tensorflow()
    path = tmp_path_factory.mktemp("sm") / "bit_tiny"
    tf.saved_model.save(BiTModule(tiny_weights, tiny), str(path))
    return path


def test_savedmodel_roundtrip(savedmodel_dir, tiny_weights, images64):
    loaded = sources.load(str(savedmodel_dir))
    assert loaded.variant.name == "tiny" and loaded.num_classes == 10
    assert loaded.source["kind"] == "savedmodel"
    for key, arr in tiny_weights.items():
        np.testing.assert_array_equal(loaded.weights[key], arr, err_msg=key)
    # The reference is the SavedModel's own function, not a rebuild.
    ref = BiTModule(tiny_weights, loaded.variant)(images64).numpy()
    np.testing.assert_allclose(loaded.reference(images64), ref, rtol=1e-5, atol=1e-5)


def test_directory_without_savedmodel(tmp_path):
    with pytest.raises(BitError, match="not a SavedModel directory"):
        sources.load(str(tmp_path))


def test_corrupt_savedmodel(tmp_path, savedmodel_dir):
    bad = tmp_path / "corrupt"
    bad.mkdir()
    (bad / "saved_model.pb").write_bytes((savedmodel_dir / "saved_model.pb").read_bytes()[:200])
    with pytest.raises(BitError, match="not a loadable SavedModel"):
        sources.load(str(bad))


def test_missing_path_names_the_sources():
    with pytest.raises(BitError, match="no such file or directory.*synthetic"):
        sources.load("does/not/exist.npz")


def test_hub_handle_offline_names_other_sources(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "HUB_URL", "http://127.0.0.1:9")  # discard port: connection refused at once
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path))
    with pytest.raises(BitError, match=r"cannot download TF Hub module .*Offline\? Use --model synthetic"):
        sources.load("google/bit/s-r50x3/ilsvrc2012_classification/1")
    assert not any((tmp_path / "hub").glob("*/saved_model.pb"))


@pytest.fixture
def hub_server(savedmodel_dir):
    """A local HTTP server speaking TF Hub's `?tf-hub-format=compressed` protocol."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in savedmodel_dir.rglob("*"):
            tar.add(p, arcname=str(p.relative_to(savedmodel_dir)), recursive=False)
    payload = buf.getvalue()
    requests = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            requests.append(self.path)
            if not self.path.endswith("?tf-hub-format=compressed"):
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", requests
    server.shutdown()
    server.server_close()


def test_hub_handle_downloads_once_and_caches(hub_server, monkeypatch, tmp_path, tiny_weights):
    url, requests = hub_server
    monkeypatch.setattr(sources, "HUB_URL", url)
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path))
    handle = "google/bit/s-tiny/ilsvrc2012_classification/1"
    first = sources.load(handle)
    assert first.source["handle"] == handle and first.variant.name == "tiny"
    np.testing.assert_array_equal(first.weights["resnet/head/conv2d/bias"], tiny_weights["resnet/head/conv2d/bias"])
    again = sources.load(handle)
    assert len(requests) == 1  # the second load came from the cache
    assert again.source["path"] == first.source["path"]


def test_a_kept_hub_module_others_could_write_is_downloaded_again(hub_server, monkeypatch, tmp_path):
    """A SavedModel is a graph TensorFlow executes: one in the cache is loaded only if this user alone may have
    written it (engine/user_cache.own_tree); a umask of 002 at download still leaves one that is reused."""
    url, requests = hub_server
    monkeypatch.setattr(sources, "HUB_URL", url)
    monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path))
    handle = "google/bit/s-tiny/ilsvrc2012_classification/1"
    old_umask = os.umask(0o002)
    try:
        first = sources.download_hub_module(handle)
    finally:
        os.umask(old_umask)
    assert sources.download_hub_module(handle) == first and len(requests) == 1
    pb = os.path.join(first, "saved_model.pb")
    os.chmod(pb, 0o646)  # as if another local user could have replaced the graph
    assert sources.download_hub_module(handle) == first and len(requests) == 2
    assert os.stat(pb).st_mode & 0o022 == 0
    assert sources.download_hub_module(handle) == first and len(requests) == 2


def test_hub_corrupt_archive_leaves_no_cache(monkeypatch, tmp_path):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\x1f\x8b not really gzip")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(sources, "HUB_URL", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv("BIT_TRT_CACHE", str(tmp_path))
        with pytest.raises(BitError, match="archive is corrupt"):
            sources.load("google/bit/s-r50x1/ilsvrc2012_classification/1")
        assert list((tmp_path / "hub").iterdir()) == []
    finally:
        server.shutdown()
        server.server_close()
