"""Maintainers' scripts (benchmarks, the GPU proof, test doubles): run from the repo root, not installed."""

import os

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "bench", "results")  # measurements are data, kept in the repository, outside the wheel
