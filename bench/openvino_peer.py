"""What does OpenVINO's own benchmark_app measure on the same file? bit-bench's throughput peer.

`--throughput` runs `benchmark_app -hint throughput` on each OpenVINO configuration's ONNX file, at the row's
batch and inference precision, in the same bit-bench run, so that our best throughput stands beside the number
OpenVINO's users quote. benchmark_app runs its own asynchronous requests (as many as the hint asks for), fills
inputs with random values and leaves them out of the timed loop: it measures the compiled model alone, as our
`model` mode does.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

from ..engine.errors import BitError

TOOL = "benchmark_app"
_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"
PATTERNS = {
    "throughput_ips": re.compile(rf"Throughput:\s+{_NUMBER} FPS"),
    "iterations": re.compile(rf"Count:\s+{_NUMBER} iterations"),
    "duration_ms": re.compile(rf"Duration:\s+{_NUMBER} ms"),
    "median_ms": re.compile(rf"Median:\s+{_NUMBER} ms"),
    "requests": re.compile(r"Start inference asynchronously, ([0-9]+) inference requests"),
}


def executable() -> str:
    """benchmark_app beside this Python (the openvino wheel installs it), else on PATH, else a one-line error."""
    beside = os.path.join(os.path.dirname(sys.executable), TOOL)
    found = beside if os.access(beside, os.X_OK) else shutil.which(TOOL)
    if not found:
        raise BitError(f"{TOOL} not found: it comes with OpenVINO (pip install openvino)")
    return found


def command(model: str, batch: int, resolution: int, inference_precision: str, seconds: float) -> list[str]:
    return [
        executable(),
        "-m",
        model,
        "-d",
        "CPU",
        "-hint",
        "throughput",
        "-t",
        str(max(1, round(seconds))),
        "-shape",
        f"[{batch},{resolution},{resolution},3]",
        "-infer_precision",
        inference_precision,
    ]


def parse(output: str) -> dict:
    """benchmark_app's report -> {throughput_ips, iterations, duration_ms, median_ms, requests}; a BitError when
    it has no throughput line (the tool failed: its last line says why)."""
    found = {key: float(m.group(1)) for key, p in PATTERNS.items() if (m := p.search(output))}
    if "throughput_ips" not in found:
        last = [line for line in output.strip().splitlines() if line.strip()][-1:] or ["no output"]
        raise BitError(f"{TOOL} reported no throughput: {last[0][:300]}")
    if "requests" in found:
        found["requests"] = int(found["requests"])
    return found


def measure(model: str, batch: int, resolution: int, inference_precision: str, seconds: float) -> dict:
    """One benchmark_app run; its parsed report with the command that made it."""
    cmd = command(model, batch, resolution, inference_precision, seconds)
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 300, check=False)
    except subprocess.TimeoutExpired as exc:
        raise BitError(f"{TOOL} did not finish within {seconds + 300:.0f} s") from exc
    return {**parse(done.stdout + done.stderr), "command": f"{TOOL} " + " ".join(cmd[1:])}
