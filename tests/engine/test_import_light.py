"""The engine is embedded in servers: importing it must not pull in TF, TensorRT, pycuda or onnx."""
import subprocess
import sys

HEAVY = ("tensorflow", "tensorrt", "tensorrt_rtx", "pycuda", "onnx", "tf2onnx", "openvino", "bit_trt.export")


def test_import_engine_is_light():
    code = ("import sys, bit_trt.engine, bit_trt.engine.classifier, bit_trt.engine.classify_cli; "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
