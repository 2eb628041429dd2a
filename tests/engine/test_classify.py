import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from bit_trt.engine.classifier import Classifier
from bit_trt.engine.parity_set import real_photo_paths
from tests.conftest import run_cli

CLASSIFY = "bit_trt.engine.classify_cli"


def _top_lines(stdout: str, photo: str) -> list[tuple[float, str]]:
    """bit-classify's output for one image -> [(percent, label name)], in printed order."""
    lines = stdout.splitlines()
    assert lines[0] == photo and len(lines) == 6
    top = []
    for line in lines[1:]:
        pct, name = line.strip().split("%", 1)
        top.append((float(pct), name.strip()))
    return top


def _assert_real_labels_descending(top: list[tuple[float, str]], bundle) -> None:
    labels = {entry["name"] for entry in Classifier(str(bundle)).labels}
    assert all(name in labels for _, name in top)
    probs = [pct for pct, _ in top]
    assert probs == sorted(probs, reverse=True)


def test_classify_prints_top5_labels(tiny_bundle):
    photo = real_photo_paths()[0]
    proc = run_cli(CLASSIFY, tiny_bundle, photo)
    assert proc.returncode == 0, proc.stderr
    _assert_real_labels_descending(_top_lines(proc.stdout, photo), tiny_bundle)
    assert "SYNTHETIC" in proc.stderr


def _console_script(name: str) -> str:
    """The installed entry point, as a user runs it: beside this interpreter (a venv's bin/), else on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    found = beside if os.access(beside, os.X_OK) else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed here (pip install -e . makes it)")
    return found


def test_classify_matches_python_api(tiny_bundle):
    """The real `bit-classify` command prints, per image, the top-k that Classifier.predict gives."""
    photos = real_photo_paths()[:3]
    proc = subprocess.run(
        [_console_script("bit-classify"), str(tiny_bundle), *photos, "--top", "4"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr
    with Classifier(str(tiny_bundle)) as clf:
        assert f"backend: {clf.backend}" in proc.stderr.splitlines()
        expected = []
        for photo, top in zip(photos, clf.predict(photos).top(4)):
            expected += [photo] + [f"  {prob:7.2%}  {name}" for name, prob in top]
        # a batch of one's second call compiles a model for that shape (engine/openvino_runner.py, static shapes),
        # whose float rounding differs from the dynamic model's (rel L2 under 1e-5): the calls compared run on it
        clf.predict([photos[1]])
        from_path = clf.predict([photos[1]])
        with open(photos[1], "rb") as f:
            from_bytes = clf.predict([f.read()])
        rgb = cv2.cvtColor(cv2.imread(photos[1]), cv2.COLOR_BGR2RGB)
        from_array = clf.predict([rgb])
    assert proc.stdout.splitlines() == expected
    np.testing.assert_array_equal(from_path.logits, from_bytes.logits)
    np.testing.assert_allclose(from_path.logits, from_array.logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(from_path.probabilities.sum(axis=1), 1.0, rtol=1e-9)


def test_not_an_image_is_a_clear_error(tiny_bundle, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    photo = real_photo_paths()[0]
    proc = run_cli(CLASSIFY, tiny_bundle, bad, photo)
    assert proc.returncode == 1
    assert f"bit-classify: error: {bad}: not a decodable image" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert photo in proc.stdout  # the good image after it was still classified


def test_missing_bundle(tmp_path):
    proc = run_cli(CLASSIFY, tmp_path / "nope", "x.jpg")
    assert proc.returncode == 1 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_classify_each_variant_and_unknown_variant(tiny_bundle):
    photo = real_photo_paths()[0]
    proc = run_cli(CLASSIFY, tiny_bundle, photo, "--precision", "fp16")
    assert proc.returncode == 0, proc.stderr
    fp16_top = _top_lines(proc.stdout, photo)
    _assert_real_labels_descending(fp16_top, tiny_bundle)
    # The export admitted the fp16 variant on parity against fp32, this photo among the parity images. Here its
    # two best classes are near-tied in fp32 (6.6% and 6.4%, the third 3.9%): the fp16 tier, bf16 where the CPU has
    # it, may order them either way within its gate's error, but must pick the same two.
    with Classifier(str(tiny_bundle), precision="fp32") as clf:
        fp32_top2 = {name for name, _ in clf.predict([photo]).top(2)[0]}
    assert {name for _, name in fp16_top[:2]} == fp32_top2
    proc = run_cli(CLASSIFY, tiny_bundle, photo, "--precision", "int8-ort")
    assert proc.returncode == 1 and "has no int8-ort onnx artifact; it has: fp32, fp16" in proc.stderr


def test_the_classifiers_public_surface_is_what_predict_runs(tiny_bundle):
    """max_batch, infer, infer_timed and infer_uint8: what servers and benchmarks call instead of the runner."""
    from bit_trt.engine.preprocess import preprocess, scale_uint8

    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (3, 64, 64, 3), np.uint8)
    with Classifier(str(tiny_bundle), backend="ort-cpu") as clf:
        assert clf.max_batch is None  # ONNX Runtime takes any batch; a TensorRT plan says its profile max
        expected = clf.predict(list(images)).logits
        ready = preprocess(list(images), clf.spec)
        np.testing.assert_array_equal(clf.infer(ready), expected)
        logits, phases = clf.infer_timed(ready)
        np.testing.assert_array_equal(logits, expected)
        assert phases is None  # only trt measures device phases
        np.testing.assert_array_equal(clf.infer_uint8(images), clf.infer(scale_uint8(images)))
        assert clf.backend.startswith("ort-cpu: onnxruntime")
