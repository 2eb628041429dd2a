"""How busy the GPU was while a GPU backend's row was measured: nvidia-smi sampled over each measured stretch.

A GPU row's CPU figures (bench/cpu_use.py) say what feeding the GPU costs; this says how much of the GPU the
requests kept busy. NVIDIA's utilization is the share of the sample period in which a kernel ran on the device
(any kernel, of any process: a GPU shared with other work reads busier than our requests made it). nvidia-smi is
asked for a reading every `INTERVAL_MS` for as long as the stretch lasts; readings from every stretch of a row are
pooled. Where nvidia-smi is absent (a CPU host) the row's `gpu` is null.
"""

from __future__ import annotations

import shutil
import subprocess

INTERVAL_MS = 100
QUERY = "index,utilization.gpu,memory.used"


class GpuSampler:
    def __init__(self):
        self.samples: list[tuple[int, float, float]] = []  # (device index, utilization %, memory used MiB)
        self._proc = None

    def start(self) -> None:
        smi = shutil.which("nvidia-smi")
        if smi is None:
            return
        self._proc = subprocess.Popen(
            [smi, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits", f"-lms={INTERVAL_MS}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        out, _ = self._proc.communicate(timeout=10)
        self._proc = None
        self.samples += parse(out)

    def record(self) -> dict | None:
        if not self.samples:
            return None
        utilization = [u for _, u, _ in self.samples]
        return {
            "source": f"nvidia-smi every {INTERVAL_MS} ms",
            "samples": len(self.samples),
            "devices": sorted({d for d, _, _ in self.samples}),
            "utilization_mean_percent": round(sum(utilization) / len(utilization), 1),
            "utilization_max_percent": max(utilization),
            "memory_used_max_mib": max(m for _, _, m in self.samples),
        }


def parse(text: str) -> list[tuple[int, float, float]]:
    """nvidia-smi's CSV lines (index, utilization %, memory MiB); a line it cut short when stopped is dropped."""
    samples = []
    for line in text.splitlines():
        fields = [f.strip() for f in line.split(",")]
        try:
            samples.append((int(fields[0]), float(fields[1]), float(fields[2])))
        except (IndexError, ValueError):
            continue
    return samples
