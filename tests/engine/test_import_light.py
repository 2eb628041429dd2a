"""The engine is embedded in servers: importing it must not pull in TF, TensorRT, pycuda or onnx."""

import subprocess
import sys

HEAVY = (
    "tensorflow",
    "tensorrt",
    "tensorrt_rtx",
    "pycuda",
    "onnx",
    "onnxruntime",
    "tf2onnx",
    "openvino",
    "cv2",
    "bit_trt.export",
)
MODULES = (
    "classifier",
    "classify_cli",
    "check_cli",
    "backends",
    "trt_runner",
    "ort_runner",
    "openvino_runner",
    "cuda_preprocess",
    "cuda_graph",
    "plan_check",
    "precision",
    "parity_set",
    "atomic_write",
    "onnx_order",
    "tool_versions",
)


def test_import_engine_is_light():
    imports = ", ".join(f"bit_trt.engine.{m}" for m in MODULES)
    code = f"import sys, bit_trt.engine, {imports}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_public_api_imports_from_the_package_and_stays_light():
    """The names the README and classifier.py's docstring use, from `bit_trt.engine` itself, loaded lazily."""
    code = (
        "import sys, bit_trt.engine as e; before = 'bit_trt.engine.classifier' in sys.modules; "
        "from bit_trt.engine import Classifier, Prediction, BitError, load_bundle, Bundle; "
        "from bit_trt.engine.classifier import Classifier as C; from bit_trt.engine.errors import BitError as B; "
        f"heavy = sorted(m for m in {HEAVY!r} if m in sys.modules); "
        "print(before, Classifier is C, BitError is B, sorted(e.__all__) == sorted(set(e.__all__)) and "
        "all(hasattr(e, n) for n in e.__all__), heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False", "True", "True", "True", "[]"]


def test_the_parity_photos_are_found_without_importing_scikit_learn():
    """Every export and bit-bench's default requests look them up; scikit-learn's import alone takes seconds."""
    code = (
        "import sys; from bit_trt.engine.parity_set import real_photo_paths; paths = real_photo_paths(); "
        "print([p.rsplit('/', 1)[1] for p in paths], 'sklearn' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["['china.jpg',", "'flower.jpg']", "False"]
