"""Serving a bundle on NVIDIA Triton Inference Server.

- `bit-triton BUNDLE OUT` (triton_cli.py) writes a model repository that a stock tritonserver serves:
  TensorRT plans, ONNX Runtime and OpenVINO models, a Python-backend preprocessing model and ensembles.
- `bit-serve BUNDLE` (serve_cli.py) runs a real Triton server on this host through PyTriton, in front of a
  Classifier on any backend.

Imports engine/ only, never export/ or bench/ (tests/test_layers.py).
"""
