"""The TensorRT runner on a GPU host: parity, the CUDA preprocessing kernel, threads, CUDA graphs.

Marked `gpu` and `tensorrt`: skipped with a reason where there is no GPU, TensorRT or pycuda (conftest).
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bit_trt.engine import compare
from bit_trt.engine.bundle import load_bundle
from bit_trt.engine.classifier import Classifier
from bit_trt.engine.errors import BitError
from bit_trt.engine.parity_set import load_parity_set
from bit_trt.engine.preprocess import preprocess
from tests.conftest import export_tiny

pytestmark = [pytest.mark.gpu, pytest.mark.tensorrt]


@pytest.fixture(scope="module")
def gpu_bundle(tmp_path_factory):
    pytest.importorskip("tensorrt", reason="needs TensorRT (pip install 'bit-trt[gpu]')")
    pytest.importorskip("pycuda.driver", reason="needs pycuda (pip install 'bit-trt[gpu]')")
    from bit_trt.export import trt_engine

    out = tmp_path_factory.mktemp("gpu") / "tiny"
    export_tiny(
        out,
        precisions=("fp32", "fp16"),
        engine="tensorrt",
        build=trt_engine.BuildOptions(min_batch=1, opt_batch=4, max_batch=4),
    )
    return out


def _parity(path):
    images, _, tf_logits = load_parity_set(load_bundle(str(path)))
    return images, tf_logits


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_plan_matches_tf(gpu_bundle, precision):
    images, tf_logits = _parity(gpu_bundle)
    with Classifier(str(gpu_bundle), backend="trt", precision=precision, gpu_preprocess=False) as clf:
        logits = clf.runner.infer(images.astype(np.float32) / 255)
    assert not compare.tolerance_for(precision).check(compare.measure(logits, tf_logits))


def test_device_preprocessing_equals_cpu_path(gpu_bundle):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (h, w, 3), np.uint8) for h, w in [(480, 640), (37, 100), (64, 64), (1000, 300)]]
    with Classifier(str(gpu_bundle), backend="trt", gpu_preprocess=True) as clf:
        assert clf.runner.preprocesses_on_device and "CUDA kernel" in clf.backend
        device = clf.runner.infer_uint8(images)  # 4 images, max batch 4: also one 2-chunk call below
        cpu = clf.runner.infer(preprocess(images, clf.spec))
        np.testing.assert_allclose(device, cpu, rtol=2e-3, atol=2e-3)
        twice = clf.runner.infer_uint8(images + images[:3])  # 7 > max batch: two double-buffered chunks
        np.testing.assert_allclose(twice[:4], device, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(twice[4:], device[:3], rtol=1e-5, atol=1e-5)


def test_many_threads_share_one_runner(gpu_bundle):
    images, _ = _parity(gpu_bundle)
    batch = images.astype(np.float32) / 255
    with Classifier(str(gpu_bundle), backend="trt", workers=3) as clf:
        ref = clf.runner.infer(batch)
        serial_predict = clf.predict(list(images)).logits
        with ThreadPoolExecutor(max_workers=12) as pool:
            for out in pool.map(lambda _: clf.runner.infer(batch), range(48)):
                np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
            for out in pool.map(lambda _: clf.predict(list(images)).logits, range(24)):
                np.testing.assert_allclose(out, serial_predict, rtol=1e-5, atol=1e-5)


def test_cuda_graph_replay_equals_plain_enqueue(gpu_bundle):
    images, _ = _parity(gpu_bundle)
    batch = images.astype(np.float32) / 255
    with Classifier(str(gpu_bundle), backend="trt", cuda_graph=False) as plain:
        ref = plain.runner.infer(batch)
    with Classifier(str(gpu_bundle), backend="trt", cuda_graph=True) as graphed:
        for _ in range(3):
            np.testing.assert_allclose(graphed.runner.infer(batch), ref, rtol=1e-5, atol=1e-5)


def test_bad_input_keeps_the_runner_usable(gpu_bundle):
    images, _ = _parity(gpu_bundle)
    batch = images.astype(np.float32) / 255
    with Classifier(str(gpu_bundle), backend="trt") as clf:
        ref = clf.runner.infer(batch)
        for bad in (batch[0], batch[..., :2], np.full_like(batch, np.nan), batch[:0]):
            with pytest.raises(BitError):
                clf.runner.infer(bad)
        with pytest.raises(BitError, match="uint8 RGB HWC"):
            clf.runner.infer_uint8([np.zeros((10, 10), np.uint8)])
        big = np.concatenate([batch] * 3)  # above the profile's max of 4: split
        np.testing.assert_allclose(clf.runner.infer(big)[: len(batch)], ref, rtol=1e-5, atol=1e-5)


def test_plan_from_another_version_is_refused(gpu_bundle, tmp_path):
    import json
    import shutil

    dst = tmp_path / "b"
    shutil.copytree(gpu_bundle, dst)
    m = json.loads((dst / "manifest.json").read_text())
    for art in m["artifacts"]:
        if art["kind"] == "engine":
            art["library_version"] = "9.0.0"
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BitError, match="plans only load in the version that built them"):
        Classifier(str(dst), backend="trt").predict(np.zeros((8, 8, 3), np.uint8))
    assert load_bundle(str(dst))  # the bundle itself is still readable
