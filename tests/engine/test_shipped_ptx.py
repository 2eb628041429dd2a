"""The preprocessing kernel ships as PTX: a deployment host (a TensorRT runtime image) has the driver, not nvcc."""

import os
import subprocess
import sys

from bit_trt.engine import cuda_preprocess


def test_shipped_ptx_was_built_from_the_shipped_source():
    """A deployment host has no nvcc: the package carries the PTX, and it must be the current kernel's.
    After editing cuda/preprocess.cu, rebuild it: python -m bit_trt.engine.cuda_preprocess"""
    with open(cuda_preprocess.SHIPPED_PTX, "rb") as f:
        shipped = f.read()
    first = shipped.split(b"\n", 1)[0].decode()
    assert first == f"// bit-trt: built from preprocess.cu, sha256 {cuda_preprocess.source_digest()} (compute_75)"
    assert b".entry bit_preprocess_u8" in shipped and b".target sm_75" in shipped


def test_the_kernel_loads_without_nvcc(tmp_path):
    """No toolkit on the host (no nvcc on PATH, no CUDA_HOME): the shipped PTX is what loads."""
    env = {
        **os.environ,
        "PATH": os.path.dirname(sys.executable),
        "CUDA_HOME": str(tmp_path / "none"),
        "BIT_TRT_CACHE": str(tmp_path / "cache"),
    }
    code = (
        "from bit_trt.engine import cuda_preprocess as c; assert c.find_nvcc() is None; "
        "print(c.load_ptx() == open(c.SHIPPED_PTX, 'rb').read())"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"
