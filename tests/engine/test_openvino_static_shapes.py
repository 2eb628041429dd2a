"""OpenVINO runs the first batch shapes a runner sees on models compiled for that shape alone
(engine/openvino_runner.py): the same answers as the dynamic model, bounded in number, other shapes on the dynamic
model, and safe when several threads meet a new shape at once."""

import threading

import numpy as np
import pytest

from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.classifier import Classifier
from bit_trt.engine.errors import BitError
from bit_trt.engine.parity_set import load_parity_set
from bit_trt.engine.preprocess import scale_uint8

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def setup(tiny_bundle):
    bundle = load_bundle(str(tiny_bundle))
    images, _, _ = load_parity_set(bundle)
    return bundle, scale_uint8(images)


def _close(got, want):
    assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5


def test_the_first_shapes_get_models_of_their_own_with_the_same_answers(setup):
    from bit_trt.engine.openvino_runner import OpenVinoRunner

    bundle, x = setup
    path = bundle.artifact_path("fp32")
    with OpenVinoRunner(path, static_shapes=2) as runner, OpenVinoRunner(path, static_shapes=0) as dynamic:
        want = dynamic.infer(x)
        _close(runner.infer(x), want)  # once only: a one-off (a check) takes no slot
        for _ in range(2):  # the second call compiles a model for the shape, the third runs on it
            _close(runner.infer(x[:1]), want[:1])
            _close(runner.infer(x[:3]), want[:3])
        assert set(runner.static) == {x[:1].shape, x[:3].shape} and dynamic.static == {}
        _close(runner.infer(x[:1]), want[:1])
        for _ in range(2):  # a third shape past the bound: the dynamic model
            _close(runner.infer(x[:2]), want[:2])
        assert set(runner.static) == {x[:1].shape, x[:3].shape}
        for shape, compiled in runner.static.items():
            fixed = compiled.inputs[0].get_partial_shape()
            assert fixed.is_static and tuple(fixed.to_shape()) == shape
        assert not runner.compiled.inputs[0].get_partial_shape().is_static
    assert runner.static == {}  # deactivated: the compiled models are gone


def test_threads_meeting_a_new_shape_at_once_all_get_answers(setup):
    bundle, x = setup
    with Classifier(bundle, backend="openvino", static_shapes=0) as dynamic:
        want = dynamic.infer(x[:2])
    with Classifier(bundle, backend="openvino", concurrency=4) as clf:
        _close(clf.infer(x[:2]), want)  # seen once: the threads' calls are the second
        out, errors = [None] * 4, []

        def work(i):
            try:
                out[i] = clf.infer(x[:2])
            except Exception as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors and all(o is not None for o in out)
        for o in out:
            _close(o, want)
        assert x[:2].shape in clf.runner.static  # one thread compiled it; the others ran meanwhile on the dynamic one


def test_a_bad_static_shapes_is_one_line(setup):
    bundle, _ = setup
    with pytest.raises(BitError, match=r"^OpenVINO static_shapes must be a whole number 0 or more, got -1$"):
        Classifier(bundle, backend="openvino", static_shapes=-1)


def test_a_model_file_changed_after_activation_is_not_read_again(setup, tmp_path):
    """A static model reads the file again, maybe hours after activation: it is checked against the manifest
    first, as at activation, so a file swapped meanwhile is refused in one line, not compiled."""
    import shutil

    bundle, x = setup
    copy = tmp_path / "bundle"
    shutil.copytree(bundle.path, copy)
    with Classifier(str(copy), backend="openvino") as clf:
        clf.infer(x[:1])  # seen once, on the model compiled at activation
        with open(copy / "model.fp32.onnx", "ab") as f:
            f.write(b"\0")
        with pytest.raises(BitError, match=r"model\.fp32\.onnx does not match its manifest checksum"):
            clf.infer(x[:1])
        assert clf.runner.static == {}


def test_auto_gives_static_shapes_to_openvino_only(setup):
    """A memory-tight server on `auto` can turn the static models off: the setting reaches openvino (auto's first
    CPU backend) and no other; a setting no backend in auto's order takes is one line."""
    bundle, x = setup
    with Classifier(bundle, backend="auto", static_shapes=0) as clf:
        assert clf.runner.name == "openvino" and clf.runner.static_shapes == 0
        for _ in range(3):
            clf.infer(x[:1])
        assert clf.runner.static == {}
    with pytest.raises(BitError, match=r"^no backend auto picks from has the setting bogus \(auto tries: "):
        Classifier(bundle, backend="auto", bogus=1)


def _parse(add_arguments, *argv):
    import argparse

    p = argparse.ArgumentParser(prog="t")
    add_arguments(p)
    return p.parse_args(list(argv))


def test_the_command_lines_pass_static_shapes_to_the_classifier(setup, capsys):
    """bit-classify, bit-check and bit-serve (Triton) share --static-shapes; unset, the runner keeps its default."""
    from bit_trt.engine.classify_cli import add_backend_arguments, open_classifier
    from bit_trt.serve.serve_cli import build_parser, options_from_args

    bundle, _ = setup

    def bundle_arguments(p):
        p.add_argument("bundle")
        add_backend_arguments(p)

    for given, want in ((["--static-shapes", "0"], 0), ([], 2)):
        args = _parse(bundle_arguments, bundle.path, "--backend", "openvino", *given)
        with open_classifier(args, "t") as clf:
            assert clf.runner.static_shapes == want
    args = _parse(bundle_arguments, bundle.path, "--backend", "ort-cpu", "--static-shapes", "1")
    assert open_classifier(args, "t") is None
    assert (
        capsys.readouterr()
        .err.strip()
        .endswith(
            "t: error: backend ort-cpu has no setting static_shapes "
            "(it takes: group_norm_kernel, low_memory, optimization, streams)"
        )
    )
    with pytest.raises(SystemExit):
        _parse(bundle_arguments, bundle.path, "--static-shapes", "-1")
    assert "expected a whole number, 0 or more, got '-1'" in capsys.readouterr().err
    serve = options_from_args(build_parser().parse_args([bundle.path, "--static-shapes", "1"]))
    assert serve.static_shapes == 1
    assert options_from_args(build_parser().parse_args([bundle.path])).static_shapes is None


def test_ray_replicas_and_bulk_workers_take_static_shapes(setup):
    """bit-serve --ray and bit-classify --ray open their Classifiers through open_verified, which passes it on."""
    pytest.importorskip("ray")
    from bit_trt.engine.bundle import manifest_sha256
    from bit_trt.engine.options import options_from
    from bit_trt.scale.bulk_cli import build_parser as bulk_parser
    from bit_trt.scale.serve_cli import build_parser
    from bit_trt.scale.serve_options import RayServeOptions, options_from_mapping
    from bit_trt.scale.verified_classifier import open_verified

    bundle, _ = setup
    args = build_parser().parse_args([bundle.path, "--ray", "local", "--static-shapes", "0"])
    ray_options = options_from(RayServeOptions, args)
    assert ray_options.static_shapes == 0
    # KubeRay's serveConfigV2 and `serve run` give the application strings
    assert options_from_mapping({"bundle": bundle.path, "static_shapes": "1"}).static_shapes == 1
    with pytest.raises(BitError, match=r"^--static-shapes must be an integer of at least 0, got -1$"):
        options_from_mapping({"bundle": bundle.path, "static_shapes": "-1"})
    bulk = bulk_parser().parse_args([bundle.path, "x.jpg", "--ray", "local", "--out", "o", "--static-shapes", "0"])
    assert bulk.static_shapes == 0
    sha = manifest_sha256(bundle.path)
    clf = open_verified(bundle.path, sha, "auto", "fp32", None, 10**8, 64, ray_options.static_shapes)
    with clf:
        assert clf.runner.name == "openvino" and clf.runner.static_shapes == 0


def test_a_closed_runner_lets_go_of_its_compiled_models_in_every_thread(setup):
    """Infer requests are per thread and each holds its compiled model: closing the runner must drop them for every
    thread that ran one, the caller's included, or a closed model's memory stays for as long as those threads live
    (bit-bench warms every model up on its main thread: its two-model --throughput run held 21.5 GB with every model
    closed, and the kernel killed it)."""
    import gc
    import weakref

    from bit_trt.engine.openvino_runner import OpenVinoRunner

    bundle, x = setup
    done, release = threading.Event(), threading.Event()

    def other_thread(runner):  # a thread that ran a request and is still alive when the runner closes
        runner.infer(x[:1])
        done.set()
        release.wait(timeout=60)

    with OpenVinoRunner(bundle.artifact_path("fp32"), static_shapes=1) as runner:
        for _ in range(2):  # the second call with this shape compiles a model for it alone
            runner.infer(x[:2])
        worker = threading.Thread(target=other_thread, args=(runner,))
        worker.start()
        assert done.wait(timeout=60)
        models = [weakref.ref(runner.compiled), *(weakref.ref(m) for m in runner.static.values())]
        assert len(models) == 2 and all(m() is not None for m in models)
    gc.collect()
    try:
        assert all(m() is None for m in models)
    finally:
        release.set()
        worker.join(timeout=60)
