"""The engine is embedded in servers: importing it must not pull in TF, TensorRT, pycuda or onnx."""
import subprocess
import sys

HEAVY = ("tensorflow", "tensorrt", "tensorrt_rtx", "pycuda", "onnx", "onnxruntime", "tf2onnx", "openvino", "cv2",
         "bit_trt.export")
MODULES = ("classifier", "classify_cli", "check_cli", "backends", "trt_runner", "ort_runner", "openvino_runner",
           "tf_runner", "cuda_preprocess", "cuda_graph", "plan_check")


def test_import_engine_is_light():
    imports = ", ".join(f"bit_trt.engine.{m}" for m in MODULES)
    code = f"import sys, bit_trt.engine, {imports}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
