"""bit_trt.engine: read a bundle and run it."""
