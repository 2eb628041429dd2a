import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

TINY_RES = 64
# bit-export arguments for the tiny variant, as most CLI tests run it (2 synthetic parity images, or the default)
TINY_ARGS_NO_PARITY = ("--variant", "tiny", "--resolution", TINY_RES)
TINY_ARGS = (*TINY_ARGS_NO_PARITY, "--parity-images", 2)
RETURNED_MANIFESTS = {}  # bundle path -> what export() returned, to compare with what it wrote


def _gpu_reason():
    """`gpu` tests need an NVIDIA GPU; those that need pycuda or CuPy as well skip on their own import."""
    if shutil.which("nvidia-smi") is None:
        return "needs an NVIDIA GPU (no nvidia-smi on this host)"
    return None


def _tensorrt_reason():
    """`tensorrt` tests need TensorRT on top of the GPU: the lent GPU hosts have none."""
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        return "needs TensorRT (pip install 'bit-trt[gpu]'); run -m 'gpu and not tensorrt' on a GPU host without it"
    return None


def pytest_collection_modifyitems(config, items):
    for item in items:
        # markers, not keywords: a parameter id such as [tensorrt] is a keyword too
        gpu, tensorrt = item.get_closest_marker("gpu"), item.get_closest_marker("tensorrt")
        if tensorrt and not gpu:
            # CI deselects with -m "not gpu": a test marked only `tensorrt` would run there and fail
            raise pytest.UsageError(f"{item.nodeid} is marked tensorrt but not gpu")
        reason = None
        if gpu:
            reason = _gpu_reason()
        if reason is None and tensorrt:
            reason = _tensorrt_reason()
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


def run_cli(module: str, *args, env=None, **kw) -> subprocess.CompletedProcess:
    """Run one of our console entry points as a user would, in a fresh interpreter."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)], capture_output=True, text=True, env=full_env, timeout=900, **kw
    )


@pytest.fixture(scope="session")
def tiny():
    from bit_trt.export.variants import get_variant

    return get_variant("tiny")


@pytest.fixture(scope="session")
def tiny_weights(tiny):
    from bit_trt.export.synthetic import synthetic_weights

    return synthetic_weights(tiny, 10, seed=3)


@pytest.fixture(scope="session")
def images64():
    from bit_trt.export.parity_images import synthetic_images

    return synthetic_images(3, TINY_RES, seed=7).astype(np.float32) / 255


def export_tiny(out, **fields) -> dict:
    """A real export of the tiny variant through the same pipeline as R50x3; `fields` set ExportOptions."""
    from bit_trt.export.exporter import ExportOptions, export

    options = {"variant": "tiny", "resolution": TINY_RES, "parity_synthetic": 2, **fields}
    manifest = RETURNED_MANIFESTS[str(out)] = export(ExportOptions(out=str(out), **options))
    return manifest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """The tiny variant (1000 classes, ImageNet labels), FP32 and FP16, no engines."""
    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_tiny(out, precisions=("fp32", "fp16"), engine="none")
    return out


@pytest.fixture(scope="session")
def tiny_full_bundle(tmp_path_factory):
    """The tiny variant with every precision (INT8 calibrated on synthetic images) and TensorRT-RTX engines."""
    from bit_trt.export.int8 import Int8Options

    root = tmp_path_factory.mktemp("bundles-full")
    out = root / "tiny"
    os.environ.setdefault("BIT_TRT_CACHE", str(root / "cache"))
    export_tiny(
        out,
        precisions=("fp32", "fp16", "int8"),
        engine="tensorrt_rtx",
        int8=Int8Options(calib_synthetic=True, calib_count=16, eval_count=8),
    )
    return out


@pytest.fixture
def copy_bundle(tmp_path):
    """copy_bundle(src) -> a private copy of a session bundle, for tests that damage or edit it."""

    def copy(src):
        dst = tmp_path / "bundle-copy"
        shutil.copytree(src, dst)
        return dst

    return copy
