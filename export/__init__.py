"""bit_trt.export: model sources -> TF -> ONNX -> verified artifact bundle."""
