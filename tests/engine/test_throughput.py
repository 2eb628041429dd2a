"""Throughput mode (Classifier concurrency > 1): what each CPU backend is given, and that answers do not change."""

import threading

import numpy as np
import pytest

from bit_trt.engine import backends
from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.classifier import Classifier
from bit_trt.engine.classify_cli import open_classifier
from bit_trt.engine.errors import BitError
from bit_trt.engine.parity_set import load_parity_set
from bit_trt.engine.preprocess import scale_uint8


def _concurrently(clf, batch, calls: int = 2):
    out, errors = [None] * calls, []

    def work(i):
        try:
            out[i] = clf.infer(batch)
        except Exception as exc:  # reported below, with the thread's error
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(calls)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and all(o is not None for o in out)
    return out


@pytest.mark.parametrize("backend", ["openvino", "ort-cpu"])
def test_throughput_settings_answer_as_latency_settings_do(tiny_bundle, backend):
    images, _, _ = load_parity_set(load_bundle(str(tiny_bundle)))
    batch = scale_uint8(images)
    with Classifier(str(tiny_bundle), backend=backend, threads=2) as clf:
        latency = clf.infer(batch)
        assert "stream" not in clf.backend
    with Classifier(str(tiny_bundle), backend=backend, threads=2, concurrency=2) as clf:
        described = clf.backend
        for logits in _concurrently(clf, batch):
            np.testing.assert_allclose(logits, latency, rtol=1e-4, atol=1e-4)
    if backend == "openvino":
        assert (
            described.startswith("openvino")
            and "(throughput, " in described
            and " streams, " in described
            and described.endswith(", f32)")
        )
    else:
        assert described.endswith("(2 streams x 1 thread)")


def test_throughput_options_per_backend():
    assert backends.throughput_options("openvino", 1) == {} == backends.throughput_options("ort-cpu", 1)
    assert backends.throughput_options("openvino", 3) == {"hint": "THROUGHPUT", "requests": 3}
    assert backends.throughput_options("ort-cpu", 4) == {"streams": 4}
    assert backends.throughput_options("trt", 4) == {}  # a GPU overlaps its workers' streams itself


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_a_bad_concurrency_is_one_line(tiny_bundle, bad):
    with pytest.raises(BitError, match=r"^concurrency must be a whole number of requests, at least 1, got"):
        Classifier(str(tiny_bundle), backend="ort-cpu", concurrency=bad)


def test_an_explicit_hint_wins_over_concurrency(tiny_bundle):
    with Classifier(str(tiny_bundle), backend="openvino", concurrency=2, hint="LATENCY") as clf:
        assert "(latency, " in clf.backend and clf.backend.endswith(", f32)")


def test_bit_serve_throughput_sets_up_one_stream_per_request_path(tiny_bundle):
    from argparse import Namespace

    args = Namespace(
        bundle=str(tiny_bundle), backend="openvino", precision="fp32", threads=2, debug=True, image_workers=2
    )
    clf = open_classifier(Namespace(**vars(args), throughput=True), "bit-serve")
    assert "(throughput, " in clf.backend and clf.runner.requests == 3  # two image workers and the float model
    clf.close()
    clf = open_classifier(args, "bit-serve")
    assert "(latency, " in clf.backend
    clf.close()
