"""What GPU this host has, asked of nvidia-smi so that no CUDA library is loaded to find out."""

from __future__ import annotations

import functools
import subprocess


@functools.cache
def _query(field: str) -> tuple[str, ...]:
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True, text=True, timeout=20
        )
    except (OSError, subprocess.TimeoutExpired):
        return ()
    if out.returncode != 0:
        return ()
    return tuple(line.strip() for line in out.stdout.strip().splitlines() if line.strip())


def has_gpu() -> bool:
    return bool(_query("name"))


def compute_capability(device: int = 0) -> str | None:
    """'sm90' for an H100; None without a GPU."""
    caps = _query("compute_cap")
    return f"sm{caps[device].replace('.', '')}" if len(caps) > device else None


def gpu_name(device: int = 0) -> str | None:
    names = _query("name")
    return names[device] if len(names) > device else None
