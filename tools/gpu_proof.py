"""The GPU proof: one unattended command for a lent GPU host that has CUDA but no TensorRT and no network.

    python -m tools.gpu_proof --fetch     # once, where PyPI is reachable: pycuda + wheels into .gpu_proof/
    python -m tools.gpu_proof             # on the GPU host (.gpu_proof/ carried with the working tree)

On the GPU host, bit-trt itself installs offline first: `python -m pip install -q --no-deps --no-build-isolation
--no-index -e .` (docs/tensorrt.md has the whole device command). In at most about 6 minutes it:

1. builds pycuda from the carried source archive (tools/pycuda_build.py);
2. runs every `gpu` test that needs no TensorRT (`pytest -m "gpu and not tensorrt"`): the CUDA
   preprocessing kernel against OpenCV on real photos, and the TensorRT runner's own machinery with
   TensorRT's engine replaced by tools/trt_engine_double.py (threads, workers, pinned buffers, streams,
   events, the double-buffered uint8 path, CUDA graphs, and the check that fails without the staging wait);
3. measures the kernel against the device's copy bandwidth, pinned against pageable host-to-device copies,
   and end-to-end images/s from uint8 arrays through the runner's double-buffered path (tools/gpu_bench.py);
4. writes bench/results/gpu_<device>.json and prints a one-screen summary.

On a host without a GPU it stops at once with one line that says why (exit code 2).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET

from bit_trt.engine import gpu_host
from bit_trt.engine.atomic_write import write_json_atomic
from bit_trt.engine.errors import BitError
from tools import REPO, RESULTS, pycuda_build

TESTS_TIMEOUT_S = 240


def gpu_test_files() -> list[str]:
    """The test files that declare `gpu` tests. Only these are collected: the GPU host has no TensorFlow, and
    collecting the export tests would fail on their imports before any marker is read."""
    files = []
    for folder, _, names in os.walk(os.path.join(REPO, "tests")):
        for name in sorted(names):
            if name.startswith("test_") and name.endswith(".py"):
                with open(os.path.join(folder, name)) as f:
                    if "pytest.mark.gpu" in f.read():
                        files.append(os.path.relpath(os.path.join(folder, name), REPO))
    return sorted(files)


def run_gpu_tests(paths: list[str], log_path: str) -> dict:
    """pytest -m "gpu and not tensorrt" in a fresh interpreter with the built pycuda; outcome per test."""
    junit = os.path.join(os.path.dirname(log_path), "gpu_tests.xml")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([*paths, REPO, os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest", "-m", "gpu and not tensorrt", "-p", "no:cacheprovider"]
    command += ["-q", "-rs", f"--junitxml={junit}", *gpu_test_files()]
    start = time.perf_counter()
    try:
        proc = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=TESTS_TIMEOUT_S)
        output, returncode = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as exc:
        output, returncode = f"{exc.stdout or ''}{exc.stderr or ''}\ntimed out after {TESTS_TIMEOUT_S} s", 124
    with open(log_path, "w") as f:
        f.write(output)
    outcomes, modules_skipped = {}, []
    if os.path.isfile(junit):
        for case in ET.parse(junit).getroot().iter("testcase"):
            if not case.get("classname"):  # a whole module skipped at import (e.g. test_trt_engine without RTX)
                modules_skipped.append(case.get("name"))
                continue
            name = f"{case.get('classname', '').split('.')[-1]}::{case.get('name')}"
            verdict = "passed"
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    verdict = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                    verdict += f": {(child.get('message') or '').splitlines()[0][:200] if child.get('message') else ''}"
            outcomes[name] = verdict
    return {
        "command": " ".join(command),
        "exit_code": returncode,
        "seconds": round(time.perf_counter() - start, 1),
        "passed": sum(v == "passed" for v in outcomes.values()),
        "not_passed": {k: v for k, v in outcomes.items() if v != "passed"},
        "modules_skipped": modules_skipped,
        "tests": sorted(outcomes),
        "log_tail": output.strip().splitlines()[-3:],
    }


def measure(paths: list[str]) -> dict:
    """The kernel, the transfers (CuPy) and the runner's end-to-end uint8 path (pycuda + the engine double)."""
    from tools import gpu_bench

    sys.path[:0] = [p for p in [*paths, REPO] if p not in sys.path]
    out, errors = {}, {}

    def cupy():
        import cupy

        return cupy

    parts = {
        "preprocess_kernel_480_batch8": lambda: gpu_bench.kernel(cupy()),
        "host_to_device": lambda: gpu_bench.transfers(cupy()),
        "runner_uint8_end_to_end": gpu_bench.runner_pipeline,
    }
    for name, run in parts.items():
        try:
            out[name] = run()
        except Exception as exc:  # one broken measurement must not lose the others
            errors[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
    if errors:
        out["errors"] = errors
    return out


def module_versions() -> dict:
    """What ran: Python, the driver, and the version each module reports (pycuda is built here, not installed)."""
    import importlib
    import platform

    versions = {"python": platform.python_version(), "driver": (gpu_host._query("driver_version") or ("?",))[0]}
    for name in ("numpy", "cv2", "pycuda", "cupy", "onnxruntime"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        versions[name] = getattr(module, "VERSION_TEXT", None) or getattr(module, "__version__", "?")
    return versions


def summary(result: dict) -> str:
    tests = result["tests"]
    lines = [
        f"bit-trt GPU proof on {result['gpu']} ({result['compute_capability']}), {result['measured']}",
        f"pycuda build: {result['pycuda_build']}",
        f"gpu tests (no TensorRT): {tests['passed']} passed, {len(tests['not_passed'])} not passed, "
        f"exit {tests['exit_code']}, {tests['seconds']} s",
    ]
    lines += [f"  {name}: {verdict}" for name, verdict in tests["not_passed"].items()]
    m = result.get("measurements", {})
    kernel = m.get("preprocess_kernel_480_batch8", {})
    for size, row in kernel.items():
        if isinstance(row, dict):
            lines.append(
                f"kernel {size}->480: {row['images_per_s']} img/s, {row['effective_gb_per_s']} GB/s "
                f"(device copy {kernel.get('device_copy_gb_per_s')} GB/s), "
                f"max |diff| vs OpenCV {row['max_abs_vs_cpu']:.4f}"
            )
    h2d = m.get("host_to_device", {})
    if h2d:
        lines.append(
            f"H2D: pinned {h2d['h2d_pinned_gb_per_s']} GB/s, pageable {h2d['h2d_pageable_gb_per_s']} GB/s "
            f"(x{h2d['pinned_over_pageable']})"
        )
    for row in m.get("runner_uint8_end_to_end", {}).get("rows", []):
        lines.append(
            f"runner {row['path']} {row['image']} batch {row['batch']}, {row['threads']} threads, "
            f"graphs {row['cuda_graph']}: {row['images_per_s']} img/s"
        )
    for name, error in m.get("errors", {}).items():
        lines.append(f"not measured: {name}: {error}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.gpu_proof", description=__doc__.split("\n\n")[0])
    p.add_argument("--fetch", action="store_true", help="download pycuda and its wheels into --carried (needs PyPI)")
    p.add_argument("--carried", default=pycuda_build.CARRIED, help="the folder carried to the GPU host")
    p.add_argument("--out", default=RESULTS, help="where gpu_<device>.json goes")
    p.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "bit-gpu-proof"), help="build folder")
    args = p.parse_args(argv)
    if args.fetch:
        print(f"{args.carried}: {', '.join(pycuda_build.fetch(args.carried))}")
        return 0
    if not gpu_host.has_gpu():
        print("gpu_proof: no NVIDIA GPU on this host (nvidia-smi finds none); run it on a GPU host", file=sys.stderr)
        return 2
    started = time.perf_counter()
    os.makedirs(args.work, exist_ok=True)
    name = gpu_host.gpu_name() or "gpu"
    result = {
        "schema": 1,
        "gpu": name,
        "compute_capability": gpu_host.compute_capability(),
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m tools.gpu_proof",
    }
    try:
        t = time.perf_counter()
        paths = pycuda_build.build(args.work, args.carried)
        result["pycuda_build"] = f"built in {time.perf_counter() - t:.0f} s"
    except BitError as exc:
        paths = []
        result["pycuda_build"] = f"failed: {exc}"
    result["tests"] = run_gpu_tests(paths, os.path.join(args.work, "gpu_tests.log"))
    result["measurements"] = measure(paths)
    result["versions"] = module_versions()
    result["seconds"] = round(time.perf_counter() - started, 1)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"gpu_{name.replace(' ', '_').lower()}.json")
    write_json_atomic(path, result, "GPU proof results")
    print(summary(result))
    print(f"wrote {path} ({result['seconds']} s in all)")
    tests = result["tests"]
    proven = paths and tests["exit_code"] == 0 and tests["passed"] and not tests["not_passed"]
    return 0 if proven else 1  # a skip is not a proof: pycuda missing or a test skipped fails the command


if __name__ == "__main__":
    sys.exit(main())
