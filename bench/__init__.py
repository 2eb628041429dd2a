"""bit_trt.bench: measurements, kept as data under bench/results/."""
