"""Maintainers' scripts (benchmarks, the GPU proof, test doubles): run from the repo root, not installed."""
