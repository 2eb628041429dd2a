"""One Classifier shared by many server threads: every answer equals the single-threaded one."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from bit_trt.engine.classifier import Classifier
from tests.conftest import TINY_RES


@pytest.mark.parametrize("backend", ["ort-cpu", "openvino"])
def test_concurrent_predicts_are_correct(tiny_full_bundle, backend):
    rng = np.random.default_rng(5)
    images = [
        rng.integers(0, 256, (int(rng.integers(20, 200)), int(rng.integers(20, 200)), 3), np.uint8) for _ in range(12)
    ]
    with Classifier(str(tiny_full_bundle), backend=backend) as clf:
        expected = [clf.predict(img).logits for img in images]
        with ThreadPoolExecutor(max_workers=8) as pool:
            jobs = [(i, pool.submit(clf.predict, images[i])) for _ in range(4) for i in range(len(images))]
            for i, job in jobs:
                np.testing.assert_allclose(job.result().logits, expected[i], rtol=1e-5, atol=1e-5)
        # a batch call from many threads at once as well
        batch = rng.random((3, TINY_RES, TINY_RES, 3), dtype=np.float32)
        ref = clf.infer(batch)
        with ThreadPoolExecutor(max_workers=4) as pool:
            for out in pool.map(lambda _: clf.infer(batch), range(8)):
                np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
